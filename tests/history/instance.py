"""Build a state directory with a chosen history, fast: rows written through the real
:class:`~ccx_agent.store.Store` (the same code the agent writes them with), not by
running a daemon for a year. Not a test module."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from ccx_agent import statedir
from ccx_agent.licensing.alerts import Alert, AlertFormat, lines
from ccx_agent.licensing.interval import IntervalRecord, IntervalStatus, TagRecord
from ccx_agent.store import Store

AGENTS = Path(__file__).parent.parent / "data" / "snapshots" / "mixed.json"
STEP = timedelta(minutes=15)
FLEX = ("flex-outbound-port", "flex-premium-seat", "flex-standard-seat")


def config(tmp: Path, extra: str = "", license_type: str = "flex") -> Path:
    path = tmp / "agent.yaml"
    path.write_text(
        f"state_dir: {tmp / 'state'}\nsource: {{kind: file, path: {AGENTS}}}\n"
        f"license: {{type: {license_type}}}\n{extra}",
        encoding="utf-8",
    )
    return path


def record(
    start: datetime,
    usage: Mapping[str, int] | None,
    entitlement: Mapping[str, int],
    state: Mapping[str, str] | None = None,
    reported: Mapping[str, int] | None = None,
    step: timedelta = STEP,
) -> IntervalRecord:
    """One closed interval; ``usage`` None is an interval without a good sample."""
    tags = {}
    for tag in entitlement:
        tags[tag] = TagRecord(
            None if usage is None else usage.get(tag, 0),
            entitlement[tag],
            None if reported is None else reported.get(tag),
            (state or {}).get(tag, "IN_COMPLIANCE"),
            0,
        )
    status = IntervalStatus.NO_DATA if usage is None else IntervalStatus.REPORTED
    return IntervalRecord(start, start + step, status, "REGISTERED", "AUTHORIZED", None, tags)


def write(
    state_dir: Path,
    records: Sequence[IntervalRecord] = (),
    alerts: Iterable[tuple[datetime, Alert, bool]] = (),
) -> Path:
    """Create the instance's database holding ``records`` and ``alerts`` (time, alert,
    delivered), and return its path."""
    path = statedir.db_path(state_dir)
    store = Store(path, durable=False)
    try:
        with store.transaction() as tx:
            tx.add_intervals(records)
            for when, alert, delivered in alerts:
                row_id = tx.add_alert(when, alert, lines(alert, AlertFormat()))
                if delivered:
                    tx.mark_emitted([row_id])
    finally:
        store.close()
    return path
