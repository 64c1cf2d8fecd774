"""The SQLite database: the single source of truth of an instance (docs/architecture.md).

WAL with ``synchronous=FULL``: every job's transaction is durable when it returns, and a
crash at any instant leaves the previous or the next state, never a mix. The CLI may open
the same file while the daemon runs; ``BEGIN IMMEDIATE`` serialises writers and a busy
timeout makes the second one wait instead of failing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from ccx_agent.errors import LocalError
from ccx_agent.licensing.alerts import Alert
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.compliance import TagCompliance, TagState
from ccx_agent.licensing.interval import IntervalRecord, IntervalStatus, TagRecord
from ccx_agent.licensing.lifecycle import (
    Authorization,
    Enforcement,
    Identity,
    ProductState,
    Registration,
)
from ccx_agent.licensing.timeutil import parse_iso
from ccx_agent.ssm.credentials import Credentials
from ccx_agent.store import sqlite, statedir

DB_NAME = statedir.DB_NAME

#: Each entry moves the schema one version up; never edit a released entry, add one.
#: An entry is a script of ``;``-separated statements, all applied in one transaction
#: together with the new version number: a crash mid-migration leaves the old schema.
MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE product (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE open_interval (
        start TEXT PRIMARY KEY,
        peaks TEXT NOT NULL,
        samples INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE intervals (
        start TEXT PRIMARY KEY,
        "end" TEXT NOT NULL,
        status TEXT NOT NULL,
        registration TEXT NOT NULL,
        "authorization" TEXT NOT NULL,
        enforcement TEXT,
        tags TEXT NOT NULL
    );
    CREATE TABLE outbox (
        report_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        piid TEXT NOT NULL,
        interval_start TEXT NOT NULL,
        payload TEXT NOT NULL,
        queued_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        mnemonic TEXT NOT NULL,
        severity INTEGER NOT NULL,
        tags TEXT NOT NULL,
        detail TEXT NOT NULL,
        lines TEXT NOT NULL,
        emitted INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX alerts_pending ON alerts (emitted) WHERE emitted = 0;
    """,
    # 2: the ID certificate and its chain (the key is a file), and small settings such
    # as the UDI's UUID, created once; the last communication error for `status`.
    """
    CREATE TABLE credentials (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        piid TEXT NOT NULL,
        cert BLOB NOT NULL,
        chain TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        stored_at TEXT NOT NULL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3: file exchanges of an air-gapped site (docs/offline.md): each export, and the
    # nonce of every request it carried, so that only answers to them are believed; a
    # REPORT_USAGE request names the outbox rows it carried by their ``seq`` range.
    """
    CREATE TABLE offline_exports (
        number INTEGER PRIMARY KEY AUTOINCREMENT,
        export TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        piid TEXT,
        cert_sha256 TEXT,
        carries TEXT NOT NULL,
        imported_at TEXT
    );
    CREATE TABLE offline_requests (
        nonce TEXT PRIMARY KEY,
        number INTEGER NOT NULL REFERENCES offline_exports (number),
        position INTEGER NOT NULL,
        type TEXT NOT NULL,
        piid TEXT,
        first_seq INTEGER,
        last_seq INTEGER,
        extra TEXT NOT NULL DEFAULT '{}',
        applied_at TEXT
    );
    CREATE INDEX offline_requests_export ON offline_requests (number, position);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
#: The tables the code relies on; each must exist once the schema is current.
TABLES = frozenset(
    {
        "product",
        "open_interval",
        "intervals",
        "outbox",
        "alerts",
        "credentials",
        "meta",
        "offline_exports",
        "offline_requests",
    }
)
#: How long a writer waits for another one (the daemon, the CLI) before giving up.
BUSY_TIMEOUT_S = sqlite.BUSY_TIMEOUT_S


class StoreError(LocalError):
    """The database cannot be used as it is (newer schema, not a database …)."""


class Unborn(StoreError):
    """A SQLite file without this project's schema, opened where one was expected: an
    instance's database emptied (or replaced by an empty one) is no place to start anew."""


#: The ``meta`` key of the UDI's UUID, created with the instance and never changed.
UDI_UUID_KEY = "udi_uuid"
#: The ``meta`` key under which the daemon keeps its jobs' health (see ``daemon.py``).
JOBS_META_KEY = "daemon_jobs"
#: The ``meta`` key of the last time SSM acknowledged reports (written with the ack).
LAST_REPORT_KEY = "last_report_delivered"
#: The ``meta`` key of the UCCX nodes the samples are read from (``Agent.note_origin``).
SOURCE_META_KEY = "source_origin"


def damaged(exc: sqlite3.Error, path: Path | None = None) -> StoreError:
    """The one line every command says about a database SQLite cannot read."""
    where = f"{path}: " if path is not None else ""
    return StoreError(
        f"{where}the state database is damaged ({exc}); stop the daemon and {statedir.RESTORE_HINT}"
    )


#: What SQLite says of a file that is not (or no longer) a database.
_DAMAGE = ("not a database", "malformed", "disk image", "no such table", "file is encrypted")


