"""``ccx-agent alerts``: every alert the instance raised, oldest first, with the lines as
they were sent (in the style configured when the alert was raised) and whether the daemon
has delivered it to syslog yet."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ccx_agent.licensing.timeutil import iso
from ccx_agent.store.db import AlertRow

LogEntry = tuple[AlertRow, bool]


def as_json(entries: Sequence[LogEntry], since: datetime) -> dict[str, Any]:
    return {
        "since": iso(since),
        "alerts": [
            {
                "id": a.id,
                "time": iso(a.time),
                "severity": a.severity,
                "mnemonic": a.mnemonic,
                "tags": list(a.tags),
                "detail": a.detail,
                "lines": list(a.lines),
                "delivered": delivered,
            }
            for a, delivered in entries
        ],
    }


def format_text(entries: Sequence[LogEntry], since: datetime) -> str:
    if not entries:
        return f"no alerts since {iso(since)}"
    out = [f"{len(entries)} alert(s) since {iso(since)}, oldest first:"]
    width = max(len(a.mnemonic) for a, _ in entries)
    for a, delivered in entries:
        where = "delivered to syslog" if delivered else "NOT YET DELIVERED to syslog"
        out.append(f"{iso(a.time)}  severity {a.severity}  {a.mnemonic.ljust(width)}  {where}")
        out += [f"    {line}" for line in a.lines]
    return "\n".join(out)
