"""Parsing a snapshot document (the ``file`` source format, issue contract)."""

import json
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccx_agent.licensing.snapshot import (
    FINESSE_STATES,
    Agent,
    Agents,
    Csq,
    Snapshot,
    SnapshotError,
    parse_snapshot,
    parse_snapshot_json,
)

CONTRACT = {
    "agents": [
        {
            "id": "a1",
            "type": "agent",
            "state": "READY",
            "skills": ["Sales", "Chat"],
            "outbound": False,
        }
    ],
    "csqs": [{"name": "ChatCSQ", "type": "CHAT", "skills": ["Chat"]}],
    "ports": {"outbound": 12},
}


def agent(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "a1", "type": "agent", "state": "READY", "skills": ["Sales"]}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def doc_of(*agents: Any, **top: Any) -> dict[str, Any]:
    return {"agents": list(agents), **top}


def error_of(doc: Any) -> str:
    with pytest.raises(SnapshotError) as info:
        parse_snapshot(doc)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the contract document ------------------------------------------------------------


def test_contract_example_parses() -> None:
    snap = parse_snapshot(CONTRACT)
    assert tuple(snap.agents) == (Agent("a1", "agent", "READY", ("Sales", "Chat"), False),)
    assert snap.csqs == (Csq("ChatCSQ", "CHAT", ("Chat",)),)
    assert snap.outbound_ports == 12
    assert snap.notes == ()


def test_optional_parts_default() -> None:
    snap = parse_snapshot({"agents": [{"id": "s1", "state": "TALKING"}]})
    assert tuple(snap.agents) == (Agent("s1", "agent", "TALKING", (), False),)
    assert snap.csqs == ()
    assert snap.outbound_ports is None


def test_explicit_nulls_for_optional_lists() -> None:
    snap = parse_snapshot({"agents": [agent(skills=None)], "csqs": None, "ports": None})
    assert snap.agents[0].skills == ()
    assert snap.csqs == () and snap.outbound_ports is None


def test_ports_without_outbound() -> None:
    assert parse_snapshot(doc_of(ports={})).outbound_ports is None
    assert parse_snapshot(doc_of(ports={"outbound": None})).outbound_ports is None
    assert parse_snapshot(doc_of(ports={"outbound": 0})).outbound_ports == 0


def test_empty_agent_list_is_zero_agents() -> None:
    snap = parse_snapshot({"agents": []})
    assert len(snap.agents) == 0 and list(snap.agents) == []


def test_supervisor_and_team_accepted() -> None:
    snap = parse_snapshot(doc_of(agent(type="supervisor", team="Sales Team")))
    assert snap.agents[0].type == "supervisor"


def test_agents_keep_document_order() -> None:
    ids = [f"a{i}" for i in (3, 1, 2)]
    snap = parse_snapshot(doc_of(*(agent(id=i) for i in ids)))
    assert [a.id for a in snap.agents] == ids


# --- state ------------------------------------------------------------------------------
# Decision: the Finesse state is case-insensitive and surrounding blanks are ignored, so a
# hand-written "logout" means LOGOUT (reading it as some logged-in state would over-count).


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("ready", "READY"),
        ("Logout", "LOGOUT"),
        (" NOT_READY ", "NOT_READY"),
        ("unknown", "UNKNOWN"),
    ],
)
def test_state_is_case_insensitive(raw: str, state: str) -> None:
    got = parse_snapshot(doc_of(agent(state=raw))).agents[0]
    assert got.state == state
    assert got.logged_in is (state not in {"LOGOUT", "UNKNOWN"})


def test_unrecognised_state_counts_as_logged_in_with_a_note() -> None:
    snap = parse_snapshot(
        doc_of(agent(id="a1", state="LOGGED_OUT"), agent(id="a2", state="logged_out"))
    )
    assert all(a.logged_in for a in snap.agents)
    assert snap.notes == (
        "agents[0] (id 'a1'): state 'LOGGED_OUT' is not a known Finesse state; "
        "counted as logged in",
    )


