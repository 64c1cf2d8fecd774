"""Never broken in silence: the faults a new admin meets on a real host, with real
processes, a real simulator and a real syslog listener.

* two daemons on one state directory;
* ``sudo ccx-agent register`` in the service user's directory, and a daemon that finds a
  key it may not read;
* a database truncated, deleted or garbled under a registered instance (lost, never new);
* Ctrl-C during a command that waits on a silent server.

The tests that run as another user need root (CI runs as root); elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import users
from tests.daemon.conftest import (
    CAPTURED,
    SECRETS,
    TAG,
    Daemon,
    DatagramListener,
    Instance,
    Sim,
    cli,
    make_instance,
    run_cli,
    syslog_messages,
    wait_until,
)
from tests.users import needs_nobody


def _nobody() -> tuple[int, int]:
    return users.ids(users.NOBODY)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory that the ``nobody`` user can traverse (pytest's own tmp is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="ccx-hardening-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _service_instance(base: Path, sim: Sim, target: str, *, register: bool = True) -> Instance:
    """An instance whose state directory belongs to ``nobody``, as the package's tmpfiles
    entry makes it for the ``ccx-agent`` user; the CA copied where nobody can read it."""
    ca = base / "ca.pem"
    shutil.copy(sim.server.ca_path, ca)
    ca.chmod(0o644)
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, *_nobody())

    def tweak(cfg: dict) -> None:  # type: ignore[type-arg]
        cfg["transport"]["ca_bundle"] = str(ca)

    return make_instance(base, sim, target, register=register, tweak=tweak)


def _owners(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_uid for p in sorted(root.rglob("*"))}


# --- one daemon per state directory ---------------------------------------------------


def test_a_second_daemon_on_one_state_dir_exits_at_once_naming_the_first(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    first = Daemon(inst)
    first.wait_event("ready")
    started = time.monotonic()
    second = subprocess.run(
        cli(inst.config, "run"), check=False, capture_output=True, text=True, timeout=30
    )
    CAPTURED.extend([second.stdout, second.stderr])
    assert second.returncode == 1
    assert time.monotonic() - started < 10
    assert second.stderr == (
        f"error: another ccx-agent daemon (PID {first.pid}) is running on {inst.state_dir} "
        f"(it holds {inst.state_dir / 'ccx-agent.lock'}); one daemon per state directory\n"
    )
    # The first one never noticed; status sees who holds the lock.
    first.assert_alive()
    doc = inst.status()
    assert doc["daemon"]["running"] is True and doc["daemon"]["pid"] == first.pid
    code, _ = first.stop()
    assert code == 0
    # The lock dies with its holder: a new daemon starts at once, even after kill -9.
    again = Daemon(inst)
    again.wait_event("ready")
    again.kill9()
    assert inst.status()["daemon"] == {"running": False, "pid": None, "jobs": {}}
    third = Daemon(inst)
    third.wait_event("ready")
    assert third.stop()[0] == 0


# --- ownership ------------------------------------------------------------------------


@needs_nobody
def test_register_as_root_in_the_service_users_dir_makes_files_the_user_owns(
    sim: Sim, open_dir: Path, udp_syslog: DatagramListener
) -> None:
    """``sudo ccx-agent register``: every file it makes (database, -wal/-shm, keys, marker)
    belongs to the state directory's owner, so the service's daemon can use them."""
    inst = _service_instance(open_dir, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    uid, _ = _nobody()
    owners = _owners(inst.state_dir)
    assert "keys" in owners and "ccx-agent.db" in owners and "instance" in owners
    assert set(owners.values()) == {uid}, owners
    # The daemon, started as root too, works as the owner and reports.
    daemon = Daemon(inst)
    daemon.wait_event("ready")
    wait_until("a report", lambda: inst.status()["outbox"] == 0 and daemon.events("report"), 20)
    assert daemon.stop()[0] == 0
    assert set(_owners(inst.state_dir).values()) == {uid}


@needs_nobody
def test_a_daemon_that_may_not_read_its_key_refuses_to_start_and_says_so_in_syslog(
    sim: Sim, open_dir: Path, udp_syslog: DatagramListener
) -> None:
    """The root-owned key of the old ``sudo register``: no READY with every report
    failing, but one line naming the file, its owner and the fix, AGENT_INIT_FAILED on
    syslog at once, exit 78 (systemd does not restart it in a loop)."""
    inst = _service_instance(open_dir, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    keys = inst.state_dir / "keys"
    for path in [keys, *keys.iterdir()]:
        os.chown(path, 0, 0)
    daemon = Daemon(inst)
    code = daemon.proc.wait(timeout=30)
    daemon.capture()
    assert code == 78, daemon.stderr
    lines = daemon.stderr.splitlines()
    assert len(lines) == 1, daemon.stderr
    assert lines[0].startswith(f"error: cannot start: {keys}: owned by root:root, mode 0700")
    assert "run: chown -R nobody:" in lines[0] and str(inst.state_dir) in lines[0]
    udp_syslog.wait(
        "AGENT_INIT_FAILED",
        lambda got: any("-AGENT_INIT_FAILED: " in m for m in syslog_messages(got)),
        10,
    )
    assert not daemon.events("ready")


# --- a lost instance is never a new one -----------------------------------------------


def _lose(inst: Instance, how: str) -> None:
    db = inst.state_dir / "ccx-agent.db"
    if how == "truncated":
        db.write_bytes(b"")
    elif how == "deleted":
        # As a crash can leave it: the -wal and the keys stay.
        Path(f"{db}-wal").write_bytes(b"\0" * 32)
        db.unlink()
        Path(f"{db}-shm").unlink(missing_ok=True)
    elif how == "garbled":
        data = bytearray(db.read_bytes())
        data[:100] = os.urandom(100)
        db.write_bytes(bytes(data))
    elif how == "empty-sqlite":
        # A valid SQLite file with nothing in it (as ``sqlite3 DB 'PRAGMA journal_mode=WAL'``
        # makes one): no schema, no product state, no UDI.
        db.unlink()
        Path(f"{db}-wal").unlink(missing_ok=True)
        Path(f"{db}-shm").unlink(missing_ok=True)
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
        assert db.stat().st_size > 0
    elif how == "half-zeroed":
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        data = bytearray(db.read_bytes())
        half = len(data) // 2
        data[half:] = bytes(len(data) - half)
        db.write_bytes(bytes(data))
    elif how in ("bad-state-row", "dropped-table", "product-row-deleted", "meta-row-deleted"):
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            if how == "bad-state-row":
                conn.execute("UPDATE product SET state = '{\"license_type\": 7'")
            elif how == "product-row-deleted":
                conn.execute("DELETE FROM product")
            elif how == "meta-row-deleted":
                conn.execute("DELETE FROM meta WHERE key = 'udi_uuid'")
            else:
                conn.execute("DROP TABLE outbox")
        finally:
            conn.close()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "deleted",
        "garbled",
        "bad-state-row",
        "dropped-table",
        "empty-sqlite",
        "product-row-deleted",
        "meta-row-deleted",
        "half-zeroed",
    ],
)
def test_a_lost_or_damaged_database_is_refused_never_re_created(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener, how: str
) -> None:
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    uuid_before = inst.status()["registration"]["udi"]["uuid"]
    assert uuid_before
    _lose(inst, how)
    db = inst.state_dir / "ccx-agent.db"
    size = db.stat().st_size if db.exists() else None
    daemon = Daemon(inst)
    code = daemon.proc.wait(timeout=30)
    daemon.capture()
    assert code == 78
    lines = daemon.stderr.splitlines()
    assert len(lines) == 1, daemon.stderr
    if how in ("garbled", "bad-state-row", "dropped-table", "half-zeroed"):
        assert "the state database is damaged" in lines[0]
    else:
        assert "refusing to start a new one" in lines[0]
    assert "restore the state directory from a backup" in lines[0]
    udp_syslog.wait(
        "AGENT_INIT_FAILED",
        lambda got: any("-AGENT_INIT_FAILED: " in m for m in syslog_messages(got)),
        10,
    )
    # Nothing was made in its place: no fresh database, no new UUID, no new evaluation.
    assert (db.stat().st_size if db.exists() else None) == size
    # A token the server would accept: a refusal is the agent's, not the server's.
    account = f"acct-{uuid.uuid4().hex[:12]}"
    sim.admin("/admin/licenses", {"tag": TAG, "count": 1, "account": account})
    token = sim.admin("/admin/tokens", {"account": account})["token"]
    SECRETS.add(token)
    every = (
        ("status",),
        ("status", "--json"),
        ("renew", "auth"),
        ("deregister",),
        ("sync",),
        ("register", "--force", "--", token),
        ("report",),
        ("alerts",),
        ("admit",),
    )
    for args in every:
        done = run_cli(inst.config, *args)
        assert done.returncode in (1, 78) and done.returncode != 0, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert "backup" in done.stderr
    assert (db.stat().st_size if db.exists() else None) == size


def test_only_an_absent_or_empty_state_dir_starts_a_new_instance(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}", register=False)
    inst.state_dir.mkdir()
    (inst.state_dir / "README").write_text("not ours\n")
    daemon = Daemon(inst)
    daemon.wait_event("ready")
    assert daemon.stop()[0] == 0
    assert (inst.state_dir / "instance").is_file()
    assert inst.status()["registration"]["state"] == "UNREGISTERED"


# --- Ctrl-C ----------------------------------------------------------------------------


#: Runs a command with SIGINT at its default, as a command typed at a terminal has it.
#: The suite may itself have been started as a background job of a non-interactive shell
#: (``make test &`` in a script, some CI runners), which starts it with SIGINT ignored;
#: that is inherited through every ``exec``, Python then leaves it ignored (as every
#: program should: a background job is not for Ctrl-C), and the command would wait out
#: its connect timeout and exit 1. (Not ``preexec_fn``: it is unsafe with threads.)
AS_A_TERMINAL_STARTS_IT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


def test_ctrl_c_during_register_on_a_silent_server_is_one_line_and_130(
    sim: Sim, tmp_path: Path
) -> None:
    """A server that accepts and never answers; SIGINT as a terminal sends it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = silent.accept()
            except OSError:
                return
            conn.recv(1, socket.MSG_PEEK)  # the TLS hello is written: the client now waits
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    config = tmp_path / "ccx-agent.yaml"
    port = silent.getsockname()[1]
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"transport: {{url: 'https://127.0.0.1:{port}/licservice/license', timeout: 60s, "
        f"attempts: 1, ca_bundle: {sim.server.ca_path}}}\n"
        "source: {kind: scripted, steps: [{at: 0s, agents: 1}]}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [*AS_A_TERMINAL_STARTS_IT, *cli(config, "register", "--", "a-token-that-is-never-sent")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def connected() -> bool:
            assert proc.poll() is None, proc.communicate()
            return bool(held)

        wait_until("the client's first bytes", connected, 20)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        silent.close()
        for conn in held:
            conn.close()
    CAPTURED.extend([out, err])
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [
        "ccx-agent: interrupted; nothing was left half-done"
    ]
    doc = json.loads(run_cli(config, "status", "--json").stdout)
    assert doc["registration"]["state"] == "UNREGISTERED"


