"""What a source saw at one instant: agents with their state and skills, and the CSQs.

Parsing lives here (plain data in, immutable objects out) because the file, command and
scripted sources all produce the same document shape, and one parser gives every one of
them the same precise error messages ("agents[17] (id 'a18'): state: ...").

The document shape (``source.kind: file``)::

    {"agents": [{"id": "a1", "type": "agent", "state": "READY",
                 "skills": ["Sales", "Chat"], "outbound": false, "team": "T1"}],
     "csqs":   [{"name": "ChatCSQ", "type": "CHAT", "skills": ["Chat"]}],
     "ports":  {"outbound": 12}}

``agents`` is required (``[]`` for none, so a truncated or empty document is an error and
never a sample of zero agents); ``type`` defaults to ``agent``, ``skills`` to none and
``outbound`` to false; ``csqs`` and ``ports`` are optional. The Finesse ``state`` is read
case-insensitively (``logout`` is LOGOUT), and is stored upper-case.

Speed: a 100,000-agent snapshot is parsed on every sample, so well-formed agents take a
fast path (plain dicts, cached state and skill-list checks, tuple-based records); anything
unusual falls back to :func:`_agent`, the one place that words every error. Both paths
accept exactly the same documents and build the same objects.

A JSON snapshot has a faster path still, :func:`parse_snapshot_json`: the bytes are decoded
straight into typed ``msgspec`` structs (one decoder, built once) and the columns are taken
from them. It never words an error: whenever it is in doubt (anything msgspec refuses, a
duplicate id, a key that may have been given twice) it answers ``None`` and the caller goes
the reference way (``json.loads`` refusing duplicate keys, then :func:`parse_snapshot`),
which words the error exactly as before.
"""

from __future__ import annotations

import codecs
import gc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Annotated, Any, Literal, NamedTuple, Self, TypeVar, get_args, overload

import msgspec
from msgspec import UNSET, UnsetType

AGENT_TYPES = frozenset({"agent", "supervisor"})
CSQ_TYPES = frozenset({"VOICE", "CHAT", "EMAIL"})
#: Finesse states in which an agent holds no seat.
LOGGED_OUT_STATES = frozenset({"LOGOUT", "UNKNOWN"})
#: The Finesse user and media states as Finesse writes them. As a Literal, msgspec gives
#: the one str object of the Literal, already hashed, for every agent (no string
#: allocated, none to free); another spelling (" ready ", or a state to note) goes the
#: reference way.
_FinesseState = Literal[
    "LOGIN",
    "LOGOUT",
    "READY",
    "NOT_READY",
    "RESERVED",
    "RESERVED_OUTBOUND",
    "RESERVED_OUTBOUND_PREVIEW",
    "TALKING",
    "HOLD",
    "WORK",
    "WORK_READY",
    "WORK_NOT_READY",
    "UNKNOWN",
    "AVAILABLE",
    "NOT_ACTIVE",
    "ACTIVE",
    "PAUSED",
    "INTERRUPTED",
    "BUSY_OTHER",
]
#: Any state not in here still counts as logged in (docs/licensing.md §1: "anything but
#: LOGOUT"), but the snapshot carries a note about it, since it is most likely a typo.
FINESSE_STATES: frozenset[str] = frozenset(get_args(_FinesseState))


class SnapshotError(ValueError):
    """A snapshot document that cannot be trusted; the message names the agent and field."""


class Agent(NamedTuple):
    """One agent or supervisor, as read from a snapshot."""

    id: str
    type: str
    state: str
    skills: tuple[str, ...] = ()
    outbound: bool = False

    @property
    def logged_in(self) -> bool:
        return self.state not in LOGGED_OUT_STATES


R = TypeVar("R", bound=tuple[Any, ...])


