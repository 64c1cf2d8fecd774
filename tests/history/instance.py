"""Build a state directory with a chosen history, fast: rows written through the real
:class:`~ccx_agent.store.db.Store` (the same code the agent writes them with), not by
running a daemon for a year. Not a test module."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ccx_agent.licensing.alerts import Alert, AlertFormat, lines, ooc_countdown
from ccx_agent.licensing.interval import IntervalRecord, IntervalStatus, TagRecord
from ccx_agent.store import statedir
from ccx_agent.store.db import Store

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


#: The year of the HTML test and the benchmark: 2027-01-04 (a Monday) + 365 days.
YEAR_START = datetime(2027, 1, 4, tzinfo=UTC)
YEAR_INTERVALS = 35_040
#: The one interval where premium usage peaks (a Tuesday in late summer, 14:30).
YEAR_PEAK_AT = YEAR_START + 35 * 7 * timedelta(days=1) + timedelta(days=1, hours=14, minutes=30)
YEAR_PEAK = 173


def year_records(start: datetime = YEAR_START) -> list[IntervalRecord]:
    """A year of 15-minute intervals of a flex instance, three tags: business hours on
    weekdays, growth over the year, an out-of-compliance run that ends in enforcement and
    a purchase, a two-day outage (no data) and one sharp peak at :data:`YEAR_PEAK_AT`."""
    out = []
    ooc_from, ooc_to = start + timedelta(days=150), start + timedelta(days=190)
    enf_from = start + timedelta(days=180)
    gap_from, gap_to = start + timedelta(days=60), start + timedelta(days=62)
    for i in range(YEAR_INTERVALS):
        t = start + i * STEP
        hour = t.hour + t.minute / 60
        busy = t.weekday() < 5 and 7 <= hour < 19
        growth = 1 + (i / YEAR_INTERVALS) * 0.4
        wave = 1 - abs(hour - 13) / 8 if busy else 0.05
        premium = int(100 * growth * max(wave, 0.05)) + (i * 7919) % 5
        standard = int(40 * growth * max(wave, 0.05)) + (i * 104729) % 3
        ports = 6 if busy else 0
        if t == YEAR_PEAK_AT:
            premium = YEAR_PEAK
        ent_premium = 120 if t < ooc_to else 150
        state = "IN_COMPLIANCE"
        if ooc_from <= t < ooc_to:
            state = "ENFORCEMENT" if t >= enf_from else "OUT_OF_COMPLIANCE"
        usage = (
            None
            if gap_from <= t < gap_to
            else {
                "flex-premium-seat": premium,
                "flex-standard-seat": standard,
                "flex-outbound-port": ports,
            }
        )
        out.append(
            record(
                t,
                usage,
                {
                    "flex-premium-seat": ent_premium,
                    "flex-standard-seat": 60,
                    "flex-outbound-port": 10,
                },
                state={"flex-premium-seat": state},
                reported=usage,
            )
        )
    return out


def year_alerts(start: datetime = YEAR_START) -> list[tuple[datetime, Alert, bool]]:
    """The countdown before the out-of-compliance run, and its entry, as the agent raises them."""
    ooc = start + timedelta(days=150)
    out = [
        (ooc - (5 - n) * STEP, ooc_countdown((5 - n) * STEP, ["flex-premium-seat"], n == 4), True)
        for n in range(1, 5)
    ]
    out.append(
        (
            ooc,
            Alert(
                "SYSTEM_IN_OOC_STATE", "flex-premium-seat usage=130", tags=("flex-premium-seat",)
            ),
            True,
        )
    )
    return out
