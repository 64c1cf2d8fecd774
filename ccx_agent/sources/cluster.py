"""The UCCX HA pair: which node to read, and what to say when that changes.

A UCCX cluster is one or two nodes (publisher, subscriber). Agents log in to the Finesse
of the master node; the other node's Finesse is out of service and, where it answers at
all, reports nobody logged in. So the node to read is decided at every sample from what
each Finesse says of itself in its documented ``GET /finesse/api/SystemInfo``
(``<status>IN_SERVICE</status>`` or ``OUT_OF_SERVICE``), never from which node was named
first:

* **Live state** (who is logged in) only from a Finesse that says IN_SERVICE. A node that
  says OUT_OF_SERVICE, or does not answer, is never read for agents: reading it would
  give a sample of nobody, which under-reports usage.
* **Configuration** (the Admin API's reads of the replicated database) from the node
  whose Finesse is in service, else from the other one (:func:`config_order`).
* **Failover inside one sample**: when the node in service fails (refuses, times out,
  answers 5xx or nonsense), the other node is asked again whether it is now in service,
  and read if it is (:class:`~ccx_agent.sources.uccx.UccxSource` does the reading).
* **Island mode** (a network split: both Finesse IN_SERVICE): both are read and each
  agent is counted once (:func:`union`, by login id), never twice.

``/uccx/isDBMaster`` is not used: Finesse's SystemInfo is the documented answer to
"where are the agents", and the database master is not always the Finesse master.

This module does no I/O: it parses, orders, merges and describes, so the decisions are
tested without a network and the reading stays in :mod:`ccx_agent.sources.uccx`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ccx_agent.licensing.alerts import Alert, Mnemonic
from ccx_agent.licensing.timeutil import iso
from ccx_agent.sources.safexml import XmlError, parse_xml

SYSTEM_INFO_PATH = "/finesse/api/SystemInfo"
IN_SERVICE = "IN_SERVICE"
OUT_OF_SERVICE = "OUT_OF_SERVICE"
#: Finesse states of a user who is not logged in (such a user takes no license).
NOT_LOGGED_IN = frozenset({"LOGOUT", "UNKNOWN"})


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """What one Finesse says of itself."""

    #: ``IN_SERVICE``, ``OUT_OF_SERVICE`` (any other value is not in service either).
    status: str
    #: ``statusReason``, when Finesse gives one.
    reason: str = ""
    #: The host names of the cluster's nodes as Finesse knows them.
    primary: str = ""
    secondary: str = ""

    @property
    def in_service(self) -> bool:
        return self.status == IN_SERVICE


def parse_system_info(body: bytes) -> SystemInfo:
    """``GET /finesse/api/SystemInfo``: ``<SystemInfo><status>`` (required), and
    ``statusReason``, ``primaryNode/host``, ``secondaryNode/host`` where present."""
    root = parse_xml(body, "SystemInfo")
    status = (root.findtext("status") or "").strip().upper()
    if not status:
        raise XmlError("SystemInfo: no status")
    return SystemInfo(
        status,
        (root.findtext("statusReason") or "").strip(),
        (root.findtext("primaryNode/host") or "").strip(),
        (root.findtext("secondaryNode/host") or "").strip(),
    )


@dataclass(frozen=True, slots=True)
class Probe:
    """One node's Finesse at one sample: its SystemInfo, or why it could not be had."""

    node: int
    #: The Finesse base URL (for messages).
    url: str
    info: SystemInfo | None = None
    #: The failure of the SystemInfo request (a complete one-line message).
    error: str | None = None

    @property
    def in_service(self) -> bool:
        return self.info is not None and self.info.in_service

    def why_not(self) -> str:
        """Why this node is not read for agents, in one line."""
        if self.error is not None:
            return self.error
        assert self.info is not None
        reason = f" ({self.info.reason})" if self.info.reason else ""
        return (
            f"Finesse {self.url} is {self.info.status}{reason}: not read for agents "
            "(a Finesse out of service reports nobody logged in)"
        )


def config_order(probes: Sequence[Probe]) -> list[int]:
    """The nodes to read the configuration from, best first: those whose Finesse is in
    service, then those that answered out of service, then those that did not answer;
    in the order written within each."""

    def rank(probe: Probe) -> int:
        if probe.in_service:
            return 0
        return 1 if probe.info is not None else 2

    return [p.node for p in sorted(probes, key=rank)]


@dataclass(frozen=True, slots=True)
class User:
    """One Finesse user: who is logged in, in which state (here, not in ``uccx.py``,
    which imports this module: the cluster's union of users needs the type)."""

    login_id: str
    state: str
    roles: tuple[str, ...]


