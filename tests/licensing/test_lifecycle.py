"""Product-level timers (docs/licensing.md §6), driven with an injected clock: days in milliseconds."""

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ccx_agent.licensing import lifecycle as lc
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.compliance import TagCompliance, TagState
from ccx_agent.licensing.lifecycle import (
    Authorization,
    Due,
    Enforcement,
    Identity,
    ProductState,
    Registration,
    Timers,
)

T0 = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
T = Timers()
#: The ID certificate's lifetime: the server sets it (the timers never read it).
LIFETIME = timedelta(days=365)
IN_USE = {"flex-premium-seat": 10}
IDLE = {"flex-premium-seat": 0}


def fresh() -> ProductState:
    return ProductState(LicenseType.FLEX)


def walk(state, start, end, usage, step=timedelta(minutes=15), timers=T):
    """Sample and evaluate every ``step`` from start (exclusive) to end (inclusive)."""
    alerts = []
    now = start
    while now < end:
        now += step
        state, a = lc.sample(state, [now], usage, timers)
        alerts += [(now, x) for x in a]
        state, a = lc.evaluate(state, now, timers)
        alerts += [(now, x) for x in a]
    return state, alerts


def names(alerts):
    return [a.mnemonic for _, a in alerts]


def registered_state(now=T0) -> ProductState:
    ident = Identity("piid-1", now, now, now + LIFETIME)
    state, _ = lc.registered(fresh(), now, ident, {"flex-premium-seat": 100}, T)
    return state


# --- evaluation -------------------------------------------------------------------------


def test_evaluation_starts_with_usage_and_announces_it():
    state, alerts = walk(fresh(), T0, T0 + timedelta(minutes=30), IN_USE)
    assert state.authorization is Authorization.EVALUATION
    assert names(alerts) == ["EVAL_START"]
    # The first sample starts the evaluation and charges nothing: all 90 days are left.
    assert alerts[0][1].detail == "Evaluation period remaining =90 days"


def test_evaluation_does_not_count_without_usage():
    state, _ = walk(fresh(), T0, T0 + 10 * DAY, IDLE, step=timedelta(minutes=15))
    assert state.evaluation_used == timedelta(0)
    assert state.authorization is Authorization.NO_LICENSES_IN_USE


def test_evaluation_is_cumulative_and_pauses_while_registered():
    state, _ = walk(fresh(), T0, T0 + 10 * DAY, IN_USE, step=timedelta(minutes=15))
    used = state.evaluation_used
    assert abs(used - 10 * DAY) <= timedelta(minutes=15)
    # Register: evaluation stops counting.
    now = T0 + 10 * DAY
    ident = Identity("p", now, now, now + LIFETIME)
    state, _ = lc.registered(state, now, ident, {}, T)
    state, _ = walk(state, now, now + 20 * DAY, IN_USE)
    assert state.evaluation_used == used
    # Deregister: it resumes where it was, not from 90 days.
    now += 20 * DAY
    state, alerts = lc.deregistered(state, now, T, told_server=True)
    state, more = walk(state, now, now + DAY, IN_USE)
    assert abs(state.evaluation_used - (used + DAY)) <= timedelta(minutes=15)
    assert "EVAL_START" in [a.mnemonic for a in alerts] + names(more)


def test_evaluation_pauses_when_usage_stops_and_resumes_with_it():
    state, _ = walk(fresh(), T0, T0 + 5 * DAY, IN_USE)
    state, _ = walk(state, T0 + 5 * DAY, T0 + 15 * DAY, IDLE)
    state, _ = walk(state, T0 + 15 * DAY, T0 + 20 * DAY, IN_USE)
    assert abs(state.evaluation_used - 10 * DAY) <= timedelta(minutes=30)


