"""What the agent needs from an SSM, whatever carries it (HTTPS client, in-process simulator).

The agent's jobs depend on this interface only, so ``simulate`` and the daemon run the
same code whichever server answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class SsmError(Exception):
    """The server answered and refused (bad token, unknown instance …): retrying won't help."""


class SsmUnreachable(SsmError):
    """No usable answer (down, timeout, garbage): a communication failure, worth retrying."""


@dataclass(frozen=True, slots=True)
class Udi:
    """Unique device identifier: product id, serial number and a UUID."""

    pid: str
    serial: str
    uuid: str


@dataclass(frozen=True, slots=True)
class Registered:
    piid: str
    cert_issued_at: datetime
    cert_expires_at: datetime
    entitlements: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class IdRenewed:
    cert_issued_at: datetime
    cert_expires_at: datetime


@dataclass(frozen=True, slots=True)
class Authorized:
    entitlements: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Acknowledged:
    acked: Sequence[str]
    entitlements: Mapping[str, int] = field(default_factory=dict)


class SsmPort(Protocol):
    def register(self, token: str, udi: Udi, license_type: str, now: datetime) -> Registered: ...

    def renew_id(self, piid: str, now: datetime) -> IdRenewed: ...

    def authorize(self, piid: str, usage: Mapping[str, int], now: datetime) -> Authorized: ...

    def report(
        self, piid: str, reports: Sequence[Mapping[str, Any]], now: datetime
    ) -> Acknowledged: ...

    def deregister(self, piid: str, now: datetime) -> None: ...
