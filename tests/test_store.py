"""The SQLite database of docs/architecture.md: pragmas, codecs, tables, transactions, migrations,
two processes on one file, and a writer killed with SIGKILL at any instant."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import random
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccx_agent.licensing.alerts import Alert, Mnemonic
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
from ccx_agent.store import db as store_mod
from ccx_agent.store.db import (
    DB_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    OpenInterval,
    Store,
    StoreError,
    _ts,
    state_from_json,
    state_to_json,
)
from tests import store_writer

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
#: No wait in this file may be longer: a broken child or lock fails the test, never hangs it.
TIMEOUT = 20.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / DB_NAME


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(db)
    yield s
    s.close()


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection, as another program (or sqlite3 the shell) would open the file."""
    return sqlite3.connect(path, isolation_level=None, timeout=TIMEOUT)


def full_state() -> ProductState:
    """Every field set, none at its default; timestamps with microseconds."""
    us = timedelta(microseconds=123_457)
    return ProductState(
        license_type=LicenseType.FLEX_HCS,
        identity=Identity(
            "PIID-7f3a", T0 + us, T0 + 2 * us, T0 + timedelta(days=365, microseconds=999_999)
        ),
        registration=Registration.REGISTERED,
        authorization=Authorization.OUT_OF_COMPLIANCE,
        enforcement=Enforcement.OUT_OF_COMPLIANCE,
        last_auth_at=T0 + timedelta(days=3, microseconds=1),
        authorized_tags=frozenset({"hcs-standard-seat", "hcs-premium-seat"}),
        entitlements={"hcs-standard-seat": 100, "hcs-premium-seat": 5, "hcs-outbound-port": 0},
        tags={
            "hcs-standard-seat": TagCompliance(TagState.IN_COMPLIANCE, 0, 0, None, None),
            "hcs-premium-seat": TagCompliance(TagState.OVERAGE, 3, 7, None, None),
            "hcs-outbound-port": TagCompliance(
                TagState.OUT_OF_COMPLIANCE, 5, 12, 12, T0 + timedelta(hours=1, microseconds=5)
            ),
            "hcs-extra": TagCompliance(
                TagState.ENFORCEMENT, 5, 30, 30, T0 - timedelta(days=91, microseconds=7)
            ),
        },
        id_next_attempt=T0 + timedelta(minutes=61, microseconds=10),
        auth_next_attempt=T0 + timedelta(minutes=62, microseconds=11),
        evaluation_used=timedelta(days=12, seconds=3_600, microseconds=654_321),
        evaluation_warned=frozenset({30, 14, 7}),
        tags_in_use=frozenset({"hcs-standard-seat", "hcs-outbound-port"}),
        last_sample_at=T0 + timedelta(seconds=59, microseconds=999_999),
        comm_ok=False,
        last_comm_error="connect timeout to smartreceiver.cisco.com:443",
        report_failures=3,
        report_next_attempt=T0 + timedelta(minutes=45, microseconds=3),
        source_failing_since=T0 + timedelta(minutes=50),
        source_error="SourceError: UCCX down",
        marks={
            "SYSTEM_IN_OOC_STATE": T0 + timedelta(microseconds=42),
            "ENTITLEMENT_REPORT_FAILED": T0 + timedelta(days=1),
        },
    )


def interval(start: datetime, *, enforcement: str | None = None) -> IntervalRecord:
    return IntervalRecord(
        start,
        start + STEP,
        "REPORTED",
        "REGISTERED",
        "AUTHORIZED",
        enforcement,
        {
            "flex-standard-seat": TagRecord(12, 10, 12, "OVERAGE", 1),
            "flex-premium-seat": TagRecord(None, 3, None, "IN_COMPLIANCE", 0),
        },
    )


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = ("product", "open_interval", "intervals", "outbox", "alerts")
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


# --- pragmas and file modes ----------------------------------------------------------


def test_a_durable_store_uses_wal_and_full_sync(store: Store, db: Path) -> None:
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("busy_timeout") == int(store_mod.BUSY_TIMEOUT_S * 1000)
    # WAL is a property of the file: every other connection sees it too.
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_a_throwaway_store_skips_fsync_but_keeps_wal(tmp_path: Path) -> None:
    s = Store(tmp_path / DB_NAME, durable=False)
    try:
        assert s.pragma("journal_mode") == "wal"
        assert s.pragma("synchronous") == 0
    finally:
        s.close()


