"""One daemon per state directory, even when the lock file is deleted or replaced under
a running daemon (a ``flock`` on an unlinked inode keeps out nobody): the daemon locks the
path again, or, when another daemon already holds it, says so loudly and stops."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tests.daemon.conftest import Daemon, Sim, make_instance

LOCK = "ccx-agent.lock"


def test_a_deleted_lock_file_is_locked_again_and_keeps_a_second_daemon_out(
    sim: Sim, tmp_path: Path
) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9", register=False)
    first = Daemon(inst)
    first.wait_event("ready")
    (inst.state_dir / LOCK).unlink()
    first.wait_event("lock file was deleted or replaced: re-created and locked again")
    assert (inst.state_dir / LOCK).read_text() == f"{first.pid}\n"

    second = Daemon(inst, name="second")
    code = second.proc.wait(timeout=30)
    second.capture()
    assert code == 1, second.stderr
    assert f"another ccx-agent daemon (PID {first.pid}) is running on" in second.stderr
    first.assert_alive()
    assert first.stop()[0] == 0


def test_a_lock_file_taken_by_another_process_stops_the_daemon_loudly(
    sim: Sim, tmp_path: Path
) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9", register=False)
    first = Daemon(inst)
    first.wait_event("ready")
    # Another process's lock file put in place of ours (atomically: the daemon never sees
    # the path empty, so it cannot lock it first).
    other = inst.state_dir / "other.lock"
    fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.replace(other, inst.state_dir / LOCK)
        code = first.proc.wait(timeout=30)
        first.capture()
    finally:
        os.close(fd)
    assert code == 1, first.stderr
    [lost] = first.events("lock lost: another daemon runs on this state directory; stopping")
    assert lost["level"] == "error" and lost["holder"] == os.getpid()
    assert first.events("stopped")
