"""The state directory as a whole: is an instance new, alive or lost, who may write it,
and which daemon holds it.

A missing database is not a reason to start afresh. A fresh database means a new UDI, a
new 90-day evaluation and no registration, so a database deleted or truncated under a
registered instance would silently become a licence bypass and a lost registration. The
directory keeps evidence that an instance lived there (a marker written once the first
database is committed, the keys, a write-ahead log); where that evidence stands without a
usable database, the instance is *lost*: every command refuses and says how to restore.
Only an absent or empty directory starts a new instance.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import stat
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ccx_agent import atomicfile
from ccx_agent.errors import AgentError, LocalError

DB_NAME = "ccx-agent.db"
#: Written once the first database is committed; its presence means "an instance lived here".
MARKER_NAME = "instance"
#: ``flock``ed by the daemon for its whole life: one daemon per state directory.
LOCK_NAME = "ccx-agent.lock"
#: The identity's private keys (see :mod:`ccx_agent.ssm.identity`).
KEY_DIR = "keys"
#: How long a starting daemon retries the lock: a ``status`` probing it holds it briefly.
LOCK_RETRY_S = 1.0

#: How to let the service user start the interpreter (see :func:`owner_cannot_run`).
REACH_FIX = (
    "let every user search each directory above the interpreter and its libraries "
    "(chmod o+x on each), or install Python and ccx-agent where every user may read them "
    "(docs/install.md)"
)
RESTORE_HINT = "restore the state directory from a backup (docs/install.md, 'Backup and restore')"


class Kind(StrEnum):
    ABSENT = "absent"
    NEW = "new"
    LIVE = "live"
    LOST = "lost"


class NoDatabase(AgentError):
    """There is no instance here yet; a read-only command has nothing to show."""


class LostInstance(LocalError):
    """An instance lived here but its database is gone or empty: refuse, never start anew."""


class AlreadyRunning(AgentError):
    """Another daemon holds this state directory's lock."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


@dataclass(frozen=True, slots=True)
class Inspection:
    kind: Kind
    #: For LOST: what shows that an instance lived here.
    evidence: tuple[str, ...] = ()


def db_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


def inspect(state_dir: Path) -> Inspection:
    """What the directory holds, from the file system alone (nothing is opened or made).

    A LIVE directory names its evidence too: a database file with bytes in it may still
    hold nothing of the instance that lived here (an empty SQLite file, a deleted row),
    which only opening it tells (:func:`ccx_agent.instance.open_store`).
    """
    if not state_dir.is_dir():  # absent, or not a directory (which the config check says)
        return Inspection(Kind.ABSENT)
    db = db_path(state_dir)
    try:
        size = db.stat().st_size
    except OSError:
        size = None
    evidence = []
    if (state_dir / MARKER_NAME).exists():
        evidence.append(f"the marker {state_dir / MARKER_NAME}")
    keys = state_dir / KEY_DIR
    with contextlib.suppress(OSError):
        if keys.is_dir() and any(keys.iterdir()):
            evidence.append(f"private keys in {keys}")
    if size:
        return Inspection(Kind.LIVE, tuple(evidence))
    wal = Path(f"{db}-wal")
    if wal.exists():
        evidence.append(f"the write-ahead log {wal}")
    if evidence:
        return Inspection(Kind.LOST, tuple(evidence))
    return Inspection(Kind.NEW)


def lost_message(state_dir: Path, evidence: tuple[str, ...], lacks: str | None = None) -> str:
    """``lacks``: what a database that is there has lost (None: the file is missing or empty)."""
    db = db_path(state_dir)
    if lacks is not None:
        what = f"has lost {lacks}"
    else:
        what = "is missing" if not db.exists() else "is empty"
    return (
        f"{db}: the state database {what}, but an instance lived here ({', '.join(evidence)}); "
        f"refusing to start a new one (that would lose the registration): {RESTORE_HINT}"
    )


def write_marker(state_dir: Path, created_at: str) -> None:
    """Mark the directory as holding an instance (once its first database is committed)."""
    marker = state_dir / MARKER_NAME
    if marker.exists():
        return
    text = (
        "ccx-agent state directory: an instance lives here.\n"
        f"first database committed at {created_at}\n"
        f"if {DB_NAME} is ever missing, restore it from a backup; never delete this file.\n"
    )
    # Durable: it is what says an instance lived here once the database is gone.
    atomicfile.write_file(marker, text.encode(), mode=0o600, durable=True)


# --- who may write it -----------------------------------------------------------------


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def will_become_owner(state_dir: Path) -> bool:
    """Whether :func:`become_owner` would change this process's user."""
    if os.geteuid() != 0:
        return False
    try:
        return state_dir.stat().st_uid != 0
    except OSError:
        return False


def owner_cannot_run(state_dir: Path) -> tuple[str, str] | None:
    """When root works in another user's state directory: ``(owner, why)`` if that owner
    cannot start this program, else None.

    The daemon runs as that owner, and a command run as root drops to it: an interpreter
    under a directory the owner cannot enter (a pyenv in a 0700 ``/root``) would let the
    drop succeed and the next import fail with a traceback. Probed for real, by starting
    the interpreter as the owner (what the service does), never by reading mode bits.
    """
    if os.geteuid() != 0:
        return None
    try:
        st = state_dir.stat()
    except OSError:
        return None
    if st.st_uid == 0:
        return None
    import subprocess  # noqa: PLC0415 - only root in another user's directory pays for it
    import sys  # noqa: PLC0415

    name = user_name(st.st_uid)
    where = sys.executable
    if os.path.realpath(where) != where:
        where = f"{where} (-> {os.path.realpath(where)})"
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import ccx_agent.errors"],
            cwd="/",
            user=st.st_uid,
            group=st.st_gid,
            extra_groups=_groups_of(name, st.st_gid),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        return name, f"{name} cannot run the interpreter {where} ({exc.strerror or exc})"
    except subprocess.TimeoutExpired:
        return name, f"{name} cannot start the interpreter {where} within 60 s"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["exit status " + str(probe.returncode)])[-1]
        return name, f"{name} cannot run {where} with ccx-agent's modules ({last})"
    return None


