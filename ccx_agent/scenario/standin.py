"""An in-process stand-in for SSM, for ``simulate`` until the real protocol lands.

It keeps what a server keeps (entitlements, instances, acknowledged report ids) and
refuses what a server refuses (unknown instance, deregistered instance), but signs
nothing: the signed protocol and its simulator are a later piece of work, after which
``simulate`` drives that simulator in process instead of this class.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ccx_agent.ssm.port import (
    Acknowledged,
    Authorized,
    Credentials,
    IdRenewed,
    Registered,
    SsmError,
    SsmUnreachable,
    Udi,
)


@dataclass
class StandinSsm:
    entitlements: dict[str, int]
    cert_lifetime: timedelta = timedelta(days=365)
    reachable: bool = True
    instances: dict[str, Udi] = field(default_factory=dict)
    #: Every acknowledged report by id, in arrival order (a re-sent id is not counted twice).
    reports: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    #: PIIDs issued so far, deregistered ones included.
    issued: int = 0

    def _check(self, piid: str | None = None) -> None:
        if not self.reachable:
            raise SsmUnreachable("SSM is unreachable (scenario)")
        if piid is not None and piid not in self.instances:
            raise SsmError(f"unknown or deregistered instance {piid}")

    def purchase(self, counts: Mapping[str, int]) -> None:
        for tag, n in counts.items():
            self.entitlements[tag] = max(0, self.entitlements.get(tag, 0) + n)

    def register(
        self,
        token: str,
        udi: Udi,
        license_type: str,
        now: datetime,
        current: Credentials | None = None,
    ) -> Registered:
        self._check()
        if not token:
            raise SsmError("empty registration token")
        # Deterministic (the same scenario gives the same output) and never reissued.
        self.issued += 1
        piid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ccx-sim:{udi.uuid}:{self.issued}"))
        self.instances[piid] = udi
        cred = Credentials(piid, b"")
        return Registered(piid, now, now + self.cert_lifetime, dict(self.entitlements), cred)

    def renew_id(self, cred: Credentials, now: datetime) -> IdRenewed:
        self._check(cred.piid)
        return IdRenewed(now, now + self.cert_lifetime, cred)

    def authorize(
        self, cred: Credentials, license_type: str, usage: Mapping[str, int], now: datetime
    ) -> Authorized:
        self._check(cred.piid)
        return Authorized(dict(self.entitlements))

    def report(
        self, cred: Credentials, reports: Sequence[Mapping[str, Any]], now: datetime
    ) -> Acknowledged:
        self._check(cred.piid)
        acked = []
        for rep in reports:
            self.reports.setdefault(str(rep["id"]), rep)
            acked.append(str(rep["id"]))
        return Acknowledged(acked, dict(self.entitlements))

    def deregister(self, cred: Credentials, now: datetime) -> None:
        self._check(cred.piid)
        del self.instances[cred.piid]

    def keep_only(self, cred: Credentials) -> None:
        return None

    def forget(self) -> None:
        return None