def is_damage(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and any(d in text for d in _DAMAGE)


def _ts(value: datetime | None) -> str | None:
    """Instants are stored in UTC so that their text sorts and compares as time does.

    Keys (``start`` of intervals) are compared as text: the same instant written with
    another offset would otherwise be a different row, and ``ORDER BY`` would be wrong.
    """
    if value is None:
        return None
    text = _TS_MEMO.get(value)
    if text is None:
        if value.tzinfo is UTC:
            text = value.isoformat()
        elif value.tzinfo is None:
            text = value.replace(tzinfo=UTC).isoformat()  # as parse_iso reads it back
        else:
            text = value.astimezone(UTC).isoformat()
        if len(_TS_MEMO) >= _TS_MEMO_SIZE:
            _TS_MEMO.clear()
        _TS_MEMO[value] = text
    return text


#: Instants recently written, and their text: a save writes a dozen, mostly the same as
#: the save before (a simulated year writes some 800,000). Equal instants have equal UTC
#: text whatever their offset, and a naive instant never equals an aware one, so the text
#: of an equal key is the text of the value.
_TS_MEMO: dict[datetime, str] = {}
_TS_MEMO_SIZE = 4096


def _dt(value: str | None) -> datetime | None:
    return None if value is None else parse_iso(value)


def _req_dt(value: str) -> datetime:
    return parse_iso(value)


# --- product state <-> JSON ----------------------------------------------------------


def _identity_doc(ident: Identity | None) -> dict[str, Any] | None:
    if ident is None:
        return None
    return {
        "piid": ident.piid,
        "registered_at": _ts(ident.registered_at),
        "cert_issued_at": _ts(ident.cert_issued_at),
        "cert_expires_at": _ts(ident.cert_expires_at),
    }


def _identity(doc: dict[str, Any] | None) -> Identity | None:
    if doc is None:
        return None
    return Identity(
        doc["piid"],
        _req_dt(doc["registered_at"]),
        _req_dt(doc["cert_issued_at"]),
        _req_dt(doc["cert_expires_at"]),
    )


def _tags_doc(tags: Mapping[str, TagCompliance]) -> dict[str, Any]:
    return {
        tag: {
            "state": c.state.value,
            "overage_count": c.overage_count,
            "run_peak": c.run_peak,
            "locked": c.locked,
            "ooc_since": _ts(c.ooc_since),
        }
        for tag, c in tags.items()
    }


def _tags(doc: dict[str, Any]) -> dict[str, TagCompliance]:
    return {
        tag: TagCompliance(
            TagState(c["state"]),
            c["overage_count"],
            c["run_peak"],
            c["locked"],
            _dt(c["ooc_since"]),
        )
        for tag, c in doc.items()
    }


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _marks_doc(marks: Mapping[str, datetime]) -> dict[str, str | None]:
    return {k: _ts(v) for k, v in marks.items()}


def _marks(doc: dict[str, str]) -> dict[str, datetime]:
    return {k: _req_dt(v) for k, v in doc.items()}


def _same(value: Any) -> Any:
    return value


def _enum_value(value: Any) -> Any:
    return value.value


@dataclass(frozen=True, slots=True)
class _Field:
    """One field of :class:`ProductState` in the stored document: its attribute, its key,
    how its value is written and read, and whether a document may lack it (a field added
    after the first release: a state saved before reads with the field's default)."""

    attr: str
    key: str
    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]
    added: bool = False


#: The one description of the stored product state: :class:`StateCodec` writes and reads
#: it from this table alone (tests/test_store.py checks it covers every field of
#: ProductState). Never change a key nor a written form: databases of every release hold
#: them. A field added to ProductState is added here with ``added=True``.
STATE_FIELDS: tuple[_Field, ...] = (
    _Field("license_type", "license_type", _enum_value, LicenseType),
    _Field("identity", "identity", _identity_doc, _identity),
    _Field("registration", "registration", _enum_value, Registration),
    _Field("authorization", "authorization", _enum_value, Authorization),
    _Field(
        "enforcement",
        "enforcement",
        lambda e: e.value if e else None,
        lambda v: Enforcement(v) if v else None,
    ),
    _Field("last_auth_at", "last_auth_at", _ts, _dt),
    _Field("authorized_tags", "authorized_tags", sorted, frozenset),
    _Field("entitlements", "entitlements", dict, lambda d: {str(k): int(v) for k, v in d.items()}),
    _Field("tags", "tags", _tags_doc, _tags),
    _Field("id_next_attempt", "id_next_attempt", _ts, _dt),
    _Field("auth_next_attempt", "auth_next_attempt", _ts, _dt),
    _Field("evaluation_used", "evaluation_used_s", timedelta.total_seconds, _seconds),
    _Field("evaluation_warned", "evaluation_warned", sorted, frozenset),
    _Field("tags_in_use", "tags_in_use", sorted, frozenset),
    _Field("last_sample_at", "last_sample_at", _ts, _dt),
    _Field("comm_ok", "comm_ok", _same, _same),
    _Field("last_comm_error", "last_comm_error", _same, _same),
    _Field("report_failures", "report_failures", _same, int, added=True),
    _Field("report_next_attempt", "report_next_attempt", _ts, _dt, added=True),
    _Field("source_failing_since", "source_failing_since", _ts, _dt, added=True),
    _Field("source_error", "source_error", _same, _same, added=True),
    _Field("marks", "marks", _marks_doc, _marks),
)

#: Text json.dumps escapes (ensure_ascii: DEL and everything above ASCII) and msgspec
#: writes as it is.
_UNESCAPED = re.compile("[\x7f-\U0010ffff]+")


