"""What the daemon logs of a source's notes (issue 25, item 15): a state that is not a
documented Finesse state is said once per state and run, not at every sample. A real
``ccx-agent run`` with a file source, sampling every second; its metrics say how many
samples ran, its JSON log what it said.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.daemon.conftest import Daemon, Sim, make_instance, wait_until
from tests.daemon.test_metrics import samples

SNAPSHOT = {
    "agents": [
        {"id": "a1", "state": "READY"},
        {"id": "a2", "state": "ON_BREAK"},
        {"id": "a3", "state": "ON_BREAK"},
        {"id": "a4", "state": "AWAY"},
    ]
}


def test_an_unknown_finesse_state_is_logged_once_per_state_and_run(
    sim: Sim, tmp_path: Path
) -> None:
    snap = tmp_path / "agents.json"
    snap.write_text(json.dumps(SNAPSHOT), encoding="utf-8")

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["source"] = {"kind": "file", "path": str(snap)}

    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9", register=False, tweak=tweak)
    daemon = Daemon(inst)
    try:
        url = daemon.metrics_url()
        key = ("ccx_source_samples_total", (("outcome", "ok"),))
        wait_until("four good samples", lambda: samples(url).get(key, 0) >= 4, 30)
        notes = [d["note"] for d in daemon.events("source note")]
    finally:
        daemon.stop()
    assert len(notes) == 2, notes
    assert "state 'ON_BREAK' is not a known Finesse state" in notes[0]
    assert "state 'AWAY' is not a known Finesse state" in notes[1]
