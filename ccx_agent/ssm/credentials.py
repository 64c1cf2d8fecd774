"""The instance's credentials, apart from the rest of :mod:`ccx_agent.ssm.port`: the state
database keeps them, and ``status --check`` (run every minute) reads that database
without the SSM port's protocol and result types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Credentials:
    """What proves the instance's identity: its PIID and ID certificate (DER) with the
    chain of the CA that issued it. Kept in the state database; the private key that the
    certificate certifies is a separate 0600 file (:mod:`ccx_agent.ssm.identity`)."""

    piid: str
    cert: bytes
    chain: tuple[bytes, ...] = ()
    account: str = ""
