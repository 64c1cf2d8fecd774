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


def admit(state: ProductState, tag: str, in_use: int, *, allow_overage: bool) -> Admission:
    """Whether one more seat of ``tag`` may be taken while ``in_use`` are taken now."""
    if tag not in CATALOGUE[state.license_type].all:
        return Admission(False, f"{tag} is not a tag of license type {state.license_type.value}")
    if not state.registered:
        # Evaluation (or no registration yet) grants an unlimited count.
        return Admission(True, "evaluation: no limit")
    if allow_overage:
        return Admission(True, "overage is allowed")
    bought = state.entitlements.get(tag, 0)
    if in_use + 1 <= bought:
        return Admission(True, f"{in_use + 1} of {bought} {tag}")
    return Admission(False, f"license limit reached: {in_use} of {bought} {tag} in use")
