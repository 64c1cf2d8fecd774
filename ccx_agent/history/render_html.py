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
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import groupby
from typing import TextIO

from ccx_agent.history.report import COUNTDOWN, STATES, Report, Row
from ccx_agent.licensing.catalogue import DISPLAY_NAMES
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
    def __init__(self, start: datetime, end: datetime, top: int) -> None:
        self.t0 = start.timestamp()
        self.span = max(1.0, end.timestamp() - self.t0)
        self.top = max(1, top)
        self.w = WIDTH - LEFT - RIGHT
        self.h = HEIGHT - TOP - BOTTOM

    def x(self, ts: float) -> float:
        return LEFT + min(max((ts - self.t0) / self.span, 0.0), 1.0) * self.w

    def y(self, value: float) -> float:
        return TOP + self.h - (value / self.top) * self.h

    def column(self, ts: float) -> int:
        return min(int((ts - self.t0) / self.span * self.w), self.w - 1)


def _nice_top(peak: int) -> tuple[int, int]:
    """The top of the value axis and its tick step: round numbers, at most 5 steps."""
    top = max(1, int(peak * 1.1) + 1)
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000):
        if -(-top // step) <= 5:
            return -(-top // step) * step, step
    step = 10 ** len(str(top // 5))
    return -(-top // step) * step, step


def _chart(report: Report, tag: str, rows: Sequence[Row]) -> str:
    """One tag's SVG: usage (max per pixel column), entitlement, shaded states, alerts."""
    times = [parse_iso(r.start).timestamp() for r in rows]
    ends = [parse_iso(r.end).timestamp() for r in rows]
    peak_i = None
    for i, r in enumerate(rows):
        if r.usage is not None and (peak_i is None or r.usage > (rows[peak_i].usage or 0)):
            peak_i = i
    ent_max = max((r.entitlement or 0 for r in rows), default=0)
    peak = rows[peak_i].usage if peak_i is not None else None
    top, step = _nice_top(max(peak or 0, ent_max))
    sc = _Scale(report.start, report.end, top)
    # Max per pixel column: (usage, index of the row that has it); entitlement the same.
    usage_cols: dict[int, tuple[int, int]] = {}
    ent_cols: dict[int, int] = {}
    for i, r in enumerate(rows):
        col = sc.column(times[i])
        if r.usage is not None:
            got = usage_cols.get(col)
            if got is None or r.usage > got[0]:
                usage_cols[col] = (r.usage, i)
        if r.entitlement is not None:
            ent_cols[col] = max(ent_cols.get(col, 0), r.entitlement)
    parts: list[str] = []
    # Grid and axes.
    for v in range(0, top + 1, step):
        y = sc.y(v)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v}</text>'
        )
    for k in range(5):
        ts = sc.t0 + sc.span * k / 4
        x = sc.x(ts)
        label = iso(datetime.fromtimestamp(ts, report.start.tzinfo))[:16].replace("T", " ")
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{_e(label)}</text>'
        )
    # Shaded out-of-compliance and enforcement runs (contiguous rows merged).
    for state, run in groupby(range(len(rows)), key=lambda i: _SHADE.get(rows[i].state)):
        if state is None:
            continue
        idx = list(run)
        x0, x1 = sc.x(times[idx[0]]), sc.x(ends[idx[-1]])
        label = f"{rows[idx[0]].state} {rows[idx[0]].start} to {rows[idx[-1]].end}"
        parts.append(
            f'<rect class="{state}" x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{sc.h}" data-tip="{_e(label)}"/>'
        )
    # Entitlement: a step line per column.
    if ent_cols:
        pts = []
        for col in sorted(ent_cols):
            y = sc.y(ent_cols[col])
            pts.append(f"{LEFT + col:.1f},{y:.1f} {LEFT + col + 1:.1f},{y:.1f}")
        parts.append(f'<polyline class="ent" points="{" ".join(pts)}"/>')
    # Usage: a path broken where columns have no data.
    if usage_cols:
        d: list[str] = []
        prev = None
        for col in sorted(usage_cols):
            cmd = "L" if prev is not None and col - prev <= 1 else "M"
            d.append(f"{cmd}{LEFT + col + 0.5:.1f} {sc.y(usage_cols[col][0]):.1f}")
            prev = col
        parts.append(f'<path class="usage" d="{" ".join(d)}"/>')
    # Countdown alerts about this tag, marked on top.
    for a in report.alerts:
        if a.mnemonic in COUNTDOWN and tag in a.tags:
            x = sc.x(parse_iso(a.time).timestamp())
            parts.append(
                f'<path class="cd" d="M{x - 4:.1f} {TOP - 10} L{x + 4:.1f} {TOP - 10} '
                f'L{x:.1f} {TOP - 2} Z" data-tip="{_e(a.time + " " + a.mnemonic)}"/>'
            )
    peak_attrs = ""
    if peak_i is not None:
        r = rows[peak_i]
        col = sc.column(times[peak_i])
        cx, cy = LEFT + col + 0.5, sc.y(r.usage or 0)
        tip = f"peak {r.usage} at {r.start}"
        parts.append(
            f'<circle class="peak" cx="{cx:.1f}" cy="{cy:.1f}" r="4" data-value="{r.usage}" '
            f'data-time="{_e(r.start)}" data-tip="{_e(tip)}"/>'
            f'<text x="{min(cx + 7, WIDTH - RIGHT - 60):.1f}" y="{max(cy - 6, TOP + 10):.1f}">'
            f"peak {r.usage}</text>"
        )
        peak_attrs = f' data-peak="{r.usage}" data-peak-at="{_e(r.start)}"'
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + sc.h}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + sc.h}" '
        f'y2="{TOP + sc.h}"/>'
    )
    title = f"{tag}: usage against entitlement"
    return (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_e(title)}" '
        f'data-tag="{_e(tag)}" data-points="{len(rows)}" data-columns="{len(usage_cols)}"'
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


