"""The daemon owns its parts (ccx_agent/daemon/runtime.py): what a reload replaces is closed,
what a failed start opened is closed, a bug is not a config error, and ``run`` imports
only what its config uses. Real processes, the fake UCCX cluster over HTTPS on loopback,
the SSM simulator, real sockets; every wait polls with a deadline.

A leak is seen from outside: the threads (``/proc/PID/task``) and the open files
(``/proc/PID/fd``) of the process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import (
    CAPTURED,
    SECRETS,
    Daemon,
    DatagramListener,
    Instance,
    Sim,
    json_lines,
    make_instance,
    wait_until,
)
from tests.sources.fake_uccx import USERS, FakePair, make_cluster, make_pki

USER = "ccx-license-reader"
PASSWORD = "parts-Pa55w0rd-7e2b"  # distinctive: the secrets check looks for it everywhere


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[FakePair]:
    pki = make_pki(tmp_path)
    with FakePair(make_cluster(40), pki, USER, PASSWORD) as servers:
        servers.ca = pki.ca  # type: ignore[attr-defined]
        yield servers


def _uccx(tmp_path: Path, pair: FakePair, refresh: str) -> dict[str, Any]:
    password = tmp_path / "uccx-password"
    if not password.exists():
        SECRETS.add(PASSWORD)
        password.write_text(PASSWORD + "\n", encoding="utf-8")
        password.chmod(0o600)
    return {
        "kind": "uccx",
        "uccx": {
            "nodes": pair.urls,
            "user": USER,
            "password_file": str(password),
            "ca_bundle": str(pair.ca),  # type: ignore[attr-defined]
            "timeout": "2s",
            "connect_timeout": "1s",
            "config_refresh": refresh,
        },
    }


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_a_reload_that_replaces_the_source_closes_the_old_one(
    sim: Sim, tmp_path: Path, pair: FakePair, udp_syslog: DatagramListener
) -> None:
    """A two-node UCCX source reads both nodes at once on a pool of two threads. Each
    reload below changes ``source`` (so the source is rebuilt) and then samples through
    the new one: if the old source were not closed, its two threads would stay, two more
    per reload. A reload refused at the last step (a license type change) after making a
    new sink (a thread) and source must close them: the old ones serve on."""

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["metrics"] = {"listen": None}
        cfg["source"] = _uccx(tmp_path, pair, "1h")

    inst = make_instance(tmp_path / "inst", sim, f"udp://127.0.0.1:{udp_syslog.port}", tweak=tweak)
    # Every executor's thread is made by its first job: with the heartbeat at every 0.5 s
    # (a 1 s watchdog), its thread is there before the baseline below; at its default 60 s
    # it may first run in the middle of the reloads and read as a leak.
    daemon = Daemon(inst, env={"WATCHDOG_USEC": "1000000"})
    daemon.wait_event("ready")

    def sampled(more: int) -> None:
        at = sum(pair.hits(USERS)) + more
        wait_until(
            f"{more} more samples",
            lambda: daemon.assert_alive() or sum(pair.hits(USERS)) >= at,
            timeout=30,
        )

    sampled(2)
    baseline = threads(daemon.pid)
    reloads = 4
    for i in range(reloads):
        cfg = dict(inst.cfg)
        cfg["source"] = _uccx(tmp_path, pair, "2h" if i % 2 == 0 else "1h")
        inst.write(cfg)
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("config reloaded", count=i + 1)
        sampled(2)  # the new source's pool exists now
    wait_until(
        f"the thread count back to {baseline} (leaked: two per reload)",
        lambda: threads(daemon.pid) <= baseline,
        timeout=15,
    )

    # Refused at the end of the build: a new sink (other target) and a new source were
    # made, then the license type check failed; both are closed, the old ones serve on.
    other = DatagramListener()
    try:
        cfg = dict(inst.cfg)
        cfg["license"] = {"type": "perpetual-premium"}
        cfg["alerts"] = {
            **inst.cfg["alerts"],
            "syslog": {"target": f"udp://127.0.0.1:{other.port}"},
        }
        cfg["source"] = _uccx(tmp_path, pair, "3h")
        inst.write(cfg)
        daemon.signal(signal.SIGHUP)
        [refused] = daemon.wait_event("reload refused, keeping the old config")
        assert "license" in refused["error"] and "type" in refused["error"], refused
        sampled(2)
        wait_until(
            f"the thread count back to {baseline} after a refused reload",
            lambda: threads(daemon.pid) <= baseline,
            timeout=15,
        )
    finally:
        other.close()
    code, _ = daemon.stop()
    assert code == 0


_PROBE = """
import json, os, sys, threading, time
from pathlib import Path

from ccx_agent.daemon import scheduler as daemon
from ccx_agent.daemon import runtime

if sys.argv[2] == "bug":
    # The one stand-in of this module: nothing real raises a ValueError from inside the
    # code on purpose, so the source factory is made to, as a bug would.
    def broken(cfg):
        raise ValueError("an internal slip, not the operator's")

    runtime.build_source = broken

def fds():
    return sorted(os.listdir("/proc/self/fd"))

before = (fds(), threading.active_count())
code = daemon.main(Path(sys.argv[1]))
deadline = time.monotonic() + 10
while time.monotonic() < deadline and (fds(), threading.active_count()) != before:
    time.sleep(0.05)
