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

from ccx_agent.config import schema as config_mod
from ccx_agent.daemon.scheduler import Daemon as InProcessDaemon
from ccx_agent.daemon.scheduler import JobStats, boottime
from ccx_agent.daemon.sdnotify import Notifier

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
        daemon.runtime.close(0.5)
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


def test_a_job_that_keeps_failing_is_an_alert_a_degraded_status_and_a_recovery(
    sim: Sim, tmp_path: Path
) -> None:
    """In process, on a real notify socket and a real syslog listener: a local fault (a
    PermissionError, as a key the service may not read gives) in a job's second run in a
    row is AGENT_JOB_FAILED on syslog, ``degraded: …`` in STATUS= and the job's error in
    ``status``; the next good run is AGENT_JOB_RECOVERED and a clean STATUS=."""
    listener = DatagramListener()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(5.0)
    try:
        inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{listener.port}")
        cfg = config_mod.load(inst.config)
        daemon = InProcessDaemon(
            inst.config, Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        )
        daemon.open(cfg)
        broken = [True]

        def report(run):  # type: ignore[no-untyped-def]
            if broken[0]:
                raise PermissionError(13, "Permission denied", "/var/lib/ccx-agent/keys/k.pem")
            daemon.report(run)

        job = daemon._guard("report", report)
        job()
        assert daemon.health["report"].consecutive_failures == 1
        assert notify.recv(4096).startswith(b"STATUS=degraded: report failing since ")
        assert not any("AGENT_JOB_FAILED" in m for m in syslog_messages(listener.snapshot()))
        job()
        status = notify.recv(4096).decode()
        assert status.startswith("STATUS=degraded: report failing since "), status
        assert (
            "PermissionError: [Errno 13] Permission denied: '/var/lib/ccx-agent/keys/k.pem'"
            in status
        )
        lines = listener.wait(
            "AGENT_JOB_FAILED",
            lambda got: [m for m in syslog_messages(got) if "-AGENT_JOB_FAILED: " in m],
            10,
        )
        assert lines[0].startswith("%MCVD-LIB_LICENSE-3-AGENT_JOB_FAILED: [AGENT] ")
        assert "job report has failed 2 times in a row since " in lines[0]
        jobs = inst.status(in_process=True)["daemon"]["jobs"]
        assert jobs["report"]["consecutive_failures"] == 2
        assert jobs["report"]["last_error"].startswith("PermissionError: [Errno 13]")
        broken[0] = False
        job()
        listener.wait(
            "AGENT_JOB_RECOVERED",
            lambda got: any("-AGENT_JOB_RECOVERED: " in m for m in syslog_messages(got)),
            10,
        )
        clean = [notify.recv(4096).decode() for _ in range(2)]
        assert not clean[-1].startswith("STATUS=degraded"), clean
        jobs = inst.status(in_process=True)["daemon"]["jobs"]
        assert jobs["report"]["consecutive_failures"] == 0
        assert jobs["report"]["failing_since"] is None
    finally:
        daemon.runtime.close(0.5)
        notify.close()
        listener.close()


def test_a_fifo_as_the_config_is_refused_by_reload_start_and_check_config(
    sim: Sim, tmp_path: Path
) -> None:
    """A FIFO nothing writes, put where the config was: a blocking read wedged the reload
    (SIGTERM no longer stopped the daemon), killed ``run`` and hung ``check-config``."""
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9")
    daemon = Daemon(inst)
    daemon.wait_event("ready")
    inst.config.unlink()
    os.mkfifo(inst.config)
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_event("reload refused: bad config, keeping the old one")
    assert "is a FIFO (named pipe), not a regular file" in refused[0]["problem"]
    code, _ = daemon.stop()
    assert code == 0
    for command, status in (("check-config", 78), ("run", 78)):
        done = run_cli(inst.config, command)
        assert done.returncode == status, done.stderr
        assert done.stderr == (
            f"{inst.config}:1: (file): is a FIFO (named pipe), not a regular file: refused\n"
        )
