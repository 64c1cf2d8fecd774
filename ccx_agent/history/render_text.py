"""``report --format text``: a table people read in a terminal, then the summary.

A year by interval is 35,040 periods; most of them repeat the one before (the same usage,
entitlement and state). A run of periods whose rows equal the previous period's is shown
as one line "(+N more alike, to ...)", so a quiet year stays a screenful while every
change is still a line of its own. ``--format csv`` or ``json`` have every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import TextIO

from ccx_agent.history.report import STATES, Report, Row
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


def format_text(report: Report) -> str:
    out = [
        f"License consumption report: license type {report.license_type}, "
        f"{iso(report.start)} to {iso(report.end)}, by {report.by}",
        "",
    ]
    if not report.rows:
        out.append("no closed intervals in this range")
    else:
        header = [
            "start",
            "tag",
            "usage",
            "entitlement",
            "reported",
            "state",
            "intervals",
            "no_data",
        ]
        table: list[list[str] | str] = [header]
        previous: list[tuple[str, int | None, int | None, int | None, str, int, int]] | None = None
        folded = 0
        last_start = ""

        def close_run() -> None:
            if folded:
                table.append(f"  (+{folded} more {_UNIT[report.by]} alike, to {last_start})")

        for start, group in groupby(report.rows, key=lambda r: r.start):
            rows: list[Row] = list(group)
            cells = [
                (r.tag, r.usage, r.entitlement, r.reported, r.state, r.intervals, r.no_data)
                for r in rows
            ]
            if cells == previous:
                folded += 1
                last_start = start
                continue
            close_run()
            folded = 0
            previous = cells
            for i, r in enumerate(rows):
                table.append(
                    [
                        start if i == 0 else "",
                        r.tag,
                        _cell(r.usage),
                        _cell(r.entitlement),
                        _cell(r.reported),
                        r.state,
                        str(r.intervals),
                        str(r.no_data),
                    ]
                )
        close_run()
        # A fold line is as wide as it is: it does not widen the first column.
        lines = iter(_table([r for r in table if isinstance(r, list)], frozenset({2, 3, 4, 6, 7})))
        out += [r if isinstance(r, str) else next(lines) for r in table]
    out += ["", "summary:"]
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
    return "\n".join(out)


def write(report: Report, out: TextIO) -> None:
    out.write(format_text(report) + "\n")
