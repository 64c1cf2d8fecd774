"""``report --format csv``: RFC 4180 (CRLF line ends, quoted only where needed), one row
per (period, tag), the header a contract: spreadsheets and CUIC exports are read by it."""

from __future__ import annotations

import csv
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


def write(report: Report, out: TextIO) -> None:
    """Write the rows; an unknown value (no data, nothing reported) is an empty field."""
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(HEADER)
    # The rows are tuples in the header's order, streamed as they are aggregated.
    w.writerows(report.rows)
