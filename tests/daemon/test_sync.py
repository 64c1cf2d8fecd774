"""``ccx-agent sync`` beside a running daemon and without one: every finished interval is
closed once, every report delivered once, whoever sends it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from ccx_agent.licensing.timeutil import iso
from tests.daemon.conftest import (
    Daemon,
    DatagramListener,
    Instance,
    Sim,
    make_instance,
    run_cli,
    wait_until,
)
from tests.ssm.servers import free_port

STEP = 2.0  # report.interval of base_config (seconds), aligned to the epoch


def _next_boundary() -> float:
    """Wait until the report interval running now has ended (wall-clock time must pass
    for an interval to finish; no timer of the agent is waited for)."""
    end = (int(time.time() / STEP) + 1) * STEP + 0.05
    return wait_until("the interval to end", lambda: time.time() >= end, STEP + 2, step=0.02)


def _queued(inst: Instance) -> dict[str, dict[str, int]]:
    """The reports the database recorded as due: id -> usage."""
    store = inst.store()
    try:
        with store.read() as tx:
            rows = [r for r in tx.intervals() if r.queued]
            return {
                f"{inst.piid}:{iso(r.start)}": {
                    t: v.reported for t, v in r.tags.items() if v.reported is not None
                }
                for r in rows
            }
    finally:
        store.close()


def _delivered(sim: Sim, inst: Instance) -> dict[str, dict[str, int]]:
    reports = sim.reports(inst.piid)
    ids = [r["id"] for r in reports]
    assert len(ids) == len(set(ids)), "the server stored a report twice"
    return {r["id"]: r["usage"] for r in reports}


def test_sync_beside_a_running_daemon_doubles_nothing(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    daemon = Daemon(inst)
    daemon.wait_event("ready")
    said = []
    for _ in range(3):
        _next_boundary()
        done = run_cli(inst.config, "sync")
        assert done.returncode == 0, done.stderr
        said.append(done.stdout.strip())
        assert done.stdout.strip().endswith("none pending"), done.stdout
    assert daemon.stop()[0] == 0
    # Both sent; each interval is in the database once and at the server once, with
    # the same usage.
    queued = _queued(inst)
    assert len(queued) >= 3
    done = run_cli(inst.config, "sync")
    assert done.returncode == 0, done.stderr
    assert _delivered(sim, inst) == _queued(inst)
    assert inst.status(in_process=True)["outbox"] == 0
    for line in said:
        assert " interval(s) closed, " in line and " report(s) delivered, " in line


def test_sync_without_a_daemon_and_with_ssm_down(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    daemon = Daemon(inst)
    daemon.wait_event("ready")
    # Stop right after a sample of a new interval: that interval stays open, with data.
    _next_boundary()
    started = datetime.now(UTC).timestamp()
    wait_until(
        "a sample in this interval",
        lambda: (
            (s := inst.status(in_process=True)["last_sample_at"]) is not None
            and datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
            >= int(started / STEP) * STEP
        ),
        5,
    )
    assert daemon.stop()[0] == 0
    good = dict(inst.cfg)
    bad = {
        **inst.cfg,
        "transport": {**inst.cfg["transport"], "url": f"https://127.0.0.1:{free_port()}/x"},
    }
    inst.write(bad)
    _next_boundary()
    down = run_cli(inst.config, "sync")
    assert down.returncode == 1, down.stdout + down.stderr
    assert " report(s) delivered, " in down.stderr and " still pending: " in down.stderr
    assert "Traceback" not in down.stderr
    inst.write(good)
    up = run_cli(inst.config, "sync")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip().endswith("none pending")
    assert _delivered(sim, inst) == _queued(inst)