print(json.dumps({"code": code, "before": before, "after": (fds(), threading.active_count())}))
"""


def _probe(inst: Instance, mode: str) -> tuple[dict[str, Any], str, str]:
    """``daemon.main`` in a fresh interpreter: its exit status, and its open files and
    threads before and after (the log goes to stdout, the last line is the probe's)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(inst.config), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    CAPTURED.extend([done.stdout, done.stderr])
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc, done.stdout, done.stderr


def _failed_start_instance(tmp_path: Path, sim: Sim, syslog: DatagramListener) -> Instance:
    def tweak(cfg: dict[str, Any]) -> None:
        cfg["metrics"] = {"listen": "127.0.0.1:0"}  # a listening socket and its thread too

    return make_instance(tmp_path / "inst", sim, f"udp://127.0.0.1:{syslog.port}", tweak=tweak)


def test_a_failed_start_closes_all_it_opened_and_records_init_failed_once(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    """A start refused at its last step (the license type differs from the registered
    one) has opened the database, the metrics endpoint, the syslog sink, the SSM client
    and the source: it says so (78), records AGENT_INIT_FAILED in that database and
    sends it through that sink, and leaves no file and no thread open behind it."""
    inst = _failed_start_instance(tmp_path, sim, udp_syslog)
    cfg = dict(inst.cfg)
    cfg["license"] = {"type": "perpetual-premium"}
    inst.write(cfg)
    doc, _, err = _probe(inst, "ok")
    assert doc["code"] == 78, err
    assert doc["after"] == doc["before"], "files or threads left open by the failed start"
    assert "error: cannot start: " in err and "license" in err
    store = inst.store()
    try:
        with store.read() as tx:
            rows = [r for r in tx.alerts() if r.mnemonic == "AGENT_INIT_FAILED"]
    finally:
        store.close()
    assert len(rows) == 1 and "license" in rows[0].detail
    udp_syslog.wait(
        "AGENT_INIT_FAILED on syslog",
        lambda got: any(b"-AGENT_INIT_FAILED: " in r.data for r in got),
        10,
    )


def test_a_bug_at_start_is_not_reported_as_a_config_error(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    """A ValueError from inside the code (here: the source factory) is a bug: exit 1 with
    "internal error" and its traceback in the log, never 78 (systemd would then not
    restart, and the operator would hunt a config error that is not there). What the
    start had opened is closed all the same."""
    inst = _failed_start_instance(tmp_path, sim, udp_syslog)
    doc, out, err = _probe(inst, "bug")
    assert doc["code"] == 1, err
    assert doc["after"] == doc["before"], "files or threads left open by the failed start"
    assert "error: cannot start: internal error: ValueError: an internal slip" in err
    [logged] = [d for d in json_lines(out) if d.get("event") == "cannot start: internal error"]
    trace = json.dumps(logged["exception"])  # structlog's dict traceback: the frames
    assert '"exc_type": "ValueError"' in trace and '"name": "broken"' in trace, trace
    store = inst.store()
    try:
        with store.read() as tx:
            rows = [r for r in tx.alerts() if r.mnemonic == "AGENT_INIT_FAILED"]
    finally:
        store.close()
    assert [r.detail for r in rows] == [
        "internal error: ValueError: an internal slip, not the operator's"
    ]


def test_run_imports_only_what_its_config_uses(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    """``python -m ccx_agent run`` as systemd starts it, through a report and a reload,
    with ``-X importtime``: neither the simulators nor ``commands``, the scenario runner,
    the report renderers, the UCCX source and its XML code, nor prometheus_client with
    metrics off. Turned on by a reload, the metrics stack is loaded (the list is seen)."""

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["metrics"] = {"listen": None}

    inst = make_instance(tmp_path / "inst", sim, f"udp://127.0.0.1:{udp_syslog.port}", tweak=tweak)
    daemon = Daemon(inst, env={"PYTHONPROFILEIMPORTTIME": "1"})
    daemon.wait_event("ready")
    daemon.wait_event("report")

    def imported() -> set[str]:
        found = set()
        for line in daemon.stderr.splitlines():
            if line.startswith("import time:") and "|" in line:
                found.add(line.rsplit("|", 1)[1].strip())
        return found

    before = imported()
    assert "ccx_agent.daemon.scheduler" in before and "apscheduler.schedulers.blocking" in before
    never = {
        "ccx_agent.cli.commands",
        "ccx_agent.cli.actions",
        "ccx_agent.simulator",
        "ccx_agent.scenario",
        "ccx_agent.history",
        "ccx_agent.cli.demo",
        "ccx_agent.cli.doctor",
        "ccx_agent.sources.uccx",
        "ccx_agent.sources.cluster",
        "ccx_agent.sources.safexml",
        "xml.etree.ElementTree",
        "prometheus_client",
        "ccx_agent.daemon.metrics",
    }
    assert sorted(m for m in before if m.startswith(tuple(never))) == []

    cfg = dict(inst.cfg)
    cfg["metrics"] = {"listen": "127.0.0.1:0"}
    inst.write(cfg)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("metrics listening")
    after = imported()
    assert "prometheus_client" in after and "ccx_agent.daemon.metrics" in after
    assert not any(m.startswith(("ccx_agent.simulator", "ccx_agent.cli.commands")) for m in after)
    code, _ = daemon.stop()
    assert code == 0
