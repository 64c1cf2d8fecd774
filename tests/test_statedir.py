"""The state directory: new, live or lost from what is on disk; the one-daemon lock with
real processes; the access check (as another user, it needs root to run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ccx_agent.store import statedir
from ccx_agent.store.db import DB_NAME, Store
from ccx_agent.store.statedir import DaemonLock, Kind, inspect, lock_holder
from tests import users
from tests.users import needs_nobody


def test_absent_new_live_and_lost(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert inspect(state).kind is Kind.ABSENT
    state.mkdir()
    assert inspect(state).kind is Kind.NEW
    (state / "notes.txt").write_text("an operator's file\n")
    (state / DB_NAME).write_bytes(b"")  # as a crash before the first commit leaves it
    assert inspect(state).kind is Kind.NEW
    Store(state / DB_NAME).close()
    assert inspect(state).kind is Kind.LIVE
    statedir.write_marker(state, "2026-11-01T00:00:00Z")
    (state / DB_NAME).write_bytes(b"")
    found = inspect(state)
    assert found.kind is Kind.LOST
    assert found.evidence == (f"the marker {state / 'instance'}",)
    (state / DB_NAME).unlink()
    (state / "instance").unlink()
    (state / "keys").mkdir()
    (state / "keys" / ("a" * 64 + ".pem")).write_text("key")
    assert inspect(state).evidence == (f"private keys in {state / 'keys'}",)
    (state / "keys" / ("a" * 64 + ".pem")).unlink()
    Path(f"{state / DB_NAME}-wal").write_bytes(b"x")
    assert inspect(state).evidence == (f"the write-ahead log {state / DB_NAME}-wal",)


def test_the_marker_is_written_once_and_never_replaced(tmp_path: Path) -> None:
    statedir.write_marker(tmp_path, "first")
    statedir.write_marker(tmp_path, "second")
    text = (tmp_path / "instance").read_text()
    assert "first" in text and "second" not in text
    assert (tmp_path / "instance").stat().st_mode & 0o777 == 0o600


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ccx_agent.store.statedir import DaemonLock
    lock = DaemonLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_one_lock_holder_named_by_pid_and_freed_when_it_dies(tmp_path: Path) -> None:
    assert lock_holder(tmp_path) is None
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert lock_holder(tmp_path) == holder.pid
        with pytest.raises(statedir.AlreadyRunning) as caught:
            DaemonLock(tmp_path).acquire()
        assert caught.value.pid == holder.pid
        assert f"(PID {holder.pid})" in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
    # The kernel frees a flock with its holder, however it died.
    assert lock_holder(tmp_path) is None
    mine = DaemonLock(tmp_path)
    mine.acquire()
    try:
        assert (tmp_path / "ccx-agent.lock").read_text() == f"{os.getpid()}\n"
        assert (tmp_path / "ccx-agent.lock").stat().st_mode & 0o777 == 0o600
    finally:
        mine.release()


def test_a_deleted_or_replaced_lock_file_is_locked_again_unless_another_holds_it(
    tmp_path: Path,
) -> None:
    """A flock on an unlinked inode keeps out nobody: ``verify`` locks the path again."""
    mine = DaemonLock(tmp_path)
    mine.acquire()
    lock = tmp_path / "ccx-agent.lock"
    try:
        assert mine.verify() is False  # untouched: nothing to do
        lock.unlink()
        assert mine.verify() is True
        assert lock.read_text() == f"{os.getpid()}\n"
        assert lock_holder(tmp_path) == os.getpid()
        lock.unlink()
        lock.write_text("")  # replaced by a file nobody holds
        assert mine.verify() is True and lock_holder(tmp_path) == os.getpid()
        # Replaced by a file another process holds: that one runs here now.
        other = tmp_path / "other"
        other.mkdir()
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(other)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            os.replace(other / "ccx-agent.lock", lock)
            with pytest.raises(statedir.AlreadyRunning) as caught:
                mine.verify()
            assert caught.value.pid == holder.pid
        finally:
            holder.kill()
            holder.wait()
    finally:
        mine.release()


def test_lock_holder_creates_nothing(tmp_path: Path) -> None:
    assert lock_holder(tmp_path / "absent") is None
    assert not (tmp_path / "absent").exists()
    assert list(tmp_path.iterdir()) == []


@needs_nobody
def test_access_problems_name_the_file_the_owner_and_the_fix() -> None:
    """Checked as ``nobody`` in a child process (root may use any file), in a directory
    nobody can reach (pytest's own temporary directories are root's alone)."""
    tmp_path = Path(tempfile.mkdtemp(prefix="ccx-access-"))
    try:
        _check_access_problems(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _check_access_problems(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    Store(state / DB_NAME).close()
    (state / "keys").mkdir(mode=0o700)
    key = state / "keys" / ("b" * 64 + ".pem")
    key.write_text("k")
    key.chmod(0o600)
    for p in (tmp_path, state, state / DB_NAME, state / "keys"):
        os.chown(p, *users.ids())
    tmp_path.chmod(0o755)
    code = (
        "import sys; from pathlib import Path; from ccx_agent.store.statedir import access_problems;"
        "print('\\n'.join(access_problems(Path(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(state)],
        capture_output=True,
        text=True,
        check=False,
        **users.run_as(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{key}: owned by root:root, mode 0600, and nobody cannot read and write it; "
        f"run: chown -R nobody:{users.group_name()} {state}"
    ]