def test_known_states_give_no_note() -> None:
    agents = [agent(id=f"a{i}", state=s) for i, s in enumerate(sorted(FINESSE_STATES))]
    assert parse_snapshot(doc_of(*agents)).notes == ()


# --- malformed documents: each error names the agent (index and id) and the field ----------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (agent(id=...), "agents[0]: id: must be a non-empty string, got nothing (null)"),
        (agent(id=""), "agents[0]: id: must be a non-empty string, got an empty string"),
        (agent(id=17), "agents[0]: id: must be a non-empty string, got 17 (write it in quotes)"),
        (
            agent(type="admin"),
            "agents[0] (id 'a1'): type: must be 'agent' or 'supervisor', got 'admin'",
        ),
        (
            agent(type="Agent"),
            "agents[0] (id 'a1'): type: must be 'agent' or 'supervisor', got 'Agent'",
        ),
        (
            agent(type=["agent"]),
            "agents[0] (id 'a1'): type: must be 'agent' or 'supervisor', got ['agent']",
        ),
        (
            agent(state=...),
            "agents[0] (id 'a1'): state: must be a Finesse state such as READY or LOGOUT, got nothing (null)",
        ),
        (
            agent(state=3),
            "agents[0] (id 'a1'): state: must be a Finesse state such as READY or LOGOUT, got 3",
        ),
        (
            agent(state=["READY"]),
            "agents[0] (id 'a1'): state: must be a Finesse state such as READY or LOGOUT, got ['READY']",
        ),
        (
            agent(state="  "),
            "agents[0] (id 'a1'): state: must be a Finesse state such as READY or LOGOUT",
        ),
        (
            agent(skills="Sales"),
            "agents[0] (id 'a1'): skills: must be a list of strings, got 'Sales'",
        ),
        (
            agent(skills={"Sales": 1}),
            "agents[0] (id 'a1'): skills: must be a list of strings, got {'Sales': 1}",
        ),
        (
            agent(skills=["Sales", 5]),
            "agents[0] (id 'a1'): skills[1]: must be a non-empty string, got 5 (write it in quotes)",
        ),
        (
            agent(skills=["Sales", ""]),
            "agents[0] (id 'a1'): skills[1]: must be a non-empty string, got an empty string",
        ),
        (
            agent(skills=[["Sales"]]),
            "agents[0] (id 'a1'): skills[0]: must be a non-empty string, got ['Sales']",
        ),
        (agent(outbound="yes"), "agents[0] (id 'a1'): outbound: must be true or false, got 'yes'"),
        (agent(outbound=1), "agents[0] (id 'a1'): outbound: must be true or false, got 1"),
        (agent(outbound=None), "agents[0] (id 'a1'): outbound: must be true or false, got None"),
        (agent(team=4), "agents[0] (id 'a1'): team: must be a string, got 4"),
        (
            agent(skill=["Sales"]),
            "agents[0] (id 'a1'): unknown field(s) 'skill' (expected: id, outbound, skills, state, team, type)",
        ),
        ("a1", "agents[0]: must be a mapping, got a string"),
        (None, "agents[0]: must be a mapping, got nothing (null)"),
    ],
)
def test_malformed_agent(raw: Any, expected: str) -> None:
    assert error_of(doc_of(raw)) == expected


def test_error_names_the_index_of_a_later_agent() -> None:
    doc = doc_of(agent(id="a1"), agent(id="a2"), agent(id="a3", state=None))
    assert error_of(doc).startswith("agents[2] (id 'a3'): state: ")


def test_unknown_fields_are_all_named() -> None:
    assert error_of(doc_of(agent(zeta=1, alpha=2, **{"3": 3}))) == (
        "agents[0] (id 'a1'): unknown field(s) '3', 'alpha', 'zeta' "
        "(expected: id, outbound, skills, state, team, type)"
    )


