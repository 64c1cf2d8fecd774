"""Seat consumption: a snapshot in, per-tag counts and a per-agent breakdown out (docs/licensing.md §1).

* Every logged-in agent or supervisor (Finesse state other than LOGOUT / UNKNOWN) takes
  exactly one seat; logged-out agents take none and are not in the breakdown.
* An agent's premium features are those of ``premium_features`` it is configured for:
  ``chat`` / ``email`` when one of its skills serves a CHAT / EMAIL CSQ, ``outbound`` when
  its ``outbound`` flag is set. They are listed in the fixed order chat, email, outbound.
* Flex / HCS: premium seat with any premium feature, else standard seat.
  Perpetual Premium and NFR: their one seat tag. Perpetual Enhanced: ``enhanced-seat``,
  and an agent with a premium feature is listed in ``unlicensed_agents``
  (FEATURE_NOT_LICENSED) while still counted once.
* The outbound-port tag, where the type has one, is the snapshot's ``ports.outbound``
  (0 when the source does not say).

Many agents share a skill list (a team's resource group), so the seat of each distinct
(skill list, outbound flag) pair is worked out once: counting 100,000 agents is a few
passes over the columns in C (two dict look-ups each), and no object is made per agent
(the breakdown is kept as columns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import itemgetter, not_
from typing import NamedTuple

from ccx_agent.licensing.catalogue import ALL_FEATURES, CATALOGUE, Feature, LicenseType
from ccx_agent.licensing.snapshot import LOGGED_OUT_STATES, Snapshot, Table

_CSQ_FEATURE: dict[str, Feature] = {"CHAT": Feature.CHAT, "EMAIL": Feature.EMAIL}


class AgentSeat(NamedTuple):
    """Which seat one logged-in agent takes, and the premium features that decided it."""

    id: str
    tag: str
    features: tuple[str, ...]


class Seats(Table[AgentSeat]):
    """The per-agent breakdown, stored as columns (see :class:`Table`)."""

    __slots__ = ()
    _row = AgentSeat._make
    _width = len(AgentSeat._fields)


@dataclass(frozen=True, slots=True)
class Consumption:
    license_type: LicenseType
    #: Every tag of the license type, zeros included, in the catalogue's order.
    tags: dict[str, int]
    #: One entry per logged-in agent or supervisor, in snapshot order.
    agents: Sequence[AgentSeat]
    #: Ids of agents configured with a premium feature the license type cannot serve
    #: (Perpetual Enhanced): each raises FEATURE_NOT_LICENSED, and is still counted once.
    unlicensed_agents: tuple[str, ...] = ()

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
    """Map each skill that serves a CHAT or EMAIL CSQ to those features."""
    out: dict[str, set[Feature]] = {}
    for csq in snapshot.csqs:
        feature = _CSQ_FEATURE.get(csq.type)
        if feature is None:
            continue
        for skill in csq.skills:
            out.setdefault(skill, set()).add(feature)
    return {k: frozenset(v) for k, v in out.items()}


_Seat = tuple[str, tuple[str, ...]]
_Pair = tuple[tuple[str, ...], bool]


class _Decided(dict[_Pair, _Seat]):
    """(skills, outbound) -> seat, decided by ``decide`` at the first look-up of a pair: a
    look-up that finds it stays in C."""

    def __init__(self, decide: Callable[[_Pair], _Seat]) -> None:
        super().__init__()
        self._decide = decide

    def __missing__(self, key: _Pair) -> _Seat:
        seat = self[key] = self._decide(key)
        return seat


def compute(
    snapshot: Snapshot,
    license_type: LicenseType,
    premium_features: Iterable[Feature],
) -> Consumption:
    """Count one seat per logged-in agent or supervisor, premium when a feature needs it."""
    tt = CATALOGUE[license_type]
    wanted = frozenset(premium_features)
    # Features are reported in one fixed order so output is stable across runs.
    order = tuple(f for f in ALL_FEATURES if f in wanted)
    by_skill = {
        skill: found & wanted for skill, found in skill_features(snapshot).items() if found & wanted
    }
    premium_tag = tt.premium_seat if tt.premium_seat is not None else tt.standard_seat
    outbound_wanted = Feature.OUTBOUND in wanted

    none: frozenset[Feature] = frozenset()
    outbound_features = frozenset({Feature.OUTBOUND}) if outbound_wanted else none
    seat_of_features: dict[frozenset[Feature], _Seat] = {}

    def decide(key: _Pair) -> _Seat:
        """(tag, features) of an agent with these skills and outbound flag."""
        skills, outbound = key
        found = none.union(*map(by_skill.get, skills, repeat(none)))
        if outbound:
            found |= outbound_features
        seat = seat_of_features.get(found)
        if seat is None:
            features = tuple(f.value for f in order if f in found)
            seat = seat_of_features[found] = (
                premium_tag if features else tt.standard_seat,
                features,
            )
        return seat

    # Whole-column passes in C (map, compress, one dict look-up per agent), no Python code
    # run per agent: the seat of each distinct (skill list, outbound flag) pair is decided
    # once, on its first look-up. The pairs are not kept: zip then reuses one tuple for
    # all, and nothing is allocated per agent for the garbage collector to count and walk.
    table = snapshot.table
    logged_in = list(map(not_, map(LOGGED_OUT_STATES.__contains__, table.states)))
    ids = list(compress(table.ids, logged_in))
    pairs = compress(zip(table.skills, table.outbound, strict=True), logged_in)
    seats = list(map(_Decided(decide).__getitem__, pairs))
    tags = list(map(itemgetter(0), seats))
    features_col = list(map(itemgetter(1), seats))
    unlicensed = [] if tt.premium_features_licensed else list(compress(ids, features_col))
    counts = {tag: tags.count(tag) for tag in tt.all}
    if tt.outbound_port is not None and snapshot.outbound_ports is not None:
        counts[tt.outbound_port] = snapshot.outbound_ports
    return Consumption(license_type, counts, Seats((ids, tags, features_col)), tuple(unlicensed))