def test_a_transaction_without_fsync_is_committed_under_normal_then_full_again(
    store: Store, db: Path
) -> None:
    """``fsync=False`` relaxes that one commit (``synchronous=NORMAL``), committed or
    rolled back alike, and leaves the connection as durable as before."""
    with store.transaction(fsync=False) as tx:
        assert tx._c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        tx.set_meta("k", "v")
    assert store.pragma("synchronous") == 2
    conn = raw(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'k'").fetchone() == ("v",)
    finally:
        conn.close()
    with pytest.raises(RuntimeError), store.transaction(fsync=False) as tx:
        tx.set_meta("k", "w")
        raise RuntimeError("rolled back")
    assert store.pragma("synchronous") == 2
    with store.read() as tx:
        assert tx.meta("k") == "v"
    with store.transaction() as tx:
        assert tx._c.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_throwaway_store_stays_without_fsync_after_a_relaxed_transaction(
    tmp_path: Path,
) -> None:
    s = Store(tmp_path / DB_NAME, durable=False)
    try:
        with s.transaction(fsync=False) as tx:
            tx.set_meta("k", "v")
        assert s.pragma("synchronous") == 0
    finally:
        s.close()


def test_pragma_rejects_anything_but_a_name(store: Store) -> None:
    with pytest.raises(ValueError, match="not a pragma name"):
        store.pragma("synchronous = OFF")
    assert store.pragma("synchronous") == 2


def test_the_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "var" / "lib" / "ccx-agent" / DB_NAME
    old = os.umask(0o022)  # a permissive umask: the modes must not depend on it
    try:
        s = Store(db)
        with s.transaction() as tx:
            tx.save_product(full_state(), T0)
        try:
            assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
            for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                assert f.exists(), f
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        finally:
            s.close()
    finally:
        os.umask(old)


# --- product state <-> JSON -----------------------------------------------------------


def test_every_field_of_the_product_state_round_trips(store: Store) -> None:
    s = full_state()
    assert {c.state for c in s.tags.values()} == set(TagState)
    assert state_from_json(state_to_json(s)) == s
    with store.transaction() as tx:
        assert tx.load_product() is None
        tx.save_product(s, T0)
    with store.transaction() as tx:
        assert tx.load_product() == s


def test_the_codec_knows_every_field_of_the_product_state() -> None:
    """A field added to ProductState but not to the codec would be lost on every save."""
    default = ProductState(LicenseType.NFR)
    s = full_state()
    doc = state_to_json(s)
    assert [f.attr for f in store_mod.STATE_FIELDS] == [
        f.name for f in dataclasses.fields(ProductState)
    ]
    for f in dataclasses.fields(ProductState):
        assert getattr(s, f.name) != getattr(default, f.name), f"full_state() leaves {f.name}"
        assert f.name in _PRODUCT_STATE_FIELDS, f"the hypothesis strategy leaves {f.name}"
        other = dataclasses.replace(s, **{f.name: getattr(default, f.name)})
        assert state_to_json(other) != doc, f"state_to_json ignores {f.name}"


def test_a_state_saved_before_the_report_backoff_fields_still_reads() -> None:
    doc = json.loads(state_to_json(full_state()))
    del doc["report_failures"], doc["report_next_attempt"]
    old = state_from_json(json.dumps(doc))
    assert old == dataclasses.replace(full_state(), report_failures=0, report_next_attempt=None)


def test_a_state_saved_before_the_source_failure_fields_still_reads() -> None:
    doc = json.loads(state_to_json(full_state()))
    del doc["source_failing_since"], doc["source_error"]
    old = state_from_json(json.dumps(doc))
    assert old == dataclasses.replace(full_state(), source_failing_since=None, source_error=None)


#: ``sqlite3``'s ``iterdump`` of a database the code at 0465adf wrote (its store, its
#: migrations): the product state of its tests' ``full_state()`` with non-ASCII text, a
#: DEL, a character beyond the BMP and a span of microseconds, saved by its
#: ``save_product``; a text dump, so no binary file is kept. It predates the
#: source-failure fields.
OLD_DUMP = Path(__file__).parent / "data" / "store" / "written_by_0465adf.sql"


def test_a_database_written_by_an_older_version_opens_and_reads_the_same_bytes(
    tmp_path: Path,
) -> None:
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db)
    conn.executescript(OLD_DUMP.read_text(encoding="utf-8"))
    conn.close()
    expected = dataclasses.replace(
        full_state(),
        last_comm_error="d\u00e9lai d\u00e9pass\u00e9 \x7f \U0001f600",
        evaluation_used=timedelta(days=12, microseconds=7),
        source_failing_since=None,
        source_error=None,
    )
    s = Store(db)
    try:
        with s.transaction() as tx:
            old_text = tx.product_text()
            assert tx.load_product() == expected
        with s.transaction() as tx:
            tx.save_product(expected, T0)
        with s.transaction() as tx:
            new_text = tx.product_text()
    finally:
        s.close()
    # The same state, the same bytes, and the fields added since, at their defaults.
    assert old_text is not None and new_text is not None
    doc = {**json.loads(old_text), "source_failing_since": None, "source_error": None}
    assert new_text == json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert (
        new_text.replace(',"source_error":null', "").replace(',"source_failing_since":null', "")
        == old_text
    )
    assert state_from_json(state_to_json(expected)) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"last_comm_error": "lone \ud800 surrogate"},  # no UTF-8 for it: json.dumps writes it
        {"entitlements": {"x": 10**30, "y": -(10**30)}},  # beyond 64 bits
        {"evaluation_used": timedelta(microseconds=7)},  # 7e-06: an exponent
        {"source_error": '\x00\x08\t\n\x0c\r\x1f"\\ \u2028 \U0001f600 \x7f'},
    ],
)
def test_text_json_dumps_writes_otherwise_is_still_its_text(change: dict[str, object]) -> None:
    s = dataclasses.replace(full_state(), **change)
    text = state_to_json(s)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert state_from_json(text) == s


@pytest.mark.parametrize("text", ["", "{}", '{"license_type": 7'])
def test_a_product_state_no_version_wrote_is_damage(store: Store, text: str) -> None:
    """Whatever the codec read or saved last, or before it read anything, text no
    version wrote is never a state."""
    with pytest.raises((ValueError, KeyError)):
        store_mod.StateCodec().loads(text)
    state_from_json(state_to_json(ProductState(LicenseType.NFR)))
    with store.transaction() as tx:
        tx.save_product(ProductState(LicenseType.NFR), T0)
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute("UPDATE product SET state = ?", (text,))
    conn.close()
    with (
        pytest.raises(StoreError, match="the product state cannot be read"),
        store.transaction() as tx,
    ):
        tx.load_product()