def test_a_sighup_in_the_first_instant_is_a_reload_never_death(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    """Hang-ups are held before anything is imported: a SIGHUP as soon as the process
    catches it (the daemon is still importing, its config not even read) must not kill
    it, and is a reload once it runs."""
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")

    def catches_sighup(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status").read_text()
        mask = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(mask.split()[1], 16) & (1 << (signal.SIGHUP - 1)))

    for _ in range(3):
        daemon = Daemon(inst)
        wait_until("SIGHUP caught", lambda d=daemon: catches_sighup(d.pid), 10, step=0.001)
        assert not daemon.events("ready")
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("ready")
        daemon.wait_event("reload requested (SIGHUP)")
        daemon.assert_alive()
        assert daemon.stop()[0] == 0


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (its SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask.split()[1], 16) & (1 << (signum - 1)))


def test_a_sigterm_in_the_first_instant_is_a_clean_stop_never_death(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    """A stop right after a start (the interpreter still importing, ~0.3 s before the
    daemon's own handlers) is held from the first instant and is a clean stop: exit 0,
    never the default action that kills the process mid-import. Sent at once when the
    process catches it, and at a few delays after that."""
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    for delay in (0.0, 0.0, 0.05, 0.15, 0.3):
        daemon = Daemon(inst)
        # The first instant any code of the agent runs (SIGHUP is held from there).
        wait_until("signals held", lambda d=daemon: _catches(d.pid, signal.SIGHUP), 10, step=0.001)
        time.sleep(delay)  # a moment in the start-up, not a wait for a timer
        daemon.signal(signal.SIGTERM)
        code = daemon.proc.wait(timeout=30)
        daemon.capture()
        assert code == 0, f"after {delay}s: exit {code}\n{daemon.stderr[-2000:]}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_command_signalled_in_the_first_instant_ends_as_by_the_signal(
    tmp_path: Path, signum: int
) -> None:
    """The commands that are not the daemon give a held signal its default meaning back:
    one that came while importing ends them (as it would have), no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccx_agent", "--config", str(tmp_path / "none.yaml"), "status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until("signals held", lambda: _catches(proc.pid, signal.SIGHUP), 10, step=0.001)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signum, err
    assert b"Traceback" not in err


#: ``python -m ccx_agent`` as __main__ starts it (hang-ups held first), with a spy on the
#: imports: when the config schema or pydantic begins, it notes what SIGINT does at that
#: instant, and at the first it sends SIGINT to its own process, as a Ctrl-C typed while
#: the command is still importing.
_SPIED_START = r"""
import importlib.abc, json, os, signal, sys
from ccx_agent.daemon.earlysignals import hold_hangups
hold_hangups()
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in ("pydantic", "ccx_agent.config.schema") and name not in dict(seen):
            handler = signal.getsignal(signal.SIGINT)
            seen.append((name, getattr(handler, "__name__", str(handler))))
            os.write(int(os.environ["SPY_FD"]), (json.dumps(seen) + "\n").encode())
            if len(seen) == 1:
                os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Spy())
