"""The License Consumption Report: closed intervals in, rows per (period, tag) out.

Pure: the rows come from a source the caller gives (the command's is the store's cursor,
:meth:`ccx_agent.store.db.Tx.iter_interval_tag_rows`), the instant "now" is passed in, and
nothing here reads a clock or a file. The renderers (text, CSV, JSON, HTML) all draw
from one :class:`Report`, so every format shows the same numbers. The rows are
aggregated as they stream (:func:`stream`): a year's report never holds its rows, so its
memory does not grow with the range (docs/performance.md).

A row is CUIC's "maximum seats per license" for one period: ``usage`` is the highest
interval peak in it, ``entitlement`` and ``reported`` their highest, ``state`` the worst
compliance state seen, ``intervals`` the closed intervals with data and ``no_data`` those
without a good sample. Periods are aligned to UTC boundaries (weeks start on Monday);
a period with no interval at all has no row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

from ccx_agent.licensing.alerts import Mnemonic, spec_of
from ccx_agent.licensing.compliance import TagState
from ccx_agent.licensing.timeutil import iso
from ccx_agent.store.db import AlertRow, IntervalTagRow

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


#: A row as the aggregation yields it: a plain tuple in :class:`Row`'s order (making a
#: ``Row`` per row of a year costs more than the rest of the aggregation).
RowTuple = tuple[str, str, str, int | None, int | None, int | None, str, int, int]


class Report:
    """The report of ``tags`` over ``[start, end)`` by ``by``.

    ``rows`` is iterable, in order (start, then tag): each iteration is one pass over the
    source, aggregated as it streams, so a renderer holds at most one period at a time
    (a writer that needs two passes, the text table, iterates twice). :attr:`summary`
    and :attr:`count` are those of the last complete pass. :func:`build` makes a report
    whose rows are a list of :class:`Row`, for tests and small callers.
    """

    __slots__ = (
        "_source",
        "_summary",
        "alerts",
        "axis_from_data",
        "by",
        "count",
        "end",
        "license_type",
        "rows",
        "start",
        "tags",
    )

    def __init__(
        self,
        *,
        license_type: str,
        start: datetime,
        end: datetime,
        by: str,
        tags: Sequence[str],
        source: Callable[[], Iterable[IntervalTagRow]],
        alerts: list[ReportAlert],
        axis_from_data: bool = False,
    ) -> None:
        if by not in BY_CHOICES:
            raise ValueError(f"unknown period {by!r}")
        self.license_type = license_type
        self.start = start
        self.end = end
        self.by = by
        self.tags = tuple(sorted(set(tags)))
        #: No ``--from`` was given: a chart's time axis starts at the first row, not at
        #: the default range's start (a young instance's history would be squeezed).
        self.axis_from_data = axis_from_data
        self.alerts = alerts
        self._source = source
        self._summary: list[TagSummary] | None = None
        self.count = 0
        self.rows: Iterable[Sequence[Any]] = _Passes(self)

    @property
    def summary(self) -> list[TagSummary]:
        if self._summary is None:
            raise RuntimeError("the summary is known once the rows have been read")
        return self._summary

    def extents(self) -> Extents | None:
        """What the rows hold, for a writer that sizes its columns before writing them
        (None: no row). One pass; by interval a row is an interval, so the source is
        scanned without aggregating it."""
        if self.by != "interval":
            return _extents(self.rows)
        keep = set(self.tags)
        tags: set[str] = set()
        states: set[str] = set()
        mu = me = mr = 0
        with_data = no_data = False
        starts = 0
        s_prev = ""
        for s_text, _e, tag, usage, ent, rep, state in self._source():
            if tag not in keep:
                continue
            tags.add(tag)
            states.add(state)
            if s_text != s_prev:
                s_prev = s_text
                starts = max(starts, len(stored_to_iso(s_text)))
            if usage is None:
                no_data = True
            else:
                with_data = True
                if usage > mu:  # noqa: PLR1730 - cheaper than max() per row
                    mu = usage
            if ent is not None and ent > me:
                me = ent
            if rep is not None and rep > mr:
                mr = rep
        if not tags:
            return None
        return Extents(
            starts,
            frozenset(tags),
            frozenset(STATES[_RANK.get(st, 0)] for st in states),
            (mu, me, mr, int(with_data), int(no_data)),
        )

    def as_json(self) -> dict[str, Any]:
        """The documented ``report --format json`` shape (docs/reports.md), as objects;
        ``report --format json`` writes the same text as it streams."""
        rows = [dict(zip(Row._fields, r, strict=True)) for r in self.rows]
        return {
            "license_type": self.license_type,
            "from": iso(self.start),
            "to": iso(self.end),
            "by": self.by,
            "rows": rows,
            "summary": [s.as_json() for s in self.summary],
            "alerts": [a.as_json() for a in self.alerts],
        }


@dataclass(frozen=True, slots=True)
class Extents:
    """What a report's rows hold: the longest start, the tags and states that occur, and
    the highest usage, entitlement, reported value, intervals and no_data."""

    start_len: int
    tags: frozenset[str]
    states: frozenset[str]
    top: tuple[int, int, int, int, int]


def _extents(rows: Iterable[Sequence[Any]]) -> Extents | None:
    tags: set[str] = set()
    states: set[str] = set()
    mu = me = mr = mn = mnd = 0
    starts = 0
    s_prev = ""
    for s, _e, tag, usage, ent, rep, state, n, nd in rows:
        tags.add(tag)
        states.add(state)
        if s != s_prev:
            s_prev = s
            starts = max(starts, len(s))
        if usage is not None and usage > mu:
            mu = usage
        if ent is not None and ent > me:
            me = ent
        if rep is not None and rep > mr:
            mr = rep
        if n > mn:  # noqa: PLR1730 - cheaper than max() per row
            mn = n
        if nd > mnd:  # noqa: PLR1730 - cheaper than max() per row
            mnd = nd
    if not tags:
        return None
    return Extents(starts, frozenset(tags), frozenset(states), (mu, me, mr, mn, mnd))


class _Passes:
    """``Report.rows``: every ``iter()`` is a new pass over the source."""

    __slots__ = ("_report",)

    def __init__(self, report: Report) -> None:
        self._report = report

    def __iter__(self) -> Iterator[RowTuple]:
        return _aggregate(self._report)


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
    """The report of per-interval rows (ordered by start, as the store gives them), its
    rows aggregated at once into a list of :class:`Row` and its summary known."""
    source = list(rows)
    report = stream(
        lambda: source,
        license_type=license_type,
        start=start,
        end=end,
        by=by,
        tags=tags,
        alerts=alerts,
        axis_from_data=axis_from_data,
    )
    report.rows = [Row._make(r) for r in report.rows]
    return report


def stream(
    source: Callable[[], Iterable[IntervalTagRow]],
    *,
    license_type: str,
    start: datetime,
    end: datetime,
    by: str,
    tags: Sequence[str],
    alerts: Iterable[AlertRow] = (),
    axis_from_data: bool = False,
) -> Report:
    """The report whose rows are aggregated as they are read: ``source()`` gives the
    per-interval rows of one pass (ordered by start), e.g. the store's cursor."""
    return Report(
        license_type=license_type,
        start=start,
        end=end,
        by=by,
        tags=tags,
        source=source,
        alerts=report_alerts(alerts, tags),
        axis_from_data=axis_from_data,
    )


