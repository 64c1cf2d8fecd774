"""Pure helpers for UTC instants and interval arithmetic (no clock is read here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ts: datetime) -> str:
    """UTC timestamps as operators read them: ``2027-01-04T08:15:00Z``."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    # isoformat is several times faster than strftime, and simulate formats millions.
    return ts.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_iso(text: str) -> datetime:
    """Parse what :func:`iso` writes (and any ISO 8601 form with an offset) as aware UTC."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def floor_to(ts: datetime, step: timedelta, origin: datetime = EPOCH) -> datetime:
    """The start of the ``step``-long interval, counted from ``origin``, that holds ``ts``."""
    return origin + ((ts - origin) // step) * step