class StateCodec:
    """The product state to and from its stored text.

    The text is exactly what ``json.dumps(doc, sort_keys=True, separators=(",", ":"))``
    writes for the document of :data:`STATE_FIELDS` (every release wrote that; a
    property test holds it), made by msgspec's sorted encoder, about 7 times faster (a
    simulated year saves the state some 40,000 times), with json.dumps' escapes put in:
    only a float in exponent form (an evaluation span below 0.1 ms) or a lone surrogate,
    which msgspec writes otherwise or not at all, is written by json.dumps itself.
    msgspec is imported on the first save: a command that only reads
    (``status --check``, run every minute) never loads it.

    It remembers the last text it saved or read and its state: jobs re-read an unchanged
    state many times an interval, most loads follow a save, and a ProductState is
    immutable (it reads back equal to itself, tests/test_store.py), so the same object
    is returned for the same text.
    """

    def __init__(self) -> None:
        self._encode: Callable[[Any], bytes] | None = None
        self._last: tuple[str, ProductState] | None = None
        # Each field's key, reader, and value when an older document lacks it (its
        # default in ProductState), in the order of its fields (a test holds it): read
        # positionally, as fast as the hand-written reader was.
        defaults = {f.name: f.default for f in dataclasses.fields(ProductState)}
        self._readers: tuple[tuple[str, Callable[[Any], Any], bool, Any], ...] = tuple(
            (f.key, f.load, f.added, defaults[f.attr] if f.added else None) for f in STATE_FIELDS
        )
        for f in STATE_FIELDS:
            assert not f.added or defaults[f.attr] is not dataclasses.MISSING, f.attr

    def dumps(self, state: ProductState, *, saved: bool = False) -> str:
        """The text of ``state``; ``saved``: it is being stored, and the next load of
        this text may return ``state`` itself (a state given in another time zone reads
        back as equal, not as the same object: only a save remembers it)."""
        doc = {f.key: f.dump(getattr(state, f.attr)) for f in STATE_FIELDS}
        text = self._json(doc)
        if saved:
            self._last = (text, state)
        return text

    def loads(self, text: str) -> ProductState:
        """Read what :meth:`dumps` wrote, by this or an older version."""
        last = self._last
        if last is not None and text == last[0]:
            return last[1]
        doc = json.loads(text)
        state = ProductState(
            *[
                load(doc[key]) if not added or key in doc else default
                for key, load, added, default in self._readers
            ]
        )
        self._last = (text, state)
        return state

    def _json(self, doc: dict[str, Any]) -> str:
        if self._encode is None:
            import msgspec  # noqa: PLC0415 - see the class's docstring

            self._encode = msgspec.json.Encoder(order="sorted").encode
        if "e" not in repr(doc["evaluation_used_s"]):
            try:
                text = self._encode(doc).decode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it
                pass
            else:
                if text.isascii() and "\x7f" not in text:
                    return text
                # Outside a string msgspec writes only ASCII: each run is string text.
                return _UNESCAPED.sub(lambda m: json.dumps(m[0])[1:-1], text)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))


_CODEC = StateCodec()
state_to_json = _CODEC.dumps
state_from_json = _CODEC.loads


# --- interval tags <- JSON (the report's and simulate's reads of many rows) ----------


@functools.cache
def _json_decoder() -> tuple[Callable[[str], Any], type[Exception]]:
    import msgspec  # noqa: PLC0415 - see StateCodec

    return msgspec.json.Decoder().decode, msgspec.DecodeError


#: Below this many rows, ``json.loads`` decodes the interval tags: the same dicts, without
#: importing msgspec for a read of the last interval or two.
_FEW_ROWS = 16


@functools.cache
def _tags_decoder() -> tuple[Callable[[str], Any], type[Exception]]:
    """A typed decoder of an interval's ``tags`` document for the report, which reads a
    year of them: only the fields it reads, without a dict per tag (msgspec on first use,
    as :class:`StateCodec` does)."""
    import msgspec  # noqa: PLC0415

    class _StoredTag(msgspec.Struct, gc=False):
        usage: int | None
        entitlement: int
        reported: int | None
        state: str

    return msgspec.json.Decoder(dict[str, _StoredTag]).decode, msgspec.DecodeError


@dataclass(frozen=True, slots=True)
class OpenInterval:
    start: datetime
    peaks: dict[str, int]
    samples: int
    failures: int


@dataclass(frozen=True, slots=True)
class OutboxItem:
    report_id: str
    piid: str
    interval_start: datetime
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One file export (docs/offline.md): ``number`` counts exports, ``export`` is the
    random id the files carry; ``piid``/``cert_sha256`` the identity it was made with."""

    number: int
    export: str
    created_at: datetime
    piid: str | None
    cert_sha256: str | None
    carries: dict[str, int]
    imported_at: datetime | None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request of an export, found by its nonce; ``applied_at`` once its answer was."""

    nonce: str
    number: int
    position: int
    type: str
    piid: str | None
    first_seq: int | None
    last_seq: int | None
    extra: dict[str, Any]
    applied_at: datetime | None


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    time: datetime
    mnemonic: str
    severity: int
    tags: tuple[str, ...]
    detail: str
    lines: tuple[str, ...]


#: ``(start, end, tag, usage, entitlement, reported, state)`` of one interval's tag.
IntervalTagRow = tuple[str, str, str, int | None, int, int | None, str]


def _alert_row(r: Sequence[Any]) -> AlertRow:
    """An ``alerts`` row (id, time, mnemonic, severity, tags, detail, lines …)."""
    return AlertRow(
        r[0], _req_dt(r[1]), r[2], r[3], tuple(json.loads(r[4])), r[5], tuple(json.loads(r[6]))
    )