def _aggregate(report: Report) -> Iterator[RowTuple]:
    """One pass: per-interval rows in, (period, tag) rows out in order, the summary
    counted on the way. Rows arrive ordered by start (tags sorted within an interval)
    and periods are aligned, so a period's rows are consecutive: only the current
    period is held, and it is given out, its tags in order, when the next one begins."""
    by = report.by
    keep = set(report.tags)
    rank = _RANK
    states = STATES
    # tag -> [peak, peak_at (stored text), with data, over entitlement, [count per rank]]
    summ: dict[str, list[Any]] = {t: [None, None, 0, 0, [0] * len(STATES)] for t in keep}
    count = 0
    # The last start and end seen, and their "...Z" forms.
    s_prev = e_prev = s_iso = e_iso = ""
    if by == "interval":
        for s_text, e_text, tag, usage, ent, rep, state in report._source():
            if tag not in keep:
                continue
            st_rank = rank.get(state, 0)
            sm = summ[tag]
            sm[4][st_rank] += 1
            if s_text != s_prev:
                s_iso = e_iso if s_text == e_prev else stored_to_iso(s_text)
                s_prev = s_text
            if e_text != e_prev:
                e_iso = stored_to_iso(e_text)
                e_prev = e_text
            count += 1
            if usage is None:
                yield (s_iso, e_iso, tag, None, ent, rep, states[st_rank], 0, 1)
                continue
            sm[2] += 1
            if ent is not None and usage > ent:
                sm[3] += 1
            if sm[0] is None or usage > sm[0]:
                sm[0] = usage
                sm[1] = s_text
            yield (s_iso, e_iso, tag, usage, ent, rep, states[st_rank], 1, 0)
    else:
        key_len = 13 if by == "hour" else 10
        key = ""
        p_start = p_end = ""
        # tag -> [usage, entitlement, reported, worst rank, with data, no data]
        cells: dict[str, list[Any]] = {}
        for s_text, _e_text, tag, usage, ent, rep, state in report._source():
            if tag not in keep:
                continue
            st_rank = rank.get(state, 0)
            sm = summ[tag]
            sm[4][st_rank] += 1
            if usage is not None:
                sm[2] += 1
                if ent is not None and usage > ent:
                    sm[3] += 1
                if sm[0] is None or usage > sm[0]:
                    sm[0] = usage
                    sm[1] = s_text
            if s_text[:key_len] != key:
                ps = period_start(datetime.fromisoformat(s_text), by)
                start_iso = iso(ps)
                if start_iso != p_start:
                    for t in sorted(cells):
                        c = cells[t]
                        count += 1
                        yield (p_start, p_end, t, c[0], c[1], c[2], states[c[3]], c[4], c[5])
                    cells = {}
                    p_start, p_end = start_iso, iso(period_end(ps, by))
                key = s_text[:key_len]
            cell = cells.get(tag)
            if cell is None:
                cells[tag] = [
                    usage,
                    ent,
                    rep,
                    st_rank,
                    0 if usage is None else 1,
                    1 if usage is None else 0,
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
        for t in sorted(cells):
            c = cells[t]
            count += 1
            yield (p_start, p_end, t, c[0], c[1], c[2], states[c[3]], c[4], c[5])
    report.count = count
    report._summary = [
        TagSummary(
            t,
            summ[t][0],
            None if summ[t][1] is None else stored_to_iso(summ[t][1]),
            summ[t][2],
            summ[t][3],
            dict(zip(STATES, summ[t][4], strict=True)),
        )
        for t in report.tags
    ]
