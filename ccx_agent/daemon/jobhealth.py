"""When a daemon job that keeps failing becomes an alert, and when it is clear again.

A fault of the host (a permission, a full disk, a damaged database) fails a job every
time it runs and nothing retries it away; the watchdog stays green because the scheduler
itself is fine. So a job's second consecutive failure raises AGENT_JOB_FAILED, the alert
repeats at most every ``alerts.repeat`` while the failure stands, and the first success
after an alert raises AGENT_JOB_RECOVERED. One failure alone says nothing: a transient
``database is locked`` must not page anyone.

Pure: the caller passes ``now`` and gets the new health and the alert to raise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ccx_agent.licensing.alerts import Alert, Mnemonic
from ccx_agent.licensing.timeutil import iso

#: The consecutive failure that raises the alert.
ALERT_AFTER = 2


@dataclass(frozen=True, slots=True)
class JobHealth:
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    alerted_at: datetime | None = None

    @property
    def failing(self) -> bool:
        return self.consecutive_failures > 0

    def as_json(self) -> dict[str, Any]:
        """What ``status`` shows (and the database keeps across restarts)."""

        def t(v: datetime | None) -> str | None:
            return None if v is None else iso(v)

        return {
            "consecutive_failures": self.consecutive_failures,
            "failing_since": t(self.failing_since),
            "last_error": self.last_error,
            "last_error_at": t(self.last_error_at),
            "alerted_at": t(self.alerted_at),
        }


def failed(
    health: JobHealth, job: str, now: datetime, error: str, repeat: timedelta
) -> tuple[JobHealth, Alert | None]:
    n = health.consecutive_failures + 1
    since = health.failing_since or now
    health = replace(
        health, consecutive_failures=n, failing_since=since, last_error=error, last_error_at=now
    )
    due = health.alerted_at is None or now - health.alerted_at >= repeat
    if n < ALERT_AFTER or not due:
        return health, None
    alert = Alert(
        Mnemonic.AGENT_JOB_FAILED,
        f"job {job} has failed {n} times in a row since {iso(since)}: {error}",
        params=(("Job", job),),
        data={"job": job, "failures": n, "since": iso(since)},
    )
    return replace(health, alerted_at=now), alert


def succeeded(health: JobHealth, job: str, now: datetime) -> tuple[JobHealth, Alert | None]:
    alert = None
    if health.alerted_at is not None:
        alert = Alert(
            Mnemonic.AGENT_JOB_RECOVERED,
            f"job {job} ran again after {health.consecutive_failures} failure(s) since "
            f"{iso(health.failing_since) if health.failing_since else '?'}",
            params=(("Job", job),),
            data={"job": job},
        )
    # The last error stays on show (``status``): "failed at 03:00, fine since".
    return JobHealth(last_error=health.last_error, last_error_at=health.last_error_at), alert
