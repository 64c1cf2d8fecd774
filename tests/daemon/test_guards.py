"""What the daemon refuses: reloads that need a restart, a license type that differs from
the registration, a stuck job (the watchdog stops), and a demo that leaves nothing behind."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ccx_agent import config as config_mod
from ccx_agent.daemon import Daemon as InProcessDaemon
from ccx_agent.daemon import JobStats, boottime
from ccx_agent.sdnotify import Notifier

from .conftest import (
    CAPTURED,
    Daemon,
    DatagramListener,
    Sim,
    make_instance,
    run_cli,
    syslog_messages,
    wait_until,
)


def test_reload_that_changes_the_report_interval_is_refused(sim: Sim, tmp_path: Path) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9")
    daemon = Daemon(inst)
    daemon.wait_event("ready")
    cfg = copy.deepcopy(inst.cfg)
    cfg["report"]["interval"] = "2s"
    inst.write(cfg)
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_event("reload refused: this key needs a restart, keeping the old config")
    assert refused[0]["key"] == "report.interval"
    count = len(daemon.events("report"))
    wait_until("reports on the old interval", lambda: len(daemon.events("report")) > count, 20)
    code, _ = daemon.stop()
    assert code == 0


def test_a_license_type_other_than_the_registered_one_exits_78(sim: Sim, tmp_path: Path) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9")
    cfg = copy.deepcopy(inst.cfg)
    cfg["license"]["type"] = "perpetual-premium"
    inst.write(cfg)
    done = subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", str(inst.config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        check=False,
    )
    CAPTURED.extend([done.stdout, done.stderr])
    assert done.returncode == 78, done.stderr
    assert "deregister" in done.stderr and "perpetual-premium" in done.stderr
    # AGENT_INIT_FAILED is in the database's alert log, for the next start to deliver too.
    store = inst.store()
    try:
        with store.read() as tx:
            assert [a.mnemonic for a in tx.alerts()][-1] == "AGENT_INIT_FAILED"
    finally:
        store.close()


def test_a_stuck_job_stops_the_watchdog_pings(sim: Sim, tmp_path: Path) -> None:
    """In process: the heartbeat pings while every job is fresh and stops when one has run
    for too long, so that systemd restarts the daemon (a real notify socket listens)."""
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9", register=False)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(2.0)
    cfg = config_mod.load(inst.config)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    daemon = InProcessDaemon(inst.config, notifier)
    daemon.open(cfg)
    try:
        daemon.watchdog_every = 1.0
        daemon.heartbeat(daemon.run_on)
        assert notify.recv(100) == b"WATCHDOG=1"
        daemon.stats["report"] = JobStats(running_since=boottime() - 3600)
        daemon.heartbeat(daemon.run_on)
        notify.settimeout(0.3)
        try:
            got = notify.recv(100)
        except TimeoutError:
            got = b""
        assert got == b""
        daemon.stats["report"] = JobStats()
        daemon.heartbeat(daemon.run_on)
        notify.settimeout(2.0)
        assert notify.recv(100) == b"WATCHDOG=1"
        # A job that keeps failing for as long is as bad as a stuck one.
        daemon.stats["report"] = JobStats(failing_since=boottime() - 3600)
        daemon.heartbeat(daemon.run_on)
        notify.settimeout(0.3)
        try:
            got = notify.recv(100)
        except TimeoutError:
            got = b""
        assert got == b""
        daemon.stats["report"] = JobStats(failing_since=boottime() - 5)
        daemon.heartbeat(daemon.run_on)
        notify.settimeout(2.0)
        assert notify.recv(100) == b"WATCHDOG=1"
    finally:
        daemon.run_on.sink.close(0.5)
        assert daemon.store is not None
        daemon.store.close()
        notify.close()


def test_the_cli_leaves_its_alerts_for_the_daemon_to_send(sim: Sim, tmp_path: Path) -> None:
    """`renew auth` by hand: the daemon's next housekeeping delivers its alert to syslog."""
    listener = DatagramListener()
    try:
        inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{listener.port}")
        daemon = Daemon(inst)
        daemon.wait_event("ready")
        done = run_cli(inst.config, "renew", "auth")
        CAPTURED.extend([done.stdout, done.stderr])
        assert done.returncode == 0, done.stderr

        def renewed_twice() -> bool:
            lines = syslog_messages(listener.snapshot())
            return sum("-AUTH_RENEW_SUCCESS: [" in line for line in lines) >= 2

        # One from the daemon's first authorization, one from the CLI's renewal.
        listener.wait("two AUTH_RENEW_SUCCESS", lambda _: renewed_twice(), 20)
        code, _ = daemon.stop()
        assert code == 0
    finally:
        listener.close()
