"""The per-tag compliance state machine (docs/licensing.md §4), step by step."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ccx_agent.licensing.compliance import (
    ComplianceRules,
    Event,
    TagCompliance,
    TagState,
    step,
)

T0 = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
RULES = ComplianceRules()


def run(usages, entitlement=100, rules=RULES, start=None, enforced=True):
    state = start or TagCompliance()
    steps = []
    for i, usage in enumerate(usages):
        ent = entitlement[i] if isinstance(entitlement, list) else entitlement
        s = step(state, usage, ent, T0 + (i + 1) * Q, rules, enforced=enforced)
        steps.append(s)
        state = s.after
    return steps


def test_using_exactly_the_entitlement_is_compliant():
    (s,) = run([100])
    assert s.after.state is TagState.IN_COMPLIANCE
    assert s.event is None
    assert s.reported == 100


def test_countdown_60_45_30_15_then_ooc():
    steps = run([130] * 5)
    assert [s.after.overage_count for s in steps] == [1, 2, 3, 4, 5]
    assert [s.remaining for s in steps[:4]] == [4 * Q, 3 * Q, 2 * Q, Q]
    assert [s.event for s in steps] == [Event.COUNTDOWN] * 4 + [Event.ENTERED_OOC]
    assert [s.after.state for s in steps] == [TagState.OVERAGE] * 4 + [TagState.OUT_OF_COMPLIANCE]
    assert steps[-1].after.locked == 130
    assert steps[-1].after.ooc_since == T0 + 5 * Q


def test_seed_scenario_1_locked_usage_until_the_deficit_is_bought():
    # 100 bought, 130 used for five intervals, then usage falls to 90.
    steps = run([130] * 5 + [90, 90], entitlement=100)
    assert [s.reported for s in steps] == [130] * 7
    assert steps[-1].after.state is TagState.OUT_OF_COMPLIANCE
    # 29 more is not enough: 129 < 130.
    (s,) = run([90], entitlement=129, start=steps[-1].after)
    assert s.after.state is TagState.OUT_OF_COMPLIANCE and s.reported == 130
    # The deficit (30) is bought: back in compliance, actual usage reported again.
    (s,) = run([90], entitlement=130, start=steps[-1].after)
    assert s.after.state is TagState.IN_COMPLIANCE
    assert s.event is Event.BACK_IN_COMPLIANCE
    assert s.reported == 90
    assert s.after == TagCompliance()


def test_locked_usage_is_the_peak_of_the_overage_run():
    steps = run([110, 140, 120, 115, 112])
    assert steps[-1].after.locked == 140
    assert steps[-1].reported == 140


def test_usage_rising_while_ooc_raises_the_lock():
    steps = run([130] * 5 + [150, 90])
    assert [s.reported for s in steps[-2:]] == [150, 150]
    assert steps[-1].after.locked == 150


def test_seed_scenario_2_two_overages_then_compliant_and_counting_restarts():
    steps = run([110, 110, 95, 105])
    assert [s.after.overage_count for s in steps] == [1, 2, 0, 1]
    assert steps[2].event is Event.BACK_IN_COMPLIANCE
    assert steps[3].event is Event.COUNTDOWN and steps[3].remaining == 4 * Q


def test_compliant_interval_without_prior_overage_raises_nothing():
    assert [s.event for s in run([50, 60])] == [None, None]


def test_enforcement_after_the_ooc_period():
    rules = ComplianceRules(ooc_threshold=5, interval=Q, ooc_period=timedelta(days=90))
    steps = run([130] * 5, rules=rules)
    ooc = steps[-1].after
    just_before = step(ooc, 130, 100, ooc.ooc_since + timedelta(days=90) - Q, rules)
    assert just_before.after.state is TagState.OUT_OF_COMPLIANCE
    at = step(ooc, 130, 100, ooc.ooc_since + timedelta(days=90), rules)
    assert at.after.state is TagState.ENFORCEMENT
    assert at.event is Event.ENTERED_ENFORCEMENT
    again = step(at.after, 130, 100, ooc.ooc_since + timedelta(days=91), rules)
    assert again.event is None and again.after.state is TagState.ENFORCEMENT
    # The same purchase rule leaves enforcement.
    out = step(at.after, 90, 130, ooc.ooc_since + timedelta(days=92), rules)
    assert out.after.state is TagState.IN_COMPLIANCE and out.event is Event.BACK_IN_COMPLIANCE


def test_threshold_and_interval_are_configurable():
    rules = ComplianceRules(ooc_threshold=3, interval=timedelta(seconds=2))
    steps = run([5, 5, 5], entitlement=1, rules=rules)
    assert [s.remaining for s in steps[:2]] == [timedelta(seconds=4), timedelta(seconds=2)]
    assert steps[-1].after.state is TagState.OUT_OF_COMPLIANCE


def test_threshold_one_goes_straight_to_ooc():
    (s,) = run([101], rules=ComplianceRules(ooc_threshold=1))
    assert s.event is Event.ENTERED_OOC


def test_nfr_is_never_out_of_compliance():
    steps = run([1000] * 10, entitlement=0, enforced=False)
    assert all(s.after.state is TagState.IN_COMPLIANCE for s in steps)
    assert all(s.event is None for s in steps)
    assert [s.reported for s in steps] == [1000] * 10


usage_runs = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=1, max_size=40)


@given(usage_runs)
def test_reported_never_below_usage_and_locked_while_ooc(pairs):
    state = TagCompliance()
    for i, (usage, entitlement) in enumerate(pairs):
        s = step(state, usage, entitlement, T0 + i * Q, RULES)
        assert s.reported >= s.usage
        if s.after.is_locked:
            assert s.after.locked is not None
            assert s.reported == s.after.locked >= usage
            assert s.after.locked > entitlement
        state = s.after


@given(usage_runs)
def test_one_compliant_interval_always_resets_a_reversible_overage(pairs):
    state = TagCompliance()
    for i, (usage, entitlement) in enumerate(pairs):
        state = step(state, usage, entitlement, T0 + i * Q, RULES).after
    if state.state is TagState.OVERAGE:
        s = step(state, 0, 0, T0, RULES)
        assert s.after == TagCompliance()
        assert s.event is Event.BACK_IN_COMPLIANCE


@given(usage_runs)
def test_overage_count_never_exceeds_threshold_and_ooc_is_sticky(pairs):
    state = TagCompliance()
    for i, (usage, entitlement) in enumerate(pairs):
        s = step(state, usage, entitlement, T0 + i * Q, RULES)
        assert 0 <= s.after.overage_count <= RULES.ooc_threshold
        if state.is_locked and not s.after.is_locked:
            # Only a purchase covering the lock leaves OOC.
            assert entitlement >= max(state.locked or 0, usage)
        state = s.after