class Tx:
    """The operations of one transaction; only :meth:`Store.transaction` makes one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    # product
    def product_text(self) -> str | None:
        """The stored product state as written, unread: whether there is one at all."""
        row = self._c.execute("SELECT state FROM product WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

    def load_product(self) -> ProductState | None:
        row = self._c.execute("SELECT state FROM product WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            return state_from_json(row[0])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Not what any version wrote: a damaged database, not a bug to trace back.
            raise StoreError(
                f"the state database is damaged (the product state cannot be read: "
                f"{type(exc).__name__}: {exc}); stop the daemon and {statedir.RESTORE_HINT}"
            ) from None

    def save_product(self, state: ProductState, now: datetime) -> None:
        # Remembered before the row is written: a rolled-back save leaves other text in
        # the row, and that text is decoded.
        text = _CODEC.dumps(state, saved=True)
        self._c.execute(
            "INSERT INTO product (id, state, updated_at) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (text, _ts(now)),
        )

    # the intervals being sampled
    def open_intervals(self) -> list[OpenInterval]:
        rows = self._c.execute(
            "SELECT start, peaks, samples, failures FROM open_interval ORDER BY start"
        ).fetchall()
        return [OpenInterval(_req_dt(r[0]), json.loads(r[1]), r[2], r[3]) for r in rows]

    def put_open_interval(self, item: OpenInterval) -> None:
        self._c.execute(
            "INSERT INTO open_interval (start, peaks, samples, failures) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (start) DO UPDATE SET peaks = excluded.peaks, "
            "samples = excluded.samples, failures = excluded.failures",
            (_ts(item.start), json.dumps(item.peaks, sort_keys=True), item.samples, item.failures),
        )

    def drop_open_interval(self, start: datetime) -> None:
        self._c.execute("DELETE FROM open_interval WHERE start = ?", (_ts(start),))

    # closed intervals
    def add_intervals(self, records: Sequence[IntervalRecord]) -> None:
        """Record closed intervals (one statement for many: a catch-up closes a day at once)."""
        self._c.executemany(
            'INSERT INTO intervals (start, "end", status, registration, "authorization", '
            "enforcement, tags) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    _ts(rec.start),
                    _ts(rec.end),
                    rec.status,
                    rec.registration,
                    rec.authorization,
                    rec.enforcement,
                    json.dumps({t: r.as_json() for t, r in rec.tags.items()}),
                )
                for rec in records
            ],
        )

    def last_interval_end(self) -> datetime | None:
        row = self._c.execute('SELECT "end" FROM intervals ORDER BY start DESC LIMIT 1').fetchone()
        return None if row is None else _req_dt(row[0])

    def intervals(self, since: datetime | None = None) -> list[IntervalRecord]:
        rows = self._c.execute(
            'SELECT start, "end", status, registration, "authorization", enforcement, tags '
            "FROM intervals WHERE start >= ? ORDER BY start",
            (_ts(since) if since is not None else "",),
        )
        return self._interval_records(rows)

    def last_intervals(self, n: int) -> list[IntervalRecord]:
        """The newest ``n`` closed intervals, oldest first (``status`` needs one, not a year)."""
        rows = self._c.execute(
            'SELECT start, "end", status, registration, "authorization", enforcement, tags '
            "FROM intervals ORDER BY start DESC LIMIT ?",
            (n,),
        ).fetchall()
        return self._interval_records(reversed(rows))

    def last_interval_with_data(self) -> tuple[IntervalRecord | None, int]:
        """The newest closed interval that had a good sample (None: none has), and how many
        closed intervals after it had none (NO_DATA): what ``status`` shows in an outage."""
        rows = self._c.execute(
            'SELECT start, "end", status, registration, "authorization", enforcement, tags '
            "FROM intervals WHERE status != ? ORDER BY start DESC LIMIT 1",
            (IntervalStatus.NO_DATA.value,),
        ).fetchall()
        found = self._interval_records(rows)
        after = _ts(found[0].start) if found else ""
        (count,) = self._c.execute(
            "SELECT count(*) FROM intervals WHERE start > ?", (after,)
        ).fetchone()
        return (found[0] if found else None), int(count)

    @staticmethod
    def _interval_records(rows: Iterable[Sequence[Any]]) -> list[IntervalRecord]:
        # A year is 35,000 rows (``simulate`` reads them all): each row's end is usually
        # the next one's start, parsed once; the tags decoded by msgspec (the same dict
        # ``json.loads`` gives for what ``add_intervals`` writes; it in any doubt).
        out = []
        last_text, last = "", None
        rows = list(rows)
        decode, decode_error = (
            _json_decoder() if len(rows) >= _FEW_ROWS else (json.loads, json.JSONDecodeError)
        )
        for r in rows:
            try:
                doc = decode(r[6])
            except decode_error:
                doc = json.loads(r[6])
            tags = {
                t: TagRecord(
                    v["usage"], v["entitlement"], v["reported"], v["state"], v["overage_count"]
                )
                for t, v in doc.items()
            }
            start = last if r[0] == last_text and last is not None else _req_dt(r[0])
            last_text, last = r[1], _req_dt(r[1])
            out.append(IntervalRecord(start, last, IntervalStatus(r[2]), r[3], r[4], r[5], tags))
        return out

    # outbox
    def enqueue_many(
        self, items: Sequence[tuple[str, str, datetime, Mapping[str, Any]]], now: datetime
    ) -> None:
        """Queue reports ``(report_id, piid, interval_start, payload)`` in the given order."""
        if not items:
            return
        seq = self._c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox").fetchone()[0]
        queued = _ts(now)
        self._c.executemany(
            "INSERT INTO outbox (report_id, seq, piid, interval_start, payload, queued_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (rid, seq + n, piid, _ts(start), json.dumps(payload, sort_keys=True), queued)
                for n, (rid, piid, start, payload) in enumerate(items)
            ],
        )

    def outbox_batch(self, limit: int) -> list[OutboxItem]:
        rows = self._c.execute(
            "SELECT report_id, piid, interval_start, payload, attempts FROM outbox ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxItem(r[0], r[1], _req_dt(r[2]), json.loads(r[3]), r[4]) for r in rows]

    def outbox_ack(self, report_ids: Sequence[str]) -> int:
        cur = self._c.executemany(
            "DELETE FROM outbox WHERE report_id = ?", [(i,) for i in report_ids]
        )
        return cur.rowcount

    def outbox_failed(self, report_ids: Sequence[str], error: str) -> None:
        self._c.executemany(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE report_id = ?",
            [(error, i) for i in report_ids],
        )

    def outbox_count(self) -> int:
        return int(self._c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def outbox_drop_piid(self, piid: str) -> int:
        """Reports of a wiped identity can never be signed again; they are dropped, and
        their intervals say so (DROPPED, nothing reported), never still REPORTED. The
        caller says how many, on its output and with ENTITLEMENT_REPORT_FAILED."""
        starts = [
            r[0]
            for r in self._c.execute(
                "SELECT interval_start FROM outbox WHERE piid = ?", (piid,)
            ).fetchall()
        ]
        for start in starts:
            row = self._c.execute(
                "SELECT tags FROM intervals WHERE start = ? AND status = ?",
                (start, IntervalStatus.REPORTED.value),
            ).fetchone()
            if row is None:
                continue
            tags = json.loads(row[0])
            for value in tags.values():
                value["reported"] = None
            self._c.execute(
                "UPDATE intervals SET status = ?, tags = ? WHERE start = ?",
                (IntervalStatus.DROPPED.value, json.dumps(tags), start),
            )
        return self._c.execute("DELETE FROM outbox WHERE piid = ?", (piid,)).rowcount

    # file exchanges (ccx_agent/offline)
    def outbox_after(self, seq: int, limit: int, piid: str) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, payload)`` of up to ``limit`` reports of ``piid`` after ``seq``, in order:
        an export pages through a year of reports without holding them all."""
        rows = self._c.execute(
            "SELECT seq, payload FROM outbox WHERE seq > ? AND piid = ? ORDER BY seq LIMIT ?",
            (seq, piid, limit),
        ).fetchall()
        return [(int(r[0]), json.loads(r[1])) for r in rows]

    def outbox_ids_between(self, first: int, last: int, piid: str) -> list[str]:
        rows = self._c.execute(
            "SELECT report_id FROM outbox WHERE seq BETWEEN ? AND ? AND piid = ? ORDER BY seq",
            (first, last, piid),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def outbox_span(self, piid: str) -> tuple[int, datetime | None, datetime | None]:
        """How many reports of ``piid`` wait, and the first and last interval they cover."""
        row = self._c.execute(
            "SELECT COUNT(*), MIN(interval_start), MAX(interval_start) FROM outbox WHERE piid = ?",
            (piid,),
        ).fetchone()
        return int(row[0]), _dt(row[1]), _dt(row[2])

    def add_export(
        self,
        export: str,
        now: datetime,
        piid: str | None,
        cert_sha256: str | None,
        carries: Mapping[str, int],
        requests: Iterable[tuple[str, int, str, str | None, int | None, int | None, str]],
    ) -> int:
        """Record an export and its requests ``(nonce, position, type, piid, first_seq,
        last_seq, extra JSON)``; the requests of earlier exports are forgotten (an answer
        to them is refused as stale). Returns the export's number."""
        cur = self._c.execute(
            "INSERT INTO offline_exports (export, created_at, piid, cert_sha256, carries) "
            "VALUES (?, ?, ?, ?, ?)",
            (export, _ts(now), piid, cert_sha256, json.dumps(dict(carries), sort_keys=True)),
        )
        number = int(cur.lastrowid or 0)
        self._c.execute("DELETE FROM offline_requests WHERE number < ?", (number,))
        self._c.executemany(
            "INSERT INTO offline_requests (nonce, number, position, type, piid, first_seq, "
            "last_seq, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((n, number, pos, t, p, f, la, x) for n, pos, t, p, f, la, x in requests),
        )
        return number

    _EXPORT = "SELECT number, export, created_at, piid, cert_sha256, carries, imported_at FROM offline_exports"

    @staticmethod
    def _export(row: Sequence[Any] | None) -> ExportRecord | None:
        if row is None:
            return None
        return ExportRecord(
            int(row[0]), row[1], _req_dt(row[2]), row[3], row[4], json.loads(row[5]), _dt(row[6])
        )

    def export(self, export: str) -> ExportRecord | None:
        return self._export(
            self._c.execute(f"{self._EXPORT} WHERE export = ?", (export,)).fetchone()
        )

    def latest_export(self) -> ExportRecord | None:
        row = self._c.execute(f"{self._EXPORT} ORDER BY number DESC LIMIT 1").fetchone()
        return self._export(row)

    def last_import(self) -> ExportRecord | None:
        row = self._c.execute(
            f"{self._EXPORT} WHERE imported_at IS NOT NULL ORDER BY number DESC LIMIT 1"
        ).fetchone()
        return self._export(row)

    def export_request(self, nonce: str) -> RequestRecord | None:
        row = self._c.execute(
            "SELECT nonce, number, position, type, piid, first_seq, last_seq, extra, applied_at "
            "FROM offline_requests WHERE nonce = ?",
            (nonce,),
        ).fetchone()
        if row is None:
            return None
        return RequestRecord(
            row[0], int(row[1]), int(row[2]), row[3], row[4], row[5], row[6],
            json.loads(row[7]), _dt(row[8]),
        )  # fmt: skip

    def export_requests(self, number: int) -> int:
        """How many requests export ``number`` carried (0 once superseded)."""
        row = self._c.execute(
            "SELECT COUNT(*) FROM offline_requests WHERE number = ?", (number,)
        ).fetchone()
        return int(row[0])

    def request_applied(self, nonce: str, now: datetime) -> None:
        self._c.execute(
            "UPDATE offline_requests SET applied_at = ? WHERE nonce = ?", (_ts(now), nonce)
        )

    def export_imported(self, number: int, now: datetime) -> None:
        self._c.execute(
            "UPDATE offline_exports SET imported_at = ? WHERE number = ? AND imported_at IS NULL",
            (_ts(now), number),
        )

    # alert log
    def credentials(self) -> Credentials | None:
        row = self._c.execute("SELECT piid, cert, chain, account FROM credentials").fetchone()
        if row is None:
            return None
        return Credentials(
            row[0], bytes(row[1]), tuple(bytes.fromhex(c) for c in json.loads(row[2])), row[3]
        )

    def save_credentials(self, cred: Credentials, now: datetime) -> None:
        self._c.execute(
            "INSERT OR REPLACE INTO credentials (id, piid, cert, chain, account, stored_at)"
            " VALUES (1, ?, ?, ?, ?, ?)",
            (
                cred.piid,
                cred.cert,
                json.dumps([c.hex() for c in cred.chain]),
                cred.account,
                _ts(now),
            ),
        )

    def drop_credentials(self) -> None:
        self._c.execute("DELETE FROM credentials")

    def meta(self, key: str) -> str | None:
        row = self._c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add_alert(self, time: datetime, alert: Alert, lines: Sequence[str]) -> int:
        cur = self._c.execute(
            "INSERT INTO alerts (time, mnemonic, severity, tags, detail, lines) VALUES (?, ?, ?, ?, ?, ?)",
            (
                _ts(time),
                alert.mnemonic,
                alert.severity,
                json.dumps(list(alert.tags)),
                alert.detail,
                json.dumps(list(lines)),
            ),
        )
        return int(cur.lastrowid or 0)

    def alerts(self, *, pending_only: bool = False, since_id: int = 0) -> list[AlertRow]:
        sql = "SELECT id, time, mnemonic, severity, tags, detail, lines FROM alerts WHERE id > ?"
        if pending_only:
            sql += " AND emitted = 0"
        rows = self._c.execute(sql + " ORDER BY id", (since_id,)).fetchall()
        return [_alert_row(r) for r in rows]

    def last_alert_id(self) -> int:
        return int(self._c.execute("SELECT COALESCE(MAX(id), 0) FROM alerts").fetchone()[0])

    def mark_emitted(self, ids: Sequence[int]) -> None:
        self._c.executemany("UPDATE alerts SET emitted = 1 WHERE id = ?", [(i,) for i in ids])

    # --- history: the report, the alert log and retention (docs/reports.md) ----------

    def iter_interval_tag_rows(self, since: datetime, until: datetime) -> Iterator[IntervalTagRow]:
        """One row per (closed interval, tag) for intervals starting in ``[since, until)``,
        streamed from the cursor (the report of a year holds no list of its rows).

        ``(start, end, tag, usage, entitlement, reported, state)``, times as stored (UTC
        ISO text), ordered by start then tag. No :class:`IntervalRecord` is made: a year
        is 105,120 rows for three tags. Each row's tags are decoded by a typed msgspec
        decoder (a third of ``json.loads``'s cost; SQLite's ``json_each`` is slower
        still, docs/performance.md); a document it refuses is decoded by ``json.loads``
        and read as before. Consume it inside the read transaction that made it.
        """
        decode, decode_error = _tags_decoder()
        keys: Any = None
        order: list[str] = []
        for start, end, tags in self._c.execute(
            'SELECT start, "end", tags FROM intervals WHERE start >= ? AND start < ? '
            "ORDER BY start",
            (_ts(since), _ts(until)),
        ):
            try:
                doc = decode(tags)
            except decode_error:  # not the usual shape: read (or fail) as before
                loose = json.loads(tags)
                for tag in sorted(loose):
                    v = loose[tag]
                    yield (start, end, tag, v["usage"], v["entitlement"], v["reported"], v["state"])
                continue
            # Every interval of an instance names the same tags: sort them once.
            if doc.keys() != keys:
                keys, order = doc.keys(), sorted(doc)
            for tag in order:
                t = doc[tag]
                yield (start, end, tag, t.usage, t.entitlement, t.reported, t.state)

    def alert_log(self, since: datetime) -> list[tuple[AlertRow, bool]]:
        """Alerts raised at or after ``since``, oldest first, each with whether it was
        delivered (emitted to syslog by the daemon)."""
        rows = self._c.execute(
            "SELECT id, time, mnemonic, severity, tags, detail, lines, emitted FROM alerts "
            "WHERE time >= ? ORDER BY id",
            (_ts(since),),
        ).fetchall()
        return [(_alert_row(r), bool(r[7])) for r in rows]

    def prune_history(
        self, before: datetime, limit: int, *, alerts: bool = True
    ) -> tuple[int, int]:
        """Delete at most ``limit`` intervals that ended by ``before`` and (with ``alerts``)
        at most ``limit`` delivered alerts raised before it; return how many of each went.

        An interval whose report still waits in the outbox is kept, and so is an alert not
        yet delivered: retention never loses what has not reached its destination.
        """
        cut = _ts(before)
        intervals = self._c.execute(
            "DELETE FROM intervals WHERE start IN (SELECT start FROM intervals "
            'WHERE start < ? AND "end" <= ? AND start NOT IN (SELECT interval_start FROM outbox) '
            "ORDER BY start LIMIT ?)",
            (cut, cut, limit),
        ).rowcount
        if not alerts:
            return intervals, 0
        gone = self._c.execute(
            "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts "
            "WHERE emitted = 1 AND time < ? ORDER BY id LIMIT ?)",
            (cut, limit),
        ).rowcount
        return intervals, gone


class Store:
    """One database file. Open it, then do all work in :meth:`transaction`.

    Several ``Store`` objects (processes) may share one file. One ``Store`` may be used
    from several threads: its transactions are serialised; they do not nest.
    """

    def __init__(
        self, path: Path, *, durable: bool = True, readonly: bool = False, create: bool = True
    ) -> None:
        """Open (and with ``readonly`` False, create and migrate) the database at ``path``.

        ``readonly`` never creates a directory, a database or a migration, and takes no
        write lock: for ``status`` and the other commands that only look. ``create=False``
        migrates an existing schema but raises :class:`Unborn` rather than make one in a
        file that has none (a valid but empty SQLite file where an instance lived).
        """
        self.path = path
        self.durable = durable
        self.readonly = readonly
        self._lock = threading.Lock()
        self._owner: int | None = None
        if readonly:
            self._conn = self._open_readonly(path)
            return
        try:
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(path.parent, 0o700)
            sqlite.create_private(path)
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the state database: {exc}") from exc
        try:
            self._conn = sqlite.connect(
                path, durable=durable, what="state database", fail=StoreError
            )
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.Error) and is_damage(exc.__cause__):
                raise damaged(exc.__cause__, path) from None
            raise
        try:
            if not create and not self._has_schema(self._conn):
                raise Unborn(f"{path}: the state database holds no schema")
            self._migrate()
        except sqlite3.Error as exc:
            self._conn.close()
            if is_damage(exc):
                raise damaged(exc, path) from None
            raise StoreError(f"{path}: cannot open the state database: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise
        # A read-only mount still lets ``status`` read the file.
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)

    @staticmethod
    def _open_readonly(path: Path) -> sqlite3.Connection:
        if not path.is_file():
            raise StoreError(f"{path}: no state database here")
        # On a read-only mount nobody can write, and SQLite could not make the -shm a
        # WAL reader needs: read the file as it stands.
        frozen = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?{'immutable=1' if frozen else 'mode=ro'}",
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the state database: {exc}") from exc
        try:
            conn.execute("PRAGMA query_only = ON")
            if not Store._has_schema(conn):
                conn.close()
                raise Unborn(f"{path}: the state database holds no schema")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
        except sqlite3.Error as exc:
            conn.close()
            if is_damage(exc):
                raise damaged(exc, path) from None
            raise StoreError(f"{path}: cannot open the state database: {exc}") from exc
        target = len(MIGRATIONS)
        if version == target:
            try:
                Store._check_tables(conn, path)
            except BaseException:
                conn.close()
                raise
        if version != target:
            conn.close()
            newer = version > target
            raise StoreError(
                f"{path}: schema version {version} is "
                + (
                    f"newer than this ccx-agent understands ({target}); upgrade ccx-agent"
                    if newer
                    else f"older than this ccx-agent's ({target}); start the daemon "
                    "(or any command that writes) once to upgrade it"
                )
            )
        return conn

    @staticmethod
    def _has_schema(conn: sqlite3.Connection) -> bool:
        """Whether any table exists: SQLite reads an empty (or zero-length) file as a valid
        database with nothing in it, which is a lost instance's, not a new one's, when the
        directory shows that one lived."""
        return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None

    def missing_life(self) -> list[str]:
        """What an instance's database must hold once it is made, and this one lacks: the
        product state and the UDI's UUID are written with the instance
        (:meth:`be_born`); without them the registration, the evaluation and the identity
        are gone, and starting a fresh one would hide that. Raises :class:`StoreError`
        where the product state is there but unreadable."""
        with self.read() as tx:
            missing = []
            if tx.product_text() is None:
                missing.append("the product state (the 'product' row)")
            else:
                tx.load_product()  # one that no version wrote is damage: StoreError
            if tx.meta(UDI_UUID_KEY) is None:
                missing.append(f"the UDI (the 'meta' row {UDI_UUID_KEY!r})")
        return missing

    def be_born(self, state: ProductState, udi_uuid: str, now: datetime) -> None:
        """Write what a new instance starts with, where it is not yet written, in one
        transaction: from then on a database without them is a lost one."""
        with self.transaction() as tx:
            if tx.product_text() is None:
                tx.save_product(state, now)
            if tx.meta(UDI_UUID_KEY) is None:
                tx.set_meta(UDI_UUID_KEY, udi_uuid)

    def _migrate(self) -> None:
        # ``MIGRATIONS`` is read at call time, not import time, so a test can add one.
        sqlite.migrate(self._conn, MIGRATIONS, self.path, StoreError)
        self._check_tables(self._conn, self.path)

    @staticmethod
    def _check_tables(conn: sqlite3.Connection, path: Path) -> None:
        """A table dropped by hand would otherwise be found by the first job that needs
        it, as a traceback every interval; say it once, at open."""
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = sorted(TABLES - have)
        if missing:
            raise StoreError(
                f"{path}: the state database is damaged (missing table(s): "
                f"{', '.join(missing)}); stop the daemon and {statedir.RESTORE_HINT}"
            )

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def pragma(self, name: str) -> object:
        """Read one PRAGMA of this store's own connection (``synchronous`` is per connection)."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        row = self._conn.execute(f"PRAGMA {name}").fetchone()
        return None if row is None else row[0]

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This thread's turn on the connection: transactions are serialised, never nested."""
        me = threading.get_ident()
        if self._owner == me:
            raise StoreError("a transaction is already open in this thread; they do not nest")
        with self._lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = None

    def transaction(self, *, fsync: bool = True) -> _Unit:
        """One atomic unit of work: committed on a normal exit, rolled back on an exception.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so a job never fails half way
        for want of it; another process holding it is waited for (busy timeout).

        ``fsync=False`` commits without waiting for the disk (``synchronous=NORMAL`` for
        this one commit): still atomic, and still there after the process is killed, but
        a power cut or a kernel crash may undo it, and only it and later commits (the
        write-ahead log is replayed up to its first incomplete frame, and the next
        durable commit writes it to disk too). For a commit whose loss is harmless by
        design only: the acknowledgement of reports, whose loss means they are sent
        again and the server keeps each report id once (docs/architecture.md).
        """
        return _Unit(self, write=True, relaxed=not fsync and self.durable)

    def read(self) -> _Unit:
        """A consistent read-only snapshot that takes no write lock.

        For looking before deciding to write (is anything due? is the outbox empty?) and
        for ``status``: it never waits for the daemon's writer, nor makes it wait.
        """
        return _Unit(self, write=False, relaxed=False)

    def product(self) -> ProductState | None:
        """The product state alone, by one statement outside any transaction.

        A single statement is a consistent read by itself: a look at the state alone
        (is anything due? may the outbox send?) needs no snapshot's ``BEGIN`` and
        ``ROLLBACK`` around it.
        """
        with self._turn():
            return Tx(self._conn).load_product()

    def checkpoint(self) -> bool:
        """Fold the write-ahead log into the database and cut it to nothing; whether it
        went all the way (a reader's snapshot can hold it back until the next time)."""
        with self._turn():
            busy, _, _ = sqlite.checkpoint(self._conn)
        return busy == 0

    def integrity_check(self) -> str:
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def quick_check(self) -> None:
        """Read every page (``PRAGMA quick_check``): a start-up must not run for days on a
        database whose garbled pages only show when a job reaches them."""
        try:
            rows = self._conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.Error as exc:
            raise damaged(exc, self.path) from None
        result = "; ".join(str(r[0]) for r in rows[:3])
        if result != "ok":
            raise StoreError(
                f"{self.path}: the state database is damaged ({result}); stop the daemon and "
                f"{statedir.RESTORE_HINT}"
            )

    def close(self) -> None:
        self._conn.close()


