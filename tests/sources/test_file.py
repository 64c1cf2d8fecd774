"""``source.kind: file``: JSON and YAML snapshots, and every way a file can be wrong."""

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccx_agent.config.schema import FileSource as FileSourceConfig
from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import compute
from ccx_agent.licensing.snapshot import (
    Agent,
    Csq,
    Snapshot,
    SnapshotError,
    parse_snapshot,
    parse_snapshot_json,
)
from ccx_agent.sources import Source, SourceError
from ccx_agent.sources.factory import build
from ccx_agent.sources.file import (
    MAX_ALIAS_VALUES,
    FileSource,
    decode,
    read_regular,
    read_snapshot,
)

DATA = Path(__file__).parent.parent / "data" / "snapshots"
CONTRACT = Snapshot(
    (Agent("a1", "agent", "READY", ("Sales", "Chat"), False),),
    (Csq("ChatCSQ", "CHAT", ("Chat",)),),
    12,
)


def read(path: Path) -> Snapshot:
    return FileSource(path).read()


def error(path: Path) -> str:
    with pytest.raises(SourceError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}")
    return message


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("name", ["contract.json", "contract.yaml", "json-content.yaml"])
def test_contract_example_in_every_form(name: str) -> None:
    assert read(DATA / name) == CONTRACT


def test_json_and_yaml_read_alike() -> None:
    one, two = read(DATA / "mixed.json"), read(DATA / "mixed.yaml")
    assert one == two
    result = compute(one, LicenseType.FLEX, ALL_FEATURES)
    assert result.tags == {"flex-standard-seat": 2, "flex-premium-seat": 4, "flex-outbound-port": 4}


def test_factory_builds_a_file_source() -> None:
    source: Source = build(FileSourceConfig(kind="file", path=DATA / "mixed.yaml"))
    assert len(source.read().agents) == 8


def test_file_is_read_again_at_every_call(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", '{"agents": []}')
    source = FileSource(path)
    assert len(source.read().agents) == 0
    path.write_text('{"agents": [{"id": "a1", "state": "READY"}]}')
    assert len(source.read().agents) == 1


def test_json_without_json_name_and_yml_name(tmp_path: Path) -> None:
    assert read(write(tmp_path, "snapshot", '  \n{"agents": []}')) == Snapshot()
    assert read(write(tmp_path, "s.yml", "agents: []\n")) == Snapshot()


def test_yaml_flow_style_that_is_not_json(tmp_path: Path) -> None:
    assert len(read(write(tmp_path, "s.yaml", "{agents: [{id: a1, state: READY}]}")).agents) == 1


def test_utf8_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    assert read(write(tmp_path, "s.json", b'\xef\xbb\xbf{"agents": []}')) == Snapshot()
    assert read(write(tmp_path, "s.yaml", b"\xef\xbb\xbfagents: []\n")) == Snapshot()


# --- errors: always a SourceError naming the file, never a snapshot of zero agents ----------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    assert error(path) == f"{path}: cannot read the snapshot: No such file or directory"


def test_directory(tmp_path: Path) -> None:
    assert error(tmp_path) == f"{tmp_path}: cannot read the snapshot: Is a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", '{"agents": []}')
    path.chmod(0)
    assert error(path) == f"{path}: cannot read the snapshot: Permission denied"


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same as test_unreadable_file, for a test run as root.
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    path = write(tmp_path, "s.json", '{"agents": []}')
    monkeypatch.setattr("ccx_agent.sources.file.os.open", refuse)
    assert error(path) == f"{path}: cannot read the snapshot: Permission denied"


def test_truncated_json_names_the_line() -> None:
    path = DATA / "truncated.json"
    assert error(path) == (
        f"{path}:4: not valid JSON: Expecting property name enclosed in double quotes (column 57)"
    )


