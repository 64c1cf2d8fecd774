"""Property tests over whole simulated runs: random worlds, invariants that always hold.

Each example is a small scenario (a few hours to two days, compressed timers) run through
the real agent jobs, a real SQLite store and the in-process SSM stand-in. The runner's own
``_drive`` walks the clock; a tracing ``Agent`` subclass only watches (which registration
closed which interval, how much evaluation was left after each job).
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccx_agent.agent import Agent, Outcome
from ccx_agent.config.yamldoc import parse_yaml
from ccx_agent.licensing.catalogue import CATALOGUE, LicenseType, tags_of
from ccx_agent.licensing.compliance import TagState
from ccx_agent.licensing.interval import IntervalRecord, IntervalStatus
from ccx_agent.licensing.lifecycle import ProductState, evaluation_left
from ccx_agent.licensing.timeutil import iso
from ccx_agent.scenario import runner
from ccx_agent.scenario.model import DEFAULT_START, LoadedScenario, load_scenario
from ccx_agent.scenario.simssm import ScenarioSsm
from ccx_agent.store.db import AlertRow, OutboxItem

MINUTE = timedelta(minutes=1)
NODE = "uccxpubsu1"
LOCKED = {TagState.OUT_OF_COMPLIANCE.value, TagState.ENFORCEMENT.value}
COUNTDOWN = {"SYSTEM_TO_ENTER_OOC_STATE", "SYSTEM_TO_ENTER_OOC_STATE_SHORTLY"}

#: Compressed timers: renewals, expiries, enforcement and evaluation all happen within days.
#: (evaluation period, its warning days)
EVALUATIONS = [("12h", []), ("2d", [1]), ("3d", [2, 1])]
STYLES = [["mcvd"], ["uc"], ["mcvd", "uc"], ["uc", "mcvd"]]

PROPS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- scenario generation ----------------------------------------------------------------


@st.composite
def counts(
    draw: st.DrawFn, tags: tuple[str, ...], values: st.SearchStrategy[int]
) -> dict[str, int]:
    chosen = draw(st.lists(st.sampled_from(tags), min_size=1, max_size=len(tags), unique=True))
    return {t: draw(values) for t in chosen}


@st.composite
def event(draw: st.DrawFn, tags: tuple[str, ...]) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "usage",
                "usage",
                "usage",
                "purchase",
                "purchase",
                "ssm",
                "ssm",
                "register",
                "deregister",
            ]
        )
    )
    if kind == "usage":
        return {"usage": draw(counts(tags, st.integers(0, 7)))}
    if kind == "purchase":
        return {"purchase": draw(counts(tags, st.integers(-4, 4)))}
    if kind == "ssm":
        return {"ssm": draw(st.sampled_from(["reachable", "unreachable"]))}
    return {kind: True}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """A scenario as the YAML mapping a user would write."""
    license_type = draw(st.sampled_from(list(LicenseType)))
    tags = tags_of(license_type)
    report = draw(st.sampled_from([10, 15, 30]))
    sample = draw(st.sampled_from([5, report]))
    intervals = draw(st.integers(2, 150))
    # Durations that end between two boundaries too: the last whole intervals must be closed.
    total = intervals * report + draw(st.sampled_from([0, 0, 1, report - 1]))
    period, warning_days = draw(st.sampled_from(EVALUATIONS))
    raw_events = draw(st.lists(st.tuples(st.integers(0, total), event(tags)), max_size=8))
    # Usage from the start, mostly: compliance only moves while something is in use.
    first = draw(st.one_of(st.none(), counts(tags, st.integers(0, 7))))
    if first is not None:
        raw_events.insert(0, (0, {"usage": first}))
    events = [{"at": f"{at}m", **ev} for at, ev in sorted(raw_events, key=lambda e: e[0])]
    return {
        "start": DEFAULT_START.isoformat(),
        "license_type": license_type.value,
        "registered": draw(st.sampled_from([True, True, True, False])),
        "entitlements": draw(st.one_of(st.just({}), counts(tags, st.integers(0, 4)))),
        "config": {
            "report": {"interval": f"{report}m"},
            "sample": {"interval": f"{sample}m"},
            "compliance": {
                "ooc_threshold": draw(st.integers(1, 5)),
                "ooc_period": draw(st.sampled_from(["2h", "6h", "1d"])),
            },
            "evaluation": {"period": period, "warning_days": warning_days},
            "id_certificate": {
                "lifetime": draw(st.sampled_from(["1d", "2d"])),
                "renew_after": "12h",
                "expiry_warning": "6h",
            },
            "authorization": {
                "renew_after": "6h",
                "validity": "12h",
                "expiry_warning": "3h",
                "grace": "6h",
            },
            "alerts": {"styles": draw(st.sampled_from(STYLES)), "node_id": NODE, "repeat": "4h"},
        },
        "events": events,
        "duration": f"{total}m",
    }


def load(doc: dict[str, Any]) -> LoadedScenario:
    return load_scenario(parse_yaml(yaml.safe_dump(doc, sort_keys=False), "generated.yaml"))


# --- a traced run -------------------------------------------------------------------------


@dataclass
class Trace:
    #: Bumped at every registration and deregistration: which identity an interval had.
    epoch: int = 0
    #: Interval start -> (epoch, PIID) of the identity in force when it was closed.
    owner: dict[datetime, tuple[int, str | None]] = field(default_factory=dict)
    #: Evaluation time left after every job, in job order.
    evaluation_left: list[timedelta] = field(default_factory=list)


class TracingAgent(Agent):
    """The real agent; it only notes what each job left behind."""

    trace: Trace

    def _after(self) -> ProductState:
        state = self.state()
        self.trace.evaluation_left.append(evaluation_left(state, self.timers))
        return state

    def sample(self, times, usage, *, error=None, unlicensed=()):
        super().sample(times, usage, error=error, unlicensed=unlicensed)
        self._after()

    def close_intervals(self, now: datetime) -> list[IntervalRecord]:
        return self._closed(super().close_intervals(now))

    def sample_and_close(self, times, usage, now: datetime) -> list[IntervalRecord]:
        # The runner's catch-up: both jobs in one transaction, so one point to trace.
        return self._closed(super().sample_and_close(times, usage, now))

    def _closed(self, closed: list[IntervalRecord]) -> list[IntervalRecord]:
        state = self._after()
        piid = state.identity.piid if state.identity else None
        for record in closed:
            assert record.start not in self.trace.owner, f"{record.start} closed twice"
            self.trace.owner[record.start] = (self.trace.epoch, piid)
        return closed

    def flush(self, now: datetime, *, force: bool = False) -> int:
        sent = super().flush(now, force=force)
        self._after()
        return sent

    def housekeeping(self, now: datetime) -> None:
        super().housekeeping(now)
        self._after()

    def register(self, token: str, now: datetime, *, force: bool = False) -> Outcome:
        outcome = super().register(token, now, force=force)
        if outcome.ok:
            self.trace.epoch += 1
        self._after()
        return outcome

    def deregister(self, now: datetime) -> Outcome:
        outcome = super().deregister(now)
        if outcome.ok:
            self.trace.epoch += 1
        self._after()
        return outcome


@dataclass
class Run:
    loaded: LoadedScenario
    trace: Trace
    ssm: ScenarioSsm
    intervals: list[IntervalRecord]
    outbox: list[OutboxItem]
    stored_alerts: list[AlertRow]
    pending_alerts: list[AlertRow]
    emitted: list[AlertRow]
    final: ProductState


def traced_run(loaded: LoadedScenario, workdir: Path) -> Run:
    """What ``runner.run`` does, keeping the stand-in, the store and a trace to inspect."""
    sc = loaded.scenario
    emitted: list[AlertRow] = []
    agent, ssm, store = runner.setup(loaded, workdir, emitted.extend, TracingAgent)
    try:
        agent.trace = trace = Trace()
        runner._drive(agent, ssm, sc.start, sc.duration, sc.events, sc.registered)
        with store.read() as tx:
            run = Run(
                loaded,
                trace,
                ssm,
                tx.intervals(),
                tx.outbox_batch(10**9),
                tx.alerts(),
                tx.alerts(pending_only=True),
                emitted,
                agent._load(tx),
            )
        return run
    finally:
        store.close()


def simulate(doc: dict[str, Any]) -> Run:
    with tempfile.TemporaryDirectory(prefix="ccx-props-") as tmp:
        return traced_run(load(doc), Path(tmp))


def usage_at_samples(run: Run, start: datetime, end: datetime) -> dict[str, int]:
    """The peak the scenario's usage events imply for ``[start, end)``: the samples taken
    in it see the usage after every event at or before their instant."""
    sc, cfg = run.loaded.scenario, run.loaded.config
    tags = tags_of(cfg.license.type)
    peak = dict.fromkeys(tags, 0)
    t = start
    while t < end and t < sc.start + sc.duration:
        usage = dict.fromkeys(tags, 0)
        for ev in sc.events:
            if sc.start + ev.at <= t and ev.usage:
                usage.update(ev.usage)
        for tag in tags:
            peak[tag] = max(peak[tag], usage[tag])
        t += cfg.sample.interval
    return peak


def report_id(piid: str | None, start: datetime) -> str:
    return f"{piid}:{iso(start)}"


# --- invariants ---------------------------------------------------------------------------


def check_intervals(run: Run) -> None:
    """Every interval of the run is recorded exactly once, contiguous, aligned to start."""
    sc, step = run.loaded.scenario, run.loaded.config.report.interval
    expected = sc.duration // step
    assert len(run.intervals) == expected
    assert len({r.start for r in run.intervals}) == expected
    for i, rec in enumerate(run.intervals):
        assert rec.start == sc.start + i * step
        assert rec.end - rec.start == step
    for a, b in itertools.pairwise(run.intervals):
        assert a.end == b.start
    assert set(run.trace.owner) == {r.start for r in run.intervals}


def check_records(run: Run) -> None:
    """Status follows registration; usage is the peak of the samples; no data is invented."""
    tags = tags_of(run.loaded.config.license.type)
    for rec in run.intervals:
        assert set(rec.tags) == set(tags)
        # Every interval of a scenario has samples: none may be NO_DATA.
        assert rec.status != IntervalStatus.NO_DATA
        if rec.registration == "REGISTERED" and rec.status == IntervalStatus.DROPPED:
            # Its report was dropped unsent when its identity was wiped or replaced: the
            # identity is not the current one, and SSM never acknowledged the report.
            epoch, piid = run.trace.owner[rec.start]
            assert epoch != run.trace.epoch and piid is not None
            assert report_id(piid, rec.start) not in run.ssm.reports
            assert all(t.reported is None for t in rec.tags.values())
        elif rec.registration == "REGISTERED":
            assert rec.status == IntervalStatus.REPORTED
            assert all(t.reported is not None for t in rec.tags.values())
        else:
            assert rec.status == IntervalStatus.LOCAL
            assert all(t.reported is None for t in rec.tags.values())
        peak = usage_at_samples(run, rec.start, rec.end)
        assert {t: v.usage for t, v in rec.tags.items()} == peak, iso(rec.start)


def check_outbox_accounting(run: Run) -> None:
    """Each REPORTED interval of the current identity is acknowledged xor still queued;
    those of a wiped identity are never queued; nothing is invented or counted twice."""
    reported: dict[str, tuple[int, IntervalRecord]] = {}
    for rec in run.intervals:
        if rec.status != IntervalStatus.REPORTED:
            continue
        epoch, piid = run.trace.owner[rec.start]
        assert piid is not None
        rid = report_id(piid, rec.start)
        assert rid not in reported
        reported[rid] = (epoch, rec)
    acked = run.ssm.reports
    queued = {item.report_id: item for item in run.outbox}
    assert len(queued) == len(run.outbox)
    assert set(acked) <= set(reported), "the server has a report no interval produced"
    assert set(queued) <= set(reported), "the outbox has a report no interval produced"
    assert not set(acked) & set(queued), "a report is both acknowledged and still queued"

    current = run.final.identity
    for rid, (epoch, _) in reported.items():
        if current is not None and epoch == run.trace.epoch:
            assert (rid in acked) != (rid in queued), f"{rid} lost"
        else:
            assert rid not in queued, f"{rid} of a wiped identity is still queued"
            # Not acknowledged, it would have been marked DROPPED when its identity went.
            assert rid in acked, f"{rid} of a wiped identity says REPORTED, never delivered"
    for item in run.outbox:
        assert current is not None and item.piid == current.piid
        assert item.report_id == report_id(item.piid, item.interval_start)

    # What was sent is what was recorded: the reported values, not the raw usage.
    for rid, payload in [*acked.items(), *((i.report_id, i.payload) for i in run.outbox)]:
        rec = reported[rid][1]
        assert payload["id"] == rid
        assert payload["start"] == iso(rec.start) and payload["end"] == iso(rec.end)
        assert payload["usage"] == {t: v.reported for t, v in rec.tags.items()}

    # Delivered oldest first: acknowledged in interval order, the outbox after them.
    acked_starts = [reported[rid][1].start for rid in acked]
    assert acked_starts == sorted(acked_starts)
    assert len(set(acked_starts)) == len(acked_starts)
    queued_starts = [item.interval_start for item in run.outbox]
    assert queued_starts == sorted(queued_starts)
    if current is not None and queued_starts:
        mine = [reported[r][1].start for r in acked if reported[r][0] == run.trace.epoch]
        assert all(s < queued_starts[0] for s in mine)


def _human_minutes(span: timedelta) -> str:
    minutes = int(span / MINUTE)
    assert minutes > 1
    return f"{minutes} minutes"


def check_compliance(run: Run) -> None:
    """The per-tag state machine as docs/licensing.md §4 states it, read off the interval record."""
    cfg = run.loaded.config
    threshold = cfg.compliance.ooc_threshold
    step = cfg.report.interval
    enforced = CATALOGUE[cfg.license.type].compliance_enforced
    alerts_at: dict[datetime, list[AlertRow]] = {}
    for a in run.emitted:
        alerts_at.setdefault(a.time, []).append(a)

    def alerted(mnemonics: set[str], at: datetime, tag: str) -> list[AlertRow]:
        return [a for a in alerts_at.get(at, []) if a.mnemonic in mnemonics and tag in a.tags]

    # tag -> (epoch, last REPORTED TagRecord, peak of the current overage run)
    last: dict[str, tuple[int, Any, int]] = {}
    for rec in run.intervals:
        if rec.status != IntervalStatus.REPORTED:
            continue
        epoch = run.trace.owner[rec.start][0]
        for tag, now in rec.tags.items():
            assert now.usage is not None and now.reported is not None
            # Compliance carries over a new registration: only a purchase ends a locked OOC.
            before = last.get(tag) or (epoch, None, 0)
            prev = before[1]
            prev_state = prev.state if prev else TagState.IN_COMPLIANCE.value
            prev_count = prev.overage_count if prev else 0
            run_peak = before[2]
            where = f"{tag} at {iso(rec.start)}"
            assert 0 <= now.overage_count <= threshold, where

            if not enforced:
                assert now.state == TagState.IN_COMPLIANCE.value, where
                assert (now.overage_count, now.reported) == (0, now.usage), where
                last[tag] = (epoch, now, 0)
                continue

            if prev_state not in LOCKED and now.usage <= now.entitlement:
                # A compliant interval always resets the countdown.
                assert now.state == TagState.IN_COMPLIANCE.value, where
                assert now.overage_count == 0, where
            if now.state == TagState.IN_COMPLIANCE.value:
                assert now.overage_count == 0 and now.reported == now.usage, where
                assert now.usage <= now.entitlement, where
                if prev_state != TagState.IN_COMPLIANCE.value:
                    assert len(alerted({"SYSTEM_BACK_IN_COMPLIANCE"}, rec.end, tag)) == 1, where
                run_peak = 0
            elif now.state == TagState.OVERAGE.value:
                assert prev_state in {TagState.IN_COMPLIANCE.value, TagState.OVERAGE.value}
                assert now.usage > now.entitlement and now.reported == now.usage, where
                assert now.overage_count == prev_count + 1 < threshold, where
                run_peak = max(run_peak, now.usage)
                # The countdown alert: (threshold − n) × interval left, SHORTLY at the last.
                left = (threshold - now.overage_count) * step
                countdown = alerted(COUNTDOWN, rec.end, tag)
                assert len(countdown) == 1, where
                alert = countdown[0]
                shortly = now.overage_count == threshold - 1
                assert alert.mnemonic == (
                    "SYSTEM_TO_ENTER_OOC_STATE_SHORTLY" if shortly else "SYSTEM_TO_ENTER_OOC_STATE"
                )
                assert alert.severity == (0 if shortly else 1)
                text = _human_minutes(left)
                for line in alert.lines:
                    if line.startswith("%MCVD"):
                        assert line.endswith(f"Out of Compliance state in ={text}"), line
                    else:
                        assert f"[The time remaining to enter OOC state={text}]" in line, line
            else:
                assert now.state in LOCKED, where
                assert now.overage_count == threshold, where
                assert now.reported >= now.usage, where
                if prev is not None and prev_state in LOCKED:
                    locked = max(prev.reported, now.usage)
                else:
                    # Entering: the highest usage of the whole overage run is locked.
                    assert now.state == TagState.OUT_OF_COMPLIANCE.value, where
                    assert prev_count == threshold - 1 and now.usage > now.entitlement, where
                    locked = max(run_peak, now.usage)
                    assert alerted({"SYSTEM_IN_OOC_STATE"}, rec.end, tag), where
                assert now.reported == locked, where
                assert now.entitlement < locked, where
                if now.state == TagState.ENFORCEMENT.value:
                    assert prev_state in LOCKED, where
                run_peak = 0
            assert not (now.state != TagState.OVERAGE.value and alerted(COUNTDOWN, rec.end, tag))
            last[tag] = (epoch, now, run_peak)


def check_evaluation(run: Run) -> None:
    period = run.loaded.config.evaluation.period
    left = run.trace.evaluation_left
    assert left, "no job ran"
    assert all(timedelta(0) <= x <= period for x in left)
    assert all(b <= a for a, b in itertools.pairwise(left)), "evaluation time came back"


def check_alerts(run: Run) -> None:
    """Emitted once each, in commit order and time order, in exactly the configured styles."""
    styles = run.loaded.config.alerts.styles
    assert run.pending_alerts == []
    assert [a.id for a in run.emitted] == [a.id for a in run.stored_alerts]
    times = [a.time for a in run.emitted]
    assert times == sorted(times), "alerts out of time order"
    sc = run.loaded.scenario
    assert all(sc.start <= t <= sc.start + sc.duration for t in times)
    for alert in run.emitted:
        assert len(alert.lines) == len(styles)
        for style, line in zip(styles, alert.lines, strict=True):
            assert "\n" not in line
            head = f"-{alert.severity}-{alert.mnemonic}: "
            if style.value == "mcvd":
                assert line.startswith(f"%MCVD-LIB_LICENSE{head}["), line
                assert line.endswith(f": {alert.detail}"), line
            else:
                assert line.startswith(f"%UC_LIB_LICENSE{head}%"), line
                assert f"[ClusterID=][NodeID={NODE}]: " in line, line


@PROPS
@given(scenarios())
def test_random_runs_keep_every_invariant(doc):
    run = simulate(doc)
    check_intervals(run)
    check_records(run)
    check_outbox_accounting(run)
    check_compliance(run)
    check_evaluation(run)
    check_alerts(run)


@settings(PROPS, max_examples=30)
@given(scenarios())
def test_catching_up_quiet_boundaries_equals_stepping_each_one(doc):
    loaded = load(doc)
    fast = runner.run(loaded).as_json()
    with mock.patch.object(runner, "MAX_QUIET", 1):
        slow = runner.run(loaded).as_json()
    assert fast == slow


@pytest.mark.parametrize("duration", ["2h7m", "6h10m"])
def test_a_duration_that_ends_between_boundaries_records_every_whole_interval(duration):
    doc = {
        "license_type": "flex",
        "registered": True,
        "entitlements": {"flex-premium-seat": 10},
        "events": [{"at": "0m", "usage": {"flex-premium-seat": 4}}],
        "duration": duration,
    }
    loaded = load(doc)
    fast = runner.run(loaded)
    with mock.patch.object(runner, "MAX_QUIET", 1):
        slow = runner.run(loaded)
    whole = loaded.scenario.duration // loaded.config.report.interval
    assert len(slow.intervals) == whole
    assert len(fast.intervals) == whole
    assert fast.as_json() == slow.as_json()
