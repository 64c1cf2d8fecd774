"""Why this seat: for each logged-in agent, the facts that decided its tag (``usage
--explain``, and ``reasons`` in ``usage --json``).

The seat itself always comes from :func:`~ccx_agent.licensing.consumption.compute`; this
module only finds the evidence behind it (which CSQ of which media, through which skill;
which outbound campaign through which CSQ), so an explanation can never disagree with the
count. The rules, in words (docs/licensing.md):

* Flex / HCS: a premium feature of ``license.premium_features`` (chat or email through a
  skill that serves a CHAT or EMAIL CSQ; outbound when the agent is in an agent-based
  campaign) makes a premium seat; otherwise a standard seat: voice CSQs only, no skill,
  or a premium CSQ whose feature the site does not count as premium.
* Perpetual Premium and NFR: one seat for everybody; premium features are included.
* Perpetual Enhanced: one seat; a premium feature is FEATURE_NOT_LICENSED.
* A supervisor takes a seat by the same rules, and is said to be one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ccx_agent.licensing.catalogue import CATALOGUE, Feature, LicenseType
from ccx_agent.licensing.consumption import Consumption
from ccx_agent.licensing.snapshot import Snapshot

_CSQ_FEATURE = {"CHAT": Feature.CHAT, "EMAIL": Feature.EMAIL}
#: The UCCX source names a resource-group CSQ an agent serves by this skill.
CSQ_SKILL_PREFIX = "csq:"

Reason = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Explanation:
    id: str
    type: str
    tag: str
    reasons: tuple[Reason, ...]

    @property
    def text(self) -> str:
        return "; ".join(r["text"] for r in self.reasons)


def _via(skill: str) -> str:
    if skill.startswith(CSQ_SKILL_PREFIX):
        return "its CSQ map"
    return f"skill '{skill}'"


class _Evidence:
    """The premium facts of one (skills, outbound) pair, found once for a team alike."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.by_skill: dict[str, list[tuple[str, str]]] = {}
        self.voice_skills: set[str] = set()
        for csq in snapshot.csqs:
            for skill in csq.skills:
                if csq.type in _CSQ_FEATURE:
                    self.by_skill.setdefault(skill, []).append((csq.name, csq.type))
                else:
                    self.voice_skills.add(skill)
        csq_skills = {c.name: set(c.skills) for c in snapshot.csqs}
        self.campaigns = [(c.name, c.csqs) for c in snapshot.campaigns]
        self.csq_skills = csq_skills

    def media(self, skills: Iterable[str]) -> list[Reason]:
        out = []
        for skill in skills:
            for name, kind in self.by_skill.get(skill, ()):
                feature = _CSQ_FEATURE[kind].value
                out.append(
                    {
                        "feature": feature,
                        "csq": name,
                        "csq_type": kind,
                        "skill": skill,
                        "_what": f"CSQ '{name}' ({kind}) via {_via(skill)}",
                    }
                )
        return out

    def outbound(self, skills: tuple[str, ...]) -> list[Reason]:
        mine = set(skills)
        out = []
        for name, csqs in self.campaigns:
            for q in csqs:
                if mine & self.csq_skills.get(q, set()) or CSQ_SKILL_PREFIX + q in mine:
                    out.append(
                        {
                            "feature": "outbound",
                            "campaign": name,
                            "csq": q,
                            "_what": f"outbound campaign '{name}' via CSQ '{q}'",
                        }
                    )
        if not out:
            out.append(
                {"feature": "outbound", "_what": "outbound (the source marks the agent outbound)"}
            )
        return out


def _reason(rule: str, text: str, facts: Mapping[str, Any] | None = None) -> Reason:
    doc: Reason = {"rule": rule, "text": text}
    for k, v in (facts or {}).items():
        if not k.startswith("_"):
            doc[k] = v
    return doc


def explain(
    snapshot: Snapshot,
    consumption: Consumption,
    premium_features: Iterable[Feature],
) -> list[Explanation]:
    """One explanation per agent of ``consumption.agents`` (the seat :func:`compute` gave)."""
    lt: LicenseType = consumption.license_type
    tt = CATALOGUE[lt]
    wanted = {f.value for f in premium_features}
    ev = _Evidence(snapshot)

    def decide(skills: tuple[str, ...], outbound: bool, kind: str, tag: str) -> tuple[Reason, ...]:
        reasons: list[Reason] = []
        if kind == "supervisor":
            reasons.append(_reason("supervisor", "supervisor"))
        found = ev.media(skills) + (ev.outbound(skills) if outbound else [])
        counted = [f for f in found if f["feature"] in wanted]
        ignored = [f for f in found if f["feature"] not in wanted]
        if tt.premium_seat is not None:
            if tag == tt.premium_seat:
                reasons += [_reason("premium", f"premium: {f['_what']}", f) for f in counted]
                return tuple(reasons)
            if not skills and not outbound:
                reasons.append(_reason("standard", "standard: no skill"))
            for f in ignored:
                reasons.append(
                    _reason(
                        "not_counted",
                        f"standard: {f['_what']} not counted: '{f['feature']}' is not in "
                        "license.premium_features",
                        f,
                    )
                )
            if skills and not ignored:
                voice = any(s in ev.voice_skills for s in skills)
                reasons.append(
                    _reason(
                        "standard",
                        "standard: voice CSQs only"
                        if voice
                        else "standard: its skills serve no CSQ",
                    )
                )
            return tuple(reasons)
        reasons.append(_reason("seat", f"the one seat of {lt.value}"))
        for f in counted:
            if tt.premium_features_licensed:
                reasons.append(_reason("included", f"{f['feature']} included: {f['_what']}", f))
            else:
                reasons.append(
                    _reason(
                        "feature_not_licensed",
                        f"FEATURE_NOT_LICENSED: {f['_what']}: {lt.value} includes no "
                        f"premium feature",
                        f,
                    )
                )
        return tuple(reasons)

    by_id = {a.id: a for a in snapshot.table if a.logged_in}
    cache: dict[tuple[tuple[str, ...], bool, str, str], tuple[Reason, ...]] = {}
    out = []
    for seat in consumption.agents:
        agent = by_id[seat.id]
        key = (agent.skills, agent.outbound, agent.type, seat.tag)
        reasons = cache.get(key)
        if reasons is None:
            reasons = cache[key] = decide(*key)
        out.append(Explanation(seat.id, agent.type, seat.tag, reasons))
    return out


def with_reasons(doc: dict[str, Any], explained: Iterable[Explanation]) -> dict[str, Any]:
    """``usage --json`` with a ``reasons`` list in each agent's entry (same order)."""
    agents = doc["agents"]
    for entry, e in zip(agents, explained, strict=True):
        entry["reasons"] = list(e.reasons)
    return doc


def format_text(explained: Iterable[Explanation]) -> list[str]:
    rows = [(e.id, e.tag, e.text) for e in explained]
    if not rows:
        return ["no agent or supervisor is logged in"]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return [f"{i.ljust(w0)}  {t.ljust(w1)}  {why}" for i, t, why in rows]