def test_truncated_json_in_a_yaml_file_reports_the_json_error(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", '{"agents": [\n{"id": "a1",')
    assert error(path).startswith(f"{path}:2: not valid JSON: ")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "agents:\n  - id: a1\n   state: READY\n")
    assert error(path).startswith(f"{path}:3: not valid YAML: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "agents:\n  - id: Jos\xe9\n".encode("latin-1"))
    assert error(path) == f"{path}:2: not UTF-8 text: invalid continuation byte"


@pytest.mark.parametrize("content", ["", "   \n", "# nothing but a comment\n", "null"])
def test_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "s.yaml", content)
    assert error(path) == (
        f"{path}: snapshot: empty document (for no agents at all, write agents: [])"
    )


def test_empty_json_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", "")
    assert error(path).startswith(f"{path}:1: not valid JSON: Expecting value")


def test_malformed_agent_is_named() -> None:
    path = DATA / "bad-agent.yaml"
    assert error(path) == (
        f"{path}: agents[1] (id 'a2'): skills: must be a list of strings, got 'Sales'"
    )


def test_agents_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", '{"csqs": []}')
    assert error(path) == (
        f"{path}: snapshot: agents: missing (for no agents at all, write agents: [])"
    )


def test_duplicate_key_in_json(tmp_path: Path) -> None:
    # json.loads alone would keep the last "agents" and report zero agents.
    path = write(tmp_path, "s.json", '{"agents": [{"id": "a1", "state": "READY"}], "agents": []}')
    assert error(path) == f"{path}: not valid JSON: key 'agents' given twice"


def test_duplicate_key_in_a_json_agent(tmp_path: Path) -> None:
    path = write(
        tmp_path, "s.json", '{"agents": [{"id": "a1", "state": "READY", "state": "LOGOUT"}]}'
    )
    assert error(path) == (
        f"{path}: not valid JSON: key 'state' given twice in the object with id 'a1'"
    )


def test_duplicate_key_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "agents:\n  - {id: a1, state: READY}\nagents: []\n")
    assert error(path) == f"{path}:3: not valid YAML: key 'agents' given twice"


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    content = "base: &base {type: agent, state: READY}\nagents:\n  - {<<: *base, id: a1}\n"
    path = write(tmp_path, "s.yaml", content)
    # The merge itself is fine; the unknown top-level key is what is refused.
    assert error(path) == (
        f"{path}: snapshot: unknown field(s) 'base' (expected: agents, campaigns, csqs, ports)"
    )


def test_impossible_yaml_date(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "agents:\n  - {id: a1, state: 2024-02-30}\n")
    assert error(path) == f"{path}: not valid YAML: day is out of range for month"


def test_unknown_yaml_bool(tmp_path: Path) -> None:
    """``!!bool maybe`` was a KeyError: in the daemon a host fault (AGENT_JOB_FAILED)
    instead of a failed sample (LICENSE_COMPUTATION_FAILED, from a SourceError)."""
    path = write(tmp_path, "s.yaml", "agents:\n  - {id: a1, state: READY, x: !!bool maybe}\n")
    assert error(path) == (
        f"{path}:2: not valid YAML: not a valid !!bool value "
        "('maybe' is not one of true/false, yes/no, on/off)"
    )


def test_yaml_date_is_not_a_state(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "agents:\n  - {id: a1, state: 2024-02-28}\n")
    assert "state: must be a Finesse state" in error(path)


def test_number_too_long_for_json(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", '{"agents": [], "ports": {"outbound": ' + "9" * 5000 + "}}")
    assert error(path).startswith(f"{path}: not valid JSON: Exceeds the limit")


