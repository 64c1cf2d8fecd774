"""A test device: a key, a UDI and the requests an agent would send, built with the
shared protocol code (the agent's client is not needed to test the server)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ccx_agent.licensing.timeutil import iso, parse_iso
from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm import protocol
from ccx_agent.ssm.port import Udi
from ccx_agent.ssm.protocol import MessageType, Response

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, udi: Udi) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, udi.uuid),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, udi.serial),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


class Device:
    """One product instance talking to a simulator in process."""

    def __init__(self, sim: Simulator, *, serial: str = "FCH2231A0BC", pid: str = "UCCX-K9"):
        self.sim = sim
        self.key = new_key()
        self.udi = Udi(pid, serial, str(uuid.uuid4()))
        self.piid: str | None = None
        self.cert: x509.Certificate | None = None

    def register_request(
        self, token: str, now: datetime = NOW, license_type: str = "flex", **overrides: Any
    ) -> dict[str, Any]:
        body = {
            "token": token,
            "csr": make_csr(self.key, self.udi),
            "udi": {"pid": self.udi.pid, "serial": self.udi.serial, "uuid": self.udi.uuid},
            "license_type": license_type,
            **overrides,
        }
        return protocol.seal_request(MessageType.REGISTER, body, now, self.key)

    def request(
        self, type_: MessageType, body: dict[str, Any], now: datetime = NOW, **kw: Any
    ) -> dict[str, Any]:
        kw.setdefault("piid", self.piid)
        kw.setdefault("cert", self.cert)
        return protocol.seal_request(type_, body, now, kw.pop("key", self.key), **kw)

    def exchange(
        self, envelope: dict[str, Any], now: datetime = NOW, *, raw: bytes | None = None
    ) -> tuple[int, Response]:
        """Send, and check the answer as the agent would (signature, chain, echo)."""
        data = raw if raw is not None else json.dumps(envelope).encode()
        status, answer = self.sim.handle(data, now)
        return status, protocol.open_response(answer, envelope, now, [self.sim.root])

    def register(self, token: str, now: datetime = NOW, **kw: Any) -> Response:
        status, resp = self.exchange(self.register_request(token, now, **kw), now)
        assert resp.error is None, resp.error
        assert status == 200
        self.piid = resp.body["piid"]
        self.cert = protocol.cert_from_text(resp.body["cert"], "cert")
        return resp

    def send(
        self, type_: MessageType, body: dict[str, Any], now: datetime = NOW
    ) -> tuple[int, Response]:
        return self.exchange(self.request(type_, body, now), now)

    def report(
        self, starts_usage: list[tuple[str, dict[str, int]]], now: datetime = NOW
    ) -> tuple[int, Response]:
        reports = [report(self.piid, start, usage) for start, usage in starts_usage]
        return self.send(MessageType.REPORT_USAGE, {"reports": reports}, now)


def report(piid: str | None, start: str, usage: dict[str, int]) -> dict[str, Any]:
    """A 15-minute interval report as the agent sends it."""
    end = iso(parse_iso(start) + timedelta(minutes=15))
    return {"id": f"{piid}:{start}", "start": start, "end": end, "usage": usage}