def _rows(report: Report) -> str:
    out = [
        "<table class='rows'><thead><tr><th>start</th><th>end</th><th class='l'>tag</th>"
        "<th>usage</th><th>entitlement</th><th>reported</th><th class='l'>state</th>"
        "<th>intervals</th><th>no data</th></tr></thead><tbody>"
    ]
    lines = 0
    previous: list[tuple[str, int | None, int | None, int | None, str]] | None = None
    folded = 0
    last = ""
    truncated = False

    def fold() -> None:
        if folded:
            out.append(
                f"<tr class='fold'><td colspan='9'>+{folded} more periods alike, to "
                f"{_e(last)}</td></tr>"
            )

    for start, group in groupby(report.rows, key=lambda r: r.start):
        rows = list(group)
        cells = [(r.tag, r.usage, r.entitlement, r.reported, r.state) for r in rows]
        if cells == previous:
            folded += 1
            last = start
            continue
        fold()
        folded = 0
        previous = cells
        if lines >= MAX_TABLE_ROWS:
            truncated = True
            break
        for r in rows:
            out.append(
                f"<tr><td>{_e(r.start)}</td><td>{_e(r.end)}</td><td class='l'>{_e(r.tag)}</td>"
                f"<td>{_cell(r.usage)}</td><td>{_cell(r.entitlement)}</td>"
                f"<td>{_cell(r.reported)}</td><td class='l'>{_e(r.state)}</td>"
                f"<td>{r.intervals}</td><td>{r.no_data}</td></tr>"
            )
            lines += 1
    if not truncated:
        fold()
    out.append("</tbody></table>")
    if truncated:
        out.append(
            f"<p class='meta'>The table stops after {MAX_TABLE_ROWS} lines; "
            "<code>--format csv</code> or <code>json</code> has every row.</p>"
        )
    return "".join(out)


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


def render(report: Report) -> str:
    by_tag: dict[str, list[Row]] = {t: [] for t in report.tags}
    for r in report.rows:
        by_tag[r.tag].append(r)
    title = f"License consumption report: {report.license_type}"
    charts: list[str] = []
    for tag in report.tags:
        name = DISPLAY_NAMES.get(tag, "")
        charts.append(
            f"<h2>{_e(tag)} <small class='meta'>{_e(name)}</small></h2>"
            f"<div class='chart'>{_chart(report, tag, by_tag[tag])}</div>"
        )
    parts: Iterable[str] = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>{_e(iso(report.start))} to {_e(iso(report.end))}, by "
        f"{_e(report.by)}; {len(report.rows)} rows. Times are UTC. Made by ccx-agent report.</p>",
        _legend(),
        *charts,
        "<h2>Summary</h2>",
        _summary(report),
        "<h2>Alerts</h2>",
        _alerts(report),
        "<h2>Rows</h2>",
        _rows(report),
        "<div id='tip'></div>",
        f"<script>{_JS}</script></body></html>\n",
    )
    return "".join(parts)


def write(report: Report, out: TextIO) -> None:
    out.write(render(report))
