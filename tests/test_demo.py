"""`ccx-agent demo` (what `make demo` runs): the whole life, in order, and nothing left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ccx_agent.cli.demo import Delivery

MILESTONES = [
    "-REGISTER_SUCCESS: [",
    "-AGENT_READY: [",
    "metrics: http://127.0.0.1:",
    "-AUTH_RENEW_SUCCESS: [",
    "in =8 seconds",
    "in =6 seconds",
    "in =4 seconds",
    "-SYSTEM_TO_ENTER_OOC_STATE_SHORTLY: [",
    "-SYSTEM_IN_OOC_STATE: [",
    'metrics: ccx_license_compliance{state="OUT_OF_COMPLIANCE",tag="flex-standard-seat"} 1.0',
    "locked 13 -> buying the 3 missing",
    "-SYSTEM_BACK_IN_COMPLIANCE: [",
    "-ID_CERT_RENEW_SUCCESS: [",
    "the daemon stopped cleanly (exit 0)",
    "$ ccx-agent status",
    "the agent queued ",
]
#: The demo's last line: counted from the agent's and the simulator's databases.
COUNTED = re.compile(
    r"the agent queued (\d+) usage reports \((\d+) still in its outbox\); the simulator "
    r"holds (\d+) from this instance, for (\d+) distinct intervals: (\d+) lost, (\d+) "
    r"counted twice"
)


def test_demo_runs_the_whole_life_and_leaves_nothing(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    env.pop("NOTIFY_SOCKET", None)
    done = subprocess.run(
        [sys.executable, "-m", "ccx_agent", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    at = 0
    for milestone in MILESTONES:
        found = out.find(milestone, at)
        assert found >= 0, f"{milestone!r} missing or out of order in:\n{out}"
        at = found
    # The seed document's UC line, byte for byte (node uccxpubsu1, default strings).
    assert (
        "%UC_LIB_LICENSE-1-SYSTEM_IN_OOC_STATE: %[AppID=Cisco Unified CCX Cluster View "
        "Daemon][ClusterID=][NodeID=uccxpubsu1]: This Product Instance is currently in Out "
        "of Compliance state because of insufficient licenses."
    ) in out
    assert "IN_COMPLIANCE" in out.split("$ ccx-agent status", 1)[1]
    counted = COUNTED.search(out)
    assert counted, out
    queued, waiting, stored, intervals, lost, twice = map(int, counted.groups())
    # 13 agents from 6 s on, out of compliance at 19 s, back at 23 s: about 10 intervals
    # of 2 s were reported before the stop, every one of them once.
    assert stored >= 8
    assert (intervals, lost, twice) == (stored, 0, 0)
    assert queued == stored + waiting
    assert list(scratch.iterdir()) == []


P = "PIID-1"


def _report(n: int) -> tuple[str, str]:
    start = f"2027-01-04T08:00:{2 * n:02d}Z"
    return f"{P}:{start}", start


def test_delivery_counts_what_was_lost_and_what_was_counted_twice() -> None:
    """The demo's last line is computed: it says a loss or a double count when there is one."""
    queued = tuple(_report(n)[0] for n in range(4))
    clean = Delivery(queued, (queued[3],), tuple(_report(n) for n in range(3)))
    assert clean.exactly_once
    assert clean.summary() == (
        "the agent queued 4 usage reports (1 still in its outbox); the simulator holds 3 "
        "from this instance, for 3 distinct intervals: 0 lost, 0 counted twice"
    )
    lost = Delivery(queued, (), tuple(_report(n) for n in range(3)))
    assert (lost.exactly_once, lost.lost, lost.twice) == (False, [queued[3]], [])
    # The same interval stored under a second id: counted twice, and an id never queued.
    again = ("other-id", _report(1)[1])
    twice = Delivery(queued, (), (*(_report(n) for n in range(4)), again))
    assert (twice.exactly_once, twice.lost, twice.twice) == (False, [], [_report(1)[1]])
    assert twice.unknown == ["other-id"]
    assert twice.problems() == (f"counted twice: {_report(1)[1]}; never queued: other-id")
    assert not Delivery((), (), ()).exactly_once
