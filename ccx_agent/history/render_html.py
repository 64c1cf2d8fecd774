"""``report --format html``: one self-contained file (inline CSS, inline SVG, a few lines
of inline script; no external script, style, font or image), so it opens from a USB stick
on an air-gapped desk.

Per tag, an SVG chart of usage against entitlement over time, with out-of-compliance and
enforcement periods shaded and the countdown alerts marked; then the summary, the rows and
the alerts. A year by interval is 35,040 points per tag, far more than the chart's pixels:
points are bucketed per pixel column keeping each bucket's *maximum*, so a peak is never
lost (a mean would shave it). The peak point carries ``data-value`` and ``data-time`` so
a test (or a script) can check it against the JSON summary. The row table folds runs of
alike periods (as the text format does) and stops at :data:`MAX_TABLE_ROWS` lines, with a
note: the CSV and JSON formats have every row.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, TextIO

from ccx_agent.history.report import COUNTDOWN, STATES, Report
from ccx_agent.licensing.catalogue import DISPLAY_NAMES, LicenseType, tags_of
from ccx_agent.licensing.timeutil import iso, parse_iso

#: The plot area, in SVG user units (the SVG scales to the page width).
WIDTH = 1000
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 14, 26
#: Lines of the row table at most (folded runs count as one).
MAX_TABLE_ROWS = 5000
_SHADE = {"OUT_OF_COMPLIANCE": "ooc", "ENFORCEMENT": "enf"}

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2530}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#5a6472;margin:0 0 16px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #e3e7ec;text-align:right;white-space:nowrap}
th:first-child,td:first-child,td.l,th.l{text-align:left}
th{background:#f3f5f8;font-weight:600}
tr.fold td{color:#5a6472;font-style:italic;text-align:left}
.chart{margin:8px 0 18px;max-width:1100px}
.chart svg{width:100%;height:auto;display:block;background:#fff;border:1px solid #e3e7ec}
.usage{fill:none;stroke:#1f6feb;stroke-width:1.5}
.ent{fill:none;stroke:#d1242f;stroke-width:1.5;stroke-dasharray:5 3}
.ooc{fill:#fbd38d;opacity:.55}.enf{fill:#f56565;opacity:.35}
.peak{fill:#1f6feb;stroke:#fff;stroke-width:1.5}
.cd{fill:#b7791f}.axis{stroke:#9aa4b2;stroke-width:1}.grid{stroke:#eef1f4;stroke-width:1}
svg text{font:11px system-ui,sans-serif;fill:#5a6472}
.legend span{display:inline-block;margin-right:16px;color:#5a6472}
.legend i{display:inline-block;width:18px;height:10px;margin-right:5px;vertical-align:middle}
.rows{content-visibility:auto}
.sev0,.sev1,.sev2{color:#b42318;font-weight:600}.sev3,.sev4{color:#975a16}
#tip{position:fixed;pointer-events:none;background:#1d2530;color:#fff;padding:3px 7px;
border-radius:3px;font-size:12px;display:none}
"""

