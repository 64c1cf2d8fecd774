"""What a source saw at one instant: agents with their state and skills, and the CSQs.

Parsing lives here (plain data in, frozen objects out) because the file, command and
scripted sources all produce the same document shape, and one parser gives every one of
them the same precise error messages ("agents[17] (id 'a18'): state: ...").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AGENT_TYPES = frozenset({"agent", "supervisor"})
CSQ_TYPES = frozenset({"VOICE", "CHAT", "EMAIL"})
#: Finesse states in which an agent holds no seat.
LOGGED_OUT_STATES = frozenset({"LOGOUT", "UNKNOWN"})


class SnapshotError(ValueError):
    """A snapshot document that cannot be trusted; the message names the agent and field."""


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    type: str
    state: str
    skills: tuple[str, ...] = ()
    outbound: bool = False

    @property
    def logged_in(self) -> bool:
        return self.state not in LOGGED_OUT_STATES


@dataclass(frozen=True, slots=True)
class Csq:
    name: str
    type: str
    skills: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    agents: tuple[Agent, ...] = ()
    csqs: tuple[Csq, ...] = ()
    #: Outbound IVR ports in use, where the source knows it (None: not provided).
    outbound_ports: int | None = None
    #: Messages about data the parser accepted but an operator should know of.
    notes: tuple[str, ...] = field(default=(), compare=False)


def _str(value: object, where: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise SnapshotError(f"{where}: {name}: must be a non-empty string, got {value!r}")
    return value


def _str_list(value: object, where: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SnapshotError(f"{where}: {name}: must be a list of strings, got {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise SnapshotError(f"{where}: {name}[{i}]: must be a non-empty string, got {item!r}")
    return tuple(value)


_AGENT_KEYS = frozenset({"id", "type", "state", "skills", "outbound", "team"})
_CSQ_KEYS = frozenset({"name", "type", "skills", "id"})


def _agent(raw: object, index: int) -> Agent:
    where = f"agents[{index}]"
    if not isinstance(raw, Mapping):
        raise SnapshotError(f"{where}: must be a mapping, got {type(raw).__name__}")
    ident = raw.get("id")
    where = f"{where} (id {ident!r})" if isinstance(ident, str) else where
    unknown = set(raw) - _AGENT_KEYS
    if unknown:
        raise SnapshotError(f"{where}: unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    agent_id = _str(ident, where, "id")
    kind = raw.get("type", "agent")
    if kind not in AGENT_TYPES:
        raise SnapshotError(f"{where}: type: must be 'agent' or 'supervisor', got {kind!r}")
    state = _str(raw.get("state"), where, "state").upper()
    outbound = raw.get("outbound", False)
    if not isinstance(outbound, bool):
        raise SnapshotError(f"{where}: outbound: must be true or false, got {outbound!r}")
    return Agent(agent_id, kind, state, _str_list(raw.get("skills"), where, "skills"), outbound)


def _csq(raw: object, index: int) -> Csq:
    where = f"csqs[{index}]"
    if not isinstance(raw, Mapping):
        raise SnapshotError(f"{where}: must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    where = f"{where} (name {name!r})" if isinstance(name, str) else where
    unknown = set(raw) - _CSQ_KEYS
    if unknown:
        raise SnapshotError(f"{where}: unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    kind = raw.get("type")
    if kind not in CSQ_TYPES:
        raise SnapshotError(f"{where}: type: must be VOICE, CHAT or EMAIL, got {kind!r}")
    return Csq(_str(name, where, "name"), kind, _str_list(raw.get("skills"), where, "skills"))


def parse_snapshot(doc: Any) -> Snapshot:
    """Validate a decoded snapshot document (the ``file`` source format)."""
    if not isinstance(doc, Mapping):
        raise SnapshotError(f"snapshot: must be a mapping, got {type(doc).__name__}")
    unknown = set(doc) - {"agents", "csqs", "ports"}
    if unknown:
        raise SnapshotError(f"snapshot: unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    raw_agents = doc.get("agents")
    if not isinstance(raw_agents, list):
        raise SnapshotError("snapshot: agents: must be a list (an empty list means no agents)")
    raw_csqs = doc.get("csqs", [])
    if not isinstance(raw_csqs, list):
        raise SnapshotError("snapshot: csqs: must be a list")
    agents = tuple(_agent(a, i) for i, a in enumerate(raw_agents))
    seen: set[str] = set()
    for i, agent in enumerate(agents):
        if agent.id in seen:
            raise SnapshotError(f"agents[{i}] (id {agent.id!r}): id: duplicate agent id")
        seen.add(agent.id)
    csqs = tuple(_csq(c, i) for i, c in enumerate(raw_csqs))
    ports = doc.get("ports")
    outbound_ports: int | None = None
    if ports is not None:
        if not isinstance(ports, Mapping) or set(ports) - {"outbound"}:
            raise SnapshotError("snapshot: ports: must be a mapping with only 'outbound'")
        value = ports.get("outbound")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SnapshotError(
                    f"snapshot: ports.outbound: must be a whole number >= 0, got {value!r}"
                )
            outbound_ports = value
    return Snapshot(agents, csqs, outbound_ports)