def _groups_of(name: str, gid: int) -> list[int]:
    """The supplementary groups ``name`` would have when logged in (as ``initgroups``)."""
    try:
        return [g for g in os.getgrouplist(name, gid) if g != gid]
    except (KeyError, OSError):
        return []


def become_owner(state_dir: Path) -> str | None:
    """Run as the state directory's owner when root works in another user's directory.

    A command run with ``sudo`` would otherwise create the database, its ``-wal``/``-shm``
    and the keys as root, and the service user's daemon could no longer use them (it
    would start, say READY and fail every report). Dropping to the owner makes every file
    a command creates the owner's, whoever typed it. Returns the owner's name, or None
    when nothing changed (not root, a root-owned or absent directory).
    """
    if os.geteuid() != 0:
        return None
    try:
        st = state_dir.stat()
    except OSError:
        return None
    if st.st_uid == 0:
        return None
    try:
        entry = pwd.getpwuid(st.st_uid)
    except KeyError:
        name, gid = str(st.st_uid), st.st_gid
        os.setgroups([])
    else:
        name, gid = entry.pw_name, entry.pw_gid
        os.initgroups(name, gid)
    os.setgid(gid)
    os.setuid(st.st_uid)
    return name


def access_problems(state_dir: Path) -> list[str]:
    """Each file of the state directory that this process cannot read and write, named
    with its owner and the command that fixes it."""
    me, my_group = user_name(os.geteuid()), _group(os.getegid())
    fix = f"run: chown -R {me}:{my_group} {state_dir}"
    paths = [state_dir]
    db = db_path(state_dir)
    paths += [db, Path(f"{db}-wal"), Path(f"{db}-shm"), state_dir / MARKER_NAME]
    paths.append(state_dir / LOCK_NAME)
    keys = state_dir / KEY_DIR
    paths.append(keys)
    problems = []
    for path in paths:  # the keys are appended once their directory proves usable
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path}: cannot be examined ({exc.strerror}); {fix}")
            if path == state_dir:
                return problems  # everything below says the same
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        need = os.R_OK | os.W_OK | (os.X_OK if is_dir else 0)
        if not os.access(path, need):
            owner = f"{user_name(st.st_uid)}:{_group(st.st_gid)}"
            # Owned by this user already: its mode is what is wrong, not its owner.
            mend = (
                f"run: chmod {700 if is_dir else 600} {path}" if st.st_uid == os.geteuid() else fix
            )
            problems.append(
                f"{path}: owned by {owner}, mode {stat.S_IMODE(st.st_mode):04o}, and "
                f"{me} cannot {'use' if is_dir else 'read and write'} it; {mend}"
            )
            continue
        if path == keys and is_dir:
            for key in sorted(keys.iterdir()):
                paths.append(key)
    return problems


# --- one daemon per state directory ----------------------------------------------------


class DaemonLock:
    """An exclusive ``flock`` on ``state_dir/ccx-agent.lock``, held for the daemon's life.

    ``flock`` is released by the kernel when the process dies, however it dies, so a
    crash never leaves a stale lock; the PID in the file is only for the message.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self._fd = self._lock_path(LOCK_RETRY_S)

    def _lock_path(self, wait: float) -> int:
        """Open and lock the file at :attr:`path`, and make sure the inode locked is the
        one the path names: a lock on a file unlinked (or replaced) meanwhile keeps out
        nobody, since the next daemon opens a new file there."""
        deadline = time.monotonic() + wait
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                # A probe (``status``) holds a shared lock for an instant; a daemon holds it.
                if time.monotonic() > deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    who = f"PID {pid}" if pid else "another process"
                    raise AlreadyRunning(
                        f"another ccx-agent daemon ({who}) is running on {self.path.parent} "
                        f"(it holds {self.path}); one daemon per state directory",
                        pid,
                    ) from None
                os.close(fd)
                time.sleep(0.05)
                continue
            if self._names(fd):
                break
            os.close(fd)  # unlinked or replaced between open and lock: again
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _names(self, fd: int) -> bool:
        """Whether :attr:`path` still names the file open as ``fd``."""
        held = os.fstat(fd)
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def verify(self) -> bool:
        """Check that the lock file is still the one locked; if it was deleted or
        replaced (by hand, by a clean-up script), lock the path again, so that a second
        daemon is kept out as before. True when it was locked again.

        Raises :class:`AlreadyRunning` when another process already holds the new file's
        lock: a second daemon runs on this directory, and this one must stop.
        """
        if self._fd is None or self._names(self._fd):
            return False
        fd = self._lock_path(0.0)  # may raise AlreadyRunning: the old lock is kept
        os.close(self._fd)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def lock_holder(state_dir: Path) -> int | None:
    """The PID of the daemon holding the lock (0 when it cannot be read), or None when no
    daemon runs. Creates nothing; holds a shared lock only for an instant."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _read_pid(fd) or 0
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
