"""Durations as operators write them in YAML: ``90s``, ``15m``, ``2h``, ``30d``, ``1h30m``.

A bare number is refused on purpose: ``interval: 15`` could mean seconds or minutes, and a
licensing timer that is off by a factor of 60 is worse than a config error.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"(?:\d+[smhdw])+")


def parse_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a duration like 15m, 30d or 90s, got {value!r}")
    if isinstance(value, int | float):
        raise ValueError(f"a duration needs a unit (s, m, h, d or w), like 15m: got {value!r}")
    text = value.strip().replace(" ", "")
    if text.startswith("-"):
        raise ValueError(f"must not be negative, got {value!r}")
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"must be a duration like 15m, 30d or 90s, got {value!r}")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(text)))


def format_duration(span: timedelta) -> str:
    """The shortest exact spelling, so a written config reads back as it was meant."""
    seconds = int(span.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def _positive(span: timedelta) -> timedelta:
    if span <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return span


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
PositiveDuration = Annotated[
    timedelta,
    BeforeValidator(lambda v: _positive(parse_duration(v))),
    PlainSerializer(format_duration, return_type=str),
]
