"""``report --format text``: a table people read in a terminal, then the summary.

A year by interval is 35,040 periods; most of them repeat the one before (the same usage,
entitlement and state). A run of periods whose rows equal the previous period's is shown
as one line "(+N more alike, to ...)", so a quiet year stays a screenful while every
change is still a line of its own. ``--format csv`` or ``json`` have every row.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, TextIO

from ccx_agent.history.report import STATES, Report
from ccx_agent.licensing.timeutil import iso

_UNIT = {
    "interval": "intervals",
    "hour": "hours",
    "day": "days",
    "week": "weeks",
    "month": "months",
}


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _table(rows: Sequence[Sequence[str]], right: frozenset[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _widths(report: Report) -> list[int] | None:
    """The first pass: the width of each table column (None: no row). A folded period
    repeats the cells of a period shown, so the widths over every row are those of the
    lines shown."""
    ext = report.extents()
    if ext is None:
        return None
    header = ("start", "tag", "usage", "entitlement", "reported", "state", "intervals", "no_data")
    w = [len(h) for h in header]
    w[0] = max(w[0], ext.start_len)
    w[1] = max(w[1], *map(len, ext.tags))
    w[5] = max(w[5], *map(len, ext.states))
    for col, v in zip((2, 3, 4, 6, 7), ext.top, strict=True):
        w[col] = max(w[col], len(str(v)))
    return w


def _write_table(report: Report, widths: list[int], out: TextIO) -> None:
    """The second pass: the table, alike periods folded, written as it streams."""
    w = widths
    # printf-style: a third cheaper than str.format per line.
    line = f"%-{w[0]}s  %-{w[1]}s  %{w[2]}s  %{w[3]}s  %{w[4]}s  %-{w[5]}s  %{w[6]}s  %{w[7]}s"
    unit = _UNIT[report.by]
    buf: list[str] = [
        line % ("start", "tag", "usage", "entitlement", "reported", "state", "intervals", "no_data")
    ]
    previous: list[Sequence[Any]] | None = None
    folded = 0
    last_start = ""
    group: list[Sequence[Any]] = []

    def period() -> None:
        nonlocal previous, folded, last_start
        cells = [r[2:] for r in group]
        if cells == previous:
            folded += 1
            last_start = group[0][0]
            return
        if folded:
            buf.append(f"  (+{folded} more {unit} alike, to {last_start})")
        folded = 0
        previous = cells
        # The last column is a right-aligned number: a line has no trailing space.
        first = True
        for r in group:
            u, e, p = r[3], r[4], r[5]
            buf.append(
                line
                % (
                    r[0] if first else "",
                    r[2],
                    "-" if u is None else u,
                    "-" if e is None else e,
                    "-" if p is None else p,
                    r[6],
                    r[7],
                    r[8],
                )
            )
            first = False
        if len(buf) >= 1000:
            out.write("\n".join(buf) + "\n")
            buf.clear()

    start = None
    for r in report.rows:
        if r[0] != start:
            if group:
                period()
            group = []
            start = r[0]
        group.append(r)
    if group:
        period()
    if folded:
        buf.append(f"  (+{folded} more {unit} alike, to {last_start})")
    if buf:
        out.write("\n".join(buf) + "\n")


def _tail(report: Report) -> list[str]:
    """The summary and the alerts, after the table."""
    out = ["", "summary:"]
    srows = [["tag", "peak", "peak at", "intervals", "over entitlement", *STATES]]
    for s in report.summary:
        srows.append(
            [
                s.tag,
                _cell(s.peak),
                s.peak_at or "-",
                str(s.intervals),
                str(s.over_entitlement),
                *(str(s.states[st]) for st in STATES),
            ]
        )
    out += _table(srows, frozenset(range(1, len(srows[0]))) - {2})
    out += ["", f"alerts: {len(report.alerts) or 'none'}"]
    for a in report.alerts:
        out.append(f"{a.time}  {a.severity}  {a.mnemonic}: {a.message}")
    return out


def write(report: Report, out: TextIO) -> None:
    """Two passes over the rows (the column widths, then the table), memory flat."""
    out.write(
        f"License consumption report: license type {report.license_type}, "
        f"{iso(report.start)} to {iso(report.end)}, by {report.by}\n\n"
    )
    widths = _widths(report)
    if widths is None:
        for _ in report.rows:  # no row: this pass only counts the summary (of zeros)
            pass
        out.write("no closed intervals in this range\n")
    else:
        _write_table(report, widths, out)
    out.write("\n".join(_tail(report)) + "\n")


def format_text(report: Report) -> str:
    buf = io.StringIO()
    write(report, buf)
    return buf.getvalue()[:-1]
