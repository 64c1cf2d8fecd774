"""The simulator's SQLite state: accounts, purchases, tokens, instances, certificates,
reports and recently seen nonces.

Same rules as the agent's own store (``ccx_agent/store/db.py``): WAL with
``synchronous=FULL``, a 0600 file, numbered migrations applied in one transaction, and
``BEGIN IMMEDIATE`` for every writer with a busy timeout, so the admin CLI can buy
licenses or create tokens while the server runs. One request is one transaction: a
refused or failed request changes nothing.

Tokens are stored as their SHA-256 only: the database (or a backup of it) never lets
anyone register.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ccx_agent.licensing.timeutil import iso, parse_iso
from ccx_agent.store import sqlite

DB_NAME = "ssm.db"
DEFAULT_ACCOUNT = "default"

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE accounts (
        name TEXT PRIMARY KEY
    );
    CREATE TABLE purchased (
        account TEXT NOT NULL REFERENCES accounts (name),
        tag TEXT NOT NULL,
        count INTEGER NOT NULL CHECK (count >= 0),
        PRIMARY KEY (account, tag)
    );
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts (name),
        uses INTEGER NOT NULL CHECK (uses >= 1),
        used INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE instances (
        piid TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts (name),
        pid TEXT NOT NULL,
        serial TEXT NOT NULL,
        uuid TEXT NOT NULL,
        key_fingerprint TEXT NOT NULL,
        license_type TEXT NOT NULL,
        registered_at TEXT NOT NULL,
        deregistered_at TEXT,
        last_contact TEXT NOT NULL
    );
    CREATE INDEX instances_key ON instances (key_fingerprint) WHERE deregistered_at IS NULL;
    CREATE INDEX instances_udi ON instances (uuid) WHERE deregistered_at IS NULL;
    CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        piid TEXT NOT NULL REFERENCES instances (piid),
        der BLOB NOT NULL,
        issued_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX certificates_piid ON certificates (piid);
    CREATE TABLE reports (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        piid TEXT NOT NULL REFERENCES instances (piid),
        start TEXT NOT NULL,
        "end" TEXT NOT NULL,
        usage TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE INDEX reports_latest ON reports (piid, start);
    CREATE TABLE nonces (
        nonce TEXT PRIMARY KEY,
        seen_at TEXT NOT NULL
    );
    CREATE INDEX nonces_age ON nonces (seen_at);
    INSERT INTO accounts (name) VALUES ('default');
    """,
    # 2: how long each nonce is remembered: a request carried on a file may be answered
    # days after it was made (docs/offline.md), and must be answered once only.
    """
    ALTER TABLE nonces ADD COLUMN keep_until TEXT;
    """,
    # 3: the pool kept up to date on insert (issue 16): each instance's latest report, and
    # per account and tag the sum of its active instances' latest usage and how many of
    # them name the tag. Answering a request then costs the same with 10 instances or
    # 2,000; the query it replaces (``Tx.latest_usages``) read every instance's reports.
    """
    CREATE TABLE latest_usage (
        piid TEXT PRIMARY KEY REFERENCES instances (piid),
        start TEXT NOT NULL,
        seq INTEGER NOT NULL,
        usage TEXT NOT NULL
    );
    INSERT INTO latest_usage (piid, start, seq, usage)
        SELECT r.piid, r.start, r.seq, r.usage FROM reports r WHERE r.seq = (
            SELECT seq FROM reports WHERE piid = r.piid ORDER BY start DESC, seq DESC LIMIT 1
        );
    CREATE TABLE pool_usage (
        account TEXT NOT NULL REFERENCES accounts (name),
        tag TEXT NOT NULL,
        total INTEGER NOT NULL,
        holders INTEGER NOT NULL,
        PRIMARY KEY (account, tag)
    );
    INSERT INTO pool_usage (account, tag, total, holders)
        SELECT i.account, j.key, SUM(j.value), COUNT(*)
        FROM instances i JOIN latest_usage l ON l.piid = i.piid, json_each(l.usage) j
        WHERE i.deregistered_at IS NULL GROUP BY i.account, j.key;
    """,
]