def test_duplicate_id_names_both_agents() -> None:
    doc = doc_of(agent(id="a1"), agent(id="a2"), agent(id="a1", state="LOGOUT"))
    assert error_of(doc) == "agents[2] (id 'a1'): id: duplicate agent id, also agents[0]"


def test_long_values_are_cut_in_messages() -> None:
    message = error_of(doc_of(agent(state=list(range(1000)))))
    assert message.endswith("...") and len(message) < 200


def test_newline_in_a_key_stays_on_one_line() -> None:
    assert "\\n" in error_of(doc_of(agent(**{"bad\nkey": 1})))


@pytest.mark.parametrize(
    ("csq", "expected"),
    [
        (
            {"name": "C", "type": "SMS", "skills": []},
            "csqs[0] (name 'C'): type: must be VOICE, CHAT or EMAIL, got 'SMS'",
        ),
        (
            {"name": "C", "type": "chat"},
            "csqs[0] (name 'C'): type: must be VOICE, CHAT or EMAIL, got 'chat'",
        ),
        ({"name": "C"}, "csqs[0] (name 'C'): type: must be VOICE, CHAT or EMAIL, got None"),
        ({"type": "CHAT"}, "csqs[0]: name: must be a non-empty string, got nothing (null)"),
        (
            {"name": "C", "type": "CHAT", "skills": "Chat"},
            "csqs[0] (name 'C'): skills: must be a list of strings, got 'Chat'",
        ),
        (
            {"name": "C", "type": "CHAT", "queue": 1},
            "csqs[0] (name 'C'): unknown field(s) 'queue' (expected: id, name, skills, type)",
        ),
        (["C"], "csqs[0]: must be a mapping, got a list"),
    ],
)
def test_malformed_csq(csq: Any, expected: str) -> None:
    assert error_of(doc_of(agent(), csqs=[csq])) == expected


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        (
            {"outbound": -1},
            "snapshot: ports: outbound: must be a whole number from 0 to 100000, got -1",
        ),
        (
            {"outbound": True},
            "snapshot: ports: outbound: must be a whole number from 0 to 100000, got True",
        ),
        (
            {"outbound": 1.5},
            "snapshot: ports: outbound: must be a whole number from 0 to 100000, got 1.5",
        ),
        (
            {"outbound": "12"},
            "snapshot: ports: outbound: must be a whole number from 0 to 100000, got '12'",
        ),
        # A broken source must not have SSM told a 400-digit usage.
        (
            {"outbound": 10**400},
            "snapshot: ports: outbound: must be a whole number from 0 to 100000, got "
            + "1"
            + "0" * 56
            + "...",
        ),
        (
            {"outbound": 100_001},
            "snapshot: ports: outbound: must be a whole number from 0 to 100000, got 100001",
        ),
        ({"inbound": 3}, "snapshot: ports: unknown field(s) 'inbound' (expected: outbound)"),
        (12, "snapshot: ports: must be a mapping, got int 12"),
        # Found by fuzzing: a YAML base-60 number (59:59:...) is an int too long for
        # repr(), and usage's table could not print it.
        (
            {"outbound": 60**3000},
            "snapshot: ports: outbound: must be a whole number from 0 to 100000, got a number "
            "of thousands of digits",
        ),
        (
            {"outbound": -(60**3000)},
            "snapshot: ports: outbound: must be a whole number from 0 to 100000, got "
            "a number of thousands of digits",
        ),
    ],
)
def test_malformed_ports(ports: Any, expected: str) -> None:
    assert error_of(doc_of(agent(), ports=ports)) == expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (None, "snapshot: empty document (for no agents at all, write agents: [])"),
        ([{"id": "a1"}], "snapshot: must be a mapping with 'agents', got a list"),
        ("agents", "snapshot: must be a mapping with 'agents', got a string"),
        ({}, "snapshot: agents: missing (for no agents at all, write agents: [])"),
        ({"csqs": []}, "snapshot: agents: missing (for no agents at all, write agents: [])"),
        (
            {"agents": None},
            "snapshot: agents: must be a list (agents: [] for none), got nothing (null)",
        ),
        (
            {"agents": {"a1": {}}},
            "snapshot: agents: must be a list (agents: [] for none), got a mapping",
        ),
        ({"agents": [], "csqs": {}}, "snapshot: csqs: must be a list, got a mapping"),
        (
            {"agents": [], "agent": []},
            "snapshot: unknown field(s) 'agent' (expected: agents, campaigns, csqs, ports)",
        ),
    ],
)
def test_malformed_top_level(doc: Any, expected: str) -> None:
    assert error_of(doc) == expected