# Shows the time and value under the pointer; marks the page as rendered for tests.
_JS = """
(function(){var tip=document.getElementById('tip');
document.querySelectorAll('svg[data-tag]').forEach(function(svg){
 svg.addEventListener('mousemove',function(e){var t=e.target;
  if(t&&t.dataset&&t.dataset.tip){tip.textContent=t.dataset.tip;tip.style.display='block';
   tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';}
  else{tip.style.display='none';}});
 svg.addEventListener('mouseleave',function(){tip.style.display='none';});});
document.body.setAttribute('data-rendered',
 String(document.querySelectorAll('svg[data-tag] .peak').length));})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: int | None) -> str:
    return "–" if value is None else str(value)


class _Scale:
    """Time to x and value to y. ``t0`` is the axis start, ``end`` its right edge."""

    def __init__(self, t0: float, end: float) -> None:
        self.t0 = t0
        self.span = max(1.0, end - t0)
        self.w = WIDTH - LEFT - RIGHT
        self.h = HEIGHT - TOP - BOTTOM
        self.top = 1

    def x(self, ts: float) -> float:
        return LEFT + min(max((ts - self.t0) / self.span, 0.0), 1.0) * self.w

    def y(self, value: float) -> float:
        return TOP + self.h - (value / self.top) * self.h

    def column(self, ts: float) -> int:
        return max(0, min(int((ts - self.t0) / self.span * self.w), self.w - 1))


def _nice_top(peak: int) -> tuple[int, int]:
    """The top of the value axis and its tick step: round numbers, at most 5 steps."""
    top = max(1, int(peak * 1.1) + 1)
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000):
        if -(-top // step) <= 5:
            return -(-top // step) * step, step
    step = 10 ** len(str(top // 5))
    return -(-top // step) * step, step


#: Tick steps of the time axis, finest first: (kind, size). Hours and days are counted
#: from UTC midnight, weeks start on Monday, months on the 1st: calendar boundaries only.
_TICK_STEPS: tuple[tuple[str, int], ...] = (
    ("min", 15),
    ("min", 30),
    ("hour", 1),
    ("hour", 2),
    ("hour", 3),
    ("hour", 6),
    ("hour", 12),
    ("day", 1),
    ("day", 2),
    ("week", 1),
    ("week", 2),
    ("month", 1),
    ("month", 2),
    ("month", 3),
    ("month", 6),
    ("year", 1),
)
#: At most this many labelled ticks on the time axis.
MAX_TICKS = 7


def _tick_instants(kind: str, size: int, t0: datetime, t1: datetime) -> list[datetime]:
    """The calendar boundaries of one step kind in ``[t0, t1]``."""
    out: list[datetime] = []
    if kind in ("min", "hour", "day"):
        unit = {"min": 60, "hour": 3600, "day": 86400}[kind] * size
        midnight = datetime.combine(t0.date(), time(), UTC)
        k = -(-int((t0 - midnight).total_seconds()) // unit)
        ts = midnight + timedelta(seconds=k * unit)
        while ts <= t1 and len(out) <= MAX_TICKS:
            out.append(ts)
            ts += timedelta(seconds=unit)
        return out
    if kind == "week":
        day = datetime.combine(t0.date(), time(), UTC)
        ts = day + timedelta(days=(7 - day.weekday()) % 7)
        if ts < t0:
            ts += timedelta(days=7)
        while ts <= t1 and len(out) <= MAX_TICKS:
            out.append(ts)
            ts += timedelta(days=7 * size)
        return out
    months = 12 if kind == "year" else size
    y, m = t0.year, t0.month
    while True:
        ts = datetime(y, m, 1, tzinfo=UTC)
        if ts > t1 or len(out) > MAX_TICKS:
            return out
        if ts >= t0 and (m - 1) % months == 0:
            out.append(ts)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def ticks(t0: datetime, t1: datetime) -> list[tuple[datetime, str]]:
    """Labelled ticks for ``[t0, t1]`` on calendar boundaries: the finest step that gives
    at most :data:`MAX_TICKS` of them (and at least two where the range allows)."""
    chosen: list[datetime] = []
    kind = "year"
    for kind, size in _TICK_STEPS:
        chosen = _tick_instants(kind, size, t0, t1)
        if len(chosen) <= MAX_TICKS:
            break
    if kind in ("min", "hour"):
        # The date on the first mark and at midnight only: the rest is the same day.
        return [
            (ts, ts.strftime("%Y-%m-%d %H:%M" if i == 0 or ts.hour == ts.minute == 0 else "%H:%M"))
            for i, ts in enumerate(chosen)
        ]
    fmt = "%Y-%m-%d" if kind in ("day", "week") else "%Y-%m"
    return [(ts, ts.strftime(fmt)) for ts in chosen]


class _Chart:
    """One tag's chart, fed its rows in time order (one pass, bounded memory).

    Rows are bucketed per pixel column of their start, keeping each bucket's maximum. A
    bucket is drawn as a horizontal segment over the time its rows cover (at least one
    pixel), so an hour or a day is a step as wide as it is, and buckets whose rows
    follow each other without a gap or a no-data period are joined: the line breaks
    only where there is no data.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.points = 0
        # Usage buckets: [column, first start, last end, maximum] (times as timestamps).
        self.usage: list[list[Any]] = []
        self.ent: list[list[Any]] = []
        # Shaded runs: [class, first start, last end, label start, label end, state].
        self.shades: list[list[Any]] = []
        self._shade: str | None = None
        # (usage, start text, column) of the first highest usage.
        self.peak: tuple[int, str, int] | None = None

    def add(
        self, col: int, start: str, end: str, ts0: float, ts1: float, row: Sequence[Any]
    ) -> None:
        """One row, in time order; ``col`` is the pixel column of its start."""
        self.points += 1
        usage, ent, state = row[3], row[4], row[6]
        # Buckets: the last one grows while rows fall in its column (inline: per row).
        if usage is not None:
            bs = self.usage
            if bs and bs[-1][0] == col:
                b = bs[-1]
                b[2] = ts1
                if usage > b[3]:  # noqa: PLR1730 - cheaper than max() per row
                    b[3] = usage
            else:
                bs.append([col, ts0, ts1, usage])
            if self.peak is None or usage > self.peak[0]:
                self.peak = (usage, start, col)
        if ent is not None:
            bs = self.ent
            if bs and bs[-1][0] == col:
                b = bs[-1]
                b[2] = ts1
                if ent > b[3]:  # noqa: PLR1730 - cheaper than max() per row
                    b[3] = ent
            else:
                bs.append([col, ts0, ts1, ent])
        shade = _SHADE.get(state)
        if shade is not None:
            if shade == self._shade:
                run = self.shades[-1]
                run[2], run[4] = ts1, end
            else:
                self.shades.append([shade, ts0, ts1, start, end, state])
        self._shade = shade

    def _span(self, sc: _Scale, b: Sequence[Any]) -> tuple[float, float]:
        """A bucket's x extent: the time its rows cover, at least to its column's end."""
        x1 = min(max(sc.x(b[2]), LEFT + b[0] + 1), WIDTH - RIGHT)
        return sc.x(b[1]), x1

    def svg(self, report: Report, sc: _Scale, tick_marks: Sequence[tuple[datetime, str]]) -> str:
        ent_max = max((b[3] for b in self.ent), default=0)
        peak = self.peak[0] if self.peak is not None else 0
        sc.top, step = _nice_top(max(peak, ent_max))
        parts: list[str] = []
        # Grid and axes.
        for v in range(0, sc.top + 1, step):
            y = sc.y(v)
            parts.append(
                f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v}</text>'
            )
        for ts, label in tick_marks:
            x = sc.x(ts.timestamp())
            anchor = "start" if x - LEFT < 45 else "end" if WIDTH - RIGHT - x < 45 else "middle"
            parts.append(
                f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + sc.h}"/>'
                f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{_e(label)}</text>'
            )
        # Shaded out-of-compliance and enforcement runs (contiguous rows merged).
        for shade, ts0, ts1, s_text, e_text, state in self.shades:
            x0, x1 = sc.x(ts0), sc.x(ts1)
            label = f"{state} {s_text} to {e_text}"
            parts.append(
                f'<rect class="{shade}" x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 1):.1f}" '
                f'height="{sc.h}" data-tip="{_e(label)}"/>'
            )
        # Entitlement: a step line over the time its rows cover, to the last row's end.
        if self.ent:
            pts = []
            for b in self.ent:
                x0, x1 = self._span(sc, b)
                y = sc.y(b[3])
                pts.append(f"{x0:.1f},{y:.1f} {x1:.1f},{y:.1f}")
            parts.append(f'<polyline class="ent" points="{" ".join(pts)}"/>')
        # Usage: a step line, broken only where a period is missing or has no data.
        peak_x = None
        if self.usage:
            d: list[str] = []
            prev_end = None
            for b in self.usage:
                x0, x1 = self._span(sc, b)
                y = sc.y(b[3])
                if prev_end is not None and prev_end == b[1]:
                    d.append(f"L{x0:.1f} {y:.1f}L{x1:.1f} {y:.1f}")
                else:
                    # Alone, a segment must still have a length once rounded.
                    x0 = min(x0, x1 - 0.5)
                    d.append(f"M{x0:.1f} {y:.1f}L{x1:.1f} {y:.1f}")
                if self.peak is not None and b[0] == self.peak[2]:
                    peak_x = (x0 + x1) / 2
                prev_end = b[2]
            parts.append(f'<path class="usage" d="{"".join(d)}"/>')
        # Countdown alerts about this tag, marked on top.
        for a in report.alerts:
            if a.mnemonic in COUNTDOWN and self.tag in a.tags:
                x = sc.x(parse_iso(a.time).timestamp())
                parts.append(
                    f'<path class="cd" d="M{x - 4:.1f} {TOP - 10} L{x + 4:.1f} {TOP - 10} '
                    f'L{x:.1f} {TOP - 2} Z" data-tip="{_e(a.time + " " + a.mnemonic)}"/>'
                )
        peak_attrs = ""
        if self.peak is not None and peak_x is not None:
            value, at, _ = self.peak
            cy = sc.y(value)
            tip = f"peak {value} at {at}"
            parts.append(
                f'<circle class="peak" cx="{peak_x:.1f}" cy="{cy:.1f}" r="4" '
                f'data-value="{value}" data-time="{_e(at)}" data-tip="{_e(tip)}"/>'
                f'<text x="{min(peak_x + 7, WIDTH - RIGHT - 60):.1f}" '
                f'y="{max(cy - 6, TOP + 10):.1f}">peak {value}</text>'
            )
            peak_attrs = f' data-peak="{value}" data-peak-at="{_e(at)}"'
        parts.append(
            f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + sc.h}"/>'
            f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + sc.h}" '
            f'y2="{TOP + sc.h}"/>'
        )
        title = f"{self.tag}: usage against entitlement"
        return (
            f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_e(title)}" '
            f'data-tag="{_e(self.tag)}" data-points="{self.points}" '
            f'data-columns="{len(self.usage)}"'
            f'{peak_attrs} xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
            + "".join(parts)
            + "</svg>"
        )


