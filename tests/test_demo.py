"""`ccx-agent demo` (what `make demo` runs): the whole life, in order, and nothing left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    "none lost, none counted twice",
]


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
    assert list(scratch.iterdir()) == []
