"""Seat consumption (docs/licensing.md §1)."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccx_agent.licensing.catalogue import ALL_FEATURES, CATALOGUE, Feature, LicenseType
from ccx_agent.licensing.consumption import AgentSeat, Consumption, compute, skill_features
from ccx_agent.licensing.snapshot import Agent, Csq, Snapshot, parse_snapshot

CSQS = (
    Csq("SalesVoice", "VOICE", ("Sales", "Chat", "Email")),
    Csq("ChatCSQ", "CHAT", ("Chat",)),
    Csq("MailCSQ", "EMAIL", ("Email",)),
)
LOGGED_IN = ("READY", "NOT_READY", "TALKING", "RESERVED", "WORK", "WORK_READY", "HOLD")
FLEX, HCS = LicenseType.FLEX, LicenseType.FLEX_HCS
PREMIUM, ENHANCED, NFR = (
    LicenseType.PERPETUAL_PREMIUM,
    LicenseType.PERPETUAL_ENHANCED,
    LicenseType.NFR,
)


def snap(*agents: Agent, csqs: tuple[Csq, ...] = CSQS, ports: int | None = None) -> Snapshot:
    return Snapshot(agents, csqs, ports)


def a(
    ident: str, *skills: str, state: str = "READY", outbound: bool = False, kind: str = "agent"
) -> Agent:
    return Agent(ident, kind, state, skills, outbound)


# One agent of each kind of configuration, all logged in.
MIXED = snap(
    a("voice", "Sales"),
    a("chat", "Chat"),
    a("email", "Email"),
    a("outbound", "Sales", outbound=True),
    a("none"),
    a("unused", "NoSuchQueueSkill"),
    a("sup", "Chat", kind="supervisor"),
    a("away", "Chat", state="LOGOUT"),
    ports=7,
)


@pytest.mark.parametrize(
    ("license_type", "tags"),
    [
        (FLEX, {"flex-standard-seat": 3, "flex-premium-seat": 4, "flex-outbound-port": 7}),
        (HCS, {"hcs-standard-seat": 3, "hcs-premium-seat": 4, "hcs-outbound-port": 7}),
        (PREMIUM, {"premium-seat": 7, "premium-outbound-port": 7}),
        (ENHANCED, {"enhanced-seat": 7}),
        (NFR, {"nfr-seat": 7}),
    ],
)
def test_every_license_type(license_type: LicenseType, tags: dict[str, int]) -> None:
    result = compute(MIXED, license_type, ALL_FEATURES)
    assert result.license_type is license_type
    assert result.tags == tags
    assert list(result.tags) == list(CATALOGUE[license_type].all)


@pytest.mark.parametrize("license_type", [FLEX, HCS])
def test_flex_breakdown(license_type: LicenseType) -> None:
    tt = CATALOGUE[license_type]
    std, prem = tt.standard_seat, tt.premium_seat
    assert prem is not None
    assert list(compute(MIXED, license_type, ALL_FEATURES).agents) == [
        AgentSeat("voice", std, ()),
        AgentSeat("chat", prem, ("chat",)),
        AgentSeat("email", prem, ("email",)),
        AgentSeat("outbound", prem, ("outbound",)),
        AgentSeat("none", std, ()),
        AgentSeat("unused", std, ()),
        AgentSeat("sup", prem, ("chat",)),
    ]


def test_perpetual_premium_every_agent_premium_seat() -> None:
    result = compute(MIXED, PREMIUM, ALL_FEATURES)
    assert {s.tag for s in result.agents} == {"premium-seat"}
    assert result.unlicensed_agents == ()
    assert result.agents[1] == AgentSeat("chat", "premium-seat", ("chat",))


def test_perpetual_enhanced_flags_premium_features_but_counts_once() -> None:
    result = compute(MIXED, ENHANCED, ALL_FEATURES)
    assert {s.tag for s in result.agents} == {"enhanced-seat"}
    assert result.tags == {"enhanced-seat": 7}
    # "away" has chat too, but is logged out: it takes no seat and raises nothing.
    assert result.unlicensed_agents == ("chat", "email", "outbound", "sup")
    assert result.agents[3] == AgentSeat("outbound", "enhanced-seat", ("outbound",))


def test_perpetual_enhanced_flags_only_configured_premium_features() -> None:
    result = compute(MIXED, ENHANCED, [Feature.EMAIL])
    assert result.unlicensed_agents == ("email",)


def test_nfr() -> None:
    result = compute(MIXED, NFR, ALL_FEATURES)
    assert result.tags == {"nfr-seat": 7}
    assert result.unlicensed_agents == ()


@pytest.mark.parametrize(
    ("features", "premium_ids"),
    [
        ([Feature.CHAT], {"chat", "sup"}),
        ([Feature.EMAIL], {"email"}),
        ([Feature.OUTBOUND], {"outbound"}),
        ([Feature.CHAT, Feature.OUTBOUND], {"chat", "sup", "outbound"}),
        ([], set()),
    ],
)
def test_premium_features_subset(features: list[Feature], premium_ids: set[str]) -> None:
    result = compute(MIXED, FLEX, features)
    assert {s.id for s in result.agents if s.tag == "flex-premium-seat"} == premium_ids
    assert result.tags["flex-premium-seat"] == len(premium_ids)
    assert result.tags["flex-standard-seat"] == 7 - len(premium_ids)
    # Only configured features are listed in the breakdown.
    listed = {f for s in result.agents for f in s.features}
    assert listed <= {f.value for f in features}


def test_premium_features_given_as_strings() -> None:
    result = compute(MIXED, FLEX, ["chat"])  # type: ignore[list-item]
    assert result.tags["flex-premium-seat"] == 2


@pytest.mark.parametrize("state", LOGGED_IN)
def test_every_finesse_state_but_logout_and_unknown_is_counted(state: str) -> None:
    assert compute(snap(a("x", state=state)), FLEX, ALL_FEATURES).tags["flex-standard-seat"] == 1


@pytest.mark.parametrize("state", ["LOGOUT", "UNKNOWN"])
def test_logout_and_unknown_take_no_seat(state: str) -> None:
    result = compute(snap(a("x", "Chat", state=state, outbound=True)), FLEX, ALL_FEATURES)
    assert result.tags == {"flex-standard-seat": 0, "flex-premium-seat": 0, "flex-outbound-port": 0}
    assert list(result.agents) == []


def test_supervisors_count_like_agents() -> None:
    result = compute(
        snap(a("s1", kind="supervisor"), a("s2", "Email", kind="supervisor")), FLEX, ALL_FEATURES
    )
    assert result.tags["flex-standard-seat"] == 1
    assert result.tags["flex-premium-seat"] == 1


def test_agent_without_skills_and_skill_without_csq_are_standard() -> None:
    result = compute(snap(a("none"), a("orphan", "NotInAnyCsq")), FLEX, ALL_FEATURES)
    assert [(s.tag, s.features) for s in result.agents] == [("flex-standard-seat", ())] * 2


def test_voice_only_agent_is_standard_even_if_its_skill_is_shared() -> None:
    # "Chat" serves a VOICE CSQ and a CHAT CSQ; "Sales" only the VOICE one.
    result = compute(snap(a("v", "Sales")), FLEX, ALL_FEATURES)
    assert result.agents[0] == AgentSeat("v", "flex-standard-seat", ())


def test_features_are_listed_in_a_fixed_order() -> None:
    expected = ("chat", "email", "outbound")
    for skills in (("Email", "Chat"), ("Chat", "Email"), ("Email", "Sales", "Chat", "Email")):
        result = compute(snap(a("x", *skills, outbound=True)), FLEX, ALL_FEATURES)
        assert result.agents[0].features == expected
    order = [Feature.OUTBOUND, Feature.EMAIL, Feature.CHAT]
    result = compute(snap(a("x", "Email", "Chat", outbound=True)), FLEX, order)
    assert result.agents[0].features == expected


def test_one_skill_serving_chat_and_email() -> None:
    csqs = (Csq("C", "CHAT", ("Both",)), Csq("E", "EMAIL", ("Both",)))
    assert skill_features(snap(csqs=csqs)) == {"Both": {Feature.CHAT, Feature.EMAIL}}
    result = compute(snap(a("x", "Both"), csqs=csqs), FLEX, ALL_FEATURES)
    assert result.agents[0].features == ("chat", "email")


def test_no_csqs_at_all() -> None:
    result = compute(snap(a("x", "Chat"), csqs=()), FLEX, ALL_FEATURES)
    assert result.agents[0] == AgentSeat("x", "flex-standard-seat", ())


@pytest.mark.parametrize(
    ("license_type", "tag"),
    [(FLEX, "flex-outbound-port"), (HCS, "hcs-outbound-port"), (PREMIUM, "premium-outbound-port")],
)
def test_outbound_ports(license_type: LicenseType, tag: str) -> None:
    assert compute(snap(ports=12), license_type, ALL_FEATURES).tags[tag] == 12
    # Not given by the source: zero, and the tag is still listed.
    assert compute(snap(), license_type, ALL_FEATURES).tags[tag] == 0


@pytest.mark.parametrize("license_type", [ENHANCED, NFR])
def test_outbound_ports_without_a_tag_are_not_counted(license_type: LicenseType) -> None:
    result = compute(snap(ports=12), license_type, ALL_FEATURES)
    assert result.tags == dict.fromkeys(CATALOGUE[license_type].all, 0)


@pytest.mark.parametrize("license_type", list(LicenseType))
def test_every_tag_listed_with_zeros(license_type: LicenseType) -> None:
    result = compute(Snapshot(), license_type, ALL_FEATURES)
    assert result.tags == dict.fromkeys(CATALOGUE[license_type].all, 0)
    assert result.as_json() == {
        "license_type": license_type.value,
        "tags": dict.fromkeys(CATALOGUE[license_type].all, 0),
        "agents": [],
    }


def test_as_json_shape() -> None:
    result = compute(MIXED, FLEX, ALL_FEATURES)
    doc = result.as_json()
    assert doc["license_type"] == "flex"
    assert doc["tags"] == {"flex-standard-seat": 3, "flex-premium-seat": 4, "flex-outbound-port": 7}
    agents = doc["agents"]
    assert isinstance(agents, list)
    assert json.loads(json.dumps(doc)) == doc
    assert agents[:2] == [
        {"id": "voice", "tag": "flex-standard-seat", "features": []},
        {"id": "chat", "tag": "flex-premium-seat", "features": ["chat"]},
    ]


def test_parsed_and_hand_built_snapshots_count_alike() -> None:
    doc = {
        "agents": [
            {
                "id": s.id,
                "type": s.type,
                "state": s.state.lower(),
                "skills": list(s.skills),
                "outbound": s.outbound,
            }
            for s in MIXED.agents
        ],
        "csqs": [{"name": c.name, "type": c.type, "skills": list(c.skills)} for c in CSQS],
        "ports": {"outbound": 7},
    }
    assert compute(parse_snapshot(doc), FLEX, ALL_FEATURES) == compute(MIXED, FLEX, ALL_FEATURES)


def test_breakdown_is_a_sequence() -> None:
    seats = compute(MIXED, FLEX, ALL_FEATURES).agents
    assert len(seats) == 7
    assert seats[-1].id == "sup" and [s.id for s in seats[5:]] == ["unused", "sup"]
    assert seats == list(seats)


# --- properties -------------------------------------------------------------------------

SKILLS = ["S0", "S1", "S2", "S3", "S4"]
STATES = [*LOGGED_IN, "LOGOUT", "UNKNOWN", "LOGIN", "TYPO"]

csq_st = st.builds(
    lambda i, kind, skills: Csq(f"Q{i}", kind, tuple(skills)),
    st.integers(0, 99),
    st.sampled_from(["VOICE", "CHAT", "EMAIL"]),
    st.lists(st.sampled_from(SKILLS), max_size=3),
)
agent_fields = st.tuples(
    st.sampled_from(["agent", "supervisor"]),
    st.sampled_from(STATES),
    st.lists(st.sampled_from([*SKILLS, "Orphan"]), max_size=4),
    st.booleans(),
)
snapshot_st = st.builds(
    lambda fields, csqs, ports: Snapshot(
        tuple(Agent(f"a{i}", k, s, tuple(sk), o) for i, (k, s, sk, o) in enumerate(fields)),
        tuple(csqs),
        ports,
    ),
    st.lists(agent_fields, max_size=30),
    st.lists(csq_st, max_size=5),
    st.one_of(st.none(), st.integers(0, 50)),
)
features_st = st.sets(st.sampled_from(ALL_FEATURES))


def reference_features(snapshot: Snapshot, agent: Agent, wanted: set[Feature]) -> list[str]:
    """The rule written out plainly, for one agent."""
    found = set()
    for csq in snapshot.csqs:
        if set(csq.skills) & set(agent.skills):
            if csq.type == "CHAT":
                found.add(Feature.CHAT)
            if csq.type == "EMAIL":
                found.add(Feature.EMAIL)
    if agent.outbound:
        found.add(Feature.OUTBOUND)
    return [f.value for f in ALL_FEATURES if f in found and f in wanted]


def logged_in(snapshot: Snapshot) -> list[Agent]:
    return [x for x in snapshot.agents if x.state not in ("LOGOUT", "UNKNOWN")]


@given(snapshot_st, st.sampled_from(list(LicenseType)), features_st)
def test_seat_tags_sum_to_logged_in_agents(
    snapshot: Snapshot, license_type: LicenseType, wanted: set[Feature]
) -> None:
    result = compute(snapshot, license_type, wanted)
    tt = CATALOGUE[license_type]
    seat_tags = [t for t in (tt.standard_seat, tt.premium_seat) if t is not None]
    assert sum(result.tags[t] for t in seat_tags) == len(logged_in(snapshot)) == len(result.agents)
    assert set(result.tags) == set(tt.all)


@given(snapshot_st, st.sampled_from([FLEX, HCS]), features_st)
def test_flex_premium_count_is_agents_with_a_wanted_feature(
    snapshot: Snapshot, license_type: LicenseType, wanted: set[Feature]
) -> None:
    result = compute(snapshot, license_type, wanted)
    premium = [x for x in logged_in(snapshot) if reference_features(snapshot, x, wanted)]
    assert result.tags[CATALOGUE[license_type].premium_seat or ""] == len(premium)


@given(snapshot_st, st.sampled_from(list(LicenseType)), features_st)
def test_breakdown_matches_the_plain_rule(
    snapshot: Snapshot, license_type: LicenseType, wanted: set[Feature]
) -> None:
    result = compute(snapshot, license_type, wanted)
    tt = CATALOGUE[license_type]
    expected = []
    for x in logged_in(snapshot):
        features = reference_features(snapshot, x, wanted)
        tag = tt.premium_seat if features and tt.premium_seat else tt.standard_seat
        expected.append({"id": x.id, "tag": tag, "features": features})
    assert result.as_json()["agents"] == expected
    flagged = [e["id"] for e in expected if e["features"]] if license_type is ENHANCED else []
    assert list(result.unlicensed_agents) == flagged


@given(snapshot_st, st.sampled_from(list(LicenseType)), features_st, st.randoms())
def test_result_does_not_depend_on_agent_order(
    snapshot: Snapshot, license_type: LicenseType, wanted: set[Feature], rnd: Any
) -> None:
    shuffled_agents = list(snapshot.agents)
    rnd.shuffle(shuffled_agents)
    shuffled = Snapshot(tuple(shuffled_agents), snapshot.csqs, snapshot.outbound_ports)
    one, two = compute(snapshot, license_type, wanted), compute(shuffled, license_type, wanted)
    assert one.tags == two.tags
    assert sorted(one.agents) == sorted(two.agents)
    assert sorted(one.unlicensed_agents) == sorted(two.unlicensed_agents)


def test_consumption_is_a_value() -> None:
    one = compute(MIXED, FLEX, ALL_FEATURES)
    assert isinstance(one, Consumption)
    assert one == compute(MIXED, FLEX, list(reversed(ALL_FEATURES)))
