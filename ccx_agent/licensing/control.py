"""License Control (``license.allow_overage: false``): may one more agent log in?

UCCX lets an operator forbid overage: usage must then never exceed what was bought. The
agent cannot stop a login by itself; it answers the question for whatever can (an
integration, a script, a load test), and raises LICENSE_LIMIT_REACHED when the source
shows more agents than bought anyway (see ``interval.close``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ccx_agent.licensing.catalogue import CATALOGUE
from ccx_agent.licensing.lifecycle import ProductState


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    reason: str
    #: How many seats of the tag the ``count`` more would take beyond the entitlement
    #: (0 when they fit, or when there is no limit: evaluation).
    over: int = 0


def admit(
    state: ProductState, tag: str, in_use: int, *, allow_overage: bool, count: int = 1
) -> Admission:
    """Whether ``count`` more seats of ``tag`` may be taken while ``in_use`` are taken now."""
    if tag not in CATALOGUE[state.license_type].all:
        return Admission(False, f"{tag} is not a tag of license type {state.license_type.value}")
    if not state.registered:
        # Evaluation (or no registration yet) grants an unlimited count.
        return Admission(True, "evaluation: no limit")
    bought = state.entitlements.get(tag, 0)
    after = in_use + count
    over = max(0, after - bought)
    if allow_overage:
        if over:
            return Admission(
                True, f"overage is allowed: {after} of {bought} {tag}, {over} over", over
            )
        return Admission(True, f"overage is allowed: {after} of {bought} {tag}")
    if after <= bought:
        return Admission(True, f"{after} of {bought} {tag}")
    return Admission(
        False, f"license limit reached: {in_use} of {bought} {tag} in use, {count} more asked", over
    )
