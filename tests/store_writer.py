"""A writer process for the crash tests of ``tests/test_store.py``; not a test itself.

    python -m tests.store_writer DB [--hold-at N] [--spill BYTES] [--checkpoint PAGES] [--max M]

It loops over transactions, each like a job of the agent: load the product state, bump a
counter kept in that state (``entitlements["counter"]`` and ``evaluation_used`` seconds),
add one interval row and one outbox row named after the new counter, save the state,
commit. After every COMMIT it prints ``COMMITTED <counter>`` (flushed).

``--hold-at N``: in the transaction that would commit counter N, everything is written,
then ``IN_TX <N>`` is printed and the process blocks on stdin before COMMIT, for the
parent to kill it there. ``--spill`` pads that transaction's outbox row with that many
bytes and shrinks the page cache so SQLite must write uncommitted pages into the WAL.
``--checkpoint PAGES`` lowers the WAL auto-checkpoint threshold so that commits also copy
pages into the main database file, and a kill can land in the middle of that too.
Without ``--hold-at`` the loop runs freely until ``--max`` commits, so that a kill lands
wherever the process happens to be.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.interval import IntervalRecord, TagRecord
from ccx_agent.licensing.lifecycle import ProductState
from ccx_agent.store.db import Store

BASE = datetime(2027, 1, 4, tzinfo=UTC)
STEP = timedelta(minutes=15)
PIID = "piid-crash"
TAG = "flex-standard-seat"


def interval_start(counter: int) -> datetime:
    return BASE + STEP * counter


def report_id(counter: int) -> str:
    return f"{PIID}:{counter:06d}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--hold-at", type=int, default=0)
    ap.add_argument("--spill", type=int, default=0)
    ap.add_argument("--checkpoint", type=int, default=0)
    ap.add_argument("--max", type=int, default=10_000)
    args = ap.parse_args(argv)

    print("OPENING", flush=True)
    store = Store(args.db)
    if args.spill:
        # A few pages of cache: a big transaction spills uncommitted frames into the WAL.
        store._conn.execute("PRAGMA cache_size = 4")
    if args.checkpoint:
        store._conn.execute(f"PRAGMA wal_autocheckpoint = {args.checkpoint:d}")
    print("OPEN", flush=True)
    for _ in range(args.max):
        with store.transaction() as tx:
            state = tx.load_product() or ProductState(LicenseType.FLEX)
            counter = state.entitlements.get("counter", 0) + 1
            start = interval_start(counter)
            tx.add_intervals(
                [
                    IntervalRecord(
                        start,
                        start + STEP,
                        "REPORTED",
                        "REGISTERED",
                        "AUTHORIZED",
                        None,
                        {TAG: TagRecord(counter, 10, counter, "IN_COMPLIANCE", 0)},
                    )
                ]
            )
            hold = counter == args.hold_at
            payload: dict[str, object] = {"counter": counter}
            if hold and args.spill:
                payload["pad"] = "x" * args.spill
            tx.enqueue_many([(report_id(counter), PIID, start, payload)], start + STEP)
            tx.save_product(
                replace(
                    state,
                    entitlements={**state.entitlements, "counter": counter},
                    evaluation_used=timedelta(seconds=counter),
                    last_sample_at=start + STEP,
                ),
                start + STEP,
            )
            if hold:
                print(f"IN_TX {counter}", flush=True)
                if not sys.stdin.readline():
                    # The parent went away without killing us: leave without committing.
                    os._exit(3)
        print(f"COMMITTED {counter}", flush=True)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
