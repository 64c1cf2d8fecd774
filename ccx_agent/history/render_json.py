"""``report --format json``: the documented shape of :meth:`Report.as_json`, compact (a
year by interval is 105,120 rows, read by scripts; ``jq .`` indents it)."""

from __future__ import annotations

import json
from typing import TextIO

from ccx_agent.history.report import Report


def write(report: Report, out: TextIO) -> None:
    out.write(json.dumps(report.as_json(), separators=(",", ":")))
    out.write("\n")
