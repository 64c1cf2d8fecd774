"""The License Consumption Report: closed intervals in, rows per (period, tag) out.

Pure: the rows come from :meth:`ccx_agent.store.Tx.interval_tag_rows`, the instant "now"
is passed in, and nothing here reads a clock or a file. The renderers (text, CSV, JSON,
HTML) all draw from one :class:`Report`, so every format shows the same numbers.

A row is CUIC's "maximum seats per license" for one period: ``usage`` is the highest
interval peak in it, ``entitlement`` and ``reported`` their highest, ``state`` the worst
compliance state seen, ``intervals`` the closed intervals with data and ``no_data`` those
without a good sample. Periods are aligned to UTC boundaries (weeks start on Monday);
a period with no interval at all has no row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

from ccx_agent.licensing.alerts import Mnemonic, spec_of
from ccx_agent.licensing.compliance import TagState
from ccx_agent.licensing.timeutil import iso
from ccx_agent.store import AlertRow, IntervalTagRow

BY_CHOICES = ("interval", "hour", "day", "week", "month")
#: Without ``--by``: hours for ranges up to this long, days beyond.
HOURLY_UP_TO = timedelta(days=2)
#: Without ``--from``: this long before ``--to``.
DEFAULT_SPAN = timedelta(days=7)

#: Compliance states from best to worst: a period shows the worst it saw.
STATES: tuple[str, ...] = tuple(s.value for s in TagState)
_RANK = {s: i for i, s in enumerate(STATES)}

#: The countdown to out of compliance: marked on the HTML charts.
COUNTDOWN = frozenset(
    {Mnemonic.SYSTEM_TO_ENTER_OOC_STATE, Mnemonic.SYSTEM_TO_ENTER_OOC_STATE_SHORTLY}
)


class WhenError(ValueError):
    """A ``--from`` / ``--to`` that is not an ISO 8601 date or date-time."""


def parse_when(text: str) -> datetime:
    """``2026-11-01`` (midnight UTC) or ``2026-11-01T08:00Z`` (offsets honoured; none is
    UTC), as an aware UTC instant."""
    raw = text.strip()
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time(), UTC)
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise WhenError(
            f"{text!r} is not an ISO 8601 date (2026-11-01) or date-time (2026-11-01T08:00Z)"
        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def default_by(start: datetime, end: datetime) -> str:
    return "hour" if end - start <= HOURLY_UP_TO else "day"


def period_start(ts: datetime, by: str) -> datetime:
    """The UTC-aligned start of the ``by`` period that holds ``ts`` (not for ``interval``)."""
    ts = ts.astimezone(UTC)
    if by == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    day = datetime.combine(ts.date(), time(), UTC)
    if by == "day":
        return day
    if by == "week":
        return day - timedelta(days=day.weekday())
    if by == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {by!r}")


def period_end(start: datetime, by: str) -> datetime:
    if by == "hour":
        return start + timedelta(hours=1)
    if by == "day":
        return start + timedelta(days=1)
    if by == "week":
        return start + timedelta(days=7)
    if by == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    raise ValueError(f"unknown period {by!r}")


def stored_to_iso(text: str) -> str:
    """A stored instant (UTC ``isoformat``) as ``...Z``; the common form without parsing."""
    if len(text) == 25 and text.endswith("+00:00"):
        return text[:19] + "Z"
    return iso(datetime.fromisoformat(text))


class Row(NamedTuple):
    """One (period, tag) row, in the column order of the CSV header: renderers read it
    by position, so a plain tuple of the same shape is a row too."""

    start: str
    end: str
    tag: str
    usage: int | None
    entitlement: int | None
    reported: int | None
    state: str
    intervals: int
    no_data: int

    def as_json(self) -> dict[str, Any]:
        return dict(zip(Row._fields, self, strict=True))


@dataclass(frozen=True, slots=True)
class TagSummary:
    tag: str
    peak: int | None
    peak_at: str | None
    intervals: int
    over_entitlement: int
    #: Every state, zeros included: closed intervals (with data or not) spent in it.
    states: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "peak": self.peak,
            "peak_at": self.peak_at,
            "intervals": self.intervals,
            "over_entitlement": self.over_entitlement,
            "states": dict(self.states),
        }


@dataclass(frozen=True, slots=True)
class ReportAlert:
    time: str
    mnemonic: str
    severity: int
    message: str
    tags: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "mnemonic": self.mnemonic,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Report:
    license_type: str
    start: datetime
    end: datetime
    by: str
    tags: tuple[str, ...]
    rows: list[Row]
    summary: list[TagSummary]
    alerts: list[ReportAlert] = field(default_factory=list)
    #: No ``--from`` was given: a chart's time axis starts at the first row, not at the
    #: default range's start (a young instance's history would be squeezed to the right).
    axis_from_data: bool = False

    def as_json(self) -> dict[str, Any]:
        """The documented ``report --format json`` shape (docs/reports.md)."""
        return {
            "license_type": self.license_type,
            "from": iso(self.start),
            "to": iso(self.end),
            "by": self.by,
            "rows": [r.as_json() for r in self.rows],
            "summary": [s.as_json() for s in self.summary],
            "alerts": [a.as_json() for a in self.alerts],
        }


def alert_message(row: AlertRow) -> str:
    """What happened, in words: the catalogue's description and the alert's detail."""
    spec = spec_of(row.mnemonic)
    if spec is None:
        return row.detail
    return f"{spec.description} {row.detail}".strip() if row.detail else spec.description


def report_alerts(rows: Iterable[AlertRow], tags: Iterable[str]) -> list[ReportAlert]:
    """Alerts about the instance, or about at least one of ``tags``, oldest first."""
    wanted = set(tags)
    return [
        ReportAlert(iso(a.time), a.mnemonic, a.severity, alert_message(a), a.tags)
        for a in sorted(rows, key=lambda a: (a.time, a.id))
        if not a.tags or wanted.intersection(a.tags)
    ]


def build(
    rows: Iterable[IntervalTagRow],
    *,
    license_type: str,
    start: datetime,
    end: datetime,
    by: str,
    tags: Sequence[str],
    alerts: Iterable[AlertRow] = (),
    axis_from_data: bool = False,
) -> Report:
    """Aggregate per-interval rows (ordered by start, as the store gives them) into the
    report of ``tags`` over ``[start, end)`` by ``by``."""
    if by not in BY_CHOICES:
        raise ValueError(f"unknown period {by!r}")
    wanted = sorted(set(tags))
    keep = set(wanted)
    rank = _RANK
    # (period start text) -> (period end text), computed once per distinct hour or day.
    periods: dict[str, tuple[str, str]] = {}
    key_len = 13 if by == "hour" else 10
    # (period start, tag) -> [usage, entitlement, reported, worst rank, with data, no data, end]
    acc: dict[tuple[str, str], list[Any]] = {}
    # tag -> [peak, peak_at, with data, over entitlement, {rank: count}]
    summ: dict[str, list[Any]] = {t: [None, None, 0, 0, [0] * len(STATES)] for t in wanted}
    conv: dict[str, str] = {}
    for s_text, e_text, tag, usage, ent, rep, state in rows:
        if tag not in keep:
            continue
        st_rank = rank.get(state, 0)
        # Summary, over every interval.
        sm = summ[tag]
        sm[4][st_rank] += 1
        if usage is not None:
            sm[2] += 1
            if ent is not None and usage > ent:
                sm[3] += 1
            if sm[0] is None or usage > sm[0]:
                sm[0] = usage
                sm[1] = s_text
        # The row of its period.
        if by == "interval":
            p_start = conv.get(s_text)
            if p_start is None:
                p_start = conv[s_text] = stored_to_iso(s_text)
            p_end = stored_to_iso(e_text)
        else:
            found = periods.get(s_text[:key_len])
            if found is None:
                ps = period_start(datetime.fromisoformat(s_text), by)
                found = periods[s_text[:key_len]] = (iso(ps), iso(period_end(ps, by)))
            p_start, p_end = found
        key = (p_start, tag)
        cell = acc.get(key)
        if cell is None:
            acc[key] = [
                usage,
                ent,
                rep,
                st_rank,
                0 if usage is None else 1,
                1 if usage is None else 0,
                p_end,
            ]
            continue
        if usage is not None:
            cell[4] += 1
            if cell[0] is None or usage > cell[0]:
                cell[0] = usage
        else:
            cell[5] += 1
        if ent is not None and (cell[1] is None or ent > cell[1]):
            cell[1] = ent
        if rep is not None and (cell[2] is None or rep > cell[2]):
            cell[2] = rep
        cell[3] = max(cell[3], st_rank)
    out_rows = [
        Row(k[0], c[6], k[1], c[0], c[1], c[2], STATES[c[3]], c[4], c[5])
        for k, c in sorted(acc.items(), key=lambda kv: kv[0])
    ]
    summary = [
        TagSummary(
            t,
            summ[t][0],
            None if summ[t][1] is None else stored_to_iso(summ[t][1]),
            summ[t][2],
            summ[t][3],
            dict(zip(STATES, summ[t][4], strict=True)),
        )
        for t in wanted
    ]
    return Report(
        license_type,
        start,
        end,
        by,
        tuple(wanted),
        out_rows,
        summary,
        report_alerts(alerts, wanted),
        axis_from_data,
    )
