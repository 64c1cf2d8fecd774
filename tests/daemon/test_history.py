"""``report`` and ``alerts`` beside a live daemon (the real process, second-scale
intervals), and ``history.retention`` pruning while it runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .conftest import Daemon, DatagramListener, Sim, make_instance, run_cli, wait_until


def _count_intervals(inst: Any) -> int:
    store = inst.store()
    try:
        with store.read() as tx:
            return len(tx.intervals())
    finally:
        store.close()


def test_report_and_alerts_while_the_daemon_runs(sim: Sim, tmp_path: Path) -> None:
    udp = DatagramListener()
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp.address[1]}")
    daemon = Daemon(inst)
    try:
        daemon.wait_event("ready")
        wait_until("five closed intervals", lambda: _count_intervals(inst) >= 5, 30)
        now = datetime.now(UTC)
        window = [
            "--from",
            (now - timedelta(hours=1)).isoformat(),
            "--to",
            (now + timedelta(minutes=1)).isoformat(),
        ]
        done = run_cli(inst.config, "report", *window, "--by", "interval", "--format", "json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        rows = [r for r in doc["rows"] if r["tag"] == "flex-premium-seat"]
        assert len(rows) >= 5
        # The scripted source has 8 agents without skills: standard seats, 8 each interval.
        standard = [r for r in doc["rows"] if r["tag"] == "flex-standard-seat" and r["usage"]]
        assert standard and all(r["usage"] == 8 for r in standard)
        assert "REGISTER_SUCCESS" in [a["mnemonic"] for a in doc["alerts"]]
        done = run_cli(inst.config, "alerts", "--since", window[1], "--json")
        assert done.returncode == 0, done.stderr
        log = json.loads(done.stdout)["alerts"]
        ready = [a for a in log if a["mnemonic"] == "AGENT_READY"]
        assert ready and ready[0]["delivered"] is True
        daemon.assert_alive()
    finally:
        daemon.cleanup()
        udp.close()


def test_retention_prunes_while_the_daemon_runs(sim: Sim, tmp_path: Path) -> None:
    def short(cfg: dict[str, Any]) -> None:
        cfg["history"] = {"retention": "3s"}

    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9", tweak=short)
    daemon = Daemon(inst)
    try:
        daemon.wait_event("ready")
        wait_until("intervals recorded", lambda: _count_intervals(inst) >= 3, 30)
        # Housekeeping runs every second and keeps about 3 s of 1 s intervals (plus any
        # whose report is still in the outbox): the history stays bounded.
        counts = []
        for _ in range(8):
            daemon.wait_event("report", count=len(daemon.events("report")) + 1)
            counts.append(_count_intervals(inst))
        assert max(counts[2:]) <= 6, counts
        daemon.assert_alive()
    finally:
        daemon.cleanup()