sys.argv = ["ccx-agent", *sys.argv[1:]]
from ccx_agent.cli.main import entry
entry()
"""


@pytest.mark.parametrize(
    "command",
    [["check-config"], ["usage"], ["renew", "auth"], ["register", "--", "not-a-token"]],
    ids=["check-config", "usage", "renew", "register"],
)
def test_a_ctrl_c_while_a_command_imports_is_held_until_the_imports_end_then_ends_it(
    sim: Sim, tmp_path: Path, command: list[str]
) -> None:
    """A Ctrl-C raised in the middle of the imports can be swallowed where a C extension
    calls back into Python (pydantic-core building a validator prints "Exception ignored"
    and goes on): 5 of 150 ``register`` runs interrupted at random instants then did the
    whole registration after the Ctrl-C. So the signals stay held until the command's
    module and everything it imports are in, and the one that came ends the command
    then: 130, the one line, nothing done. (As root, ``register`` and ``renew`` import
    the schema while finding the state directory's owner, held anyway; ``check-config``
    and ``usage`` import it in their functions, after the command's module.)"""
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9", register=False)
    read, write = os.pipe()
    proc = subprocess.Popen(
        [
            *AS_A_TERMINAL_STARTS_IT,
            sys.executable,
            "-c",
            _SPIED_START,
            "--config",
            str(inst.config),
            *command,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=(write,),
        env={**os.environ, "SPY_FD": str(write)},
    )
    os.close(write)
    out, err = proc.communicate(timeout=60)
    with os.fdopen(read) as spied:
        lines = spied.read().splitlines()
    assert lines, err
    seen = json.loads(lines[-1])
    assert [name for name, _ in seen] == ["ccx_agent.config.schema", "pydantic"], seen
    assert all(handler == "_hold" for _, handler in seen), seen
    assert proc.returncode == 130, err
    assert err == "\nccx-agent: interrupted; nothing was left half-done\n"
    assert out == ""
    assert not inst.state_dir.exists()  # nothing was made, nothing was sent


def test_kill_9_then_the_write_ahead_log_deleted_leaves_no_gap(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    """An admin who 'cleans up' the -wal and -shm after a crash loses the changes that
    were only in the log (at most one report interval's, as the log is folded in after
    every report). The history that follows must still be whole: the lost intervals are
    closed again on start, from the samples the database kept or as NO_DATA."""
    from tests.daemon.test_process import _check_contiguous, _wait_reports

    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    first = Daemon(inst)
    _wait_reports(sim, inst, first, 4)
    first.kill9()
    db = inst.state_dir / "ccx-agent.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    n = len(sim.reports(inst.piid))
    second = Daemon(inst)
    _wait_reports(sim, inst, second, n + 3)
    assert second.stop()[0] == 0
    rows = _check_contiguous(inst)
    assert rows[-1].status == "REPORTED"
    received = [r["id"] for r in sim.reports(inst.piid)]
    assert len(received) == len(set(received)), "a report counted twice"
    assert set(inst.reported_ids()) <= set(received)


def test_alert_lines_queued_at_a_kill_9_reach_syslog_after_the_restart(
    sim: Sim, tmp_path: Path
) -> None:
    """Syslog delivery is at least once: an alert is marked emitted only once its lines
    are written to the socket. Here the TCP collector is down while the countdown raises
    alerts, the daemon is killed with them queued, the collector comes up, the daemon
    restarts: every line of every alert recorded before the kill arrives."""
    from tests.daemon.conftest import TcpListener, lines_arrived

    probe = TcpListener()
    port = probe.port
    probe.close()  # nothing listens there now: the sink queues and retries

    def tweak(cfg: dict) -> None:  # type: ignore[type-arg]
        cfg["compliance"] = {"ooc_threshold": 200}  # a countdown alert every report
        cfg["source"]["steps"] = [{"at": "0s", "agents": 13}]

    inst = make_instance(tmp_path, sim, f"tcp://127.0.0.1:{port}", tweak=tweak)
    first = Daemon(inst)
    first.wait_event("alert", count=6)
    first.kill9()
    store = inst.store()
    try:
        with store.read() as tx:
            before = tx.alerts()
    finally:
        store.close()
    assert len(before) >= 6
    collector = TcpListener(port)
    try:
        second = Daemon(inst)
        wanted = {line for row in before for line in row.lines}

        collector.wait_messages("every line recorded before the kill", lines_arrived(wanted), 30)
        assert second.stop()[0] == 0
    finally:
        collector.close()
    store = inst.store()
    try:
        with store.read() as tx:
            assert tx.alerts(pending_only=True) == [], "a delivered alert still pending"
    finally:
        store.close()
