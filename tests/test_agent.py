"""The agent's jobs, directly: a real Store in a temporary directory and the SSM simulator
(in process, through the real client: every message signed and verified).

Each job reads the database, asks the licensing core, commits, then emits and talks to
SSM; these tests drive the jobs by hand, one instant at a time, and look at both what the
user sees (outcomes, alert lines) and what the database holds afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ccx_agent.agent import Agent, LicenseTypeChanged
from ccx_agent.config.schema import CommonConfig
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.interval import IntervalStatus
from ccx_agent.licensing.lifecycle import Registration
from ccx_agent.licensing.timeutil import iso
from ccx_agent.scenario.simssm import SCENARIO_TOKEN, ScenarioSsm
from ccx_agent.ssm.port import Udi
from ccx_agent.store.db import DB_NAME, AlertRow, Store

T0 = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
STEP = timedelta(minutes=15)
PREMIUM = "flex-premium-seat"
STANDARD = "flex-standard-seat"
OUTBOUND = "flex-outbound-port"
UDI = Udi("CCX-TEST", "SN0001", "00000000-0000-4000-8000-00000000abcd")


def config(license_type: str = "flex", **sections: Any) -> CommonConfig:
    data: dict[str, Any] = {
        "license": {"type": license_type},
        "alerts": {"node_id": "uccxpubsu1", "repeat": "1h"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return CommonConfig.model_validate(data)


class Sink:
    """An alert sink that records what it was given, or fails like a broken syslog."""

    def __init__(self) -> None:
        self.rows: list[AlertRow] = []
        self.broken = False

    def __call__(self, rows: Sequence[AlertRow]) -> None:
        if self.broken:
            raise OSError("syslog is down")
        self.rows.extend(rows)

    @property
    def mnemonics(self) -> list[str]:
        return [r.mnemonic for r in self.rows]

    def take(self) -> list[str]:
        """The mnemonics emitted since the last take."""
        out = self.mnemonics
        self.rows.clear()
        return out


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / DB_NAME)
    yield s
    s.close()


@pytest.fixture
def ssm(tmp_path):
    return ScenarioSsm({PREMIUM: 1, STANDARD: 10}, timedelta(days=365), T0, tmp_path)


@pytest.fixture
def sink():
    return Sink()


@pytest.fixture
def agent(store, ssm, sink):
    return Agent(config(), store, ssm, udi=UDI, emit=sink, origin=T0)


def minutes(start: datetime, n: int = 15) -> list[datetime]:
    return [start + i * MIN for i in range(n)]


def one_interval(agent: Agent, start: datetime, usage: dict[str, int]) -> None:
    """Sample every minute of the interval starting at ``start``, then close it."""
    agent.sample(minutes(start), usage)
    agent.close_intervals(start + STEP)


def outbox(store: Store) -> list[str]:
    with store.read() as tx:
        return [item.report_id for item in tx.outbox_batch(1000)]


# --- register / deregister ------------------------------------------------------------------


def test_register_succeeds_with_the_piid_and_certificate_expiry(agent, ssm, sink):
    out = agent.register(SCENARIO_TOKEN, T0)
    state = agent.state()
    assert state.identity is not None
    piid = state.identity.piid
    assert out.ok
    assert out.message == (
        f"registered: PIID {piid}, ID certificate valid until {iso(T0 + timedelta(days=365))}"
    )
    assert state.registration is Registration.REGISTERED
    assert piid in ssm.instances
    assert dict(state.entitlements) == {PREMIUM: 1, STANDARD: 10, OUTBOUND: 0}
    assert sink.mnemonics == ["REGISTER_SUCCESS"]
    assert sink.rows[0].lines[0] == (
        "%MCVD-LIB_LICENSE-6-REGISTER_SUCCESS: [REGISTER] "
        "com.cisco.smartlicense.util.SmartLicenseUtil This Product Instance is registered "
        f"with Cisco Smart Software Manager.: PIID={piid}"
    )


def test_register_with_ssm_unreachable_fails_and_stays_unregistered(agent, ssm, sink):
    ssm.reachable = False
    out = agent.register(SCENARIO_TOKEN, T0)
    assert not out.ok
    assert out.message == "registration failed: SSM is unreachable (scenario)"
    assert sink.mnemonics == ["COMM_FAILED", "REGISTER_FAILED"]
    state = agent.state()
    assert state.identity is None and state.registration is Registration.UNREGISTERED
    assert not state.comm_ok
    assert ssm.instances == {}


def test_register_refused_by_the_server_is_not_a_communication_failure(agent, sink):
    out = agent.register("no-such-token", T0)
    assert (out.ok, out.message) == (
        False,
        "registration failed: no such registration token (TOKEN_UNKNOWN)",
    )
    assert sink.mnemonics == ["REGISTER_FAILED"]
    assert agent.state().comm_ok


def test_register_twice_without_force_is_refused_and_force_replaces_the_identity(
    agent, ssm, sink, store
):
    assert agent.register(SCENARIO_TOKEN, T0).ok
    first = agent.state().identity
    assert first is not None
    one_interval(agent, T0, {PREMIUM: 1})
    assert outbox(store) == [f"{first.piid}:{iso(T0)}"]
    sink.take()

    again = agent.register(SCENARIO_TOKEN, T0 + STEP)
    assert not again.ok
    assert again.message == (
        f"already registered as PIID {first.piid}; use --force to register again"
    )
    assert sink.mnemonics == []
    assert agent.state().identity == first
    assert list(ssm.instances) == [first.piid]

    forced = agent.register(SCENARIO_TOKEN, T0 + STEP, force=True)
    assert forced.ok
    second = agent.state().identity
    assert second is not None and second.piid != first.piid
    # The old identity's unsent reports can never be signed again: they are dropped, said
    # on the command's line and by ENTITLEMENT_REPORT_FAILED, their interval no longer
    # REPORTED.
    assert outbox(store) == []
    assert forced.message.endswith(
        f"; 1 unsent report(s) of the old PIID {first.piid} dropped (never reported)"
    )
    assert sink.mnemonics == ["REGISTER_SUCCESS", "ENTITLEMENT_REPORT_FAILED"]
    with store.read() as tx:
        [record] = tx.intervals()
    assert record.status.value == "DROPPED"
    assert all(t.reported is None for t in record.tags.values())


def test_deregister_when_not_registered_says_so(agent, sink):
    out = agent.deregister(T0)
    assert (out.ok, out.message) == (False, "this instance is not registered")
    assert sink.mnemonics == []


def test_deregister_tells_the_server(agent, ssm, sink):
    agent.register(SCENARIO_TOKEN, T0)
    piid = agent.state().identity.piid
    sink.take()
    out = agent.deregister(T0 + MIN)
    assert (out.ok, out.message) == (True, f"deregistered PIID {piid}")
    assert sink.mnemonics == ["DEREGISTER_SUCCESS"]
    assert ssm.instances == {}
    state = agent.state()
    assert state.identity is None and state.registration is Registration.UNREGISTERED
    assert dict(state.entitlements) == {}


def test_deregister_with_ssm_unreachable_wipes_the_identity_anyway(agent, ssm, sink, store):
    agent.register(SCENARIO_TOKEN, T0)
    piid = agent.state().identity.piid
    one_interval(agent, T0, {PREMIUM: 1})
    ssm.reachable = False
    sink.take()
    out = agent.deregister(T0 + STEP)
    assert out.ok
    assert out.message == (
        f"deregistered PIID {piid} locally; the server was not told: "
        "SSM is unreachable (scenario) (1 unsent report(s) dropped)"
    )
    assert sink.mnemonics[0] == "DEREGISTER_FAILED"
    assert agent.state().identity is None
    assert outbox(store) == []
    assert piid in ssm.instances  # the server never heard


def test_registering_again_after_deregistration_gets_a_new_piid(agent, ssm):
    agent.register(SCENARIO_TOKEN, T0)
    old = agent.state().identity.piid
    agent.deregister(T0 + MIN)
    agent.register(SCENARIO_TOKEN, T0 + 2 * MIN)
    new = agent.state().identity.piid
    assert new != old


# --- license type -----------------------------------------------------------------------------


def test_changing_the_license_type_while_registered_is_refused_until_deregistered(store, ssm, sink):
    flex = Agent(config("flex"), store, ssm, udi=UDI, emit=sink, origin=T0)
    assert flex.register(SCENARIO_TOKEN, T0).ok
    one_interval(flex, T0, {PREMIUM: 2})

    premium = Agent(config("perpetual-premium"), store, ssm, udi=UDI, emit=sink, origin=T0)
    with pytest.raises(LicenseTypeChanged) as caught:
        premium.state()
    message = str(caught.value)
    assert "'perpetual-premium'" in message and "'flex'" in message
    assert "deregister' first" in message
    # Every job refuses, and nothing in the database changes.
    with pytest.raises(LicenseTypeChanged):
        premium.sample([T0 + STEP], {"premium-seat": 1})
    with pytest.raises(LicenseTypeChanged):
        premium.close_intervals(T0 + 2 * STEP)
    with pytest.raises(LicenseTypeChanged):
        premium.register(SCENARIO_TOKEN, T0 + STEP, force=True)
    assert flex.state().license_type is LicenseType.FLEX
    assert flex.state().registered

    assert flex.deregister(T0 + STEP).ok
    state = premium.state()
    assert state.license_type is LicenseType.PERPETUAL_PREMIUM
    assert dict(state.tags) == {} and dict(state.entitlements) == {}
    assert premium.register(SCENARIO_TOKEN, T0 + STEP).ok
    assert premium.state().license_type is LicenseType.PERPETUAL_PREMIUM
    # Now it is the old type that is refused.
    with pytest.raises(LicenseTypeChanged):
        flex.state()


# --- failed samples -----------------------------------------------------------------------------


def test_a_failed_sample_alerts_once_per_repeat_period_and_is_counted(agent, sink, store):
    agent.sample(minutes(T0, 5), None, error="source: connection refused")
    assert sink.take() == ["LICENSE_COMPUTATION_FAILED"]
    with store.read() as tx:
        (opened,) = tx.open_intervals()
    assert (opened.start, opened.samples, opened.failures, opened.peaks) == (T0, 0, 5, {})
    # Still failing: repeated at most every alerts.repeat (1 h here).
    for i in range(5, 60):
        agent.sample([T0 + i * MIN], None, error="source: connection refused")
    assert sink.take() == []
    agent.sample([T0 + 60 * MIN], None, error="source: connection refused")
    rows = [r for r in store_alerts(store) if r.mnemonic == "LICENSE_COMPUTATION_FAILED"]
    assert [r.time for r in rows] == [T0, T0 + 60 * MIN]
    assert rows[0].lines[0].endswith(": source: connection refused")
    assert sink.take() == ["LICENSE_COMPUTATION_FAILED"]
    # A good sample ends the run: the next failure is news at once.
    agent.sample([T0 + 61 * MIN], {PREMIUM: 1})
    agent.sample([T0 + 62 * MIN], None, error="source: timeout")
    assert sink.take() == ["LICENSE_COMPUTATION_FAILED"]
    with store.read() as tx:
        last = tx.open_intervals()[-1]
    assert (last.start, last.samples, last.failures, last.peaks) == (
        T0 + 60 * MIN,
        1,
        2,
        {PREMIUM: 1},
    )


def store_alerts(store: Store) -> list[AlertRow]:
    with store.read() as tx:
        return tx.alerts()


def test_an_interval_with_only_failed_samples_is_no_data_and_moves_no_countdown(agent, sink, store):
    agent.register(SCENARIO_TOKEN, T0)
    one_interval(agent, T0, {PREMIUM: 3})  # entitlement 1: overage 1/5
    sink.take()
    agent.sample(minutes(T0 + STEP), None, error="source down")
    agent.close_intervals(T0 + 2 * STEP)
    assert sink.take() == ["LICENSE_COMPUTATION_FAILED"]  # no countdown alert
    one_interval(agent, T0 + 2 * STEP, {PREMIUM: 3})
    assert sink.take() == ["SYSTEM_TO_ENTER_OOC_STATE"]

    with store.read() as tx:
        first, gap, third = tx.intervals()
        queued = tx.outbox_batch(10)
    assert first.tags[PREMIUM].overage_count == 1 and first.status == IntervalStatus.REPORTED
    assert gap.status == IntervalStatus.NO_DATA
    for tag in gap.tags.values():
        assert tag.usage is None and tag.reported is None  # nothing invented, not even 0
    assert (gap.tags[PREMIUM].state, gap.tags[PREMIUM].overage_count) == ("OVERAGE", 1)
    # The countdown resumes where it was: 2/5, not 1/5 (reset) nor 3/5 (counted).
    assert third.tags[PREMIUM].overage_count == 2
    assert alerts_with(store, "SYSTEM_TO_ENTER_OOC_STATE")[-1].lines[0].endswith("=45 minutes")
    # Nothing is queued for an interval without data.
    assert [item.interval_start for item in queued] == [T0, T0 + 2 * STEP]


def alerts_with(store: Store, mnemonic: str) -> list[AlertRow]:
    return [r for r in store_alerts(store) if r.mnemonic == mnemonic]


def test_an_interval_with_some_failed_samples_reports_the_good_ones(agent, store):
    agent.register(SCENARIO_TOKEN, T0)
    agent.sample(minutes(T0, 5), {PREMIUM: 1, STANDARD: 4})
    agent.sample([T0 + i * MIN for i in range(5, 15)], None, error="source down")
    agent.close_intervals(T0 + STEP)
    with store.read() as tx:
        (rec,) = tx.intervals()
    assert rec.status == IntervalStatus.REPORTED
    assert {t: v.usage for t, v in rec.tags.items()} == {
        STANDARD: 4,
        PREMIUM: 1,
        "flex-outbound-port": 0,
    }


# --- alerts survive a crash ---------------------------------------------------------------------


def pending(store: Store) -> list[str]:
    with store.read() as tx:
        return [r.mnemonic for r in tx.alerts(pending_only=True)]


def test_alerts_committed_but_not_emitted_are_emitted_by_the_next_job(store, ssm, sink):
    crashing = Agent(config(), store, ssm, udi=UDI, emit=sink, origin=T0)
    sink.broken = True
    with pytest.raises(OSError, match="syslog is down"):
        crashing.register(SCENARIO_TOKEN, T0)
    # The state and the alert were committed before the effect failed.
    assert crashing.state().registered
    assert pending(store) == ["REGISTER_SUCCESS"]

    # After a restart, the next job that raises an alert emits the old one first, once.
    sink.broken = False
    agent = Agent(config(), store, ssm, udi=UDI, emit=sink, origin=T0)
    agent.sample([T0], None, error="source down")
    assert sink.take() == ["REGISTER_SUCCESS", "LICENSE_COMPUTATION_FAILED"]
    assert pending(store) == []
    agent.sample([T0 + MIN], None, error="source down")
    assert sink.take() == []


def test_alerts_left_pending_by_a_crash_go_out_with_the_next_job_that_raises_or_housekeeping(
    store, ssm, sink
):
    """A report job that raises nothing does not look for them (no read on the quiet
    path); the next job that raises an alert, or housekeeping (every sample interval in
    the daemon), emits them."""
    agent = Agent(config(), store, ssm, udi=UDI, emit=sink, origin=T0)
    agent.register(SCENARIO_TOKEN, T0)
    sink.take()
    sink.broken = True
    with pytest.raises(OSError):
        agent.sample(minutes(T0, 2), None, error="source down")
    assert pending(store) == ["LICENSE_COMPUTATION_FAILED"]
    sink.broken = False
    agent.sample([T0 + i * MIN for i in range(2, 15)], {PREMIUM: 1})
    assert agent.close_intervals(T0 + STEP)  # closed one, raised nothing
    assert agent.flush(T0 + STEP) == 1
    assert sink.take() == []
    agent.housekeeping(T0 + STEP + MIN)
    assert sink.take()[0] == "LICENSE_COMPUTATION_FAILED"  # first; a renewal follows
    assert pending(store) == []


def test_only_the_acknowledgement_of_reports_is_committed_without_fsync(agent, store):
    """The report job's one fsync is the commit that closes the interval and queues its
    report (what is sent is on disk before it leaves); the acknowledgement is committed
    without waiting for the disk: undone by a power cut, the report is sent again and
    the server keeps its id once. SQLite's own trace of the statements shows which
    commit ran under which ``synchronous``."""
    agent.register(SCENARIO_TOKEN, T0)
    agent.sample(minutes(T0), {PREMIUM: 1})
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    try:
        agent.close_intervals(T0 + STEP)
        closing, seen[:] = list(seen), []
        assert agent.flush(T0 + STEP) == 1
        acking = list(seen)
    finally:
        store._conn.set_trace_callback(None)
    assert not any("synchronous" in s for s in closing)
    assert any(s.startswith("INSERT INTO outbox") for s in closing)
    assert "COMMIT" in closing
    begin = acking.index("BEGIN IMMEDIATE")
    assert acking[begin - 1] == "PRAGMA synchronous = NORMAL"
    assert any(s.startswith("DELETE FROM outbox") for s in acking[begin:])
    assert acking[-1] == "PRAGMA synchronous = FULL"
    assert store.pragma("synchronous") == 2


# --- the outbox ---------------------------------------------------------------------------------


def test_flush_backs_off_after_a_failure_and_force_overrides(agent, ssm, sink, store):
    agent.register(SCENARIO_TOKEN, T0)
    one_interval(agent, T0, {PREMIUM: 1})
    piid = agent.state().identity.piid
    sink.take()

    ssm.reachable = False
    t1 = T0 + STEP
    assert agent.flush(t1) == 0
    state = agent.state()
    assert state.report_failures == 1
    assert state.report_next_attempt == t1 + STEP
    assert sink.take() == ["COMM_FAILED", "ENTITLEMENT_REPORT_FAILED"]
    assert (
        alerts_with(store, "ENTITLEMENT_REPORT_FAILED")[0]
        .lines[0]
        .endswith(": 1 report(s) waiting; SSM is unreachable (scenario)")
    )

    ssm.reachable = True
    assert agent.flush(t1 + 5 * MIN) == 0  # backing off: nothing is even tried
    assert ssm.reports == {}
    assert outbox(store) == [f"{piid}:{iso(T0)}"]

    assert agent.flush(t1 + 5 * MIN, force=True) == 1
    assert list(ssm.reports) == [f"{piid}:{iso(T0)}"]
    assert outbox(store) == []
    state = agent.state()
    assert (state.report_failures, state.report_next_attempt) == (0, None)
    assert sink.take() == ["COMM_RESTORED"]


def test_flush_back_off_doubles_up_to_the_retry_period_then_sends_everything_in_order(
    agent, ssm, store
):
    agent.register(SCENARIO_TOKEN, T0)
    for i in range(3):
        one_interval(agent, T0 + i * STEP, {PREMIUM: 1})
    ssm.reachable = False
    now = T0 + 3 * STEP
    waits = []
    for _ in range(5):
        agent.flush(now)
        nxt = agent.state().report_next_attempt
        waits.append(nxt - now)
        assert agent.flush(nxt - timedelta(seconds=1)) == 0
        now = nxt
    # One interval, doubling, at most authorization.retry (1 h by default).
    assert waits == [STEP, 2 * STEP, timedelta(hours=1), timedelta(hours=1), timedelta(hours=1)]
    ssm.reachable = True
    assert agent.flush(now) == 3
    starts = [r["start"] for r in ssm.reports.values()]
    assert starts == [iso(T0), iso(T0 + STEP), iso(T0 + 2 * STEP)]
    assert outbox(store) == []


def test_entitlements_from_a_report_acknowledgement_apply_from_the_next_interval(
    agent, ssm, sink, store
):
    agent.register(SCENARIO_TOKEN, T0)
    agent.sample(minutes(T0), {PREMIUM: 3})
    ssm.purchase({PREMIUM: 5})  # bought while the interval runs: the agent cannot know yet
    agent.close_intervals(T0 + STEP)
    assert agent.state().entitlements[PREMIUM] == 1
    assert agent.flush(T0 + STEP) == 1
    assert agent.state().entitlements[PREMIUM] == 6
    sink.take()

    one_interval(agent, T0 + STEP, {PREMIUM: 3})
    with store.read() as tx:
        first, second = tx.intervals()
    assert (first.tags[PREMIUM].entitlement, first.tags[PREMIUM].state) == (1, "OVERAGE")
    assert (second.tags[PREMIUM].entitlement, second.tags[PREMIUM].state) == (6, "IN_COMPLIANCE")
    assert second.tags[PREMIUM].overage_count == 0
    assert sink.take() == ["SYSTEM_BACK_IN_COMPLIANCE"]


def test_an_empty_token_is_refused_before_anything_is_sent(agent, ssm, sink):
    out = agent.register("  ", T0)
    assert (out.ok, out.message) == (False, "registration failed: the ID token is empty")
    assert sink.mnemonics == [] and ssm.instances == {}


# --- retention (history.retention) ---------------------------------------------------


def _history(store: Store, start: datetime, count: int) -> None:
    """``count`` closed intervals from ``start``, and one alert at each of their starts
    (every other one delivered)."""
    from ccx_agent.licensing.alerts import Alert
    from tests.history.instance import record

    with store.transaction() as tx:
        tx.add_intervals(
            [record(start + i * STEP, {PREMIUM: 1}, {PREMIUM: 1}) for i in range(count)]
        )
        for i in range(count):
            row = tx.add_alert(start + i * STEP, Alert("COMM_FAILED", f"n={i}"), ["line"])
            if i % 2 == 0:
                tx.mark_emitted([row])


def test_housekeeping_prunes_history_older_than_the_retention(store, ssm, sink) -> None:  # type: ignore[no-untyped-def]
    # Alerts stay undelivered here (as from a one-shot command: only the daemon delivers).
    agent = Agent(
        config(history={"retention": "1d"}),
        store,
        ssm,
        udi=UDI,
        emit=sink,
        origin=T0,
        delivers_alerts=False,
    )
    _history(store, T0, 8)  # 08:00 .. 10:00
    with store.transaction() as tx:
        # The report of the second interval was never delivered: it waits in the outbox.
        tx.enqueue_many([("r1", "piid", T0 + STEP, {"x": 1})], T0)
    # Now: one day after 09:00, so the intervals that ended by 09:00 are out of retention.
    agent.housekeeping(T0 + timedelta(days=1, hours=1))
    with store.read() as tx:
        starts = [iso(r.start) for r in tx.intervals()]
        kept = [(a.detail, delivered) for a, delivered in tx.alert_log(T0)]
        assert tx.outbox_count() == 1
    assert starts == [
        "2027-01-04T08:15:00Z",  # its report is undelivered: kept
        *(iso(T0 + i * STEP) for i in range(4, 8)),
    ]
    # Delivered alerts before 09:00 went; undelivered ones stay whatever their age.
    assert kept == [
        ("n=1", False),
        ("n=3", False),
        ("n=4", True),
        ("n=5", False),
        ("n=6", True),
        ("n=7", False),
    ]


def test_housekeeping_prunes_intervals_at_every_run_and_delivered_alerts_hourly(  # type: ignore[no-untyped-def]
    store, ssm, sink
) -> None:
    cfg = config(history={"retention": "1d"})
    # Only n=0,2,4,6 are delivered: a one-shot command's agent leaves the others pending.
    agent = Agent(cfg, store, ssm, udi=UDI, emit=sink, origin=T0, delivers_alerts=False)
    _history(store, T0, 8)  # 08:00 .. 09:45

    def left() -> tuple[list[datetime], list[str]]:
        with store.read() as tx:
            starts = [r.start for r in tx.intervals()]
            delivered = [a.detail for a, sent in tx.alert_log(T0) if sent]
        return starts, delivered

    day = timedelta(days=1)
    agent.housekeeping(T0 + day + 2 * STEP)  # retention ends at 08:30
    assert left() == ([T0 + i * STEP for i in range(2, 8)], ["n=2", "n=4", "n=6"])
    agent.housekeeping(T0 + day + 4 * STEP)  # 09:00: intervals go, alerts wait the hour
    assert left() == ([T0 + i * STEP for i in range(4, 8)], ["n=2", "n=4", "n=6"])
    agent.housekeeping(T0 + day + 6 * STEP)  # an hour after the last alert pruning
    assert left() == ([T0 + i * STEP for i in range(6, 8)], ["n=6"])
    # Delivered alerts a clock set back finds out of retention go at once.
    from ccx_agent.licensing.alerts import Alert

    with store.transaction() as tx:
        tx.mark_emitted([tx.add_alert(T0, Alert("COMM_FAILED", "old"), ["line"])])
    agent.housekeeping(T0 + day + 5 * STEP)
    assert left()[1] == ["n=6"]


def test_pruning_goes_in_bounded_batches(store, ssm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import ccx_agent.agent as agent_mod

    monkeypatch.setattr(agent_mod, "PRUNE_BATCH", 10)
    monkeypatch.setattr(agent_mod, "PRUNE_BATCHES", 3)
    agent = Agent(config(history={"retention": "1h"}), store, ssm, udi=UDI, origin=T0)
    _history(store, T0, 100)
    now = T0 + 100 * STEP + timedelta(hours=1)
    assert agent.prune_history(now) == (30, 30)
    assert agent.prune_history(now) == (30, 20)  # 50 delivered alerts in all
    assert agent.prune_history(now) == (30, 0)
    assert agent.prune_history(now) == (10, 0)
    with store.read() as tx:
        assert tx.intervals() == []
        assert len(tx.alert_log(T0)) == 50


def test_the_source_origin_is_kept_for_status_and_island_mode_alerts_once(store, ssm, sink):
    """``note_source_origin`` (the job's, not the scheduler's): the origin is written to
    the ``meta`` row ``status`` reads; island mode is announced once when it begins, not
    again by an agent started anew (a restart) on the same origin, and its end once."""
    import json

    from ccx_agent.sources.cluster import Origin
    from ccx_agent.store.db import SOURCE_META_KEY

    one = Origin("https://uccx-a", ("https://uccx-a",))
    island = Origin("https://uccx-a", ("https://uccx-a", "https://uccx-b"), island=True)
    agent = Agent(config(), store, ssm, udi=UDI, emit=sink, origin=T0)
    assert agent.note_source_origin(None, T0) == []  # a source without an origin
    assert agent.note_source_origin(one, T0) == []
    with store.read() as tx:
        kept = json.loads(tx.meta(SOURCE_META_KEY) or "null")
    assert kept["live_state_from"] == ["https://uccx-a"] and kept["since"] == iso(T0)
    later = T0 + timedelta(minutes=1)
    raised = agent.note_source_origin(island, later)
    assert [a.mnemonic.value for a in raised] == ["UCCX_ISLAND_MODE"]
    assert agent.note_source_origin(island, later) == []  # unchanged: nothing
    again = Agent(config(), store, ssm, udi=UDI, emit=sink, origin=T0)
    assert again.note_source_origin(island, later + timedelta(minutes=1)) == []
    ended = again.note_source_origin(one, later + timedelta(minutes=2))
    assert [a.mnemonic.value for a in ended] == ["UCCX_ISLAND_MODE_ENDED"]