def test_evaluation_warnings_at_30_14_7_1_days_then_expiry_and_enforcement():
    state, alerts = walk(fresh(), T0, T0 + 91 * DAY, IN_USE, step=timedelta(minutes=15))
    warnings = [(t, a) for t, a in alerts if a.mnemonic == "EVAL_EXPIRY_WARNING"]
    assert len(warnings) == 4
    days_left = [round((T.evaluation_period - (t - T0)) / DAY) for t, _ in warnings]
    assert days_left == [30, 14, 7, 1]
    assert names(alerts).count("EVAL_EXPIRED") == 1
    assert state.authorization is Authorization.EVALUATION_EXPIRED
    assert state.enforcement is Enforcement.EVALUATION_EXPIRED
    enforced = [(t, a.detail) for t, a in alerts if a.mnemonic == "ENFORCEMENT_MODE"]
    # The evaluation started with the first sample (T0 + 15 min) and expires 90 days on.
    expired_at = next(t for t, a in alerts if a.mnemonic == "EVAL_EXPIRED")
    assert expired_at == T0 + timedelta(minutes=15) + T.evaluation_period
    assert enforced == [(expired_at, "Enforcement reason =EVALUATION_EXPIRED")]


def test_registering_leaves_evaluation_expired_enforcement():
    state, _ = walk(fresh(), T0, T0 + 91 * DAY, IN_USE, step=timedelta(minutes=15))
    assert state.enforcement is Enforcement.EVALUATION_EXPIRED
    now = T0 + 91 * DAY
    ident = Identity("p", now, now, now + LIFETIME)
    state, _ = lc.registered(state, now, ident, {}, T)
    assert state.enforcement is None
    assert state.authorization is Authorization.AUTHORIZED


def test_clock_jump_backwards_raises_alert_and_charges_nothing():
    state, _ = walk(fresh(), T0, T0 + DAY, IN_USE)
    used = state.evaluation_used
    state, alerts = lc.sample(state, [T0 + DAY - 3 * DAY], IN_USE, T)
    assert names([(None, a) for a in alerts]) == ["SYSTEM_CLOCK_CHANGED"]
    assert state.evaluation_used == used
    # The new time is the baseline: the next minute charges one minute.
    state, alerts = lc.sample(state, [T0 - 2 * DAY + timedelta(minutes=1)], IN_USE, T)
    assert alerts == []
    assert state.evaluation_used == used + timedelta(minutes=1)


def test_clock_jump_forward_is_never_charged_more_than_the_cap():
    state, _ = walk(fresh(), T0, T0 + DAY, IN_USE)
    used = state.evaluation_used
    state, alerts = lc.sample(state, [T0 + 40 * DAY], IN_USE, T)
    assert [a.mnemonic for a in alerts] == ["SYSTEM_CLOCK_CHANGED"]
    assert state.evaluation_used == used
    # A gap below the jump threshold is charged at most the configured maximum.
    state, alerts = lc.sample(state, [T0 + 40 * DAY + timedelta(hours=5)], IN_USE, T)
    assert alerts == []
    assert state.evaluation_used == used + T.evaluation_max_sample_gap


def test_a_stop_longer_than_the_jump_threshold_is_not_a_clock_change():
    """The daemon's first sample after a start: the gap is downtime, charged no more than
    the usual cap (the daemon cannot know whether agents were in use meanwhile)."""
    state, _ = walk(fresh(), T0, T0 + DAY, IN_USE)
    used = state.evaluation_used
    state, alerts = lc.sample(state, [T0 + 5 * DAY], IN_USE, T, resumed=True)
    assert alerts == []
    assert state.evaluation_used == used + T.evaluation_max_sample_gap
    # A clock that went back is a clock change even at a start.
    state, alerts = lc.sample(state, [T0 + 2 * DAY], IN_USE, T, resumed=True)
    assert [a.mnemonic for a in alerts] == ["SYSTEM_CLOCK_CHANGED"]


def test_a_monotonic_reference_tells_a_suspend_from_a_jump():
    state, _ = walk(fresh(), T0, T0 + DAY, IN_USE)
    # Two days of wall clock that a clock counting through suspend also saw: a suspend.
    later, alerts = lc.sample(state, [T0 + 3 * DAY], IN_USE, T, elapsed=2 * DAY)
    assert alerts == []
    # Two days of wall clock in one real minute: the clock was set forward.
    later, alerts = lc.sample(state, [T0 + 3 * DAY], IN_USE, T, elapsed=timedelta(minutes=1))
    assert [a.mnemonic for a in alerts] == ["SYSTEM_CLOCK_CHANGED"]
    assert later.evaluation_used == state.evaluation_used