def union(lists: Iterable[Sequence[User]]) -> tuple[list[User], int]:
    """The users of several Finesse lists, each login id (ignoring case) once, and how
    many were listed more than once.

    The first list's entry is kept, unless it is logged out there and logged in in a
    later one: an agent logged in on either side of an island takes a license, once.
    """
    out: list[User] = []
    where: dict[str, int] = {}
    twice = 0
    for users in lists:
        for user in users:
            key = user.login_id.casefold()
            i = where.get(key)
            if i is None:
                where[key] = len(out)
                out.append(user)
                continue
            twice += 1
            if out[i].state in NOT_LOGGED_IN and user.state not in NOT_LOGGED_IN:
                out[i] = user
    return out, twice


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one sample's two parts came from: ``status`` and ``usage`` name them."""

    #: The Admin API base URL the configuration in use was read from.
    configuration: str
    #: The Finesse base URLs the live state was read from (two in island mode).
    live_state: tuple[str, ...]
    #: Both Finesse said IN_SERVICE (island mode).
    island: bool = False
    #: The configuration is an older one, kept because its refresh failed.
    configuration_kept: bool = False
    #: The node the live state was read from failed first (a failover in this sample).
    failed_over: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "configuration_from": self.configuration,
            "configuration_kept": self.configuration_kept,
            "live_state_from": list(self.live_state),
            "island": self.island,
        }

    def text(self) -> str:
        kept = " (kept: its refresh failed)" if self.configuration_kept else ""
        live = " and ".join(self.live_state)
        island = (
            " (island mode: both nodes in service, each agent counted once)" if self.island else ""
        )
        return f"configuration from {self.configuration}{kept}, live state from {live}{island}"


class Watch:
    """Says once what changed between samples: the master moved, island mode began or
    ended. Its messages, with their log level, go to the log; nothing here decides a
    count."""

    def __init__(self) -> None:
        self.last: Origin | None = None

    def observe(self, origin: Origin) -> list[tuple[int, str]]:
        last, self.last = self.last, origin
        if last is None:
            out = [(logging.INFO, f"reading UCCX: {origin.text()}")]
            if origin.island:
                out.append((logging.WARNING, island_message(origin)))
            return out
        out = []
        live = " and ".join(origin.live_state)
        if origin.island and not last.island:
            out.append((logging.WARNING, island_message(origin)))
        elif last.island and not origin.island:
            out.append((logging.WARNING, f"UCCX island mode ended: live state from {live} only"))
        elif origin.live_state != last.live_state and not origin.island:
            was = " and ".join(last.live_state)
            out.append(
                (logging.WARNING, f"UCCX master changed: live state now from {live} (was {was})")
            )
        if origin.configuration != last.configuration:
            out.append(
                (
                    logging.INFO,
                    f"UCCX configuration now read from {origin.configuration} "
                    f"(was {last.configuration})",
                )
            )
        return out


def island_message(origin: Origin) -> str:
    return (
        f"UCCX island mode: both Finesse nodes say IN_SERVICE "
        f"({' and '.join(origin.live_state)}); both are read and each agent is counted "
        "once (by login id) until the nodes agree on one master again"
    )


def origin_change(
    saved: Mapping[str, Any] | None, origin: Origin, now: datetime
) -> tuple[dict[str, Any], list[Alert]]:
    """What the daemon keeps for ``status`` about ``origin`` at ``now``, and the alerts of
    the change from ``saved`` (what it kept before, maybe in an earlier run).

    Island mode raises ``UCCX_ISLAND_MODE`` once when it begins and
    ``UCCX_ISLAND_MODE_ENDED`` once when it ends, across restarts too (``saved`` says
    whether it was on). ``since`` is when this origin began to be the one in use.
    """
    doc = origin.as_json()
    same = saved is not None and {k: saved.get(k) for k in doc} == doc
    doc["since"] = saved.get("since") if same and saved is not None else iso(now)
    was_island = bool(saved and saved.get("island"))
    nodes = " and ".join(origin.live_state)
    alerts: list[Alert] = []
    if origin.island and not was_island:
        alerts.append(
            Alert(
                Mnemonic.UCCX_ISLAND_MODE,
                f"both Finesse nodes say IN_SERVICE ({nodes}): each agent is counted once "
                "(by login id) until they agree on one master",
                data={"live_state_from": list(origin.live_state)},
            )
        )
    elif was_island and not origin.island:
        alerts.append(
            Alert(
                Mnemonic.UCCX_ISLAND_MODE_ENDED,
                f"one master again: live state from {nodes}",
                data={"live_state_from": list(origin.live_state)},
            )
        )
    return doc, alerts
