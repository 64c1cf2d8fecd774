"""Opening and migrating a SQLite database the way every database of this project needs:
the agent's state (:mod:`ccx_agent.store.db`) and the simulator's (:mod:`ccx_agent.simulator.db`).

One place for the rules both depend on: the file is created 0600 before SQLite touches it,
write-ahead logging must really be on (a network file system silently refuses it), and a
migration is applied with its version number in one transaction, so a crash mid-migration
leaves the old schema. Errors come back as the caller's own exception type, so each
database names itself in its messages.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: How long a writer waits for another one (the daemon, the CLI) before giving up.
BUSY_TIMEOUT_S = 30.0
#: Pages in the write-ahead log that trigger an automatic checkpoint (256 × 4 KiB).
WAL_AUTOCHECKPOINT_PAGES = 256
#: Bytes a write-ahead log is cut back to after a checkpoint.
WAL_SIZE_LIMIT = 1 << 20

Fail = Callable[[str], Exception]


def statements(script: str, fail: Fail) -> Iterator[str]:
    """The statements of a migration script, split where SQLite itself would end them.

    A plain ``split(";")`` would cut a trigger body or a string literal holding a ``;``.
    (``executescript`` is no use here: it commits first, breaking the migration's atomicity.)
    """
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise fail(f"incomplete SQL statement in a migration: {buf.strip()!r}")


def create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it would use the umask, and the
    ``-wal`` / ``-shm`` files it makes later copy the database file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def connect(path: Path | None, *, durable: bool, what: str, fail: Fail) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL checked on a file,
    ``synchronous=FULL`` when ``durable``; ``path=None`` is a database in memory."""
    try:
        conn = sqlite3.connect(
            ":memory:" if path is None else path,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise fail(f"{path}: cannot open the {what}: {exc}") from exc
    try:
        if path is not None:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise fail(
                    f"{path}: the {what} cannot use write-ahead logging (journal_mode is "
                    f"{mode!r}); put the state directory on a local file system"
                )
        # FULL for real state; a throw-away what-if database may skip fsync.
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
        if path is not None:
            # Keep the write-ahead log small: checkpoint at 1 MiB instead of 4, and cut
            # the file back after a checkpoint, so a small state file system never fills
            # with a log of pages already in the database.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise fail(f"{path}: cannot open the {what}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: committed on a normal exit, rolled back on an exception.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so the work never fails half way
    for want of it; another process holding it is waited for (busy timeout).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (I/O error, disk full …): the original
        # exception is what matters, not "no transaction is active".
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A consistent read-only view that takes no write lock (WAL readers never wait)."""
    conn.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def migrate(conn: sqlite3.Connection, migrations: Sequence[str], path: object, fail: Fail) -> None:
    """Bring the schema to ``len(migrations)``, all steps and the new version number in
    one transaction; a database newer than this code is refused, never touched."""
    target = len(migrations)
    with immediate(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > target:
            raise fail(
                f"{path}: schema version {version} is newer than this ccx-agent "
                f"understands ({target}); upgrade ccx-agent"
            )
        for number in range(version, target):
            for statement in statements(migrations[number], fail):
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
        elif version != target:
            conn.execute("UPDATE schema_version SET version = ?", (target,))


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy the write-ahead log into the database and truncate it to zero bytes
    (``wal_checkpoint(TRUNCATE)``): (busy, log pages, pages checkpointed). A reader that
    holds an old snapshot makes it partial (busy=1); the next one finishes it."""
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return int(row[0]), int(row[1]), int(row[2])