# --- registration, ID certificate ----------------------------------------------------------


def test_id_certificate_renewal_due_after_180_days_and_retried_hourly():
    state = registered_state()
    assert Due.RENEW_ID not in lc.due(state, T0 + 179 * DAY, T)
    assert Due.RENEW_ID in lc.due(state, T0 + 180 * DAY, T)
    now = T0 + 180 * DAY
    state, alerts = lc.id_renew_failed(state, now, "SSM is unreachable", T)
    assert [a.mnemonic for a in alerts] == ["ID_CERT_RENEW_FAILED"]
    assert Due.RENEW_ID not in lc.due(state, now + timedelta(minutes=59), T)
    assert Due.RENEW_ID in lc.due(state, now + timedelta(hours=1), T)
    # A second failure within a day is not announced again (standing condition).
    state, alerts = lc.id_renew_failed(state, now + timedelta(hours=1), "again", T)
    assert alerts == []
    # Success renews: next renewal 180 days after the new issue time.
    later = now + timedelta(hours=2)
    state, alerts = lc.id_renewed(state, later, later, later + LIFETIME, T)
    assert next(a.mnemonic for a in alerts) == "ID_CERT_RENEW_SUCCESS"
    assert Due.RENEW_ID not in lc.due(state, later + 179 * DAY, T)


def test_registration_expiring_soon_daily_then_expired_and_evaluation_resumes():
    state = registered_state()
    start = T0 + 330 * DAY
    # Keep the authorization alive so only the certificate matters here.
    state, _ = lc.authorized(state, start, {"flex-premium-seat": 100}, frozenset(IN_USE), T)
    state, alerts = walk(state, start, T0 + 366 * DAY, IN_USE, step=timedelta(minutes=15))
    soon = [t for t, a in alerts if a.mnemonic == "REGISTRATION_EXPIRING_SOON"]
    assert 29 <= len(soon) <= 31
    assert all((b - a) >= DAY for a, b in itertools.pairwise(soon))
    assert soon[0] >= T0 + 335 * DAY
    assert names(alerts).count("REGISTRATION_EXPIRED") == 1
    expired_at = next(t for t, a in alerts if a.mnemonic == "REGISTRATION_EXPIRED")
    assert T0 + 365 * DAY <= expired_at <= T0 + 365 * DAY + timedelta(hours=1)
    assert state.registration is Registration.REGISTRATION_EXPIRED
    assert state.authorization is Authorization.EVALUATION
    assert state.evaluation_used > timedelta(0)
    assert lc.due(state, T0 + 366 * DAY, T) == []


# --- authorization -------------------------------------------------------------------------


def test_authorization_due_every_30_days_and_for_a_tag_never_authorized():
    state = registered_state()
    state, _ = lc.sample(state, [T0 + timedelta(minutes=1)], IN_USE, T)
    assert Due.AUTHORIZE in lc.due(state, T0 + timedelta(minutes=1), T)  # new tag in use
    state, _ = lc.authorized(state, T0, {"flex-premium-seat": 100}, frozenset(IN_USE), T)
    assert lc.due(state, T0 + 29 * DAY, T) == []
    assert lc.due(state, T0 + 30 * DAY, T) == [Due.AUTHORIZE]


def test_authorization_expiry_timeline_with_unreachable_ssm():
    state = registered_state()
    state, _ = lc.authorized(state, T0, {"flex-premium-seat": 100}, frozenset(IN_USE), T)
    state, alerts = walk(state, T0, T0 + 181 * DAY, IN_USE, step=timedelta(minutes=15))
    soon = [t for t, a in alerts if a.mnemonic == "AUTHORIZATION_EXPIRING_SOON"]
    assert soon and soon[0] >= T0 + 60 * DAY and soon[-1] < T0 + 90 * DAY
    assert 29 <= len(soon) <= 31
    expired = [t for t, a in alerts if a.mnemonic == "AUTHORIZATION_EXPIRED"]
    assert len(expired) == 1 and T0 + 90 * DAY <= expired[0] <= T0 + 90 * DAY + timedelta(hours=1)
    enforce = [t for t, a in alerts if a.mnemonic == "ENFORCEMENT_MODE"]
    assert enforce[0] >= T0 + 180 * DAY
    assert state.authorization is Authorization.AUTHORIZATION_EXPIRED
    assert state.enforcement is Enforcement.AUTHORIZATION_EXPIRED
    # Renewing the authorization ends it.
    now = T0 + 181 * DAY
    state, _ = lc.authorized(state, now, {"flex-premium-seat": 100}, frozenset(IN_USE), T)
    assert state.enforcement is None
    assert state.authorization is Authorization.AUTHORIZED