# --- the fast path and the reference path agree ------------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from(["", "a1", "agent", "supervisor", "READY", "logout", "Chat", "x"]),
    st.lists(st.sampled_from(["Sales", "Chat", "", 3]), max_size=3),
    st.dictionaries(st.just("k"), st.just(1), max_size=1),
)
_raw_agents = st.dictionaries(
    st.sampled_from(["id", "type", "state", "skills", "outbound", "team", "other"]),
    _values,
)


def _outcome(doc: Any) -> Any:
    try:
        snap = parse_snapshot(doc)
        return snap, snap.notes
    except SnapshotError as exc:
        return str(exc)


def _json_agrees(doc: Any, reference: Any) -> bool:
    """The msgspec path on ``doc`` as JSON either declines (None) or builds exactly what the
    reference built, notes included; it never accepts what the reference refuses."""
    fast = parse_snapshot_json(json.dumps(doc).encode())
    return fast is None or (fast, fast.notes) == reference


@given(st.lists(_raw_agents, max_size=4))
def test_plain_dicts_and_other_mappings_parse_alike(raws: list[dict[str, Any]]) -> None:
    # Plain dicts take the fast path; any other Mapping the reference validator; JSON bytes
    # the msgspec structs.
    fast = _outcome({"agents": raws})
    slow = _outcome({"agents": [MappingProxyType(r) for r in raws]})
    assert fast == slow
    assert _json_agrees({"agents": raws}, slow)


@given(st.lists(_raw_agents, max_size=4))
def test_repeated_agents_parse_alike(raws: list[dict[str, Any]]) -> None:
    # The second occurrence of the same shape is served from the parser's caches.
    for i, raw in enumerate(raws):
        raw["id"] = f"a{i}"
    twice = raws + [{**r, "id": f"b{i}"} for i, r in enumerate(raws)]
    fast = _outcome({"agents": twice})
    slow = _outcome({"agents": [MappingProxyType(r) for r in twice]})
    assert fast == slow
    assert _json_agrees({"agents": twice}, slow)


# --- the agent table ----------------------------------------------------------------------


def test_snapshot_accepts_any_sequence_of_agents() -> None:
    rows = (Agent("a1", "agent", "READY", ("S",)), Agent("a2", "supervisor", "LOGOUT"))
    snap = Snapshot(rows)
    assert isinstance(snap.agents, Agents)
    assert snap.agents == rows and snap.agents == list(rows)
    assert snap == Snapshot(list(rows)) and hash(snap) == hash(Snapshot(list(rows)))
    assert snap.agents[1] == rows[1] and snap.agents[-1] == rows[1]
    assert list(snap.agents[1:]) == [rows[1]] and isinstance(snap.agents[1:], Agents)
    assert snap.table is snap.agents
    assert snap.agents.ids == ("a1", "a2") and snap.agents.states == ("READY", "LOGOUT")
    assert "Agent(id='a1'" in repr(snap.agents)


def test_parsed_snapshot_equals_one_built_by_hand() -> None:
    built = Snapshot(
        (Agent("a1", "agent", "READY", ("Sales", "Chat"), False),),
        (Csq("ChatCSQ", "CHAT", ("Chat",)),),
        12,
    )
    assert parse_snapshot(CONTRACT) == built


