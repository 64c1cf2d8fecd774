"""Why this seat: the evidence behind each agent's tag, for every rule and license type."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccx_agent.licensing.catalogue import ALL_FEATURES, Feature, LicenseType
from ccx_agent.licensing.consumption import compute
from ccx_agent.licensing.explain import explain, format_text
from ccx_agent.licensing.snapshot import parse_snapshot

# The forum's question: "5 agents logged in, why 1 standard and 1 premium?"
DOC: dict[str, Any] = {
    "agents": [
        {"id": "chat1", "state": "READY", "skills": ["chat"]},
        {"id": "out1", "state": "TALKING", "skills": ["dialer"], "outbound": True},
        {"id": "voice1", "state": "READY", "skills": ["sales"]},
        {"id": "sup1", "type": "supervisor", "state": "NOT_READY", "skills": ["sales"]},
        {"id": "bare1", "state": "READY"},
        {"id": "gone1", "state": "LOGOUT", "skills": ["chat"]},
    ],
    "csqs": [
        {"name": "Support_Chat", "type": "CHAT", "skills": ["chat"]},
        {"name": "Sales", "type": "VOICE", "skills": ["sales"]},
        {"name": "Outbound", "type": "VOICE", "skills": ["dialer"]},
    ],
    "campaigns": [{"name": "Renewals", "csqs": ["Outbound"]}],
}


def why(
    license_type: LicenseType = LicenseType.FLEX,
    features: tuple[Feature, ...] = ALL_FEATURES,
    doc: dict[str, Any] = DOC,
) -> dict[str, tuple[str, str]]:
    snap = parse_snapshot(doc)
    result = compute(snap, license_type, features)
    return {e.id: (e.tag, e.text) for e in explain(snap, result, features)}


def test_flex_names_what_made_each_seat() -> None:
    assert why() == {
        "chat1": ("flex-premium-seat", "premium: CSQ 'Support_Chat' (CHAT) via skill 'chat'"),
        "out1": ("flex-premium-seat", "premium: outbound campaign 'Renewals' via CSQ 'Outbound'"),
        "voice1": ("flex-standard-seat", "standard: voice CSQs only"),
        "sup1": ("flex-standard-seat", "supervisor; standard: voice CSQs only"),
        "bare1": ("flex-standard-seat", "standard: no skill"),
    }


def test_a_feature_the_site_does_not_count_is_said_so() -> None:
    got = why(features=(Feature.EMAIL, Feature.OUTBOUND))
    assert got["chat1"] == (
        "flex-standard-seat",
        "standard: CSQ 'Support_Chat' (CHAT) via skill 'chat' not counted: 'chat' is not in "
        "license.premium_features",
    )


def test_enhanced_flags_feature_not_licensed() -> None:
    got = why(LicenseType.PERPETUAL_ENHANCED)
    assert got["chat1"] == (
        "enhanced-seat",
        "the one seat of perpetual-enhanced; FEATURE_NOT_LICENSED: CSQ 'Support_Chat' (CHAT) "
        "via skill 'chat': perpetual-enhanced includes no premium feature",
    )
    assert got["voice1"] == ("enhanced-seat", "the one seat of perpetual-enhanced")


@pytest.mark.parametrize(
    ("license_type", "tag"),
    [(LicenseType.PERPETUAL_PREMIUM, "premium-seat"), (LicenseType.NFR, "nfr-seat")],
)
def test_single_seat_types_say_their_seat(license_type: LicenseType, tag: str) -> None:
    got = why(license_type)
    assert got["voice1"] == (tag, f"the one seat of {license_type.value}")
    assert got["out1"] == (
        tag,
        f"the one seat of {license_type.value}; outbound included: outbound campaign "
        "'Renewals' via CSQ 'Outbound'",
    )


def test_outbound_without_a_known_campaign_still_says_why() -> None:
    doc = {**DOC, "campaigns": []}
    assert why(doc=doc)["out1"] == (
        "flex-premium-seat",
        "premium: outbound (the source marks the agent outbound)",
    )


def test_the_reasons_are_data_too() -> None:
    snap = parse_snapshot(DOC)
    result = compute(snap, LicenseType.FLEX, ALL_FEATURES)
    first = explain(snap, result, ALL_FEATURES)[0]
    assert first.reasons == (
        {
            "rule": "premium",
            "text": "premium: CSQ 'Support_Chat' (CHAT) via skill 'chat'",
            "feature": "chat",
            "csq": "Support_Chat",
            "csq_type": "CHAT",
            "skill": "chat",
        },
    )
    lines = format_text(explain(snap, result, ALL_FEATURES))
    assert lines[0].split()[:2] == ["chat1", "flex-premium-seat"]


SKILLS = ["chat", "mail", "sales", "dialer", "none"]


@settings(max_examples=60, deadline=None)
@given(
    agents=st.lists(
        st.tuples(st.lists(st.sampled_from(SKILLS), unique=True), st.booleans(), st.booleans()),
        max_size=12,
    ),
    license_type=st.sampled_from(list(LicenseType)),
    features=st.sets(st.sampled_from(ALL_FEATURES)),
)
def test_a_premium_explanation_exactly_when_compute_gives_a_premium_seat(
    agents: list[tuple[list[str], bool, bool]], license_type: LicenseType, features: set[Feature]
) -> None:
    doc = {
        "agents": [
            {
                "id": f"a{i}",
                "state": "READY",
                "skills": s,
                "outbound": o,
                "type": "supervisor" if sup else "agent",
            }
            for i, (s, o, sup) in enumerate(agents)
        ],
        "csqs": [
            {"name": "C", "type": "CHAT", "skills": ["chat"]},
            {"name": "M", "type": "EMAIL", "skills": ["mail"]},
            {"name": "V", "type": "VOICE", "skills": ["sales", "dialer"]},
        ],
    }
    snap = parse_snapshot(doc)
    order = tuple(f for f in ALL_FEATURES if f in features)
    result = compute(snap, license_type, order)
    explained = explain(snap, result, order)
    assert [e.tag for e in explained] == [a.tag for a in result.agents]
    for e, seat in zip(explained, result.agents, strict=True):
        rules = [r["rule"] for r in e.reasons]
        named = sorted(
            {
                r["feature"]
                for r in e.reasons
                if r["rule"] in ("premium", "included", "feature_not_licensed")
            }
        )
        assert named == sorted(seat.features)
        assert ("supervisor" in rules) == (e.type == "supervisor")
        assert rules, "every seat has a reason"
