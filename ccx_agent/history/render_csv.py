"""``report --format csv``: RFC 4180 (CRLF line ends, quoted only where needed), one row
per (period, tag), the header a contract: spreadsheets and CUIC exports are read by it.

Rows are written as they stream, by one format string each: instants (``...Z``),
compliance states and numbers never need quoting, and each tag is quoted (or not) once
by the csv module, so the bytes are those of ``csv.writer`` (the tests check it)."""

from __future__ import annotations

import csv
import io
from typing import TextIO

from ccx_agent.history.report import Report

HEADER = (
    "start",
    "end",
    "tag",
    "usage",
    "entitlement",
    "reported",
    "state",
    "intervals",
    "no_data",
)
#: Rows joined per write.
CHUNK = 1000


def _field(text: str) -> str:
    """``text`` as csv.writer writes one field (quoted where it must be)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text, ""])
    return buf.getvalue()[:-1]


def write(report: Report, out: TextIO) -> None:
    """Write the rows; an unknown value (no data, nothing reported) is an empty field."""
    out.write(",".join(HEADER) + "\r\n")
    tags = {t: _field(t) for t in report.tags}
    buf: list[str] = []
    add = buf.append
    for s, e, tag, usage, ent, rep, state, n, nd in report.rows:
        add(
            f"{s},{e},{tags[tag]},{'' if usage is None else usage},"
            f"{'' if ent is None else ent},{'' if rep is None else rep},{state},{n},{nd}\r\n"
        )
        if len(buf) >= CHUNK:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))