def test_agent_table_rejects_ragged_columns() -> None:
    with pytest.raises(ValueError, match="5 columns of one length"):
        Agents((("a1",), ("agent",), ("READY",), ((),), ()))
    with pytest.raises(ValueError, match="every row needs 5 fields"):
        Agents.of([("a1", "agent")])  # type: ignore[list-item]


def test_repr_of_a_long_table_is_short() -> None:
    rows = [Agent(f"a{i}", "agent", "READY") for i in range(1000)]
    assert repr(Agents.of(rows)).endswith("... 997 more])")


def test_campaigns_are_optional_and_checked() -> None:
    doc = {"agents": [], "campaigns": [{"name": "Renewals", "csqs": ["Outbound"]}]}
    assert [(c.name, c.csqs) for c in parse_snapshot(doc).campaigns] == [
        ("Renewals", ("Outbound",))
    ]
    assert parse_snapshot({"agents": []}).campaigns == ()
    with pytest.raises(SnapshotError, match=r"campaigns\[0\]: name: must be a non-empty string"):
        parse_snapshot({"agents": [], "campaigns": [{"csqs": ["Outbound"]}]})
    with pytest.raises(SnapshotError, match="campaigns: must be a list"):
        parse_snapshot({"agents": [], "campaigns": "Renewals"})


# --- the msgspec path for JSON bytes -------------------------------------------------------
# Its agreement with the reference on random documents, duplicate keys and error messages
# included, is proven in tests/sources/test_file.py (read_snapshot); here, what it declines.


def test_json_path_builds_the_contract_snapshot() -> None:
    raw = json.dumps(CONTRACT).encode()
    got = parse_snapshot_json(raw)
    assert got is not None
    assert got == parse_snapshot(CONTRACT)
    assert tuple(got.agents) == (Agent("a1", "agent", "READY", ("Sales", "Chat"), False),)


def test_json_path_fills_defaults_like_the_reference() -> None:
    doc = {
        "agents": [
            {"id": "a1", "state": "READY"},
            {"id": "a2", "state": "LOGOUT", "skills": None, "team": None},
            {"id": "a3", "state": "TALKING", "type": "supervisor", "outbound": True},
            {"id": "a4", "state": "UNKNOWN", "skills": ["S"], "outbound": False},
        ],
        "csqs": None,
        "ports": {"outbound": None},
        "campaigns": [{"name": "C"}],
    }
    got = parse_snapshot_json(json.dumps(doc).encode())
    want = parse_snapshot(doc)
    assert got is not None
    assert (got, got.notes) == (want, want.notes)


def test_json_path_knows_every_finesse_state_as_written() -> None:
    # A state as Finesse writes it takes the msgspec path; another spelling (to be folded
    # to upper case, or to be noted) is left to the reference path, which words the note.
    for state in sorted(FINESSE_STATES):
        doc = doc_of(agent(state=state))
        assert parse_snapshot_json(json.dumps(doc).encode()) == parse_snapshot(doc), state
    for spelled in (" ready ", "Logout", "LOGGED_OUT"):
        assert parse_snapshot_json(json.dumps(doc_of(agent(state=spelled))).encode()) is None


def test_skill_lists_alike_share_one_tuple() -> None:
    doc = doc_of(agent(id="a1", skills=["S", "T"]), agent(id="a2", skills=["S", "T"]))
    got = parse_snapshot_json(json.dumps(doc).encode())
    assert got is not None
    assert got.agents.skills[0] is got.agents.skills[1]


def test_json_path_allows_a_byte_order_mark() -> None:
    got = parse_snapshot_json(b"\xef\xbb\xbf" + json.dumps(CONTRACT).encode())
    assert got == parse_snapshot(CONTRACT)