def test_out_of_compliance_tag_sets_product_state_and_enforcement():
    state = registered_state()
    state, _ = lc.sample(state, [T0], IN_USE, T)
    ooc = TagCompliance(TagState.OUT_OF_COMPLIANCE, 5, 130, 130, T0)
    state = _with_tags(state, {"flex-premium-seat": ooc})
    state, alerts = lc.evaluate(state, T0 + timedelta(minutes=1), T)
    assert state.authorization is Authorization.OUT_OF_COMPLIANCE
    enf = _with_tags(
        state, {"flex-premium-seat": TagCompliance(TagState.ENFORCEMENT, 5, 130, 130, T0)}
    )
    enf, alerts = lc.evaluate(enf, T0 + timedelta(minutes=2), T)
    assert enf.enforcement is Enforcement.OUT_OF_COMPLIANCE
    assert "ENFORCEMENT_MODE" in [a.mnemonic for a in alerts]


def _with_tags(state, tags):
    return replace(state, tags=tags)


# --- communication -------------------------------------------------------------------------


def test_comm_failed_once_then_restored_once():
    state = registered_state()
    state, a1 = lc.communication(state, False, "timeout")
    state, a2 = lc.communication(state, False, "timeout")
    state, a3 = lc.communication(state, True)
    state, a4 = lc.communication(state, True)
    assert [[x.mnemonic for x in a] for a in (a1, a2, a3, a4)] == [
        ["COMM_FAILED"],
        [],
        ["COMM_RESTORED"],
        [],
    ]


def test_standing_alerts_repeat_at_most_daily():
    state = registered_state()
    state, fire1 = lc.standing(state, "X", T0, T)
    state, fire2 = lc.standing(state, "X", T0 + DAY - timedelta(seconds=1), T)
    state, fire3 = lc.standing(state, "X", T0 + DAY, T)
    assert (fire1, fire2, fire3) == (True, False, True)


# --- what status shows: the deadlines, by the rules that decide them ----------------------


def test_deadlines_of_a_registered_instance_follow_the_timers():
    state = registered_state()
    when = lc.deadlines(state, T)
    assert when.id_renewal == T0 + T.id_cert_renew_after
    assert when.auth_expires_at == T0 + T.auth_validity
    assert when.communication_deadline == T0 + T.auth_validity + T.auth_grace
    assert when.next_attempt == lc.next_due_at(state, T) == T0 + T.auth_renew_after
    # derive and due agree: the authorization expires exactly then, and is due then.
    assert lc.derive(state, when.auth_expires_at - timedelta(seconds=1), T).authorization is (
        Authorization.NO_LICENSES_IN_USE
    )
    assert lc.derive(state, when.auth_expires_at, T).authorization is (
        Authorization.AUTHORIZATION_EXPIRED
    )
    assert lc.due(state, when.next_attempt - timedelta(seconds=1), T) == []
    assert lc.due(state, when.next_attempt, T) == [Due.AUTHORIZE]


def test_deadlines_move_with_the_last_authorization_and_a_failed_renewal():
    later = T0 + 10 * DAY
    state = replace(registered_state(), last_auth_at=later, id_next_attempt=T0 + 200 * DAY)
    when = lc.deadlines(state, T)
    assert when.auth_expires_at == later + T.auth_validity
    assert when.communication_deadline == later + T.auth_validity + T.auth_grace
    # A failed ID renewal's retry is later than the renewal age: the retry is what counts.
    assert when.id_renewal == T0 + 200 * DAY