def test_text_with_a_del_character_is_escaped_as_json_dumps_does() -> None:
    """json.dumps escapes DEL (\\u007f) though it is ASCII; msgspec writes it as it is."""
    s = dataclasses.replace(full_state(), last_comm_error="cut\x7fshort", source_error="\x7f")
    text = state_to_json(s)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert "\\u007f" in text and "\x7f" not in text
    assert state_from_json(text) == s


def test_the_default_product_state_round_trips() -> None:
    s = ProductState(LicenseType.NFR)
    assert state_from_json(state_to_json(s)) == s


def test_the_text_of_an_instant_is_its_utc_text_whatever_was_written_before() -> None:
    """``_ts`` remembers recent instants: an equal instant in another zone, or a naive
    one that happens to share a hash, still gets its own UTC text."""
    plus2 = timezone(timedelta(hours=2))
    aware = datetime(2027, 1, 4, 10, 0, tzinfo=plus2)
    naive = datetime(2027, 1, 4, 8, 0)  # read as UTC: 08:00, the same instant as `aware`
    for first in (aware, aware.astimezone(UTC), naive, datetime(2027, 1, 4, 10, 0)):
        store_mod._TS_MEMO.clear()
        _ts(first)
        assert _ts(aware) == _ts(aware.astimezone(UTC)) == "2027-01-04T08:00:00+00:00"
        assert _ts(naive) == "2027-01-04T08:00:00+00:00"
        assert _ts(datetime(2027, 1, 4, 10, 0)) == "2027-01-04T10:00:00+00:00"


def test_instants_with_another_offset_come_back_as_the_same_instants_in_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    s = ProductState(
        LicenseType.FLEX,
        last_sample_at=datetime(2027, 1, 4, 10, 0, 0, 1, tzinfo=plus2),
        marks={"X": datetime(2027, 1, 4, 10, 0, tzinfo=plus2)},
    )
    back = state_from_json(state_to_json(s))
    assert back == s
    assert back.last_sample_at is not None
    assert back.last_sample_at.utcoffset() == timedelta(0)


_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
_INSTANTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=_ZONES
)
_NAMES = st.text(min_size=1, max_size=12)


def _opt(strategy: st.SearchStrategy[datetime]) -> st.SearchStrategy[datetime | None]:
    return st.none() | strategy


_TAG_COMPLIANCE = st.builds(
    TagCompliance,
    st.sampled_from(TagState),
    st.integers(0, 1_000),
    st.integers(0, 10**6),
    st.none() | st.integers(0, 10**6),
    _opt(_INSTANTS),
)
_PRODUCT_STATE_FIELDS: dict[str, st.SearchStrategy[object]] = dict(
    license_type=st.sampled_from(LicenseType),
    identity=st.none() | st.builds(Identity, _NAMES, _INSTANTS, _INSTANTS, _INSTANTS),
    registration=st.sampled_from(Registration),
    authorization=st.sampled_from(Authorization),
    enforcement=st.none() | st.sampled_from(Enforcement),
    last_auth_at=_opt(_INSTANTS),
    authorized_tags=st.frozensets(_NAMES, max_size=4),
    entitlements=st.dictionaries(_NAMES, st.integers(-(2**63), 2**63), max_size=4),
    tags=st.dictionaries(_NAMES, _TAG_COMPLIANCE, max_size=4),
    id_next_attempt=_opt(_INSTANTS),
    auth_next_attempt=_opt(_INSTANTS),
    evaluation_used=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=36_500)),
    evaluation_warned=st.frozensets(st.integers(0, 400), max_size=5),
    tags_in_use=st.frozensets(_NAMES, max_size=4),
    last_sample_at=_opt(_INSTANTS),
    comm_ok=st.booleans(),
    last_comm_error=st.none() | st.text(max_size=40),
    report_failures=st.integers(0, 10**6),
    report_next_attempt=_opt(_INSTANTS),
    source_failing_since=_opt(_INSTANTS),
    source_error=st.none() | st.text(max_size=40),
    marks=st.dictionaries(_NAMES, _INSTANTS, max_size=4),
)
_PRODUCT_STATES = st.builds(ProductState, **_PRODUCT_STATE_FIELDS)


@settings(max_examples=300, deadline=None)
@given(
    state=_PRODUCT_STATES,
    used=st.sampled_from([timedelta(microseconds=1), timedelta(microseconds=70)])
    | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=36_500)),
    error=st.none() | st.text(max_size=8),
)
def test_the_state_text_is_what_json_dumps_writes(
    state: ProductState, used: timedelta, error: str | None
) -> None:
    """state_to_json takes msgspec's faster path only where its bytes are json.dumps'
    (ASCII, no float in exponent form): the stored text is the same as before it."""
    state = dataclasses.replace(
        state, evaluation_used=used, last_comm_error=error or state.last_comm_error
    )
    text = state_to_json(state)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert state_from_json(text) == state


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(tmp_path_factory.mktemp("scratch") / DB_NAME, durable=False)
    yield s
    s.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=_PRODUCT_STATES)
def test_any_product_state_round_trips_through_json_and_the_database(
    scratch: Store, state: ProductState
) -> None:
    assert state_from_json(state_to_json(state)) == state
    with scratch.transaction() as tx:
        tx.save_product(state, T0)
    with scratch.transaction() as tx:
        assert tx.load_product() == state


# --- intervals --------------------------------------------------------------------------


