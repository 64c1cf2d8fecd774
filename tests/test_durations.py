"""Durations as operators write them: ``90s``, ``15m``, ``2h``, ``30d``, ``1w``, ``1h30m``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ccx_agent.config.durations import (
    MAX_DURATION,
    Duration,
    PositiveDuration,
    format_duration,
    parse_duration,
    parse_positive_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("30d", timedelta(days=30)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("  15m ", timedelta(minutes=15)),
        ("30m30m", timedelta(hours=1)),  # parts add up
        ("36500d", MAX_DURATION),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (15, "needs a unit (s, m, h, d or w), like 15m or 15s: got 15"),
        (0, "needs a unit (s, m, h, d or w), like 0m or 0s: got 0"),
        (
            1.5,
            "must be a duration like 90s, 15m, 2h, 30d or 1h30m (whole numbers with units), "
            "got 1.5",
        ),
        ("15", "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got '15'"),
        (-15, "must not be negative, got -15"),
        ("-15m", "must not be negative, got '-15m'"),
        (" -1h", "must not be negative, got ' -1h'"),
        (timedelta(seconds=-90), "must not be negative, got -1m30s"),
        (
            "fifteen minutes",
            "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got 'fifteen minutes'",
        ),
        ("15min", "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got '15min'"),
        ("15M", "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got '15M'"),
        ("1.5h", "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got '1.5h'"),
        ("m", "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got 'm'"),
        ("", "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got an empty string ('')"),
        ("1y", "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got '1y'"),
        (
            "\u0661\u0665m",
            "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got '\u0661\u0665m'",
        ),
        ("PT15M", "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got 'PT15M'"),
        (True, "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got true"),
        (False, "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got false"),
        (None, "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got nothing (null)"),
        (["15m"], "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got a list"),
        ({"m": 15}, "must be a duration like 90s, 15m, 2h, 30d or 1h30m, got a mapping"),
        ("36501d", "must be at most 36500d (100 years), got '36501d'"),
        ("9" * 30 + "d", "must be at most 36500d (100 years), got '" + "9" * 30 + "d'"),
        (timedelta(days=36501), "must be at most 36500d (100 years)"),
    ],
)
def test_rejected(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


def test_positive_refuses_zero() -> None:
    assert parse_positive_duration("1s") == timedelta(seconds=1)
    with pytest.raises(ValueError, match=r"^must be longer than 0s, got '0m'$"):
        parse_positive_duration("0m")
    with pytest.raises(ValueError, match="must not be negative"):
        parse_positive_duration("-5m")


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=30), "30d"),
        (timedelta(weeks=2), "14d"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(seconds=1, microseconds=500_000), "1s"),  # whole seconds only
        (timedelta(minutes=-15), "-15m"),
    ],
)
def test_format(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


@given(st.integers(min_value=0, max_value=int(MAX_DURATION.total_seconds())))
def test_format_then_parse_is_identity(seconds: int) -> None:
    span = timedelta(seconds=seconds)
    assert parse_duration(format_duration(span)) == span


@given(st.lists(st.tuples(st.integers(0, 1000), st.sampled_from("smhdw")), min_size=1, max_size=5))
def test_parse_adds_the_parts(parts: list[tuple[int, str]]) -> None:
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == timedelta(seconds=sum(n * unit[u] for n, u in parts))


@given(st.text(max_size=12))
def test_any_text_parses_or_is_a_value_error(text: str) -> None:
    try:
        span = parse_duration(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert timedelta(0) <= span <= MAX_DURATION


class _Timers(BaseModel):
    any_length: Duration = timedelta(0)
    length: PositiveDuration = timedelta(minutes=1)


def test_pydantic_types_parse_and_serialise() -> None:
    timers = _Timers.model_validate({"any_length": "0s", "length": "1h30m"})
    assert timers.length == timedelta(hours=1, minutes=30)
    assert timers.model_dump() == {"any_length": "0s", "length": "1h30m"}
    assert _Timers.model_validate(timers.model_dump()) == timers


def test_pydantic_types_reject() -> None:
    with pytest.raises(ValidationError) as caught:
        _Timers.model_validate({"any_length": 15, "length": "0s"})
    messages = [e["msg"] for e in caught.value.errors()]
    assert messages == [
        "Value error, needs a unit (s, m, h, d or w), like 15m or 15s: got 15",
        "Value error, must be longer than 0s, got '0s'",
    ]