def test_an_unregistered_instance_has_no_deadlines():
    assert lc.deadlines(fresh(), T) == lc.Deadlines(None, None, None, None)
    expired = replace(registered_state(), registration=Registration.REGISTRATION_EXPIRED)
    when = lc.deadlines(expired, T)
    assert (when.id_renewal, when.next_attempt) == (None, None)
    assert when.auth_expires_at == T0 + T.auth_validity


def test_the_license_type_changes_only_while_unregistered():
    used = replace(
        fresh(),
        tags={"flex-premium-seat": TagCompliance(TagState.OVERAGE, 2)},
        entitlements={"flex-premium-seat": 5},
    )
    assert lc.with_license_type(used, LicenseType.FLEX) is used
    moved = lc.with_license_type(used, LicenseType.PERPETUAL_ENHANCED)
    assert moved == replace(
        used, license_type=LicenseType.PERPETUAL_ENHANCED, tags={}, entitlements={}
    )
    # Registered: the type it registered with holds until it is deregistered.
    assert lc.with_license_type(registered_state(), LicenseType.FLEX_HCS) is None
    assert lc.with_license_type(registered_state(), LicenseType.FLEX) == registered_state()


# --- must_decide: which boundaries a catch-up may leave for later ------------------------


def _registered(now: datetime) -> ProductState:
    ident = Identity("p1", now, now, now + timedelta(days=365))
    state, _ = lc.registered(fresh(), now, ident, {"flex-premium-seat": 50}, T)
    state, _ = lc.sample(state, [now], IN_USE, T)
    state, _ = lc.authorized(state, now, {"flex-premium-seat": 50}, state.tags_in_use, T)
    return state


def test_must_decide_is_false_on_a_quiet_registered_boundary():
    state = _registered(T0)
    assert not lc.must_decide(state, T0 + DAY, T)
    assert lc.due(state, T0 + DAY, T) == []


def test_must_decide_while_evaluation_is_charged_but_not_when_nothing_is_used():
    state, _ = lc.sample(fresh(), [T0], IN_USE, T)
    assert lc.must_decide(state, T0, T)
    idle, _ = lc.sample(fresh(), [T0], IDLE, T)
    assert not lc.must_decide(idle, T0, T)


def test_must_decide_when_a_renewal_is_due_exactly_as_due_says():
    state = _registered(T0)
    renew_at = T0 + T.auth_renew_after
    assert not lc.must_decide(state, renew_at - timedelta(seconds=1), T)
    assert lc.due(state, renew_at, T) == [Due.AUTHORIZE]
    assert lc.must_decide(state, renew_at, T)
    # Offline nothing is renewed but by an exchange: the same boundary may wait.
    assert not lc.must_decide(state, renew_at, T, renews=False)
    # A failed attempt waits for its retry time, and so does the boundary.
    failed, _ = lc.auth_failed(state, renew_at, "down", T)
    assert not lc.must_decide(failed, renew_at + timedelta(minutes=15), T)
    assert lc.must_decide(failed, renew_at + T.auth_retry, T)


def test_must_decide_for_new_tags_even_before_their_retry_time():
    state = _registered(T0)
    more, _ = lc.sample(state, [T0], {**IN_USE, "flex-standard-seat": 3}, T)
    later = T0 + timedelta(minutes=15)
    assert lc.must_decide(more, later, T)
    waiting = replace(more, auth_next_attempt=later + DAY)
    assert lc.due(waiting, later, T) == []
    assert lc.must_decide(waiting, later, T)


def test_must_decide_when_the_certificate_expires_or_a_report_retry_is_due():
    state = _registered(T0)
    expiry = state.identity.cert_expires_at
    no_renewal = replace(state, id_next_attempt=expiry + DAY, auth_next_attempt=expiry + DAY)
    assert lc.must_decide(no_renewal, expiry, T, renews=False)
    assert not lc.must_decide(no_renewal, expiry - timedelta(seconds=1), T, renews=False)
    retry = replace(state, report_next_attempt=T0 + timedelta(hours=1))
    assert not lc.must_decide(retry, T0 + timedelta(minutes=45), T)
    assert lc.must_decide(retry, T0 + timedelta(hours=1), T)