def _legend() -> str:
    return (
        '<p class="legend"><span><i style="background:#1f6feb;height:3px"></i>usage '
        "(highest per period)</span>"
        '<span><i style="border-top:2px dashed #d1242f;height:0"></i>entitlement</span>'
        '<span><i style="background:#fbd38d"></i>out of compliance</span>'
        '<span><i style="background:#f9a8a8"></i>enforcement</span>'
        '<span style="color:#b7791f">▼</span> countdown alert</p>'
    )


def _summary(report: Report) -> str:
    head = "".join(f"<th>{_e(s)}</th>" for s in STATES)
    out = [
        "<table><thead><tr><th>tag</th><th>peak</th><th class='l'>peak at</th>"
        f"<th>intervals</th><th>over entitlement</th>{head}</tr></thead><tbody>"
    ]
    for s in report.summary:
        states = "".join(f"<td>{s.states[st]}</td>" for st in STATES)
        out.append(
            f"<tr><td>{_e(s.tag)}</td><td>{_cell(s.peak)}</td><td class='l'>"
            f"{_e(s.peak_at or '–')}</td><td>{s.intervals}</td><td>{s.over_entitlement}</td>"
            f"{states}</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


class _Table:
    """The row table, fed rows in order: alike periods folded (as the text format does),
    at most :data:`MAX_TABLE_ROWS` lines kept, so its memory is bounded whatever the
    range."""

    def __init__(self) -> None:
        self.out = [
            "<table class='rows'><thead><tr><th>start</th><th>end</th><th class='l'>tag</th>"
            "<th>usage</th><th>entitlement</th><th>reported</th><th class='l'>state</th>"
            "<th>intervals</th><th>no data</th></tr></thead><tbody>"
        ]
        self.lines = 0
        self.previous: list[tuple[Any, ...]] | None = None
        self.folded = 0
        self.last = ""
        self.truncated = False
        self.start: str | None = None
        self.group: list[Sequence[Any]] = []

    def add(self, row: Sequence[Any]) -> None:
        if row[0] != self.start:
            self._period()
            self.start = row[0]
        self.group.append(row)

    def _fold(self) -> None:
        if self.folded:
            self.out.append(
                f"<tr class='fold'><td colspan='9'>+{self.folded} more periods alike, to "
                f"{_e(self.last)}</td></tr>"
            )

    def _period(self) -> None:
        rows, self.group = self.group, []
        if not rows or self.truncated:
            return
        cells = [(r[2], r[3], r[4], r[5], r[6]) for r in rows]
        if cells == self.previous:
            self.folded += 1
            self.last = rows[0][0]
            return
        self._fold()
        self.folded = 0
        self.previous = cells
        if self.lines >= MAX_TABLE_ROWS:
            self.truncated = True
            return
        for r in rows:
            self.out.append(
                f"<tr><td>{_e(r[0])}</td><td>{_e(r[1])}</td><td class='l'>{_e(r[2])}</td>"
                f"<td>{_cell(r[3])}</td><td>{_cell(r[4])}</td>"
                f"<td>{_cell(r[5])}</td><td class='l'>{_e(r[6])}</td>"
                f"<td>{r[7]}</td><td>{r[8]}</td></tr>"
            )
            self.lines += 1

    def html(self) -> str:
        self._period()
        if not self.truncated:
            self._fold()
        self.out.append("</tbody></table>")
        if self.truncated:
            self.out.append(
                f"<p class='meta'>The table stops after {MAX_TABLE_ROWS} lines; "
                "<code>--format csv</code> or <code>json</code> has every row.</p>"
            )
        return "".join(self.out)


def _alerts(report: Report) -> str:
    if not report.alerts:
        return "<p class='meta'>No alerts in this range.</p>"
    out = [
        "<table><thead><tr><th class='l'>time</th><th>severity</th><th class='l'>alert</th>"
        "<th class='l'>message</th></tr></thead><tbody>"
    ]
    for a in report.alerts:
        out.append(
            f"<tr><td class='l'>{_e(a.time)}</td><td class='sev{a.severity}'>{a.severity}</td>"
            f"<td class='l'>{_e(a.mnemonic)}</td><td class='l' style='white-space:normal'>"
            f"{_e(a.message)}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def chart_order(report: Report) -> list[str]:
    """The charts in the order ``status`` and ``usage`` list the tags (the catalogue's),
    not the rows' alphabetical order."""
    try:
        catalogue = tags_of(LicenseType(report.license_type))
    except ValueError:
        catalogue = ()
    first = [t for t in catalogue if t in report.tags]
    return first + [t for t in report.tags if t not in first]


def write(report: Report, out: TextIO) -> None:
    """One pass over the rows (charts bucketed per pixel column, the table bounded), then
    the page: its size does not grow with the range beyond the table's cap."""
    charts = {t: _Chart(t) for t in report.tags}
    table = _Table()
    axis_end = report.end.timestamp()
    sc: _Scale | None = None
    count = 0
    # The rows of one period share its start, and a period's end is usually the next
    # one's start: the last two conversions are kept.
    p_start, p_end, p_ts0, p_ts1 = "", "", 0.0, 0.0
    col = -1
    for row in report.rows:
        start, end = row[0], row[1]
        if start != p_start:
            p_ts0 = p_ts1 if start == p_end else datetime.fromisoformat(start).timestamp()
            p_start = start
            col = -1
        if end != p_end:
            p_ts1 = datetime.fromisoformat(end).timestamp()
            p_end = end
        ts0, ts1 = p_ts0, p_ts1
        if sc is None:
            t0 = report.start.timestamp()
            if report.axis_from_data and ts0 > t0:
                t0 = ts0
            sc = _Scale(t0, axis_end)
        if col < 0:
            col = sc.column(ts0)
        charts[row[2]].add(col, start, end, ts0, ts1, row)
        if not table.truncated:
            table.add(row)
        count += 1
    if sc is None:
        sc = _Scale(report.start.timestamp(), axis_end)
    tick_marks = ticks(datetime.fromtimestamp(sc.t0, UTC), report.end)
    title = f"License consumption report: {report.license_type}"
    out.write(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f"<p class='meta'>{_e(iso(report.start))} to {_e(iso(report.end))}, by "
        f"{_e(report.by)}; {count} rows. Times are UTC. Made by ccx-agent report.</p>"
    )
    out.write(_legend())
    for tag in chart_order(report):
        name = DISPLAY_NAMES.get(tag, "")
        out.write(
            f"<h2>{_e(tag)} <small class='meta'>{_e(name)}</small></h2>"
            f"<div class='chart'>{charts[tag].svg(report, sc, tick_marks)}</div>"
        )
    out.write("<h2>Summary</h2>")
    out.write(_summary(report))
    out.write("<h2>Alerts</h2>")
    out.write(_alerts(report))
    out.write("<h2>Rows</h2>")
    out.write(table.html())
    out.write(f"<div id='tip'></div><script>{_JS}</script></body></html>\n")


def render(report: Report) -> str:
    """The whole page as one string (tests; the command streams it with :func:`write`)."""
    buf = io.StringIO()
    write(report, buf)
    return buf.getvalue()
