"""The SSM of a what-if run: the real simulator, in process, on the scenario's clock.

The agent talks to it through the same :class:`~ccx_agent.ssm.client.SsmClient` as in
production (every request signed, every response verified); only the transport differs:
the bytes go to :meth:`Simulator.handle` instead of over HTTPS. So ``simulate`` and the
daemon share one code path down to the protocol.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm.client import SsmClient, TransportError
from ccx_agent.ssm.identity import KeyStore
from ccx_agent.ssm.port import (
    Acknowledged,
    Authorized,
    Credentials,
    IdRenewed,
    Registered,
    SsmUnreachable,
    Udi,
)

#: Long enough for any scenario (400 days and more).
TOKEN_LIFETIME = timedelta(days=3650)
#: The token a scenario registers with: it stands for the operator creating a real one in
#: the simulator just before. Any other token is passed to the simulator as it is.
SCENARIO_TOKEN = "scenario-token"  # noqa: S105 - a placeholder, not a secret


#: What an exchange raises while a scenario's SSM is ``unreachable``.
UNREACHABLE = "SSM is unreachable (scenario)"


class InProcessTransport:
    label = "the in-process simulator"

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        #: A scenario's ``ssm: unreachable`` turns this off.
        self.reachable = True

    def post(
        self, body: bytes, now: datetime, *, deadline: float | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        if not self.reachable:
            raise TransportError(UNREACHABLE)
        status, raw = self.simulator.handle(body, now)
        return status, raw, {}


class ScenarioSsm:
    """:class:`SsmPort` for ``simulate``: a client wired to an in-memory simulator."""

    def __init__(
        self,
        entitlements: Mapping[str, int],
        cert_lifetime: timedelta,
        start: datetime,
        key_dir: Path,
    ) -> None:
        self.start = start
        self.simulator = Simulator.in_memory(start, id_lifetime=cert_lifetime)
        issued = itertools.count(1)
        # The same scenario gives the same output: PIIDs are numbered, not random.
        self.simulator.new_piid = lambda: str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"ccx-simulate:{next(issued)}")
        )
        self.purchase(entitlements)
        self.transport = InProcessTransport(self.simulator)
        # One try: a scenario's outage is an outage, and nothing may sleep.
        self.client = SsmClient(
            self.transport, KeyStore(key_dir), [self.simulator.root], attempts=1
        )

    # --- what a scenario changes ------------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self.transport.reachable

    @reachable.setter
    def reachable(self, value: bool) -> None:
        self.transport.reachable = value

    def purchase(self, counts: Mapping[str, int]) -> None:
        for tag, n in counts.items():
            if n > 0:
                self.simulator.add_licenses(tag, n)
            elif n < 0:
                self.simulator.remove_licenses(tag, -n)

    # --- what tests inspect -----------------------------------------------------------

    @property
    def reports(self) -> dict[str, dict[str, Any]]:
        """Every report the server holds, by id, in arrival order."""
        return {str(r["id"]): r for r in self.simulator.reports()}

    @property
    def instances(self) -> dict[str, Udi]:
        """The active instances by PIID."""
        shown = self.simulator.show(self.start)
        return {
            str(i["piid"]): Udi(**i["udi"]) for i in shown["instances"] if i["state"] == "active"
        }

    # --- the port -------------------------------------------------------------------------

    def _check_reachable(self) -> None:
        """During an outage, fail as the client would, without building the request.

        With one try and a transport that refuses at once, the client's exchange ends in
        ``SsmUnreachable(UNREACHABLE)`` after building a CSR (RENEW_ID), signing the
        message and running its retry policy, for nothing: a year-long outage makes tens
        of thousands of such attempts. The result is the same exception
        (tests/scenario/test_simssm.py compares the two paths).
        """
        if not self.transport.reachable:
            raise SsmUnreachable(UNREACHABLE)

    def register(
        self,
        token: str,
        udi: Udi,
        license_type: str,
        now: datetime,
        current: Credentials | None = None,
    ) -> Registered:
        if token == SCENARIO_TOKEN and self.reachable:
            token = self.simulator.create_token(uses=1, expires=TOKEN_LIFETIME, now=now)
        return self.client.register(token, udi, license_type, now, current)

    def renew_id(self, cred: Credentials, now: datetime) -> IdRenewed:
        self._check_reachable()
        return self.client.renew_id(cred, now)

    def authorize(
        self, cred: Credentials, license_type: str, usage: Mapping[str, int], now: datetime
    ) -> Authorized:
        self._check_reachable()
        return self.client.authorize(cred, license_type, usage, now)

    def report(
        self, cred: Credentials, reports: Sequence[Mapping[str, Any]], now: datetime
    ) -> Acknowledged:
        self._check_reachable()
        return self.client.report(cred, reports, now)

    def deregister(self, cred: Credentials, now: datetime) -> None:
        self.client.deregister(cred, now)

    def keep_only(self, cred: Credentials) -> None:
        self.client.keep_only(cred)

    def forget(self) -> None:
        self.client.forget()

    def close(self) -> None:
        self.client.close()