def test_intervals_come_back_in_time_order_with_every_field(store: Store) -> None:
    starts = [T0 + 2 * STEP, T0, T0 + STEP]
    with store.transaction() as tx:
        assert tx.last_interval_end() is None
        assert tx.intervals() == []
        for i, s in enumerate(starts):
            tx.add_intervals([interval(s, enforcement="OUT_OF_COMPLIANCE" if i == 0 else None)])
    with store.transaction() as tx:
        got = tx.intervals()
        assert [r.start for r in got] == sorted(starts)
        assert got[2] == interval(T0 + 2 * STEP, enforcement="OUT_OF_COMPLIANCE")
        assert got[0] == interval(T0)
        assert [r.start for r in tx.intervals(since=T0 + STEP)] == [T0 + STEP, T0 + 2 * STEP]
        assert tx.last_interval_end() == T0 + 3 * STEP


def test_intervals_order_by_instant_whatever_the_offset_of_the_datetime(store: Store) -> None:
    plus2 = timezone(timedelta(hours=2))
    later = T0 + STEP  # 08:15Z
    earlier_in_plus2 = (T0).astimezone(plus2)  # 10:00+02:00, sorts after 08:15Z as text
    with store.transaction() as tx:
        tx.add_intervals([interval(later)])
        tx.add_intervals([interval(earlier_in_plus2)])
    with store.transaction() as tx:
        assert tx.last_interval_end() == later + STEP
        assert [r.start for r in tx.intervals()] == [T0, later]
    # The same instant under another offset is the same row.
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as tx:
        tx.add_intervals([interval(T0)])


def test_an_interval_is_closed_once(store: Store) -> None:
    with store.transaction() as tx:
        tx.add_intervals([interval(T0)])
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as tx:
        tx.add_intervals([interval(T0)])
    with store.transaction() as tx:
        assert len(tx.intervals()) == 1


def test_the_enums_are_stored_as_the_text_they_always_were(store: Store, db: Path) -> None:
    """Issue 17 made the interval status and the alert mnemonic StrEnums: the database
    holds the same plain text as before, and a status reads back as the member."""
    # Enum hashes a member by its name: only name == value lets a plain string read back
    # from the database find the entry a member made (the marks of the product state).
    assert [(s.name, hash(s)) for s in IntervalStatus] == [
        (s.value, hash(s.value)) for s in IntervalStatus
    ]
    state = dataclasses.replace(full_state(), marks={Mnemonic.SYSTEM_IN_OOC_STATE: T0})
    with store.transaction() as tx:
        tx.add_intervals([dataclasses.replace(interval(T0), status=IntervalStatus.NO_DATA)])
        tx.add_alert(T0, Alert(Mnemonic.AGENT_READY, "up"), ["line"])
        tx.save_product(state, T0)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT status, typeof(status) FROM intervals").fetchall() == [
            ("NO_DATA", "text")
        ]
        assert conn.execute("SELECT mnemonic, typeof(mnemonic) FROM alerts").fetchall() == [
            ("AGENT_READY", "text")
        ]
        saved = json.loads(conn.execute("SELECT state FROM product").fetchone()[0])
        assert list(saved["marks"]) == ["SYSTEM_IN_OOC_STATE"]
    finally:
        conn.close()
    with store.transaction() as tx:
        assert tx.intervals()[0].status is IntervalStatus.NO_DATA
        assert tx.load_product() == state


# --- open intervals -------------------------------------------------------------------


