"""The simulator's pool of used licenses, kept up to date on insert (issue 16).

``Tx.pooled_usage`` reads a few maintained rows; ``Tx.latest_usages`` recomputes the same
from the reports themselves. Whatever happens (reports in any order, late re-sends,
deregistrations, a UDI registered again), the two must agree, for every account and
every instance left out; and a database made before the pool existed gets it filled in
by its migration.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ccx_agent.licensing.timeutil import iso
from ccx_agent.simulator.db import MIGRATIONS, Database, Instance, Tx
from ccx_agent.store import sqlite
from tests.simulator.helpers import NOW

TAGS = ["flex-premium-seat", "flex-standard-seat", "flex-outbound-port"]
ACCOUNTS = ["default", "other"]


def _reference(tx: Tx, account: str, exclude: str | None) -> dict[str, int]:
    total: dict[str, int] = {}
    for piid, usage in tx.latest_usages(account).items():
        if piid != exclude:
            for tag, n in usage.items():
                total[tag] = total.get(tag, 0) + int(n)
    return total


def _check(tx: Tx, piids: list[str]) -> None:
    for account in ACCOUNTS:
        for exclude in [None, *piids]:
            assert tx.pooled_usage(account, exclude=exclude) == _reference(tx, account, exclude)


def _instance(piid: str, account: str, udi: int) -> Instance:
    return Instance(
        piid, account, "CCX", f"S{udi}", f"00000000-0000-4000-8000-{udi:012d}",
        f"key-{piid}", "flex", NOW, None, NOW,
    )  # fmt: skip


operation = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(ACCOUNTS), st.integers(0, 3)),
    st.tuples(
        st.just("report"),
        st.integers(0, 20),  # which instance (modulo how many there are)
        # One REPORT_USAGE batch: interval numbers (late re-sends of old ones included)
        # and their usage.
        st.lists(
            st.tuples(
                st.integers(0, 40),
                st.dictionaries(st.sampled_from(TAGS), st.integers(0, 500), max_size=3),
            ),
            min_size=1,
            max_size=4,
        ),
    ),
    st.tuples(st.just("deregister"), st.integers(0, 20)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(operation, max_size=40))
def test_the_pool_always_agrees_with_the_reports(ops: list[tuple[object, ...]]) -> None:
    db = Database(None)
    piids: list[str] = []
    seen: set[str] = set()
    try:
        for op in ops:
            with db.transaction() as tx:
                if op[0] == "register":
                    _, account, udi = op
                    assert isinstance(account, str) and isinstance(udi, int)
                    inst = _instance(f"p{len(piids)}", account, udi)
                    tx.add_account(account)
                    tx.deregister_udi(inst.pid, inst.serial, inst.uuid, NOW)
                    tx.add_instance(inst)
                    piids.append(inst.piid)
                elif op[0] == "report" and piids:
                    _, which, batch = op
                    assert isinstance(which, int) and isinstance(batch, list)
                    piid = piids[which % len(piids)]
                    fresh = []
                    for n, usage in batch:
                        start = NOW + timedelta(minutes=15) * n
                        rid = f"{piid}:{iso(start)}"
                        if rid not in seen:  # the server stores an id once
                            seen.add(rid)
                            end = start + timedelta(minutes=15)
                            fresh.append((rid, iso(start), iso(end), usage))
                    tx.add_reports(piid, fresh, NOW)
                elif op[0] == "deregister" and piids:
                    _, which = op
                    assert isinstance(which, int)
                    tx.deregister(piids[which % len(piids)], NOW)
            with db.read() as tx:
                _check(tx, piids)
    finally:
        db.close()


def test_a_database_from_before_the_pool_gets_it_on_migration(tmp_path: Path) -> None:
    path = tmp_path / "ssm.db"
    conn = sqlite3.connect(path, isolation_level=None)
    sqlite.migrate(conn, MIGRATIONS[:2], path, RuntimeError)
    # Two instances of the default account, one deregistered, reports out of order.
    conn.execute("INSERT INTO accounts (name) VALUES ('other')")
    for piid, account, gone in (
        ("a", "default", None),
        ("b", "default", None),
        ("c", "default", iso(NOW)),
        ("d", "other", None),
    ):
        conn.execute(
            "INSERT INTO instances VALUES (?, ?, 'CCX', 'S', 'u', 'k', 'flex', ?, ?, ?)",
            (piid, account, iso(NOW), gone, iso(NOW)),
        )  # fmt: skip
    rows = [
        ("a:2", "a", "2027-01-04T08:15:00Z", '{"flex-premium-seat": 7}'),
        ("a:1", "a", "2027-01-04T08:00:00Z", '{"flex-premium-seat": 100}'),  # late, older
        ("b:1", "b", "2027-01-04T08:00:00Z", '{"flex-premium-seat": 3, "flex-standard-seat": 0}'),
        ("c:1", "c", "2027-01-04T08:00:00Z", '{"flex-premium-seat": 50}'),  # deregistered
        ("d:1", "d", "2027-01-04T08:00:00Z", '{"flex-premium-seat": 9}'),
    ]
    for rid, piid, start, usage in rows:
        conn.execute(
            'INSERT INTO reports (id, piid, start, "end", usage, received_at) '
            "VALUES (?, ?, ?, ?, ?, ?)",
            (rid, piid, start, start, usage, iso(NOW)),
        )
    conn.close()
    db = Database(path)
    try:
        with db.read() as tx:
            assert tx.pooled_usage("default") == {"flex-premium-seat": 10, "flex-standard-seat": 0}
            assert tx.pooled_usage("default", exclude="a") == {
                "flex-premium-seat": 3,
                "flex-standard-seat": 0,
            }
            assert tx.pooled_usage("other") == {"flex-premium-seat": 9}
            _check(tx, ["a", "b", "c", "d"])
    finally:
        db.close()