class Table(Sequence[R]):
    """An immutable sequence of named-tuple rows, stored as one tuple per column.

    100,000 agents are read every minute: rows kept as columns cost no object per agent
    (and so no garbage-collector pass over the whole heap); a row is built only when it
    is looked at. Compares equal to a table, tuple or list holding the same rows.
    """

    __slots__ = ("_columns",)
    _row: Callable[[Iterable[Any]], R]
    _width: int

    def __init__(self, columns: Sequence[Sequence[Any]] | None = None) -> None:
        cols = tuple(map(tuple, columns)) if columns else ((),) * self._width
        if len(cols) != self._width or len({len(c) for c in cols}) != 1:
            raise ValueError(f"{type(self).__name__}: needs {self._width} columns of one length")
        self._columns: tuple[tuple[Any, ...], ...] = cols

    @classmethod
    def of(cls, rows: Iterable[R]) -> Self:
        """A table of ``rows`` (the same object when it already is one)."""
        if isinstance(rows, cls):
            return rows
        listed = [tuple(r) for r in rows]
        if any(len(r) != cls._width for r in listed):
            raise ValueError(f"{cls.__name__}: every row needs {cls._width} fields")
        return cls(tuple(zip(*listed, strict=True)) if listed else None)

    def __len__(self) -> int:
        return len(self._columns[0])

    @overload
    def __getitem__(self, index: int) -> R: ...
    @overload
    def __getitem__(self, index: slice) -> Self: ...
    def __getitem__(self, index: int | slice) -> R | Self:
        if isinstance(index, slice):
            return type(self)([c[index] for c in self._columns])
        return self._row(c[index] for c in self._columns)

    def __iter__(self) -> Iterator[R]:
        return map(self._row, zip(*self._columns, strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Table):
            return type(other) is type(self) and other._columns == self._columns
        if isinstance(other, tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        shown = ", ".join(repr(r) for r in self[:3])
        more = f", ... {len(self) - 3} more" if len(self) > 3 else ""
        return f"{type(self).__name__}([{shown}{more}])"


class Agents(Table[Agent]):
    """The agents of a snapshot, in document order."""

    __slots__ = ()
    _row = Agent._make
    _width = len(Agent._fields)

    @property
    def ids(self) -> tuple[str, ...]:
        return self._columns[0]

    @property
    def types(self) -> tuple[str, ...]:
        return self._columns[1]

    @property
    def states(self) -> tuple[str, ...]:
        return self._columns[2]

    @property
    def skills(self) -> tuple[tuple[str, ...], ...]:
        return self._columns[3]

    @property
    def outbound(self) -> tuple[bool, ...]:
        return self._columns[4]


@dataclass(frozen=True, slots=True)
class Csq:
    name: str
    type: str
    skills: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Campaign:
    """An outbound campaign and the CSQs whose agents it dials for: only to explain an
    agent's ``outbound`` flag (``usage --explain``); the flag alone decides the seat."""

    name: str
    csqs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    #: Any sequence of :class:`Agent` is accepted and kept as an :class:`Agents` table.
    agents: Sequence[Agent] = Agents()
    csqs: tuple[Csq, ...] = ()
    #: Outbound IVR ports in use, where the source knows it (None: not provided).
    outbound_ports: int | None = None
    #: Messages about data the parser accepted but an operator should know of.
    notes: tuple[str, ...] = field(default=(), compare=False)
    #: Agent-based outbound campaigns, where the source knows them (optional).
    campaigns: tuple[Campaign, ...] = ()
    #: ``(state, note)`` for each state that is not a known Finesse state: which of the
    #: ``notes`` is about which state, so a daemon can say each one once per run.
    state_notes: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.agents, Agents):
            object.__setattr__(self, "agents", Agents.of(self.agents))

    @property
    def table(self) -> Agents:
        """The agents as columns (what :func:`~ccx_agent.licensing.consumption.compute` reads)."""
        return Agents.of(self.agents)


_AGENT_KEYS = frozenset({"id", "type", "state", "skills", "outbound", "team"})
_CSQ_KEYS = frozenset({"name", "type", "skills", "id"})
_CAMPAIGN_KEYS = frozenset({"name", "csqs"})
_TOP_KEYS = frozenset({"agents", "csqs", "ports", "campaigns"})
_PORT_KEYS = frozenset({"outbound"})
_REPR_MAX = 60


def _show(value: object) -> str:
    """``repr`` cut to one short line: an error message must never carry a whole document."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than repr() converts (a YAML 1:2:3... number)
        return "a number of thousands of digits"
    return text if len(text) <= _REPR_MAX else f"{text[: _REPR_MAX - 3]}..."


def _kind(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "nothing (null)"
    return names.get(type(value), f"{type(value).__name__} {_show(value)}")


def _unknown(raw: Mapping[Any, Any], allowed: frozenset[str], where: str) -> None:
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        names = ", ".join(sorted(_show(k) for k in unknown))
        expected = ", ".join(sorted(allowed))
        raise SnapshotError(f"{where}: unknown field(s) {names} (expected: {expected})")


#: A JSON escape of a UTF-16 surrogate (``\ud800``): alone, it decodes to a string no
#: UTF-8 can hold (an alert naming the agent could not be stored, nor an answer printed).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _not_unicode(value: str) -> bool:
    """Whether ``value`` holds a lone surrogate (ASCII never does: the common case)."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _str(value: object, where: str, name: str) -> str:
    if isinstance(value, str) and value:
        if _not_unicode(value):
            raise SnapshotError(
                f"{where}: {name}: not valid Unicode text, refused: {_show(value)} holds a "
                "lone UTF-16 surrogate"
            )
        return value
    hint = " (write it in quotes)" if isinstance(value, int | float) else ""
    got = "an empty string" if value == "" else _kind(value) if value is None else _show(value)
    raise SnapshotError(f"{where}: {name}: must be a non-empty string, got {got}{hint}")


def _str_list(value: object, where: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SnapshotError(f"{where}: {name}: must be a list of strings, got {_show(value)}")
    for i, item in enumerate(value):
        _str(item, where, f"{name}[{i}]")
    return tuple(value)


def _state(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SnapshotError(
            f"{where}: state: must be a Finesse state such as READY or LOGOUT, got "
            f"{_kind(value) if value is None else _show(value)}"
        )
    state = value.strip().upper()
    if not state:
        raise SnapshotError(f"{where}: state: must be a Finesse state such as READY or LOGOUT")
    return state


def _where(index: int, raw: object) -> str:
    ident = raw.get("id") if isinstance(raw, Mapping) else None
    return (
        f"agents[{index}] (id {_show(ident)})"
        if ident and isinstance(ident, str)
        else f"agents[{index}]"
    )


def _agent(raw: object, index: int) -> Agent:
    """Validate one agent, wording the first problem found; the reference for the fast path."""
    where = _where(index, raw)
    if not isinstance(raw, Mapping):
        raise SnapshotError(f"{where}: must be a mapping, got {_kind(raw)}")
    _unknown(raw, _AGENT_KEYS, where)
    agent_id = _str(raw.get("id"), where, "id")
    kind = raw.get("type", "agent")
    if not isinstance(kind, str) or kind not in AGENT_TYPES:
        raise SnapshotError(f"{where}: type: must be 'agent' or 'supervisor', got {_show(kind)}")
    state = _state(raw.get("state"), where)
    skills = _str_list(raw.get("skills"), where, "skills")
    outbound = raw.get("outbound", False)
    if not isinstance(outbound, bool):
        raise SnapshotError(f"{where}: outbound: must be true or false, got {_show(outbound)}")
    team = raw.get("team")
    if team is not None and not isinstance(team, str):
        raise SnapshotError(f"{where}: team: must be a string, got {_show(team)}")
    return Agent(agent_id, kind, state, skills, outbound)


def _agents(raw_agents: list[Any]) -> tuple[Agents, list[str], list[tuple[str, str]]]:
    """Every agent, in document order; ids must be unique. Returns the agents, the notes
    and, of those, the ones about a state that is not a Finesse one (with that state)."""
    ids: list[str] = []
    types: list[str] = []
    states: list[str] = []
    skill_col: list[tuple[str, ...]] = []
    outbound_col: list[bool] = []
    checked_states: dict[str, str] = {}  # raw state -> its upper-case form, once checked
    skill_lists: dict[tuple[str, ...], tuple[str, ...]] = {(): ()}  # checked, shared
    good_skills: set[str] = set()  # every skill name checked so far
    notes: list[str] = []
    noted: set[str] = set()
    state_notes: list[tuple[str, str]] = []
    for i, raw in enumerate(raw_agents):
        ident: Any = None
        kind: Any = None
        state: str | None = None
        skills: tuple[str, ...] | None = None
        outbound: Any = None
        # Fast path: a plain dict whose every field is as expected. Any surprise (including
        # the TypeError of an unhashable value) leaves ``state`` or ``skills`` None, and
        # the agent goes the slow path, which words the error or accepts it all the same.
        if type(raw) is dict and raw.keys() <= _AGENT_KEYS:
            ident = raw.get("id")
            kind = raw.get("type", "agent")
            raw_state = raw.get("state")
            raw_skills = raw.get("skills")
            outbound = raw.get("outbound", False)
            team = raw.get("team")
            try:
                if type(raw_state) is str:
                    state = checked_states.get(raw_state)
                if raw_skills is None:
                    skills = ()
                elif type(raw_skills) is list:
                    as_tuple = tuple(raw_skills)
                    skills = skill_lists.get(as_tuple)
                    if skills is None and good_skills.issuperset(as_tuple):
                        skills = skill_lists[as_tuple] = as_tuple
            except TypeError:
                skills = None
            if not (
                type(ident) is str
                and ident
                and not _not_unicode(ident)
                and type(kind) is str
                and kind in AGENT_TYPES
                and (outbound is False or outbound is True)
                and (team is None or type(team) is str)
            ):
                state = None
        if state is None or skills is None:
            agent = _agent(raw, i)
            ident, kind, state, skills, outbound = agent
            # Remember what was checked, so the next agent alike takes the fast path.
            good_skills.update(skills)
            skills = skill_lists.setdefault(skills, skills)
            raw_state = raw.get("state") if isinstance(raw, Mapping) else None
            if isinstance(raw_state, str) and raw_state not in checked_states:
                checked_states[raw_state] = state
                if state not in FINESSE_STATES and state not in noted:
                    noted.add(state)
                    notes.append(
                        f"agents[{i}] (id {_show(ident)}): state {_show(state)} is not "
                        "a known Finesse state; counted as logged in"
                    )
                    state_notes.append((state, notes[-1]))
        ids.append(ident)
        types.append(kind)
        states.append(state)
        skill_col.append(skills)
        outbound_col.append(outbound)
    if len(set(ids)) != len(ids):
        _duplicate(ids)
    return Agents((ids, types, states, skill_col, outbound_col)), notes, state_notes


def _duplicate(ids: list[str]) -> None:
    """Name the first agent whose id an earlier agent already has."""
    first_index: dict[str, int] = {}
    for i, ident in enumerate(ids):
        if first_index.setdefault(ident, i) != i:
            raise SnapshotError(
                f"agents[{i}] (id {_show(ident)}): id: duplicate agent id, "
                f"also agents[{first_index[ident]}]"
            )


def _csq(raw: object, index: int) -> Csq:
    where = f"csqs[{index}]"
    if not isinstance(raw, Mapping):
        raise SnapshotError(f"{where}: must be a mapping, got {_kind(raw)}")
    name = raw.get("name")
    where = f"{where} (name {_show(name)})" if name and isinstance(name, str) else where
    _unknown(raw, _CSQ_KEYS, where)
    name = _str(name, where, "name")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in CSQ_TYPES:
        raise SnapshotError(f"{where}: type: must be VOICE, CHAT or EMAIL, got {_show(kind)}")
    return Csq(name, kind, _str_list(raw.get("skills"), where, "skills"))


def _campaigns(raw: object) -> tuple[Campaign, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SnapshotError(f"snapshot: campaigns: must be a list, got {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        where = f"campaigns[{i}]"
        if not isinstance(item, Mapping):
            raise SnapshotError(f"{where}: must be a mapping with name and csqs, got {_kind(item)}")
        _unknown(item, _CAMPAIGN_KEYS, where)
        out.append(
            Campaign(
                _str(item.get("name"), where, "name"), _str_list(item.get("csqs"), where, "csqs")
            )
        )
    return tuple(out)


#: More outbound ports than any UCCX cluster has: a count past it is a broken source, and
#: must not be reported (SSM would be told a 400-digit usage).
MAX_PORTS = 100_000


def _outbound_ports(ports: object) -> int | None:
    if ports is None:
        return None
    if not isinstance(ports, Mapping):
        raise SnapshotError(f"snapshot: ports: must be a mapping, got {_kind(ports)}")
    _unknown(ports, _PORT_KEYS, "snapshot: ports")
    value = ports.get("outbound")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PORTS:
        raise SnapshotError(
            f"snapshot: ports: outbound: must be a whole number from 0 to {MAX_PORTS}, "
            f"got {_show(value)}"
        )
    return value


def parse_snapshot(doc: Any) -> Snapshot:
    """Validate a decoded snapshot document (the ``file`` source format)."""
    if doc is None:
        raise SnapshotError("snapshot: empty document (for no agents at all, write agents: [])")
    if not isinstance(doc, Mapping):
        raise SnapshotError(f"snapshot: must be a mapping with 'agents', got {_kind(doc)}")
    _unknown(doc, _TOP_KEYS, "snapshot")
    if "agents" not in doc:
        raise SnapshotError("snapshot: agents: missing (for no agents at all, write agents: [])")
    raw_agents = doc["agents"]
    if not isinstance(raw_agents, list):
        raise SnapshotError(
            f"snapshot: agents: must be a list (agents: [] for none), got {_kind(raw_agents)}"
        )
    raw_csqs = doc.get("csqs")
    if raw_csqs is None:
        raw_csqs = []
    if not isinstance(raw_csqs, list):
        raise SnapshotError(f"snapshot: csqs: must be a list, got {_kind(raw_csqs)}")
    agents, notes, state_notes = _agents(raw_agents)
    csqs = tuple(_csq(c, i) for i, c in enumerate(raw_csqs))
    return Snapshot(
        agents,
        csqs,
        _outbound_ports(doc.get("ports")),
        tuple(notes),
        _campaigns(doc.get("campaigns")),
        tuple(state_notes),
    )


# --- the fast path for JSON: typed msgspec structs ------------------------------------------
# Each struct accepts a subset of what parse_snapshot accepts (anything else is a msgspec
# error, and the reference path words it). An optional field defaults to UNSET, not to its
# value, so that the keys the document really holds can be counted (see _colons_prove).

_Name = Annotated[str, msgspec.Meta(min_length=1)]
_Names = tuple[_Name, ...]
# A CSQ's id is not used; any scalar json.loads reads alike (an int of 4,300 digits or more
# json.loads refuses, so a long one goes the reference way).
_CsqId = str | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | float | bool | None


class _AgentDoc(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: _Name
    state: _FinesseState
    type: Literal["agent", "supervisor"] | UnsetType = UNSET
    skills: _Names | UnsetType | None = UNSET
    outbound: bool | UnsetType = UNSET
    team: str | UnsetType | None = UNSET


class _CsqDoc(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: _Name
    type: Literal["VOICE", "CHAT", "EMAIL"]
    skills: _Names | UnsetType | None = UNSET
    id: _CsqId | UnsetType = UNSET


class _CampaignDoc(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: _Name
    csqs: _Names | UnsetType | None = UNSET


class _PortsDoc(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    outbound: Annotated[int, msgspec.Meta(ge=0, le=MAX_PORTS)] | UnsetType | None = UNSET


class _SnapshotDoc(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    agents: list[_AgentDoc]
    csqs: list[_CsqDoc] | UnsetType | None = UNSET
    ports: _PortsDoc | UnsetType | None = UNSET
    campaigns: list[_CampaignDoc] | UnsetType | None = UNSET


_DECODER = msgspec.json.Decoder(_SnapshotDoc)
_TYPE_OR_DEFAULT: dict[Any, str] = {UNSET: "agent", "agent": "agent", "supervisor": "supervisor"}
_OUTBOUND_OR_DEFAULT: dict[Any, bool] = {UNSET: False, False: False, True: True}


def parse_snapshot_json(raw: bytes) -> Snapshot | None:
    """The snapshot in JSON bytes, or None when the reference path must decide.

    Returns exactly what ``parse_snapshot(json.loads(raw))`` returns for every document it
    accepts. None means "not proven here", never "invalid": a document msgspec refuses
    (which includes a state not spelled as Finesse writes it, one to fold to upper case or
    to note), a duplicate agent id, or a key that may be given twice (msgspec, like
    ``json.loads``, keeps the last of two equal keys; see :func:`_colons_prove`). The
    garbage collector is
    paused while decoding: the structs are not tracked, but the tuples and lists are, and
    collections triggered by the allocations of one document would walk it again and again.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    if (b"\\ud" in raw or b"\\uD" in raw) and _SURROGATE_ESCAPE.search(raw):
        return None  # a surrogate, maybe alone: the reference path refuses one by name
    enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            doc = _DECODER.decode(raw)
        except msgspec.DecodeError:  # ValidationError is one too
            return None
        return _from_structs(doc, raw)
    finally:
        if enabled:
            gc.enable()


def _from_structs(doc: _SnapshotDoc, raw: bytes) -> Snapshot | None:
    agents = doc.agents
    n = len(agents)
    # One pass over the structs for all six fields: at 100,000 agents the structs do not
    # fit in the caches, and one pass per field (or a tuple per agent, transposed) costs
    # three times as much in cache misses.
    columns: list[list[Any]] = [[], [], [], [], [], []]
    ids, states, types, skills, outbound, teams = columns
    add_id, add_state, add_type = ids.append, states.append, types.append
    add_skills, add_outbound, add_team = skills.append, outbound.append, teams.append
    for a in agents:
        add_id(a.id)
        add_state(a.state)
        add_type(a.type)
        add_skills(a.skills)
        add_outbound(a.outbound)
        add_team(a.team)
    if len(set(ids)) != n:
        return None  # parse_snapshot names the duplicate, after any other problem
    keys = 6 * n - (
        types.count(UNSET) + skills.count(UNSET) + outbound.count(UNSET) + teams.count(UNSET)
    )
    csqs: list[_CsqDoc] = doc.csqs or []
    campaigns: list[_CampaignDoc] = doc.campaigns or []
    ports = doc.ports
    keys += 1 + sum(x is not UNSET for x in (doc.csqs, doc.ports, doc.campaigns))
    keys += sum(2 + (c.skills is not UNSET) + (c.id is not UNSET) for c in csqs)
    keys += sum(1 + (c.csqs is not UNSET) for c in campaigns)
    keys += isinstance(ports, _PortsDoc) and ports.outbound is not UNSET
    if not _colons_prove(raw, keys, columns, csqs, campaigns):
        return None
    if types.count(UNSET):
        types = list(map(_TYPE_OR_DEFAULT.__getitem__, types))
    if outbound.count(UNSET):
        outbound = list(map(_OUTBOUND_OR_DEFAULT.__getitem__, outbound))
    # One tuple per distinct skill list, shared by the agents that have it (as the
    # reference path does): less memory, and compute's look-ups compare by identity.
    # dict(zip(...)) maps equal lists to one of them, in C.
    shared: dict[Any, tuple[str, ...]] = dict(zip(skills, skills, strict=True))
    shared[None] = shared[UNSET] = ()
    skills = list(map(shared.__getitem__, skills))
    return Snapshot(
        Agents((ids, types, states, skills, outbound)),
        tuple(Csq(c.name, c.type, c.skills or ()) for c in csqs),
        None if ports is None or ports is UNSET or ports.outbound is UNSET else ports.outbound,
        (),  # every state is a Finesse one: nothing to note
        tuple(Campaign(c.name, c.csqs or ()) for c in campaigns),
    )


def _colons_prove(
    raw: bytes,
    keys: int,
    columns: list[list[Any]],
    csqs: list[_CsqDoc],
    campaigns: list[_CampaignDoc],
) -> bool:
    """Whether ``raw`` provably holds no key twice (True), or it may (False).

    Every key of a JSON object is followed by exactly one ``:``, and a ``:`` byte appears
    nowhere else but inside strings. So the colons in the bytes are the keys written plus
    the colons inside strings, and ``keys`` (those the structs kept) is the keys written
    less the duplicates dropped. When the two counts are equal there is no duplicate (nor
    any colon in a string): the usual case, proven by one ``bytes.count``. Otherwise the
    colons in the decoded strings are counted too, unless an escape (``\\u003a``) could
    have written one without the byte, and the counts must then agree exactly.
    """
    colons = raw.count(b":")
    if colons == keys:
        return True
    if b"\\u003a" in raw or b"\\u003A" in raw:
        return False
    ids, _, _, skills, _, teams = columns
    strings: list[Iterable[str]] = [
        ids,
        chain.from_iterable(s for s in skills if s),
        (t for t in teams if type(t) is str),
    ]
    for c in csqs:
        strings.append((c.name, *(c.skills or ()), *((c.id,) if type(c.id) is str else ())))
    for p in campaigns:
        strings.append((p.name, *(p.csqs or ())))
    in_strings = sum("".join(part).count(":") for part in strings)
    return colons == keys + in_strings
