"""Seat consumption: a snapshot in, per-tag counts and a per-agent breakdown out (DESIGN §2.1)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ccx_agent.licensing.catalogue import CATALOGUE, Feature, LicenseType
from ccx_agent.licensing.snapshot import Snapshot

_CSQ_FEATURE: dict[str, Feature] = {"CHAT": Feature.CHAT, "EMAIL": Feature.EMAIL}


@dataclass(frozen=True, slots=True)
class AgentSeat:
    """Which seat one logged-in agent takes, and the premium features that decided it."""

    id: str
    tag: str
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Consumption:
    license_type: LicenseType
    #: Every tag of the license type, zeros included.
    tags: dict[str, int]
    agents: tuple[AgentSeat, ...]
    #: Agents configured with a premium feature the license type cannot serve (Enhanced).
    unlicensed_features: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        """The documented ``usage --json`` shape."""
        return {
            "license_type": self.license_type.value,
            "tags": dict(self.tags),
            "agents": [
                {"id": a.id, "tag": a.tag, "features": list(a.features)} for a in self.agents
            ],
        }


def skill_features(snapshot: Snapshot) -> dict[str, frozenset[Feature]]:
    """Map each skill to the premium features of the CSQs it serves."""
    out: dict[str, set[Feature]] = {}
    for csq in snapshot.csqs:
        feature = _CSQ_FEATURE.get(csq.type)
        if feature is None:
            continue
        for skill in csq.skills:
            out.setdefault(skill, set()).add(feature)
    return {k: frozenset(v) for k, v in out.items()}


def compute(
    snapshot: Snapshot,
    license_type: LicenseType,
    premium_features: Iterable[Feature],
) -> Consumption:
    """Count one seat per logged-in agent or supervisor, premium when a feature needs it."""
    tt = CATALOGUE[license_type]
    wanted = frozenset(premium_features)
    by_skill = skill_features(snapshot)
    counts = dict.fromkeys(tt.all, 0)
    seats: list[AgentSeat] = []
    unlicensed: list[str] = []
    # Features are reported in one fixed order so output is stable across runs.
    order = [f for f in (Feature.CHAT, Feature.EMAIL, Feature.OUTBOUND) if f in wanted]
    empty: frozenset[Feature] = frozenset()
    for agent in snapshot.agents:
        if not agent.logged_in:
            continue
        found: set[Feature] = set()
        for skill in agent.skills:
            found |= by_skill.get(skill, empty)
        if agent.outbound:
            found.add(Feature.OUTBOUND)
        features = tuple(f.value for f in order if f in found)
        if features and tt.premium_seat is not None:
            tag = tt.premium_seat
        else:
            tag = tt.standard_seat
            if features and not tt.premium_features_licensed:
                unlicensed.append(agent.id)
        counts[tag] += 1
        seats.append(AgentSeat(agent.id, tag, features))
    if tt.outbound_port is not None and snapshot.outbound_ports is not None:
        counts[tt.outbound_port] = snapshot.outbound_ports
    return Consumption(license_type, counts, tuple(seats), tuple(unlicensed))
