"""The per-tag compliance state machine, evaluated once per reporting interval (docs/licensing.md §4).

IN_COMPLIANCE -> OVERAGE (n = 1 .. threshold-1, reversible) -> OUT_OF_COMPLIANCE
(n = threshold, irreversible, usage locked) -> ENFORCEMENT (after the OOC period).
Only buying enough licenses (entitlement >= locked usage) leaves the last two.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class TagState(StrEnum):
    IN_COMPLIANCE = "IN_COMPLIANCE"
    OVERAGE = "OVERAGE"
    OUT_OF_COMPLIANCE = "OUT_OF_COMPLIANCE"
    ENFORCEMENT = "ENFORCEMENT"


LOCKED_STATES = frozenset({TagState.OUT_OF_COMPLIANCE, TagState.ENFORCEMENT})


@dataclass(frozen=True, slots=True)
class ComplianceRules:
    ooc_threshold: int = 5
    interval: timedelta = timedelta(minutes=15)
    ooc_period: timedelta = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class TagCompliance:
    state: TagState = TagState.IN_COMPLIANCE
    #: Consecutive overage intervals so far (n in docs/licensing.md §4).
    overage_count: int = 0
    #: Highest usage seen in the current overage run; becomes the locked usage at OOC.
    run_peak: int = 0
    #: The usage reported while out of compliance; None when not locked.
    locked: int | None = None
    ooc_since: datetime | None = None

    @property
    def is_locked(self) -> bool:
        return self.state in LOCKED_STATES


class Event(StrEnum):
    """What a step did, for the alert layer to phrase."""

    COUNTDOWN = "COUNTDOWN"
    ENTERED_OOC = "ENTERED_OOC"
    BACK_IN_COMPLIANCE = "BACK_IN_COMPLIANCE"
    ENTERED_ENFORCEMENT = "ENTERED_ENFORCEMENT"


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one interval for one tag."""

    before: TagCompliance
    after: TagCompliance
    usage: int
    entitlement: int
    #: What is reported to SSM for the interval: the locked usage while out of compliance.
    reported: int
    event: Event | None = None
    #: For COUNTDOWN: the time left before the tag goes out of compliance.
    remaining: timedelta | None = None


def step(
    current: TagCompliance,
    usage: int,
    entitlement: int,
    now: datetime,
    rules: ComplianceRules,
    *,
    enforced: bool = True,
) -> Step:
    """Advance one tag by one closed interval whose peak usage was ``usage``.

    ``enforced`` is False for NFR (lab) tags, which are never out of compliance.
    """
    if not enforced:
        return Step(current, TagCompliance(), usage, entitlement, usage)

    if current.is_locked:
        locked = max(current.locked or 0, usage)
        if entitlement >= locked:
            return Step(
                current, TagCompliance(), usage, entitlement, usage, Event.BACK_IN_COMPLIANCE
            )
        since = current.ooc_since or now
        if current.state is TagState.OUT_OF_COMPLIANCE and now - since >= rules.ooc_period:
            after = replace(current, state=TagState.ENFORCEMENT, locked=locked)
            return Step(current, after, usage, entitlement, locked, Event.ENTERED_ENFORCEMENT)
        return Step(current, replace(current, locked=locked), usage, entitlement, locked)

    if usage > entitlement:
        n = current.overage_count + 1
        peak = max(current.run_peak, usage)
        if n >= rules.ooc_threshold:
            after = TagCompliance(TagState.OUT_OF_COMPLIANCE, n, peak, peak, now)
            return Step(current, after, usage, entitlement, peak, Event.ENTERED_OOC)
        after = TagCompliance(TagState.OVERAGE, n, peak)
        remaining = (rules.ooc_threshold - n) * rules.interval
        return Step(current, after, usage, entitlement, usage, Event.COUNTDOWN, remaining)

    event = Event.BACK_IN_COMPLIANCE if current.overage_count > 0 else None
    return Step(current, TagCompliance(), usage, entitlement, usage, event)