def test_open_interval_is_an_upsert_keyed_by_start(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.open_intervals() == []
        tx.put_open_interval(OpenInterval(T0 + STEP, {"a": 1}, 1, 0))
        tx.put_open_interval(OpenInterval(T0, {"a": 4, "b": 2}, 3, 1))
    with store.transaction() as tx:
        tx.put_open_interval(OpenInterval(T0 + STEP, {"a": 9}, 2, 5))
    with store.transaction() as tx:
        assert tx.open_intervals() == [
            OpenInterval(T0, {"a": 4, "b": 2}, 3, 1),
            OpenInterval(T0 + STEP, {"a": 9}, 2, 5),
        ]
        tx.drop_open_interval(T0)
        tx.drop_open_interval(T0 + 10 * STEP)  # nothing there: nothing happens
    with store.transaction() as tx:
        assert tx.open_intervals() == [OpenInterval(T0 + STEP, {"a": 9}, 2, 5)]


# --- outbox -----------------------------------------------------------------------------


def _enqueue(store: Store, *ids: str, piid: str = "P1") -> None:
    with store.transaction() as tx:
        for n, rid in enumerate(ids):
            # interval starts deliberately out of order: the queue order is the enqueue order
            tx.enqueue_many([(rid, piid, T0 - n * STEP, {"id": rid, "n": n})], T0)


def _queued(store: Store) -> list[str]:
    with store.transaction() as tx:
        return [b.report_id for b in tx.outbox_batch(1_000)]


def test_the_outbox_is_first_in_first_out(store: Store) -> None:
    _enqueue(store, "c", "a")
    _enqueue(store, "b", "z", "d")
    with store.transaction() as tx:
        assert tx.outbox_count() == 5
        batch = tx.outbox_batch(2)
        assert [b.report_id for b in batch] == ["c", "a"]
        assert batch[1].payload == {"id": "a", "n": 1}
        assert batch[1].interval_start == T0 - STEP
        assert batch[1].piid == "P1"
        assert batch[1].attempts == 0
    assert _queued(store) == ["c", "a", "b", "z", "d"]


def test_ack_removes_exactly_the_given_reports(store: Store) -> None:
    _enqueue(store, "r1", "r2", "r3", "r4")
    with store.transaction() as tx:
        assert tx.outbox_ack(["r3", "r1", "unknown"]) == 2
        assert tx.outbox_ack([]) == 0
    assert _queued(store) == ["r2", "r4"]
    # A report queued after the head was acknowledged still goes last.
    with store.transaction() as tx:
        tx.outbox_ack(["r2"])
    _enqueue(store, "r5")
    assert _queued(store) == ["r4", "r5"]
    with store.transaction() as tx:
        tx.outbox_ack(["r4", "r5"])
    _enqueue(store, "r6", "r7")
    assert _queued(store) == ["r6", "r7"]


def test_a_failed_send_counts_attempts_of_those_reports_only(store: Store) -> None:
    _enqueue(store, "r1", "r2", "r3")
    with store.transaction() as tx:
        tx.outbox_failed(["r1", "r3"], "503")
    with store.transaction() as tx:
        tx.outbox_failed(["r1"], "timeout")
        assert {b.report_id: b.attempts for b in tx.outbox_batch(10)} == {
            "r1": 2,
            "r2": 0,
            "r3": 1,
        }
    conn = raw(store.path)
    try:
        rows = conn.execute("SELECT report_id, last_error FROM outbox ORDER BY seq").fetchall()
    finally:
        conn.close()
    assert rows == [("r1", "timeout"), ("r2", None), ("r3", "503")]


def test_reports_of_a_wiped_identity_are_dropped(store: Store) -> None:
    _enqueue(store, "a1", "a2", piid="A")
    _enqueue(store, "b1", piid="B")
    with store.transaction() as tx:
        assert tx.outbox_drop_piid("A") == 2
        assert tx.outbox_drop_piid("A") == 0
    assert _queued(store) == ["b1"]


def test_a_duplicate_report_rolls_back_the_whole_job(store: Store) -> None:
    before = full_state()
    with store.transaction() as tx:
        tx.save_product(before, T0)
        tx.enqueue_many([("R", "P1", T0, {"v": "original"})], T0)
    after = ProductState(LicenseType.FLEX, comm_ok=False)
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as tx:
        tx.save_product(after, T0 + STEP)
        tx.add_intervals([interval(T0)])
        tx.put_open_interval(OpenInterval(T0, {"a": 1}, 1, 0))
        tx.add_alert(T0, Alert("AGENT_READY", "up"), ["line"])
        tx.enqueue_many([("R2", "P1", T0, {"v": "new"})], T0)
        tx.enqueue_many([("R", "P1", T0, {"v": "duplicate"})], T0)
    with store.transaction() as tx:
        assert tx.load_product() == before
        assert tx.intervals() == []
        assert tx.open_intervals() == []
        assert tx.alerts() == []
        batch = tx.outbox_batch(10)
    assert [(b.report_id, b.payload) for b in batch] == [("R", {"v": "original"})]


# --- alert log ------------------------------------------------------------------------


def test_alerts_stay_pending_until_marked_emitted(store: Store) -> None:
    a1 = Alert("AGENT_READY", "started")
    a2 = Alert("SYSTEM_IN_OOC_STATE", "usage locked", tags=("flex-standard-seat", "x"))
    a3 = Alert("REGISTER_FAILED", "token expired")
    with store.transaction() as tx:
        i1 = tx.add_alert(T0, a1, ["l1"])
        i2 = tx.add_alert(T0 + STEP, a2, ["l2a", "l2b"])
        i3 = tx.add_alert(T0 + 2 * STEP, a3, [])
    assert i1 < i2 < i3
    with store.transaction() as tx:
        rows = tx.alerts(pending_only=True)
        assert [r.id for r in rows] == [i1, i2, i3]
        r2 = rows[1]
        assert (r2.time, r2.mnemonic, r2.severity, r2.tags, r2.detail, r2.lines) == (
            T0 + STEP,
            "SYSTEM_IN_OOC_STATE",
            a2.severity,
            ("flex-standard-seat", "x"),
            "usage locked",
            ("l2a", "l2b"),
        )
        tx.mark_emitted([i1, i3])
    with store.transaction() as tx:
        assert [r.id for r in tx.alerts(pending_only=True)] == [i2]
        assert [r.id for r in tx.alerts()] == [i1, i2, i3]
        assert [r.id for r in tx.alerts(since_id=i1)] == [i2, i3]
        tx.mark_emitted([i2])
        assert tx.alerts(pending_only=True) == []


# --- transactions -----------------------------------------------------------------------


class Boom(Exception):
    pass


def _write_everything(tx: store_mod.Tx) -> None:
    tx.save_product(full_state(), T0)
    tx.add_intervals([interval(T0)])
    tx.put_open_interval(OpenInterval(T0 + STEP, {"a": 1}, 1, 0))
    tx.enqueue_many([("R", "P1", T0, {"v": 1})], T0)
    tx.add_alert(T0, Alert("AGENT_READY", "up"), ["line"])


def test_an_exception_rolls_back_everything_the_transaction_wrote(store: Store) -> None:
    with pytest.raises(Boom), store.transaction() as tx:
        _write_everything(tx)
        raise Boom
    conn = raw(store.path)
    try:
        assert set(counts(conn).values()) == {0}
    finally:
        conn.close()
    # ... and the store is fine afterwards.
    with store.transaction() as tx:
        _write_everything(tx)
    with store.transaction() as tx:
        assert tx.load_product() == full_state()


def test_an_interrupt_rolls_back_too(store: Store) -> None:
    with pytest.raises(KeyboardInterrupt), store.transaction() as tx:
        _write_everything(tx)
        raise KeyboardInterrupt
    with store.transaction() as tx:
        assert tx.load_product() is None


def test_the_job_error_is_raised_even_if_sqlite_already_rolled_back(store: Store) -> None:
    # SQLite rolls a transaction back by itself on some errors (disk full, I/O error ...).
    with pytest.raises(Boom), store.transaction() as tx:
        tx.save_product(full_state(), T0)
        tx._c.execute("ROLLBACK")
        raise Boom
    with store.transaction() as tx:
        assert tx.load_product() is None


def test_a_failed_commit_rolls_back_and_leaves_the_store_usable(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as tx:
        tx.save_product(full_state(), T0)
        # A deferred constraint is checked only at COMMIT, which therefore fails.
        tx._c.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
        tx._c.execute(
            "CREATE TEMP TABLE child (pid INTEGER REFERENCES parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )
        tx._c.execute("INSERT INTO child VALUES (5)")
    assert not store._conn.in_transaction
    with store.transaction() as tx:
        assert tx.load_product() is None
        tx.save_product(ProductState(LicenseType.FLEX), T0)
    with store.transaction() as tx:
        assert tx.load_product() == ProductState(LicenseType.FLEX)


def test_transactions_do_not_nest(store: Store) -> None:
    with pytest.raises(StoreError, match="do not nest"), store.transaction() as tx:
        tx.save_product(full_state(), T0)
        with store.transaction():
            pass
    with store.transaction() as tx:
        assert tx.load_product() is None


class ObservedLock:
    """``threading.Lock`` that tells when a thread had to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self) -> ObservedLock:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            assert self._lock.acquire(timeout=TIMEOUT)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()


def test_threads_sharing_one_store_take_turns(store: Store) -> None:
    lock = ObservedLock()
    store._lock = lock  # type: ignore[assignment]
    holding, release = threading.Event(), threading.Event()
    seen: list[ProductState | None] = []
    errors: list[BaseException] = []

    def first() -> None:
        with store.transaction() as tx:
            tx.save_product(ProductState(LicenseType.FLEX, comm_ok=False), T0)
            holding.set()
            assert release.wait(TIMEOUT)

    def second() -> None:
        try:
            with store.transaction() as tx:
                seen.append(tx.load_product())
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=first)
    a.start()
    assert holding.wait(TIMEOUT)
    b = threading.Thread(target=second)
    b.start()
    assert lock.contended.wait(TIMEOUT)  # b is waiting for a's transaction
    release.set()
    a.join(TIMEOUT)
    b.join(TIMEOUT)
    assert not a.is_alive()
    assert not b.is_alive()
    assert errors == []
    assert seen == [ProductState(LicenseType.FLEX, comm_ok=False)]


# --- migrations -------------------------------------------------------------------------


def test_a_new_database_has_the_current_schema(store: Store, db: Path) -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 1
    assert store.schema_version == SCHEMA_VERSION
    conn = raw(db)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    finally:
        conn.close()
    assert {"schema_version", "product", "open_interval", "intervals", "outbox", "alerts"} <= names


def test_opening_again_changes_nothing(db: Path) -> None:
    s = Store(db)
    with s.transaction() as tx:
        _write_everything(tx)
    s.close()
    for _ in range(2):
        s = Store(db)
        try:
            assert s.schema_version == SCHEMA_VERSION
            with s.transaction() as tx:
                assert tx.load_product() == full_state()
                assert [b.report_id for b in tx.outbox_batch(10)] == ["R"]
        finally:
            s.close()
    conn = raw(db)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert counts(conn) == dict.fromkeys(counts(conn), 1)
    finally:
        conn.close()


def test_a_newer_schema_is_refused_and_left_alone(db: Path) -> None:
    Store(db).close()
    conn = raw(db)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match=r"schema version \d+ is newer .* upgrade ccx-agent"):
        Store(db)
    conn = raw(db)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION + 1
        )
    finally:
        conn.close()


V2 = """
    ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX outbox_priority ON outbox (priority);
"""


def test_an_old_database_is_migrated_and_keeps_its_data(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(db)
    with s.transaction() as tx:
        _write_everything(tx)
    s.close()

    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, V2])
    s = Store(db)
    try:
        assert s.schema_version == SCHEMA_VERSION + 1
        with s.transaction() as tx:
            assert tx.load_product() == full_state()
            assert tx.intervals() == [interval(T0)]
            assert [b.report_id for b in tx.outbox_batch(10)] == ["R"]
            tx.enqueue_many([("R2", "P1", T0 + STEP, {"v": 2})], T0)
        with s.transaction() as tx:
            assert [b.report_id for b in tx.outbox_batch(10)] == ["R", "R2"]
    finally:
        s.close()
    conn = raw(db)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(outbox)")]
        assert cols[-1] == "priority"
        assert conn.execute("SELECT report_id, priority FROM outbox ORDER BY seq").fetchall() == [
            ("R", 0),
            ("R2", 0),
        ]
    finally:
        conn.close()

    # The older program, meeting the migrated file, says so instead of misreading it.
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    with pytest.raises(StoreError, match="newer"):
        Store(db)


def test_a_migration_may_hold_semicolons_in_triggers_and_strings(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(db).close()
    migration = """
        CREATE TABLE audit (what TEXT NOT NULL);
        CREATE TRIGGER audit_outbox AFTER INSERT ON outbox BEGIN
            INSERT INTO audit (what) VALUES ('queued; ' || new.report_id);
            INSERT INTO audit (what) VALUES ('second statement; of the trigger');
        END;
    """
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, migration])
    s = Store(db)
    try:
        with s.transaction() as tx:
            tx.enqueue_many([("R", "P1", T0, {})], T0)
    finally:
        s.close()
    conn = raw(db)
    try:
        assert conn.execute("SELECT what FROM audit ORDER BY rowid").fetchall() == [
            ("queued; R",),
            ("second statement; of the trigger",),
        ]
    finally:
        conn.close()


def test_a_failing_migration_leaves_the_old_schema_and_data(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(db)
    with s.transaction() as tx:
        _write_everything(tx)
    s.close()
    monkeypatch.setattr(
        store_mod,
        "MIGRATIONS",
        [*MIGRATIONS, "ALTER TABLE outbox ADD COLUMN x INTEGER", "CREATE TABLE product (y)"],
    )
    with pytest.raises(StoreError, match="already exists"):
        Store(db)
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    s = Store(db)
    try:
        assert s.schema_version == SCHEMA_VERSION
        with s.transaction() as tx:
            assert tx.load_product() == full_state()
    finally:
        s.close()
    conn = raw(db)
    try:
        assert "x" not in [r[1] for r in conn.execute("PRAGMA table_info(outbox)")]
    finally:
        conn.close()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    junk = random.Random(7).randbytes(8192)
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="not a database"):
        Store(path)
    assert path.read_bytes() == junk


def test_a_directory_in_place_of_the_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        Store(tmp_path / DB_NAME)


def test_a_state_directory_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create"):
        Store(tmp_path / "file" / DB_NAME)


# --- two Store objects on one file (the CLI and the daemon) ---------------------------


def test_two_stores_see_each_others_commits(db: Path) -> None:
    daemon, cli = Store(db), Store(db)
    try:
        with daemon.transaction() as tx:
            tx.save_product(full_state(), T0)
        with cli.transaction() as tx:
            assert tx.load_product() == full_state()
            tx.enqueue_many([("R", "P1", T0, {})], T0)
        with daemon.transaction() as tx:
            assert tx.outbox_count() == 1
    finally:
        daemon.close()
        cli.close()


def test_a_second_writer_waits_for_the_first_instead_of_failing(db: Path) -> None:
    daemon, cli = Store(db), Store(db)
    holding, release, cli_begins = threading.Event(), threading.Event(), threading.Event()
    seen: list[ProductState | None] = []
    errors: list[BaseException] = []

    def trace(sql: str) -> None:
        # Called when a statement starts to run, i.e. before SQLite waits for the lock.
        if sql.startswith("BEGIN"):
            cli_begins.set()

    cli._conn.set_trace_callback(trace)

    def job() -> None:
        with daemon.transaction() as tx:
            tx.save_product(full_state(), T0)
            holding.set()
            assert release.wait(TIMEOUT)

    def command() -> None:
        try:
            with cli.transaction() as tx:
                seen.append(tx.load_product())
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=job)
    b = threading.Thread(target=command)
    try:
        a.start()
        assert holding.wait(TIMEOUT)
        # Meanwhile a reader is not blocked at all (WAL), and sees the last commit.
        conn = raw(db)
        try:
            assert conn.execute("SELECT COUNT(*) FROM product").fetchone()[0] == 0
        finally:
            conn.close()
        b.start()
        # The command's BEGIN IMMEDIATE has started while the job holds the write lock,
        # so it can only finish after the job commits.
        assert cli_begins.wait(TIMEOUT)
        assert not seen
        release.set()
        a.join(TIMEOUT)
        b.join(TIMEOUT)
        assert not a.is_alive()
        assert not b.is_alive()
        assert errors == []
        assert seen == [full_state()]
    finally:
        release.set()
        daemon.close()
        cli.close()


# --- a writer killed with SIGKILL ---------------------------------------------------------


class Writer:
    """``tests/store_writer.py`` in a real child process, its stdout read line by line."""

    def __init__(self, db: Path, *args: str) -> None:
        self.errfile = db.parent / f"writer-{os.urandom(4).hex()}.err"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.errfile.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.store_writer", str(db), *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.committed: list[int] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _next(self) -> str | None:
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"the writer said nothing for {TIMEOUT}s") from None
        if line is not None and line.startswith("COMMITTED "):
            self.committed.append(int(line.split()[1]))
        return line

    def expect(self, prefix: str, *, commits: int = 0) -> str:
        """Read up to the first line starting with ``prefix`` after ``commits`` commits."""
        while True:
            line = self._next()
            if line is None:
                self.proc.wait(TIMEOUT)
                raise AssertionError(
                    f"the writer ended (rc {self.proc.returncode}) before {prefix!r}:\n"
                    + self.errfile.read_text()
                )
            if line.startswith(prefix) and len(self.committed) >= commits:
                return line

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(TIMEOUT) == -signal.SIGKILL
        while self._next() is not None:  # what it printed before it died
            pass
        self.reader.join(TIMEOUT)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def stop(self) -> None:
        """Cleanup for a failed test: never leave a child behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for w in started:
        w.stop()


def uncommitted_wal_frames(db: Path) -> int:
    """Frames of the current WAL generation after its last commit frame (a transaction
    in progress that spilled pages to disk)."""
    data = Path(f"{db}-wal").read_bytes()
    if len(data) < 32:
        return 0
    _magic, _version, page_size, _ckpt, salt1, salt2 = struct.unpack(">6I", data[:24])
    frame = 24 + (65536 if page_size == 1 else page_size)
    frames, last_commit, off = 0, 0, 32
    while off + frame <= len(data):
        _page, commit_size, s1, s2 = struct.unpack(">4I", data[off : off + 16])
        if (s1, s2) != (salt1, salt2):
            break
        frames += 1
        if commit_size:
            last_commit = frames
        off += frame
    return frames - last_commit


def committed_counter(db: Path) -> int:
    """Check the database a killed writer left, and return the counter it holds.

    The file must pass ``integrity_check``, and the product state, the intervals and the
    outbox must all be of one and the same transaction: the counter in the state is the
    number of interval rows and of outbox rows, and they are exactly rows 1 .. counter.
    """
    conn = raw(db)  # the first opener after the crash: it recovers the WAL
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    s = Store(db)
    try:
        assert s.integrity_check() == "ok"
        assert s.schema_version == SCHEMA_VERSION
        with s.transaction() as tx:
            state = tx.load_product()
            counter = 0 if state is None else state.entitlements["counter"]
            if state is not None:
                assert state.evaluation_used == timedelta(seconds=counter)
            starts = [r.start for r in tx.intervals()]
            queued = tx.outbox_batch(10**6)
    finally:
        s.close()
    assert starts == [store_writer.interval_start(k) for k in range(1, counter + 1)]
    assert [q.report_id for q in queued] == [
        store_writer.report_id(k) for k in range(1, counter + 1)
    ]
    assert [q.payload["counter"] for q in queued] == list(range(1, counter + 1))
    return counter


def in_flight_is_invisible(db: Path, expected: int) -> None:
    """While the writer holds its transaction open, a reader sees the last commit only."""
    conn = raw(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM intervals").fetchone()[0] == expected
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == expected
    finally:
        conn.close()


def test_a_writer_killed_inside_its_transaction_leaves_the_previous_state(
    db: Path, writers: list[Writer]
) -> None:
    db.parent.mkdir(mode=0o700)
    # One file through a chain of crashes: each writer continues from what the last
    # one left. ``spill``: the open transaction has already written pages to the WAL.
    for hold_at, spill in ((1, 0), (2, 200_000), (6, 0), (11, 200_000), (12, 0)):
        w = Writer(db, "--hold-at", str(hold_at), "--spill", str(spill))
        writers.append(w)
        before = committed_counter(db) if db.exists() else 0
        assert w.expect("IN_TX") == f"IN_TX {hold_at}"
        assert w.committed == list(range(before + 1, hold_at))
        in_flight_is_invisible(db, hold_at - 1)
        if spill:
            assert uncommitted_wal_frames(db) > 0
        w.kill()
        assert w.committed == list(range(before + 1, hold_at))
        assert committed_counter(db) == hold_at - 1

    # After all that, the file is an ordinary, writable database.
    w = Writer(db, "--max", "3")
    writers.append(w)
    assert w.proc.wait(TIMEOUT) == 0
    while w._next() is not None:
        pass
    assert w.committed == [12, 13, 14]
    assert committed_counter(db) == 14


@pytest.mark.parametrize("seed", range(4))
def test_a_writer_killed_at_a_random_instant_leaves_the_old_or_the_new_state(
    db: Path, writers: list[Writer], seed: int
) -> None:
    rng = random.Random(seed)
    db.parent.mkdir(mode=0o700)
    total = 0
    for _ in range(2):
        # A tiny auto-checkpoint threshold: commits also write the main database file,
        # so the kill may land in a checkpoint as well as in a transaction.
        w = Writer(db, "--checkpoint", str(rng.choice([0, 2, 8])))
        writers.append(w)
        w.expect("OPEN")
        commits = rng.randint(0, 40)
        if commits:
            w.expect("COMMITTED", commits=commits)
        w.kill()  # the writer ran on while we read: it is anywhere now
        last = w.committed[-1] if w.committed else total
        got = committed_counter(db)
        # Killed between COMMIT and its print, the last transaction is there, unreported.
        assert got in (last, last + 1), (got, w.committed)
        total = got


def test_a_writer_killed_while_opening_a_new_database_leaves_a_usable_file(
    db: Path, writers: list[Writer]
) -> None:
    db.parent.mkdir(mode=0o700)
    w = Writer(db)
    writers.append(w)
    w.expect("OPENING")
    w.kill()
    last = w.committed[-1] if w.committed else 0
    assert committed_counter(db) in (last, last + 1)


@pytest.mark.parametrize("readonly", [False, True])
def test_an_empty_sqlite_file_is_unborn_when_a_schema_is_expected(
    tmp_path: Path, readonly: bool
) -> None:
    """A valid SQLite file with no table (``sqlite3 DB 'PRAGMA journal_mode=WAL'``): where
    an instance lived, it is refused and left as it is, never given a fresh schema."""
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(store_mod.Unborn, match="holds no schema"):
        Store(path, readonly=readonly, create=False)
    assert path.read_bytes() == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    conn.close()


def test_be_born_writes_the_product_state_and_the_udi_once(tmp_path: Path) -> None:
    s = Store(tmp_path / DB_NAME)
    try:
        assert s.missing_life() == [
            "the product state (the 'product' row)",
            "the UDI (the 'meta' row 'udi_uuid')",
        ]
        s.be_born(ProductState(LicenseType.FLEX), "uuid-1", datetime(2027, 1, 1, tzinfo=UTC))
        s.be_born(ProductState(LicenseType.NFR), "uuid-2", datetime(2027, 1, 2, tzinfo=UTC))
        assert s.missing_life() == []
        assert s.product() == ProductState(LicenseType.FLEX)
        with s.read() as tx:
            assert tx.meta(store_mod.UDI_UUID_KEY) == "uuid-1"
    finally:
        s.close()


def test_status_check_reads_the_state_without_msgspec(tmp_path: Path) -> None:
    """The state codec imports msgspec on its first save only: ``status --check`` (run
    every minute by monitoring) reads the state with ``json`` alone."""
    from tests.test_check import HEALTHY, instance
    from tests.test_imports import loaded, recorded

    path = instance(tmp_path, HEALTHY)
    recorded(path)
    done, modules = loaded("--config", str(path), "status", "--check")
    assert done.stdout.startswith("CCX-LICENSE "), done
    assert "ccx_agent" in modules and "msgspec" not in modules
