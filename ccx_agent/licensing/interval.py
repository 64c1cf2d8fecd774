"""Closing one reporting interval: compliance per tag, what to report, which alerts fire."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ccx_agent.licensing.alerts import Alert, Mnemonic, ooc_countdown
from ccx_agent.licensing.catalogue import CATALOGUE
from ccx_agent.licensing.compliance import ComplianceRules, Event, Step, step
from ccx_agent.licensing.lifecycle import (
    ProductState,
    Result,
    Timers,
    clear_mark,
    evaluate,
    in_ooc_alert,
    registered_at,
    standing,
)


class IntervalStatus(StrEnum):
    """The status of a closed interval (docs/licensing.md §3), stored as its value."""

    #: Registered: the interval is queued for SSM.
    REPORTED = "REPORTED"
    #: Evaluation / unregistered: kept locally, nothing to send.
    LOCAL = "LOCAL"
    #: No good sample in the interval (source down, daemon stopped): no usage is invented.
    NO_DATA = "NO_DATA"
    #: Was REPORTED, but its report was dropped unsent: the identity that had to sign it
    #: was replaced (``register --force``) or removed (``deregister``). Never reported.
    DROPPED = "DROPPED"


@dataclass(frozen=True, slots=True)
class TagRecord:
    usage: int | None
    entitlement: int
    reported: int | None
    state: str
    overage_count: int

    def as_json(self) -> dict[str, object]:
        return {
            "usage": self.usage,
            "entitlement": self.entitlement,
            "reported": self.reported,
            "state": self.state,
            "overage_count": self.overage_count,
        }


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    start: datetime
    end: datetime
    status: IntervalStatus
    registration: str
    authorization: str
    enforcement: str | None
    tags: dict[str, TagRecord]

    @property
    def queued(self) -> bool:
        return self.status == IntervalStatus.REPORTED


def _group(steps: Mapping[str, Step], rules: ComplianceRules, state: ProductState) -> list[Alert]:
    """One alert per distinct message, listing every tag it concerns.

    ``state`` already holds the tags' new compliance, so locked usage is read from it.
    """
    countdown: dict[timedelta, list[str]] = defaultdict(list)
    entered: list[str] = []
    back: list[Step] = []
    back_tags: list[str] = []
    for tag, s in steps.items():
        if s.event is Event.COUNTDOWN and s.remaining is not None:
            countdown[s.remaining].append(tag)
        elif s.event is Event.ENTERED_OOC:
            entered.append(tag)
        elif s.event is Event.BACK_IN_COMPLIANCE:
            back.append(s)
            back_tags.append(tag)
    alerts: list[Alert] = []
    for remaining in sorted(countdown, reverse=True):
        alerts.append(ooc_countdown(remaining, countdown[remaining], remaining <= rules.interval))
    if entered:
        alerts.append(in_ooc_alert(state, entered))
    if back:
        parts = [
            f"{t} usage={s.usage} entitlement={s.entitlement}"
            for t, s in zip(back_tags, back, strict=True)
        ]
        alerts.append(
            Alert(Mnemonic.SYSTEM_BACK_IN_COMPLIANCE, "; ".join(parts), tags=tuple(back_tags))
        )
    return alerts


def close(
    state: ProductState,
    start: datetime,
    end: datetime,
    usage: Mapping[str, int] | None,
    rules: ComplianceRules,
    timers: Timers,
    *,
    allow_overage: bool = True,
) -> tuple[ProductState, IntervalRecord, list[Alert]]:
    """Close ``[start, end)`` whose peak usage per tag was ``usage`` (None: no good sample).

    Compliance is evaluated only while registered: in evaluation the instance may use
    any number of licenses, and an interval without data changes no countdown.
    """
    tt = CATALOGUE[state.license_type]
    records: dict[str, TagRecord] = {}
    # Whether the interval is reported is decided by the registration at its end.
    if usage is None or not registered_at(state, end):
        new, alerts = evaluate(state, end, timers)
        status = IntervalStatus.NO_DATA if usage is None else IntervalStatus.LOCAL
        for tag in tt.all:
            c = new.tag(tag)
            records[tag] = TagRecord(
                None if usage is None else usage.get(tag, 0),
                new.entitlements.get(tag, 0),
                None,
                c.state.value,
                c.overage_count,
            )
    else:
        status = IntervalStatus.REPORTED
        steps: dict[str, Step] = {}
        for tag in tt.all:
            steps[tag] = step(
                state.tag(tag),
                usage.get(tag, 0),
                state.entitlements.get(tag, 0),
                end,
                rules,
                enforced=tt.compliance_enforced,
            )
        # Compliance first, then the product timers once: a tag that leaves OOC in this
        # interval must not also get its daily "still out of compliance" reminder.
        tags = {t: s.after for t, s in steps.items()}
        # Most intervals change no tag: keep the same state (the shell then has nothing
        # to save), rather than an equal copy.
        new = state if tags == state.tags else replace(state, tags=tags)
        alerts = _group(steps, rules, new)
        if any(a.mnemonic == Mnemonic.SYSTEM_IN_OOC_STATE for a in alerts):
            new = replace(new, marks={**new.marks, Mnemonic.SYSTEM_IN_OOC_STATE: end})
        if not allow_overage:
            over = [t for t, s in steps.items() if s.usage > s.entitlement]
            if not over:
                # Back within what was bought: the next excess is news again.
                new = clear_mark(new, Mnemonic.LICENSE_LIMIT_REACHED)
            else:
                new, fire = standing(new, Mnemonic.LICENSE_LIMIT_REACHED, end, timers)
                if fire:
                    detail = "; ".join(
                        f"{t} usage={steps[t].usage} entitlement={steps[t].entitlement}"
                        for t in over
                    )
                    alerts.append(Alert(Mnemonic.LICENSE_LIMIT_REACHED, detail, tags=tuple(over)))
        new, more = evaluate(new, end, timers)
        alerts += more
        for tag, s in steps.items():
            records[tag] = TagRecord(
                s.usage, s.entitlement, s.reported, s.after.state.value, s.after.overage_count
            )
    record = IntervalRecord(
        start,
        end,
        status,
        new.registration.value,
        new.authorization.value,
        new.enforcement.value if new.enforcement else None,
        records,
    )
    return new, record, alerts


def may_send(state: ProductState, now: datetime) -> bool:
    """Whether the outbox may be tried now (it backs off while SSM keeps failing)."""
    return state.report_next_attempt is None or now >= state.report_next_attempt


def report_failed(
    state: ProductState, now: datetime, pending: int, reason: str, step: timedelta, timers: Timers
) -> Result:
    """Back off (one interval, doubling, at most ``auth_retry``) and raise
    ENTITLEMENT_REPORT_FAILED at most once per repeat period while reports wait."""
    failures = state.report_failures + 1
    wait = min(step * 2 ** min(failures - 1, 16), max(step, timers.auth_retry))
    new = replace(state, report_failures=failures, report_next_attempt=now + wait)
    new, fire = standing(new, Mnemonic.ENTITLEMENT_REPORT_FAILED, now, timers)
    if not fire:
        return new, []
    return new, [
        Alert(Mnemonic.ENTITLEMENT_REPORT_FAILED, f"{pending} report(s) waiting; {reason}")
    ]


def report_delivered(state: ProductState) -> ProductState:
    """A delivery went through: the next failure is news again."""
    return clear_mark(state, Mnemonic.ENTITLEMENT_REPORT_FAILED)
