"""Durations as operators write them in YAML: ``90s``, ``15m``, ``2h``, ``30d``, ``1h30m``.

A bare number is refused on purpose: ``interval: 15`` could mean seconds or minutes, and a
licensing timer that is off by a factor of 60 is worse than a config error.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])", re.ASCII)
_WHOLE = re.compile(r"(?:\d+[smhdw])+", re.ASCII)
_EXAMPLE = "a duration like 90s, 15m, 2h, 30d or 1h30m"

#: Longer than any licensing timer could sensibly be (100 years), and short enough that
#: ``now + duration`` can never overflow a datetime.
MAX_DURATION = timedelta(days=36500)


def _show(value: object) -> str:
    """:func:`ccx_agent.config.yamldoc.show`, imported only to word a refusal: formatting a
    duration (``status --check``) needs no YAML."""
    from ccx_agent.config.yamldoc import show  # noqa: PLC0415

    return show(value)


def parse_duration(value: object) -> timedelta:
    """``15m`` -> 15 minutes. Raises :class:`ValueError` with an operator-readable message."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"must not be negative, got {format_duration(value)}")
        if value > MAX_DURATION:
            raise ValueError("must be at most 36500d (100 years)")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"must not be negative, got {_show(value)}")
        if isinstance(value, int):
            raise ValueError(
                f"needs a unit (s, m, h, d or w), like {value}m or {value}s: got {value}"
            )
        raise ValueError(f"must be {_EXAMPLE} (whole numbers with units), got {value}")
    if not isinstance(value, str):
        raise ValueError(f"must be {_EXAMPLE}, got {_show(value)}")
    text = value.strip().replace(" ", "")
    if text.startswith("-"):
        raise ValueError(f"must not be negative, got {_show(value)}")
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"must be {_EXAMPLE}, got {_show(value)}")
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"must be at most 36500d (100 years), got {_show(value)}")
    return timedelta(seconds=seconds)


def format_duration(span: timedelta) -> str:
    """The shortest exact spelling, so a written config reads back as it was meant.

    Whole seconds only (sub-second parts are dropped); a negative span keeps its sign.
    """
    seconds = int(span.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    out = []
    for unit in ("d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
    return sign + "".join(out)


def parse_positive_duration(value: object) -> timedelta:
    """Like :func:`parse_duration`, and zero is refused too."""
    span = parse_duration(value)
    if span <= timedelta(0):
        raise ValueError(f"must be longer than 0s, got {_show(value)}")
    return span


if TYPE_CHECKING:
    Duration = Annotated[
        timedelta,
        BeforeValidator(parse_duration),
        PlainSerializer(format_duration, return_type=str),
    ]
    PositiveDuration = Annotated[
        timedelta,
        BeforeValidator(parse_positive_duration),
        PlainSerializer(format_duration, return_type=str),
    ]


def __getattr__(name: str) -> Any:
    """``Duration`` and ``PositiveDuration``, the pydantic field types, made on first use:
    ``status --check`` and ``--help`` format durations without importing pydantic."""
    parse = {"Duration": parse_duration, "PositiveDuration": parse_positive_duration}
    if name not in parse:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pydantic import BeforeValidator, PlainSerializer  # noqa: PLC0415

    kind = Annotated[
        timedelta,
        BeforeValidator(parse[name]),
        PlainSerializer(format_duration, return_type=str),
    ]
    globals()[name] = kind
    return kind
