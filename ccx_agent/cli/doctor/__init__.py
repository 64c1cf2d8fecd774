"""``ccx-agent doctor``: every check an admin would make by hand, in one run.

Each check finds one thing (the config, the files, the database, DNS, TCP, TLS, the
clock, the SSM protocol, the source, syslog, the daemon, the timers) and says it in one
line, ``PASS|WARN|FAIL|SKIP  <check>  <finding>``, with one more line saying how to fix a
WARN or a FAIL. The checks run in that order and never stop at the first failure: a
check that depends on one that failed (TLS after TCP) is a SKIP naming the reason, so
the first FAIL is the one to fix first. Nothing is written anywhere: the database is
opened read-only, the source is read but not recorded, SSM gets one PING (a message that
changes nothing on the server), syslog gets a line only with ``--send-test-alert``.

Network checks have short timeouts and share one budget (:data:`NETWORK_BUDGET_S`), so a
run with SSM unreachable still ends in well under 30 seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from ccx_agent.config.schema import Config
from ccx_agent.errors import EX_FAILED
from ccx_agent.ssm.port import Credentials
from ccx_agent.store.db import Store

#: Each network operation (a resolution, a connect, a handshake, an answer) waits at most
#: this long.
NET_TIMEOUT_S = 5.0
#: All network checks together: one that would start later is not run (a WARN: what it
#: would have checked is not known), so a host where everything hangs still gets its
#: answer in < 30 s.
NETWORK_BUDGET_S = 22.0
#: One network check, all its operations together, is cut after this long (or when the
#: budget is spent, if sooner): a server that drips its answer a byte at a time never
#: trips a per-operation timeout, and would hold a check (and the run) for minutes.
CHECK_BUDGET_S = 8.0
#: The checks that talk over the network, bounded as above.
NETWORK_CHECKS = frozenset({"dns", "tcp", "tls", "clock", "ssm", "source", "syslog"})


class Result(StrEnum):
    PASS = "PASS"  # noqa: S105 - a check's result, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


#: Worst first, for combining several findings of one check.
_RANK = {Result.FAIL: 3, Result.WARN: 2, Result.PASS: 1, Result.SKIP: 0}


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome; ``fix`` is said for WARN and FAIL only."""

    name: str
    result: Result
    finding: str
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "result": self.result.value,
            "finding": self.finding,
            "fix": self.fix,
        }

    def lines(self) -> list[str]:
        out = [f"{self.result.value}  {self.name}  {self.finding}"]
        if self.fix and self.result in (Result.WARN, Result.FAIL):
            out.append(f"      fix: {self.fix}")
        return out


def passed(name: str, finding: str) -> Finding:
    return Finding(name, Result.PASS, finding)


def warned(name: str, finding: str, fix: str) -> Finding:
    return Finding(name, Result.WARN, finding, fix)


def failed(name: str, finding: str, fix: str) -> Finding:
    return Finding(name, Result.FAIL, finding, fix)


def skipped(name: str, why: str) -> Finding:
    return Finding(name, Result.SKIP, why)


def combine(name: str, parts: Sequence[Finding], ok: str) -> Finding:
    """Several findings of one check as one line: the worst result, every problem's
    finding (``; ``-joined) and each distinct fix; ``ok`` when there is none."""
    bad = [p for p in parts if p.result in (Result.WARN, Result.FAIL)]
    if not bad:
        return passed(name, ok)
    worst = max(bad, key=lambda p: _RANK[p.result]).result
    fixes = list(dict.fromkeys(p.fix for p in bad if p.fix))
    return Finding(name, worst, "; ".join(p.finding for p in bad), "; ".join(fixes) or None)


@dataclass
class Context:
    """What the checks learn and hand on to the ones after them."""

    path: Path
    now: datetime
    send_test_alert: bool = False
    cfg: Config | None = None
    #: The state database, opened read-only by the ``database`` check (closed at the end).
    store: Store | None = None
    #: ``status --json``'s document, when the database could be read.
    status: dict[str, Any] | None = None
    credentials: Credentials | None = None
    results: dict[str, Finding] = field(default_factory=dict)
    deadline: float = field(default_factory=lambda: time.monotonic() + NETWORK_BUDGET_S)

    def timeout(self) -> float:
        """How long the next network operation may wait (0 once the budget is spent)."""
        return max(0.0, min(NET_TIMEOUT_S, self.deadline - time.monotonic()))

    def result(self, name: str) -> Result | None:
        found = self.results.get(name)
        return None if found is None else found.result


Check = Callable[[Context], Finding]


def _checks() -> list[tuple[str, Check]]:
    # Imported here: the network and source checks pull in requests and the sources.
    from ccx_agent.cli.doctor import local, network, peers  # noqa: PLC0415

    return [
        ("config", local.config),
        ("files", local.files),
        ("database", local.database),
        ("dns", network.dns),
        ("tcp", network.tcp),
        ("tls", network.tls),
        ("clock", network.clock),
        ("ssm", network.ssm),
        ("source", peers.source),
        ("syslog", peers.syslog),
        ("daemon", local.daemon),
        ("timers", local.timers),
    ]


#: The check names, in the order they run (a contract: scripts read them).
NAMES = (
    "config",
    "files",
    "database",
    "dns",
    "tcp",
    "tls",
    "clock",
    "ssm",
    "source",
    "syslog",
    "daemon",
    "timers",
)


def run(
    path: Path,
    *,
    send_test_alert: bool = False,
    now: datetime | None = None,
    each: Callable[[Finding], None] | None = None,
) -> list[Finding]:
    """Run every check in order; ``each`` sees each finding as soon as it is made."""
    ctx = Context(path, now or datetime.now(UTC), send_test_alert)
    found: list[Finding] = []
    try:
        for name, check in _checks():
            try:
                finding = _bounded(name, check, ctx)
            except Exception as exc:  # a check's own bug must not hide the other checks
                finding = failed(
                    name,
                    f"the check itself failed ({type(exc).__name__}: {exc})",
                    "report it with the output of 'ccx-agent support-bundle'",
                )
            ctx.results[name] = finding
            found.append(finding)
            if each is not None:
                each(finding)
    finally:
        if ctx.store is not None:
            ctx.store.close()
    return found


def _bounded(name: str, check: Check, ctx: Context) -> Finding:
    """Run ``check``; a network one inside a deadline that cuts the sockets it opens
    (:mod:`ccx_agent.net.deadline`): at most :data:`CHECK_BUDGET_S`, never past the budget."""
    if name not in NETWORK_CHECKS:
        return check(ctx)
    from ccx_agent.net.deadline import Deadlines  # noqa: PLC0415 - only for these checks

    left = min(CHECK_BUDGET_S, ctx.deadline - time.monotonic())
    with Deadlines().exchange(max(0.5, left)):
        return check(ctx)


def main(
    path: Path,
    *,
    as_json: bool = False,
    send_test_alert: bool = False,
    out: TextIO | None = None,
    now: datetime | None = None,
) -> int:
    """``ccx-agent doctor``: exit 0 when nothing FAILed, 1 otherwise."""
    out = out or sys.stdout

    def show(finding: Finding) -> None:
        for line in finding.lines():
            print(line, file=out, flush=True)

    found = run(path, send_test_alert=send_test_alert, now=now, each=None if as_json else show)
    if as_json:
        json.dump({"checks": [f.as_json() for f in found]}, out, indent=2)
        out.write("\n")
    return EX_FAILED if any(f.result is Result.FAIL for f in found) else 0