def test_colons_inside_strings_are_no_doubt() -> None:
    doc = doc_of(agent(id="uccx:a1", skills=["Sales:EMEA"], team="T:1"))
    assert parse_snapshot_json(json.dumps(doc).encode()) == parse_snapshot(doc)
    # An escaped colon is no doubt either while the colon bytes alone prove the count.
    escaped = b'{"agents": [{"id": "a\\u003A1", "state": "READY"}], "csqs": null}'
    assert parse_snapshot_json(escaped) == parse_snapshot(json.loads(escaped))


@pytest.mark.parametrize(
    "raw",
    [
        # A key given twice, alone, or with a colon in a string to make up the count.
        b'{"agents": [{"id": "a1", "state": "READY", "state": "LOGOUT"}]}',
        b'{"agents": [{"id": "a1", "state": "READY"}], "agents": []}',
        b'{"agents": [{"id": "a:1", "state": "READY", "state": "LOGOUT"}]}',
        b'{"agents": [{"id": "a1", "state": "READY", "team": "x:y", "team": "z"}]}',
        # A colon written as an escape is no colon byte: the count proves nothing then.
        b'{"agents": [{"id": "a\\u003a1", "state": "READY", "state": "LOGOUT"}]}',
        b'{"agents": [{"id": "a\\u003A1", "state": "READY", "team": "x:y"}]}',
        # What only the reference can word.
        b'{"agents": [{"id": "a1", "state": "READY"}, {"id": "a1", "state": "READY"}]}',
        b'{"agents": [{"id": "a1", "state": "  "}]}',
        b'{"agents": [{"id": "a1", "state": "READY", "skill": []}]}',
        b'{"agents": [{"id": "a1", "state": "READY"}], "ports": {"outbound": 1.0}}',
        b'{"agents": [{"id": "a1", "state": "READY"}], "csqs": [{"name": "C", "type": "VOICE", "id": NaN}]}',
        b"null",
        b"[]",
        b'{"agents": [}',
    ],
)
def test_json_path_declines_when_in_doubt(raw: bytes) -> None:
    assert parse_snapshot_json(raw) is None


def test_the_notes_about_unknown_states_are_named_by_state() -> None:
    """A daemon says each unknown state once per run: it needs to know which note is
    about which state (ccx_agent/daemon/scheduler.py)."""
    snap = parse_snapshot(
        {
            "agents": [
                {"id": "a", "state": "READY"},
                {"id": "b", "state": "ON_BREAK"},
                {"id": "c", "state": "on_break"},
                {"id": "d", "state": "AWAY"},
            ]
        }
    )
    assert [state for state, _ in snap.state_notes] == ["ON_BREAK", "AWAY"]
    assert [note for _, note in snap.state_notes] == list(snap.notes)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"agents": [{"id": "a1", "state": "READY"}, {"id": "x\ud800", "state": "READY"}]},
            "agents[1] (id 'x\\ud800'): id: not valid Unicode text, refused: 'x\\ud800' holds "
            "a lone UTF-16 surrogate",
        ),
        (
            {"agents": [{"id": "a1", "state": "READY", "skills": ["\udc00"]}]},
            "agents[0] (id 'a1'): skills[0]: not valid Unicode text, refused: '\\udc00' holds "
            "a lone UTF-16 surrogate",
        ),
    ],
)
def test_a_lone_surrogate_is_refused_by_name(doc: dict[str, Any], message: str) -> None:
    """A string no UTF-8 can hold (``"\\ud800"`` in JSON) could not be printed nor stored in
    an alert: the snapshot is refused, the agent named (in ASCII), by both paths."""
    with pytest.raises(SnapshotError) as err:
        parse_snapshot(doc)
    assert str(err.value) == message
    raw = json.dumps(doc).encode()
    assert b"\\ud800" in raw or b"\\udc00" in raw
    assert parse_snapshot_json(raw) is None  # the fast path leaves it to the reference
    # A surrogate pair is one real character: fine on both paths.
    emoji = b'{"agents": [{"id": "a\\ud83d\\ude00", "state": "READY"}]}'
    assert parse_snapshot(json.loads(emoji)).agents[0].id == "a\U0001f600"