class DbError(Exception):
    """The database cannot be used as it is (newer schema, not a database …)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def serial_text(serial: int) -> str:
    """Certificate serials as fixed-width hex: up to 159 bits, too big for an INTEGER."""
    return f"{serial:040x}"


@dataclass(frozen=True, slots=True)
class Token:
    account: str
    uses: int
    used: int
    expires_at: datetime
    revoked: bool


@dataclass(frozen=True, slots=True)
class Instance:
    piid: str
    account: str
    pid: str
    serial: str
    uuid: str
    key_fingerprint: str
    license_type: str
    registered_at: datetime
    deregistered_at: datetime | None
    last_contact: datetime

    @property
    def active(self) -> bool:
        return self.deregistered_at is None


@dataclass(frozen=True, slots=True)
class Report:
    seq: int
    id: str
    piid: str
    start: str
    end: str
    usage: dict[str, int]
    received_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "piid": self.piid,
            "start": self.start,
            "end": self.end,
            "usage": dict(self.usage),
            "received_at": iso(self.received_at),
        }


def _instance(row: Sequence[Any]) -> Instance:
    return Instance(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        parse_iso(row[7]),
        None if row[8] is None else parse_iso(row[8]),
        parse_iso(row[9]),
    )


def _report(row: Sequence[Any]) -> Report:
    return Report(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), parse_iso(row[6]))


class Tx:
    """The operations of one transaction; only :class:`Database` makes one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    # accounts and purchases
    def accounts(self) -> list[str]:
        return [r[0] for r in self._c.execute("SELECT name FROM accounts ORDER BY name")]

    def has_account(self, name: str) -> bool:
        row = self._c.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone()
        return row is not None

    def add_account(self, name: str) -> None:
        self._c.execute("INSERT OR IGNORE INTO accounts (name) VALUES (?)", (name,))

    def purchased(self, account: str) -> dict[str, int]:
        rows = self._c.execute(
            "SELECT tag, count FROM purchased WHERE account = ? ORDER BY tag", (account,)
        )
        return {r[0]: int(r[1]) for r in rows}

    def set_purchased(self, account: str, tag: str, count: int) -> None:
        self._c.execute(
            "INSERT INTO purchased (account, tag, count) VALUES (?, ?, ?) "
            "ON CONFLICT (account, tag) DO UPDATE SET count = excluded.count",
            (account, tag, count),
        )

    # tokens
    def add_token(
        self, digest: str, account: str, uses: int, created: datetime, expires: datetime
    ) -> None:
        self._c.execute(
            "INSERT INTO tokens (hash, account, uses, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            (digest, account, uses, iso(created), iso(expires)),
        )

    def token(self, digest: str) -> Token | None:
        row = self._c.execute(
            "SELECT account, uses, used, expires_at, revoked FROM tokens WHERE hash = ?",
            (digest,),
        ).fetchone()
        if row is None:
            return None
        return Token(row[0], int(row[1]), int(row[2]), parse_iso(row[3]), bool(row[4]))

    def use_token(self, digest: str) -> None:
        self._c.execute("UPDATE tokens SET used = used + 1 WHERE hash = ?", (digest,))

    def revoke_token(self, digest: str) -> bool:
        cur = self._c.execute("UPDATE tokens SET revoked = 1 WHERE hash = ?", (digest,))
        return cur.rowcount > 0

    def tokens(self) -> list[Token]:
        rows = self._c.execute("SELECT account, uses, used, expires_at, revoked FROM tokens")
        return [Token(r[0], int(r[1]), int(r[2]), parse_iso(r[3]), bool(r[4])) for r in rows]

    # instances
    def instance(self, piid: str) -> Instance | None:
        row = self._c.execute(
            "SELECT piid, account, pid, serial, uuid, key_fingerprint, license_type, registered_at, deregistered_at, last_contact FROM instances WHERE piid = ?",
            (piid,),
        ).fetchone()
        return None if row is None else _instance(row)

    def active_instance_by_key(self, fingerprint: str) -> Instance | None:
        row = self._c.execute(
            "SELECT piid, account, pid, serial, uuid, key_fingerprint, license_type, registered_at, deregistered_at, last_contact FROM instances "
            "WHERE key_fingerprint = ? AND deregistered_at IS NULL",
            (fingerprint,),
        ).fetchone()
        return None if row is None else _instance(row)

    def instances(self, account: str | None = None, *, active_only: bool = False) -> list[Instance]:
        rows = self._c.execute(
            "SELECT piid, account, pid, serial, uuid, key_fingerprint, license_type, registered_at, deregistered_at, last_contact FROM instances WHERE (? IS NULL OR account = ?) "
            "AND (? = 0 OR deregistered_at IS NULL) ORDER BY registered_at, piid",
            (account, account, int(active_only)),
        )
        return [_instance(r) for r in rows]

    def add_instance(self, inst: Instance) -> None:
        self._c.execute(
            "INSERT INTO instances (piid, account, pid, serial, uuid, key_fingerprint, license_type, registered_at, deregistered_at, last_contact) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                inst.piid,
                inst.account,
                inst.pid,
                inst.serial,
                inst.uuid,
                inst.key_fingerprint,
                inst.license_type,
                iso(inst.registered_at),
                None,
                iso(inst.last_contact),
            ),
        )

    def deregister_udi(self, pid: str, serial: str, uuid: str, now: datetime) -> int:
        """Re-registration replaces: earlier active instances of the same UDI end now."""
        for row in self._c.execute(
            "SELECT piid FROM instances WHERE deregistered_at IS NULL "
            "AND uuid = ? AND pid = ? AND serial = ?",
            (uuid, pid, serial),
        ).fetchall():
            self._leave_pool(row[0])
        cur = self._c.execute(
            "UPDATE instances SET deregistered_at = ? WHERE deregistered_at IS NULL "
            "AND uuid = ? AND pid = ? AND serial = ?",
            (iso(now), uuid, pid, serial),
        )
        return cur.rowcount

    def deregister(self, piid: str, now: datetime) -> None:
        self._leave_pool(piid)
        self._c.execute(
            "UPDATE instances SET deregistered_at = ? WHERE piid = ? AND deregistered_at IS NULL",
            (iso(now), piid),
        )

    def touch(self, piid: str, now: datetime) -> None:
        self._c.execute("UPDATE instances SET last_contact = ? WHERE piid = ?", (iso(now), piid))

    # certificates
    def add_certificate(
        self, serial: int, piid: str, der: bytes, issued: datetime, expires: datetime
    ) -> None:
        self._c.execute(
            "INSERT INTO certificates (serial, piid, der, issued_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (serial_text(serial), piid, der, iso(issued), iso(expires)),
        )

    def certificate_owner(self, serial: int) -> str | None:
        row = self._c.execute(
            "SELECT piid FROM certificates WHERE serial = ?", (serial_text(serial),)
        ).fetchone()
        return None if row is None else str(row[0])

    def latest_certificate(self, piid: str) -> bytes | None:
        """The certificate issued last to an instance (what a repeated REGISTER gets back)."""
        row = self._c.execute(
            "SELECT der FROM certificates WHERE piid = ? ORDER BY issued_at DESC, rowid DESC "
            "LIMIT 1",
            (piid,),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def latest_certificate_expiry(self, piid: str) -> datetime | None:
        row = self._c.execute(
            "SELECT MAX(expires_at) FROM certificates WHERE piid = ?", (piid,)
        ).fetchone()
        return None if row is None or row[0] is None else parse_iso(row[0])

    # reports
    def add_report(
        self,
        report_id: str,
        piid: str,
        start: str,
        end: str,
        usage: Mapping[str, int],
        now: datetime,
    ) -> None:
        self.add_reports(piid, [(report_id, start, end, usage)], now)

    def add_reports(
        self,
        piid: str,
        reports: Sequence[tuple[str, str, str, Mapping[str, int]]],
        now: datetime,
    ) -> None:
        """Store ``(id, start, end, usage)`` reports of one instance, in order (a batch of
        a REPORT_USAGE), then bring its latest usage and the pool up to date once."""
        if not reports:
            return
        received = iso(now)
        rows = [
            (rid, piid, start, end, json.dumps(dict(usage), sort_keys=True), received)
            for rid, start, end, usage in reports
        ]
        self._c.executemany(
            'INSERT INTO reports (id, piid, start, "end", usage, received_at) '
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        # The latest interval of the batch (the last received of equal starts).
        last = max(range(len(rows)), key=lambda i: (rows[i][2], i))
        rid, _, start, _, text, _ = rows[last]
        seq = self._c.execute("SELECT seq FROM reports WHERE id = ?", (rid,)).fetchone()[0]
        self._newer_report(piid, start, int(seq), text)

    def known_reports(self, report_ids: Sequence[str]) -> set[str]:
        """Which of ``report_ids`` are stored already (one query for a whole batch)."""
        rows = self._c.execute(
            "SELECT id FROM reports WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(report_ids)),),
        )
        return {str(r[0]) for r in rows}

    def _newer_report(self, piid: str, start: str, seq: int, text: str) -> None:
        """Keep ``latest_usage`` and the pool up to date with a report just stored.

        The latest report is the one of the latest interval (then the last received, as
        in :meth:`latest_report`): an old interval re-sent late changes nothing.
        """
        row = self._c.execute(
            "SELECT start, seq, usage FROM latest_usage WHERE piid = ?", (piid,)
        ).fetchone()
        if row is not None and (row[0], row[1]) > (start, seq):
            return
        self._c.execute(
            "INSERT INTO latest_usage (piid, start, seq, usage) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (piid) DO UPDATE SET start = excluded.start, seq = excluded.seq, "
            "usage = excluded.usage",
            (piid, start, seq, text),
        )
        inst = self._c.execute(
            "SELECT account FROM instances WHERE piid = ? AND deregistered_at IS NULL", (piid,)
        ).fetchone()
        if inst is not None:
            old: dict[str, int] = {} if row is None else json.loads(row[2])
            self._pool_change(inst[0], old, -1)
            self._pool_change(inst[0], json.loads(text), 1)

    def _pool_change(self, account: str, usage: Mapping[str, int], sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) one instance's latest usage from the pool."""
        if not usage:
            return
        self._c.executemany(
            "INSERT INTO pool_usage (account, tag, total, holders) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (account, tag) DO UPDATE SET total = total + excluded.total, "
            "holders = holders + excluded.holders",
            [(account, tag, sign * int(n), sign) for tag, n in usage.items()],
        )

    def _leave_pool(self, piid: str) -> None:
        """An active instance is deregistered: its latest usage no longer uses the pool."""
        row = self._c.execute(
            "SELECT i.account, l.usage FROM instances i JOIN latest_usage l ON l.piid = i.piid "
            "WHERE i.piid = ? AND i.deregistered_at IS NULL",
            (piid,),
        ).fetchone()
        if row is not None:
            self._pool_change(row[0], json.loads(row[1]), -1)

    def pooled_usage(self, account: str, *, exclude: str | None = None) -> dict[str, int]:
        """Per tag, the sum of the latest usage reported by ``account``'s active instances
        but ``exclude``: read from the pool kept up to date on insert (a few rows, however
        many instances). A tag is listed when one of them names it (zero included), as in
        :meth:`latest_usages`, the definition this must always agree with."""
        pool = {
            r[0]: (int(r[1]), int(r[2]))
            for r in self._c.execute(
                "SELECT tag, total, holders FROM pool_usage WHERE account = ? ORDER BY tag",
                (account,),
            )
        }
        if exclude is not None:
            row = self._c.execute(
                "SELECT l.usage FROM instances i JOIN latest_usage l ON l.piid = i.piid "
                "WHERE i.piid = ? AND i.account = ? AND i.deregistered_at IS NULL",
                (exclude, account),
            ).fetchone()
            if row is not None:
                for tag, n in json.loads(row[0]).items():
                    total, holders = pool[tag]
                    pool[tag] = (total - int(n), holders - 1)
        return {tag: total for tag, (total, holders) in pool.items() if holders > 0}

    def latest_report(self, piid: str) -> Report | None:
        """The report of the latest interval (by interval start, not by arrival: an old
        report re-sent late does not replace a newer one)."""
        row = self._c.execute(
            'SELECT seq, id, piid, start, "end", usage, received_at FROM reports WHERE piid = ? '
            "ORDER BY start DESC, seq DESC LIMIT 1",
            (piid,),
        ).fetchone()
        return None if row is None else _report(row)

    def reports(self, piid: str | None = None) -> list[Report]:
        rows = self._c.execute(
            'SELECT seq, id, piid, start, "end", usage, received_at FROM reports WHERE (? IS NULL OR piid = ?) ORDER BY seq',
            (piid, piid),
        )
        return [_report(r) for r in rows]

    def latest_usages(self, account: str) -> dict[str, dict[str, int]]:
        """``{piid: usage}`` of the latest report of each active instance of ``account``
        (an instance that never reported uses nothing yet), read from the reports
        themselves: the definition that the pool (:meth:`pooled_usage`) is checked against,
        O(instances) per call."""
        rows = self._c.execute(
            "SELECT i.piid, r.usage FROM instances i JOIN reports r ON r.seq = ("
            "  SELECT seq FROM reports WHERE piid = i.piid ORDER BY start DESC, seq DESC LIMIT 1"
            ") WHERE i.account = ? AND i.deregistered_at IS NULL",
            (account,),
        )
        return {r[0]: json.loads(r[1]) for r in rows}

    # nonces
    def nonce_seen(self, nonce: str) -> bool:
        row = self._c.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone()
        return row is not None

    def add_nonce(self, nonce: str, now: datetime, *, keep_until: datetime | None = None) -> None:
        self._c.execute(
            "INSERT OR REPLACE INTO nonces (nonce, seen_at, keep_until) VALUES (?, ?, ?)",
            (nonce, iso(now), None if keep_until is None else iso(keep_until)),
        )

    def nonce_seen_at(self, nonce: str) -> datetime | None:
        """When a nonce was answered, if it is still remembered."""
        row = self._c.execute("SELECT seen_at FROM nonces WHERE nonce = ?", (nonce,)).fetchone()
        return None if row is None else parse_iso(row[0])

    def prune_nonces(self, before: datetime, now: datetime | None = None) -> None:
        """Forget nonces seen before ``before`` whose ``keep_until`` (if any) is past ``now``."""
        self._c.execute(
            "DELETE FROM nonces WHERE seen_at < ? AND (keep_until IS NULL OR keep_until < ?)",
            (iso(before), iso(now or before)),
        )


class Database:
    """One simulator database. ``path=None`` keeps it in memory (an in-process simulator
    for a what-if run, which has nothing to keep). Usable from several threads: its
    transactions are serialised."""

    def __init__(self, path: Path | None, *, durable: bool = True) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            try:
                sqlite.create_private(path)
            except OSError as exc:
                raise DbError(f"{path}: cannot create the simulator database: {exc}") from exc
        self._conn = sqlite.connect(path, durable=durable, what="simulator database", fail=DbError)
        try:
            sqlite.migrate(self._conn, MIGRATIONS, path, DbError)
        except sqlite3.Error as exc:
            self._conn.close()
            raise DbError(f"{path}: cannot open the simulator database: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise
        if path is not None:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One atomic unit of work, committed on a normal exit, rolled back on an exception.
        ``BEGIN IMMEDIATE``: checks and writes see the same state (no lost token use)."""
        with self._lock, sqlite.immediate(self._conn):
            yield Tx(self._conn)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A consistent snapshot that takes no write lock (``show``, ``reports``)."""
        with self._lock, sqlite.snapshot(self._conn):
            yield Tx(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
