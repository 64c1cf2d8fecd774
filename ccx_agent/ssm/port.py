"""What the agent needs from an SSM, whatever carries it (HTTPS client, in-process simulator).

The agent's jobs depend on this interface only, so ``simulate`` and the daemon run the
same code whichever server answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ccx_agent.errors import AgentError

# Its own module: the state database keeps it (:mod:`ccx_agent.ssm.credentials`).
from ccx_agent.ssm.credentials import Credentials as Credentials  # noqa: PLC0414


class SsmError(AgentError):
    """The server answered and refused (bad token, unknown instance …): retrying won't help.

    Its message may quote what the server said, and a server may echo what it was sent
    (the ID token): :class:`AgentError` scrubs every secret value this process knows of
    from it, before it can reach the database's alerts, syslog, the log or a terminal."""


class SsmRefused(SsmError):
    """A signed refusal from the server, with its protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code


class SsmUnreachable(SsmError):
    """No usable answer (down, timeout, garbage): a communication failure, worth retrying."""


class SsmAborted(SsmError):
    """The agent cut the exchange itself because it is stopping: nothing was learnt about
    the server, so nothing is recorded (no failure, no back-off); what was to be sent is
    sent at the next start."""


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
    credentials: Credentials | None = None


@dataclass(frozen=True, slots=True)
class IdRenewed:
    cert_issued_at: datetime
    cert_expires_at: datetime
    credentials: Credentials | None = None


@dataclass(frozen=True, slots=True)
class Authorized:
    entitlements: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Acknowledged:
    acked: Sequence[str]
    entitlements: Mapping[str, int] = field(default_factory=dict)


class SsmPort(Protocol):
    """Each call is one exchange. :class:`SsmError` means the server refused (a final
    answer for this attempt); :class:`SsmUnreachable` means there was no usable answer."""

    def register(
        self,
        token: str,
        udi: Udi,
        license_type: str,
        now: datetime,
        current: Credentials | None = None,
    ) -> Registered:
        """``current`` is the registration being replaced (``--force``), if any."""
        ...

    def renew_id(self, cred: Credentials, now: datetime) -> IdRenewed: ...

    def authorize(
        self, cred: Credentials, license_type: str, usage: Mapping[str, int], now: datetime
    ) -> Authorized: ...

    def report(
        self, cred: Credentials, reports: Sequence[Mapping[str, Any]], now: datetime
    ) -> Acknowledged: ...

    def deregister(self, cred: Credentials, now: datetime) -> None: ...

    def keep_only(self, cred: Credentials) -> None:
        """The database now holds ``cred``: other local keys may go."""
        ...

    def forget(self) -> None:
        """Wipe the local private key(s): the instance was deregistered."""
        ...

    def close(self) -> None:
        """Release the connections kept alive between exchanges; the owner calls it once,
        when a reload replaces the client or the daemon stops. No call follows."""
        ...