def test_deeply_nested_json(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", '{"agents": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert error(path) == f"{path}: not valid JSON: nested too deeply"


def test_a_list_at_top_level(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", '[{"id": "a1", "state": "READY"}]')
    assert error(path) == f"{path}: snapshot: must be a mapping with 'agents', got a list"


def test_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ccx_agent.sources.file.MAX_BYTES", 10)
    path = write(tmp_path, "s.json", '{"agents": []}')
    assert error(path) == f"{path}: snapshot larger than 10 bytes, refused"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_a_file_with_more_bytes_than_its_size_is_read_whole_and_capped() -> None:
    # A /proc file says it has 0 bytes and has more: as a file that grows while it is
    # read, all of it is read, and the cap still holds.
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0
    raw = read_regular(status, 1_000_000, "snapshot")
    assert raw.startswith(b"Name:") and b"\nPid:" in raw
    with pytest.raises(SourceError, match="snapshot larger than 10 bytes, refused"):
        read_regular(status, 10, "snapshot")


def _read_within(path: Path, seconds: float) -> str:
    """The error of reading ``path``, which must come within ``seconds``. A read blocked
    in open() on a FIFO is released by opening the FIFO for writing, so that a failing
    test does not hang the run."""
    result: list[str] = []

    def target() -> None:
        try:
            read(path)
            result.append("no error")
        except SourceError as exc:
            result.append(str(exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if stat.S_ISFIFO(path.stat().st_mode):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"reading {path} did not end within {seconds}s")
    return result[0]


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """Found by fuzzing: a named pipe with no writer blocked ``usage`` (and a sample)
    forever in open()."""
    path = tmp_path / "agents.json"
    os.mkfifo(path)
    assert _read_within(path, 5) == (
        f"{path}: the snapshot is a FIFO (named pipe), not a regular file: refused"
    )


def test_a_link_to_dev_zero_is_refused_unread(tmp_path: Path) -> None:
    """Found by fuzzing: /dev/zero never ends; it was read up to the size cap (256 MiB)
    before being refused."""
    path = tmp_path / "agents.json"
    path.symlink_to("/dev/zero")
    assert _read_within(path, 5) == (
        f"{path}: the snapshot is a character device, not a regular file: refused"
    )


def test_a_file_over_the_cap_is_refused_by_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ccx_agent.sources.file.MAX_BYTES", 100)
    path = write(tmp_path, "s.yaml", "agents: []\n" + "#" * 200)
    assert error(path) == f"{path}: snapshot larger than 100 bytes, refused"


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Nested aliases: a few hundred bytes that would expand to 2 * 10^11 agents."""
    lines = ["a0: &a0 [{id: a, state: READY}, {id: b, state: READY}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    path = write(tmp_path, "s.yaml", "\n".join([*lines, "agents: *a11", ""]))
    started = time.monotonic()
    message = error(path)
    assert time.monotonic() - started < 5
    # a0 is 11 nodes, a_i is 1 + 10 * a_(i-1). Expanded before a5: 10 * (11 + 111 + 1111
    # + 11111) = 123,340; each a4 adds 111,111, so a5's eighth item crosses 1,000,000.
    assert message == (
        f"{path}: not valid YAML: a5[7]: aliases expand the document by more than "
        f"{MAX_ALIAS_VALUES} values (an alias bomb?): refused"
    )


def test_anchors_shared_by_many_agents_are_fine(tmp_path: Path) -> None:
    """The bound leaves room for a real snapshot's anchors (one skill list, 2,000 agents)."""
    first = "  - {id: a0, state: READY, skills: &s [Sales, Chat, Email]}\n"
    rest = "".join(f"  - {{id: a{i}, state: READY, skills: *s}}\n" for i in range(1, 2000))
    path = write(tmp_path, "s.yaml", f"agents:\n{first}{rest}")
    assert len(read(path).agents) == 2000


def test_decode_directly() -> None:
    assert decode(b'{"agents": []}', "x.json") == {"agents": []}
    assert decode(b"agents: []", "x") == {"agents": []}


# --- the msgspec path and the reference path read JSON alike ------------------------------
# Random JSON texts written token by token, so that a key can be given twice (no dict can
# hold that), strings can carry colons or escaped colons, and every field can have a wrong
# type. read_snapshot (msgspec first) must end exactly as the reference does: decode,
# refusing duplicate keys, then parse_snapshot: the same snapshot and notes, or the same
# one-line message.

_SCALARS = [
    "null",
    "true",
    "false",
    "0",
    "-1",
    "12",
    "1.5",
    "1.0",
    "100001",
    "1e400",
    "NaN",
    '"a1"',
    '"a:1"',
    '"a\\u003a1"',
    '""',
    '"  "',
    '"READY"',
    '"ready"',
    '" Logout "',
    '"LOGGED_OUT"',
    '"agent"',
    '"supervisor"',
    '"VOICE"',
    '"CHAT"',
    '"x\\"y"',
    '"\\ud800"',
    '"S"',
    '"S:1"',
]
_LISTS = ['["S", "T"]', '["S:1"]', "[]", '[""]', "[3]", '["S", "S"]', "{}", '{"k": 1}']
_json_values = st.sampled_from(_SCALARS + _LISTS)
_AGENT_KEYS = ["id", "type", "state", "skills", "outbound", "team", "other"]


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f'"{key}": {value}' for key, value in pairs) + "}"


# A well-formed agent (its id made unique below), a few of its fields changed or repeated.
_good_agent = st.tuples(
    st.sampled_from(['"READY"', '"logout"', '"TALKING"', '"Busy"']),
    st.sampled_from(['["S", "T"]', '["S"]', "[]", "null", '["S:1"]']),
    st.lists(st.tuples(st.sampled_from(_AGENT_KEYS), _json_values), max_size=2),
).map(lambda t: [("id", "@ID"), ("state", t[0]), ("skills", t[1]), *t[2]])
_odd_agent = st.lists(st.tuples(st.sampled_from(_AGENT_KEYS), _json_values), max_size=6)
_csq = st.lists(
    st.tuples(st.sampled_from(["name", "type", "skills", "id", "queue"]), _json_values),
    max_size=5,
).map(_object)
_top_extra = st.lists(
    st.tuples(
        st.sampled_from(["csqs", "ports", "campaigns", "agents", "other"]),
        st.one_of(
            _json_values,
            st.lists(_csq, max_size=2).map(lambda cs: "[" + ", ".join(cs) + "]"),
            st.sampled_from(['{"outbound": 3}', '{"outbound": -1}', '[{"name": "C"}]']),
        ),
    ),
    max_size=2,
)


@st.composite
def _json_snapshots(draw: st.DrawFn) -> bytes:
    agents = draw(st.lists(st.one_of(_good_agent, _good_agent, _odd_agent), max_size=5))
    written = []
    for i, pairs in enumerate(agents):
        unique = [(k, f'"a{i}"' if v == "@ID" else v) for k, v in pairs]
        written.append(_object(unique))
    top = [("agents", "[" + ", ".join(written) + "]"), *draw(_top_extra)]
    return _object(draw(st.permutations(top))).encode()


def _reference(raw: bytes, name: str) -> Snapshot:
    doc = decode(raw, name)
    try:
        return parse_snapshot(doc)
    except SnapshotError as exc:
        raise SourceError(f"{name}: {exc}") from None


def _ending(read_it: object, raw: bytes) -> object:
    try:
        snap = read_it(raw, "s.json")  # type: ignore[operator]
    except SourceError as exc:
        return str(exc)
    return snap, snap.notes


@settings(max_examples=400)
@given(_json_snapshots())
def test_msgspec_and_reference_paths_end_alike(raw: bytes) -> None:
    assert _ending(read_snapshot, raw) == _ending(_reference, raw)


def test_the_random_json_reaches_both_ends() -> None:
    """The property above must see documents the msgspec path accepts, and some it
    declines (a key given twice among them), or it would prove little."""
    from hypothesis import find

    accepted = find(
        _json_snapshots(),
        lambda raw: (s := parse_snapshot_json(raw)) is not None and len(s.agents) > 2,
    )
    assert len(read_snapshot(accepted, "s.json").agents) > 2
    twice = find(
        _json_snapshots(),
        lambda raw: (
            parse_snapshot_json(raw) is None and "given twice" in str(_ending(_reference, raw))
        ),
    )
    assert "given twice" in str(_ending(read_snapshot, twice))


def test_a_big_snapshot_takes_the_msgspec_path(tmp_path: Path) -> None:
    agents = [
        {"id": f"uccx:{i}", "state": "READY" if i % 3 else "LOGOUT", "skills": [f"S{i % 7}"]}
        for i in range(3000)
    ]
    raw = json.dumps({"agents": agents, "csqs": [{"name": "C", "type": "CHAT", "skills": ["S1"]}]})
    path = write(tmp_path, "big.json", raw)
    fast = parse_snapshot_json(path.read_bytes())
    assert fast is not None
    assert read(path) == fast == parse_snapshot(json.loads(raw))