class _Unit:
    """The ``with`` block of :meth:`Store.transaction` or :meth:`Store.read`.

    What ``_turn`` + ``sqlite.immediate`` / ``sqlite.snapshot`` do, in one plain context
    manager: a simulated year opens some 300,000 of them, and three nested generator
    context managers each cost more than the ``BEGIN`` and ``COMMIT`` they wrap
    (docs/performance.md). The order is theirs: the thread's turn, then (for a write
    with ``fsync=False``) ``synchronous = NORMAL``, then ``BEGIN``; on the way out
    ``COMMIT`` on a normal exit (a failed ``COMMIT`` is rolled back and raised),
    ``ROLLBACK`` after an exception or for a read, then ``synchronous = FULL`` again,
    then the turn is given back, whatever failed in between.
    """

    __slots__ = ("_relaxed", "_store", "_write")

    def __init__(self, store: Store, *, write: bool, relaxed: bool) -> None:
        self._store = store
        self._write = write
        self._relaxed = relaxed

    def __enter__(self) -> Tx:
        store = self._store
        me = threading.get_ident()
        if store._owner == me:
            raise StoreError("a transaction is already open in this thread; they do not nest")
        store._lock.__enter__()  # the lock's ``with`` protocol, as ``_turn`` uses it
        store._owner = me
        conn = store._conn
        try:
            if self._relaxed:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE" if self._write else "BEGIN DEFERRED")
            except BaseException:
                if self._relaxed:
                    conn.execute("PRAGMA synchronous = FULL")
                raise
        except BaseException:
            store._owner = None
            store._lock.__exit__(None, None, None)
            raise
        return Tx(conn)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        conn = store._conn
        try:
            try:
                if self._write and exc_type is None:
                    try:
                        conn.execute("COMMIT")
                    except BaseException:
                        # SQLite may already have rolled back (I/O error, disk full …):
                        # the original exception is what matters.
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                elif conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                if self._relaxed:
                    conn.execute("PRAGMA synchronous = FULL")
        finally:
            store._owner = None
            store._lock.__exit__(None, None, None)
