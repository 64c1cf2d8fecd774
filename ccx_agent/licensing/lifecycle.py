"""Product-level licensing state and its timers (docs/licensing.md §6).

Registration, evaluation, authorization and the ID certificate are all decided here from
persisted timestamps and an injected ``now``: a restart, a crash or a long suspend never
resets or skips a timer, because nothing here knows how long a process has been up.

Every function returns a new :class:`ProductState` plus the alerts it raised; the shell
commits the state first and emits the alerts after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ccx_agent.licensing.alerts import Alert, Mnemonic, human_duration
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.compliance import TagCompliance, TagState
from ccx_agent.licensing.timeutil import iso


class Registration(StrEnum):
    UNREGISTERED = "UNREGISTERED"
    REGISTERED = "REGISTERED"
    REGISTRATION_EXPIRED = "REGISTRATION_EXPIRED"


class Authorization(StrEnum):
    NO_LICENSES_IN_USE = "NO_LICENSES_IN_USE"
    EVALUATION = "EVALUATION"
    EVALUATION_EXPIRED = "EVALUATION_EXPIRED"
    AUTHORIZED = "AUTHORIZED"
    OUT_OF_COMPLIANCE = "OUT_OF_COMPLIANCE"
    AUTHORIZATION_EXPIRED = "AUTHORIZATION_EXPIRED"


class Enforcement(StrEnum):
    """Why the instance is in enforcement (None in the state: it is not)."""

    OUT_OF_COMPLIANCE = "OUT_OF_COMPLIANCE"
    EVALUATION_EXPIRED = "EVALUATION_EXPIRED"
    AUTHORIZATION_EXPIRED = "AUTHORIZATION_EXPIRED"


class Due(StrEnum):
    RENEW_ID = "RENEW_ID"
    AUTHORIZE = "AUTHORIZE"


@dataclass(frozen=True, slots=True)
class Timers:
    """Every period of docs/licensing.md §6; the config supplies them, these are the defaults."""

    evaluation_period: timedelta = timedelta(days=90)
    evaluation_warning_days: tuple[int, ...] = (30, 14, 7, 1)
    #: A gap between two samples longer than this is charged to evaluation as this.
    evaluation_max_sample_gap: timedelta = timedelta(minutes=15)
    id_cert_renew_after: timedelta = timedelta(days=180)
    id_cert_expiry_warning: timedelta = timedelta(days=30)
    id_cert_retry: timedelta = timedelta(hours=1)
    auth_renew_after: timedelta = timedelta(days=30)
    auth_validity: timedelta = timedelta(days=90)
    auth_expiry_warning: timedelta = timedelta(days=30)
    auth_grace: timedelta = timedelta(days=90)
    auth_retry: timedelta = timedelta(hours=1)
    #: A standing condition (expiring soon, still out of compliance …) repeats at most this often.
    alert_repeat: timedelta = timedelta(days=1)
    #: A forward wall-clock jump larger than this between samples raises SYSTEM_CLOCK_CHANGED.
    clock_jump: timedelta = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Identity:
    piid: str
    registered_at: datetime
    cert_issued_at: datetime
    cert_expires_at: datetime


@dataclass(frozen=True, slots=True)
class ProductState:
    license_type: LicenseType
    identity: Identity | None = None
    registration: Registration = Registration.UNREGISTERED
    authorization: Authorization = Authorization.NO_LICENSES_IN_USE
    enforcement: Enforcement | None = None
    last_auth_at: datetime | None = None
    authorized_tags: frozenset[str] = frozenset()
    entitlements: Mapping[str, int] = field(default_factory=dict)
    tags: Mapping[str, TagCompliance] = field(default_factory=dict)
    id_next_attempt: datetime | None = None
    auth_next_attempt: datetime | None = None
    evaluation_used: timedelta = timedelta(0)
    evaluation_warned: frozenset[int] = frozenset()
    #: Tags with non-zero usage at the last good sample.
    tags_in_use: frozenset[str] = frozenset()
    last_sample_at: datetime | None = None
    comm_ok: bool = True
    last_comm_error: str | None = None
    #: Consecutive failed report deliveries, and when the outbox may be tried again.
    report_failures: int = 0
    report_next_attempt: datetime | None = None
    #: The first failed sample since the last good one, and the latest failure's reason
    #: (None while the source answers): an outage says since when, across restarts.
    source_failing_since: datetime | None = None
    source_error: str | None = None
    #: When each standing alert last fired, so it repeats at most every ``alert_repeat``.
    marks: Mapping[str, datetime] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return self.registration is Registration.REGISTERED

    @property
    def in_use(self) -> bool:
        return bool(self.tags_in_use)

    def tag(self, name: str) -> TagCompliance:
        return self.tags.get(name, TagCompliance())


Result = tuple[ProductState, list[Alert]]


def evaluation_left(state: ProductState, timers: Timers) -> timedelta:
    return max(timedelta(0), timers.evaluation_period - state.evaluation_used)


def _days(span: timedelta) -> str:
    """A span as an operator reads it in a warning: days, else hours, else minutes."""
    seconds = span.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        n = round(seconds / size)
        if n >= 1:  # 23 h 46 min reads "1 day", not "24 hours"
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return human_duration(span)


def standing(
    state: ProductState, key: Mnemonic, now: datetime, timers: Timers
) -> tuple[ProductState, bool]:
    """Whether a standing alert keyed ``key`` may fire now; if so, record that it did."""
    last = state.marks.get(key)
    if last is not None and last <= now < last + timers.alert_repeat:
        return state, False
    return replace(state, marks={**state.marks, key: now}), True


def clear_mark(state: ProductState, key: Mnemonic) -> ProductState:
    """End a standing condition, so that its next occurrence is announced at once."""
    if key not in state.marks:
        return state
    return replace(state, marks={k: v for k, v in state.marks.items() if k != key})


def _auth_anchor(state: ProductState, now: datetime) -> datetime:
    """When the authorization clock started: the last success (registration counts as one)."""
    if state.last_auth_at is not None:
        return state.last_auth_at
    return state.identity.registered_at if state.identity is not None else now


def registered_at(state: ProductState, now: datetime) -> bool:
    """Whether the instance is registered at ``now`` (``derive(...).registered``, cheaply:
    it is asked at every interval's close)."""
    ident = state.identity
    return state.registration is Registration.REGISTERED and (
        ident is None or now < ident.cert_expires_at
    )


def derive(state: ProductState, now: datetime, timers: Timers) -> ProductState:
    """Recompute registration, authorization and enforcement from the stored timestamps."""
    registration = state.registration
    ident = state.identity
    if (
        ident is not None
        and registration is Registration.REGISTERED
        and now >= ident.cert_expires_at
    ):
        registration = Registration.REGISTRATION_EXPIRED

    if registration is Registration.REGISTERED:
        anchor = _auth_anchor(state, now)
        if now >= anchor + timers.auth_validity:
            authorization = Authorization.AUTHORIZATION_EXPIRED
        elif any(t.is_locked for t in state.tags.values()):
            authorization = Authorization.OUT_OF_COMPLIANCE
        elif state.in_use:
            authorization = Authorization.AUTHORIZED
        else:
            authorization = Authorization.NO_LICENSES_IN_USE
    elif evaluation_left(state, timers) <= timedelta(0):
        authorization = Authorization.EVALUATION_EXPIRED
    elif state.in_use:
        authorization = Authorization.EVALUATION
    else:
        authorization = Authorization.NO_LICENSES_IN_USE

    enforcement: Enforcement | None = None
    if authorization is Authorization.EVALUATION_EXPIRED:
        enforcement = Enforcement.EVALUATION_EXPIRED
    elif registration is Registration.REGISTERED:
        anchor = _auth_anchor(state, now)
        if now >= anchor + timers.auth_validity + timers.auth_grace:
            enforcement = Enforcement.AUTHORIZATION_EXPIRED
        elif any(t.state is TagState.ENFORCEMENT for t in state.tags.values()):
            enforcement = Enforcement.OUT_OF_COMPLIANCE
    if (registration, authorization, enforcement) == (
        state.registration,
        state.authorization,
        state.enforcement,
    ):
        return state
    return replace(
        state, registration=registration, authorization=authorization, enforcement=enforcement
    )


def evaluate(state: ProductState, now: datetime, timers: Timers) -> Result:
    """Bring the product state up to ``now`` and raise every alert that is due.

    Transitions fire once; standing conditions (expiring soon, still out of compliance,
    still in enforcement) repeat at most every ``timers.alert_repeat``.
    """
    new = derive(state, now, timers)
    alerts: list[Alert] = []
    ident = new.identity

    if (
        new.registration is Registration.REGISTRATION_EXPIRED
        and state.registration is not new.registration
        and ident is not None
    ):
        alerts.append(
            Alert(
                Mnemonic.REGISTRATION_EXPIRED,
                f"The ID certificate expired at {iso(ident.cert_expires_at)}; "
                "register this Product Instance again with a new token",
            )
        )
    if new.authorization is not state.authorization:
        if new.authorization is Authorization.EVALUATION:
            new, fire = standing(new, Mnemonic.EVAL_START, now, timers)
            if fire:
                left = evaluation_left(new, timers)
                alerts.append(
                    Alert(Mnemonic.EVAL_START, f"Evaluation period remaining ={_days(left)}")
                )
        elif new.authorization is Authorization.EVALUATION_EXPIRED:
            alerts.append(Alert(Mnemonic.EVAL_EXPIRED, "Evaluation period remaining =0 days"))
        elif new.authorization is Authorization.AUTHORIZATION_EXPIRED:
            anchor = _auth_anchor(new, now)
            alerts.append(
                Alert(
                    Mnemonic.AUTHORIZATION_EXPIRED,
                    f"No successful authorization since {iso(anchor)}; enforcement begins at "
                    f"{iso(anchor + timers.auth_validity + timers.auth_grace)}",
                )
            )

    # Evaluation countdown warnings: each threshold fires once, ever (evaluation only shrinks).
    if not new.registered:
        left = evaluation_left(new, timers)
        crossed = {
            d
            for d in timers.evaluation_warning_days
            if left <= timedelta(days=d) and d not in new.evaluation_warned
        }
        if crossed and left > timedelta(0):
            new = replace(new, evaluation_warned=new.evaluation_warned | crossed)
            alerts.append(
                Alert(Mnemonic.EVAL_EXPIRY_WARNING, f"Evaluation period remaining ={_days(left)}")
            )

    reason = new.enforcement
    if reason is not None:
        key = Mnemonic.ENFORCEMENT_MODE
        if reason is not state.enforcement:
            new = replace(new, marks={**new.marks, key: now})
            fire = True
        else:
            new, fire = standing(new, key, now, timers)
        if fire:
            alerts.append(Alert(Mnemonic.ENFORCEMENT_MODE, f"Enforcement reason ={reason.value}"))

    if new.registered and ident is not None:
        warn_from = ident.cert_expires_at - timers.id_cert_expiry_warning
        if warn_from <= now < ident.cert_expires_at:
            new, fire = standing(new, Mnemonic.REGISTRATION_EXPIRING_SOON, now, timers)
            if fire:
                alerts.append(
                    Alert(
                        Mnemonic.REGISTRATION_EXPIRING_SOON,
                        f"The ID certificate expires at {iso(ident.cert_expires_at)} "
                        f"(in {_days(ident.cert_expires_at - now)})",
                    )
                )
        anchor = _auth_anchor(new, now)
        expires = anchor + timers.auth_validity
        if expires - timers.auth_expiry_warning <= now < expires:
            new, fire = standing(new, Mnemonic.AUTHORIZATION_EXPIRING_SOON, now, timers)
            if fire:
                alerts.append(
                    Alert(
                        Mnemonic.AUTHORIZATION_EXPIRING_SOON,
                        f"The authorization expires at {iso(expires)} (in {_days(expires - now)})",
                    )
                )
        locked = sorted(t for t, c in new.tags.items() if c.is_locked)
        if locked:
            new, fire = standing(new, Mnemonic.SYSTEM_IN_OOC_STATE, now, timers)
            if fire:
                alerts.append(in_ooc_alert(new, locked))
    return new, alerts


def in_ooc_alert(state: ProductState, tags: list[str]) -> Alert:
    """SYSTEM_IN_OOC_STATE naming the locked usage of each tag (the detail is ours)."""
    parts = [
        f"{t} locked usage={state.tag(t).locked} entitlement={state.entitlements.get(t, 0)}"
        for t in tags
    ]
    return Alert(Mnemonic.SYSTEM_IN_OOC_STATE, "; ".join(parts), tags=tuple(tags))


def sample(
    state: ProductState,
    times: Sequence[datetime],
    usage: Mapping[str, int],
    timers: Timers,
    unlicensed_agents: Sequence[str] = (),
    *,
    resumed: bool = False,
    elapsed: timedelta | None = None,
) -> Result:
    """Account for good samples that all saw ``usage``: clock sanity, evaluation time.

    Sampling only records; deciding (expiries, warnings, state alerts) is :func:`evaluate`,
    which the report and housekeeping jobs run. That keeps a sample cheap enough that the
    what-if simulator can take one a minute for 400 days.

    The wall clock alone cannot tell a jump from a stop, so the daemon says what it knows:
    ``resumed`` means the first of ``times`` is its first sample since it started, so a
    forward gap is the time it was down (not a clock change; evaluation is charged no more
    than the usual cap for it); ``elapsed`` is the time since the previous sample by a clock
    that never jumps, so a forward jump is the wall-clock gap beyond it.
    """
    alerts: list[Alert] = []
    in_use = frozenset(t for t, n in usage.items() if n > 0)
    # Evaluation counts only while unregistered (or expired) and something is in use.
    charging = not state.registered and bool(in_use)
    used = state.evaluation_used
    last = state.last_sample_at
    zero = timedelta(0)
    for i, now in enumerate(times):
        if last is not None:
            gap = now - last
            drift = gap - elapsed if i == 0 and elapsed is not None else gap
            if i == 0 and resumed and gap >= zero:
                drift = zero
            if gap < zero or drift > timers.clock_jump:
                alerts.append(
                    Alert(
                        Mnemonic.SYSTEM_CLOCK_CHANGED,
                        f"The clock moved from {iso(last)} to {iso(now)}; "
                        "evaluation is not charged for the jump",
                    )
                )
            elif charging:
                used += min(gap, timers.evaluation_max_sample_gap)
        # After a backwards jump the new time is the baseline, so the next gap is honest.
        last = now
    used = min(used, timers.evaluation_period)
    # A good sample ends a failure run: the next failure is announced at once.
    new = replace(
        clear_mark(state, Mnemonic.LICENSE_COMPUTATION_FAILED),
        tags_in_use=in_use,
        evaluation_used=used,
        last_sample_at=last,
        source_failing_since=None,
        source_error=None,
    )
    if unlicensed_agents and last is not None:
        new, fire = standing(new, Mnemonic.FEATURE_NOT_LICENSED, last, timers)
        if fire:
            shown = ", ".join(unlicensed_agents[:10])
            extra = len(unlicensed_agents) - 10
            tail = f" and {extra} more" if extra > 0 else ""
            alerts.append(
                Alert(
                    Mnemonic.FEATURE_NOT_LICENSED,
                    f"{len(unlicensed_agents)} agent(s) with premium features: {shown}{tail}",
                )
            )
    return new, alerts


def sample_failed(state: ProductState, now: datetime, error: str, timers: Timers) -> Result:
    """A sample the source could not give: an error, never a sample of zero agents."""
    if state.source_failing_since is None or state.source_error != error:
        state = replace(
            state, source_failing_since=state.source_failing_since or now, source_error=error
        )
    new, fire = standing(state, Mnemonic.LICENSE_COMPUTATION_FAILED, now, timers)
    if not fire:
        return new, []
    return new, [Alert(Mnemonic.LICENSE_COMPUTATION_FAILED, error)]


def due(state: ProductState, now: datetime, timers: Timers) -> list[Due]:
    """Which renewals to attempt now; failed ones wait for their retry time."""
    out: list[Due] = []
    ident = state.identity
    if not state.registered or ident is None:
        return out
    if now >= ident.cert_issued_at + timers.id_cert_renew_after and (
        state.id_next_attempt is None or now >= state.id_next_attempt
    ):
        out.append(Due.RENEW_ID)
    anchor = _auth_anchor(state, now)
    new_tags = not state.tags_in_use <= state.authorized_tags
    if (now >= anchor + timers.auth_renew_after or new_tags) and (
        state.auth_next_attempt is None or now >= state.auth_next_attempt
    ):
        out.append(Due.AUTHORIZE)
    return out


def must_decide(state: ProductState, now: datetime, timers: Timers, *, renews: bool = True) -> bool:
    """Whether the jobs at ``now`` may change the state in a way that cannot wait.

    A report boundary for which this is False can be closed later with the same result
    (a daemon catching up after a pause, the what-if runner catching up a quiet day): no
    evaluation is being charged, no certificate expires, no renewal is :func:`due` (nor
    would be at once for newly used tags), and no report delivery is due for another try.
    ``renews``: False for an offline instance, where nothing is renewed but by a file
    exchange.
    """
    if not state.registered and state.in_use:
        # Evaluation is being charged by the samples: its warnings and expiry are decided
        # interval by interval, not after a day's samples are already in.
        return True
    ident = state.identity
    if state.registered and ident is not None and ident.cert_expires_at <= now:
        return True  # the registration expires here, and evaluation starts counting
    if renews and state.registered:
        if due(state, now, timers):
            return True
        if not state.tags_in_use <= state.authorized_tags:
            return True  # new tags are authorized as soon as the retry time allows
    retry = state.report_next_attempt
    return retry is not None and retry <= now


def next_due_at(state: ProductState, timers: Timers) -> datetime | None:
    """The earliest instant at which :func:`due` may return something (for ``status``)."""
    ident = state.identity
    if not state.registered or ident is None:
        return None
    candidates = [
        max(
            ident.cert_issued_at + timers.id_cert_renew_after,
            state.id_next_attempt or ident.cert_issued_at,
        ),
        max(
            _auth_anchor(state, ident.registered_at) + timers.auth_renew_after,
            state.auth_next_attempt or ident.registered_at,
        ),
    ]
    return min(candidates)


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The instants ``status`` shows, from the same rules :func:`due` and :func:`derive`
    apply (None: not registered, so no such instant)."""

    #: When the ID certificate is renewed next: its renewal age, or the retry after a failure.
    id_renewal: datetime | None
    #: The earliest renewal of either kind (:func:`next_due_at`).
    next_attempt: datetime | None
    #: When the authorization expires without a successful exchange (AUTHORIZATION_EXPIRED).
    auth_expires_at: datetime | None
    #: After this instant without a successful exchange, enforcement begins.
    communication_deadline: datetime | None


def deadlines(state: ProductState, timers: Timers) -> Deadlines:
    """The next renewal and the authorization's expiry and enforcement instants of a
    registered ``state``, anchored as :func:`derive` and :func:`due` anchor them."""
    ident = state.identity
    if ident is None:
        return Deadlines(None, None, None, None)
    anchor = _auth_anchor(state, ident.registered_at)
    renewal = None
    if state.registered:
        renewal = max(
            ident.cert_issued_at + timers.id_cert_renew_after,
            state.id_next_attempt or ident.cert_issued_at,
        )
    return Deadlines(
        id_renewal=renewal,
        next_attempt=next_due_at(state, timers),
        auth_expires_at=anchor + timers.auth_validity,
        communication_deadline=anchor + timers.auth_validity + timers.auth_grace,
    )


def with_license_type(state: ProductState, configured: LicenseType) -> ProductState | None:
    """``state`` under the configured license type, or None when it cannot change.

    A registered instance keeps the type it registered with until it is deregistered
    (its entitlements are the server's, for that type's tags); an unregistered one takes
    the configured type and starts its tags and entitlements afresh (the old type's tags
    mean nothing under the new one).
    """
    if state.license_type is configured:
        return state
    if state.identity is not None:
        return None
    return replace(state, license_type=configured, tags={}, entitlements={})


# --- outcomes of talking to SSM ------------------------------------------------------


def communication(state: ProductState, ok: bool, error: str | None = None) -> Result:
    """COMM_FAILED on the first failure of a run, COMM_RESTORED on the first success after.

    Any success also ends the outbox's back-off: the server is there, send now.
    """
    if ok:
        new = state
        if state.report_failures or state.report_next_attempt is not None:
            new = replace(new, report_failures=0, report_next_attempt=None)
        if state.comm_ok:
            return new, []
        new = replace(new, comm_ok=True, last_comm_error=None)
        return new, [Alert(Mnemonic.COMM_RESTORED, "Cisco Smart Software Manager answered again")]
    detail = error or "no answer"
    if state.comm_ok:
        return replace(state, comm_ok=False, last_comm_error=detail), [
            Alert(Mnemonic.COMM_FAILED, detail)
        ]
    if detail == state.last_comm_error:
        return state, []
    return replace(state, last_comm_error=detail), []


def registered(
    state: ProductState,
    now: datetime,
    identity: Identity,
    entitlements: Mapping[str, int],
    timers: Timers,
) -> Result:
    """A successful REGISTER: the registration also counts as the first authorization.

    Per-tag compliance is kept: a locked out-of-compliance usage is irreversible until
    licenses are bought, and registering again (or deregistering) must not clear it.
    """
    new = replace(
        state,
        identity=identity,
        registration=Registration.REGISTERED,
        last_auth_at=now,
        authorized_tags=frozenset(),
        entitlements=dict(entitlements),
        id_next_attempt=None,
        auth_next_attempt=None,
    )
    new, alerts = evaluate(new, now, timers)
    return new, [Alert(Mnemonic.REGISTER_SUCCESS, f"PIID={identity.piid}"), *alerts]


def deregistered(
    state: ProductState, now: datetime, timers: Timers, *, told_server: bool
) -> Result:
    """Wipe the identity whether or not the server heard; evaluation resumes if any is left."""
    new = replace(
        state,
        identity=None,
        registration=Registration.UNREGISTERED,
        last_auth_at=None,
        authorized_tags=frozenset(),
        entitlements={},
        id_next_attempt=None,
        auth_next_attempt=None,
    )
    new, alerts = evaluate(new, now, timers)
    piid = state.identity.piid if state.identity else "-"
    first = (
        Alert(Mnemonic.DEREGISTER_SUCCESS, f"PIID={piid}")
        if told_server
        else Alert(
            Mnemonic.DEREGISTER_FAILED, f"PIID={piid}; the local identity was removed anyway"
        )
    )
    return new, [first, *alerts]


def id_renewed(
    state: ProductState, now: datetime, issued: datetime, expires: datetime, timers: Timers
) -> Result:
    if state.identity is None:
        return state, []
    ident = replace(state.identity, cert_issued_at=issued, cert_expires_at=expires)
    new = clear_mark(
        replace(state, identity=ident, id_next_attempt=None), Mnemonic.ID_CERT_RENEW_FAILED
    )
    new, alerts = evaluate(new, now, timers)
    return new, [
        Alert(Mnemonic.ID_CERT_RENEW_SUCCESS, f"The new ID certificate expires at {iso(expires)}"),
        *alerts,
    ]


def id_renew_failed(state: ProductState, now: datetime, reason: str, timers: Timers) -> Result:
    """Retried every ``id_cert_retry``; the alert is a standing condition (at most daily)."""
    nxt = now + timers.id_cert_retry
    new, fire = standing(
        replace(state, id_next_attempt=nxt), Mnemonic.ID_CERT_RENEW_FAILED, now, timers
    )
    alert = Alert(
        Mnemonic.ID_CERT_RENEW_FAILED, f"{reason}; retrying every {_days(timers.id_cert_retry)}"
    )
    return new, [alert] if fire else []


def authorized(
    state: ProductState,
    now: datetime,
    entitlements: Mapping[str, int],
    tags: frozenset[str],
    timers: Timers,
) -> Result:
    new = replace(
        state,
        last_auth_at=now,
        auth_next_attempt=None,
        authorized_tags=tags,
        entitlements=dict(entitlements),
    )
    new, alerts = evaluate(clear_mark(new, Mnemonic.AUTH_RENEW_FAILED), now, timers)
    expires = now + timers.auth_validity
    return new, [Alert(Mnemonic.AUTH_RENEW_SUCCESS, f"Authorized until {iso(expires)}"), *alerts]


def auth_failed(state: ProductState, now: datetime, reason: str, timers: Timers) -> Result:
    """Retried every ``auth_retry``; the alert is a standing condition (at most daily)."""
    nxt = now + timers.auth_retry
    new, fire = standing(
        replace(state, auth_next_attempt=nxt), Mnemonic.AUTH_RENEW_FAILED, now, timers
    )
    alert = Alert(
        Mnemonic.AUTH_RENEW_FAILED, f"{reason}; retrying every {_days(timers.auth_retry)}"
    )
    return new, [alert] if fire else []


def entitlements_received(state: ProductState, entitlements: Mapping[str, int]) -> ProductState:
    """Any signed response carries the current counts; the next report uses them."""
    if dict(entitlements) == dict(state.entitlements):
        return state
    return replace(state, entitlements=dict(entitlements))
