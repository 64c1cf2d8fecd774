"""The agent and the SSM simulator end to end, over real TLS on loopback.

Every test runs the real simulator (``ccx_agent.simulator.server.start``) and an agent with
a real :class:`Store` and key directory, whose :class:`SsmClient` speaks HTTPS through
``requests`` with the simulator's ``ca.pem`` as its CA bundle. Nothing is mocked: where a
test needs a server that misbehaves (down, 500, 429, garbage, 10 MB, silent, another CA,
a tampering or replaying path) it runs one (:mod:`tests.ssm.servers`).

The simulator reads the real clock (``sent_at`` must be within 10 minutes of it, and
certificates must be valid on it), so the agent's ``now`` is the real time at the start
of each test. Intervals are keyed by their start and only their end must be past, so a
long run (three days of outage) is played as intervals that ended before now. Where only
a simulated clock can do it (an ID certificate that expired), the setup uses the same
simulator state in process at a past instant and the exchange under test is HTTPS.

Each failure must map as docs/protocol.md §6 says: a signed refusal is ``SsmRefused``
(REGISTER_FAILED, no COMM_FAILED), anything else ``SsmUnreachable`` (COMM_FAILED), and
either leaves the agent's state, credentials, keys and outbox as they were.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509

from ccx_agent.agent import Agent
from ccx_agent.config.schema import CommonConfig
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.lifecycle import Authorization, Registration
from ccx_agent.licensing.timeutil import iso
from ccx_agent.scenario.simssm import InProcessTransport
from ccx_agent.simulator import ca
from ccx_agent.simulator.admin import Admin
from ccx_agent.simulator.core import Simulator
from ccx_agent.simulator.server import RunningServer, start
from ccx_agent.ssm import protocol
from ccx_agent.ssm.client import HttpTransport, SsmClient, build
from ccx_agent.ssm.identity import KeyStore, load_anchors
from ccx_agent.ssm.port import Credentials, SsmRefused, SsmUnreachable, Udi
from ccx_agent.ssm.protocol import ErrorCode, ProtocolError
from ccx_agent.store.db import DB_NAME, AlertRow, Store
from tests.ssm.servers import (
    MisbehavingServer,
    Relay,
    Reply,
    fixed,
    flip_digit,
    free_port,
    hang,
    other_authority,
    resign,
    throttle_once,
)

PREMIUM = "flex-premium-seat"
STANDARD = "flex-standard-seat"
OUTBOUND = "flex-outbound-port"
STEP = timedelta(minutes=15)
MIN = timedelta(minutes=1)
UDI = Udi("UCCX", "FCH2231A0BC", "6f1c2f4e-8d0b-4c51-9a57-2f7d8e3b9a10")
REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO / "tests" / "data" / "snapshots" / "contract.yaml"


def config(**sections: Any) -> CommonConfig:
    data: dict[str, Any] = {"license": {"type": "flex"}, "alerts": {"node_id": "uccx1"}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return CommonConfig.model_validate(data)


def wall_clock() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Sink:
    """The agent's alert sink: records what it was given."""

    def __init__(self) -> None:
        self.rows: list[AlertRow] = []

    def __call__(self, rows: Sequence[AlertRow]) -> None:
        self.rows.extend(rows)

    def take(self) -> list[str]:
        """The mnemonics emitted since the last take."""
        out = [r.mnemonic for r in self.rows]
        self.rows.clear()
        return out


class Lab:
    """The simulator over HTTPS, and one agent (real Store, real key directory) using it."""

    def __init__(self, tmp_path: Path, cfg: CommonConfig | None = None, udi: Udi = UDI) -> None:
        self.tmp = tmp_path
        self.ssm_dir = tmp_path / "ssm"
        self.agent_dir = tmp_path / "agent"
        self.now = wall_clock()
        self.server: RunningServer | None = start(self.ssm_dir)
        self.sim.add_licenses(PREMIUM, 1)
        self.sim.add_licenses(STANDARD, 10)
        self.tokens: list[str] = []
        self._transports: list[HttpTransport] = []
        self._closing: list[Any] = []
        self.store = Store(self.agent_dir / DB_NAME)
        self.sink = Sink()
        self.agent = Agent(cfg or config(), self.store, self.client(), udi=udi, emit=self.sink)

    # --- the server -----------------------------------------------------------------------

    @property
    def running(self) -> RunningServer:
        assert self.server is not None, "the simulator is stopped"
        return self.server

    @property
    def sim(self) -> Simulator:
        return self.running.simulator

    @property
    def ca(self) -> Path:
        return ca.ca_path(self.ssm_dir)

    @property
    def tls(self) -> tuple[Path, Path]:
        return ca.tls_files(self.ssm_dir)

    def stop_server(self) -> int:
        """Take the simulator down (its database stays); the port it listened on.

        The agent keeps its client: the stop ends the keep-alive connection it pooled
        (``test_a_stopped_simulator_answers_no_more_requests``).
        """
        port = self.running.port
        self.running.stop()
        self.server = None
        return port

    def restart_server(self, port: int) -> None:
        self.server = start(self.ssm_dir, ("127.0.0.1", port))

    def token(self, **kw: Any) -> str:
        kw.setdefault("now", self.now)
        token = self.sim.create_token(**kw)
        self.tokens.append(token)
        return token

    def show(self) -> dict[str, Any]:
        return self.sim.show(wall_clock())

    # --- the agent's side -----------------------------------------------------------------

    def client(
        self,
        url: str | None = None,
        *,
        attempts: int = 3,
        timeout: timedelta = timedelta(seconds=10),
        sleeps: list[float] | None = None,
    ) -> SsmClient:
        """An HTTPS client like ``build()``'s, but whose back-off never sleeps for real."""
        transport = HttpTransport(
            url or self.running.url,
            ca_bundle=self.ca,
            timeout=timeout,
            connect_timeout=timedelta(seconds=5),
        )
        self._transports.append(transport)
        return SsmClient(
            transport,
            KeyStore(self.agent_dir),
            load_anchors(self.ca),
            attempts=attempts,
            sleep=sleeps.append if sleeps is not None else (lambda _s: None),
        )

    def serve(self, behaviour: Any, **kw: Any) -> MisbehavingServer:
        """A misbehaving server with the simulator's TLS certificate, stopped at the end."""
        server = MisbehavingServer(behaviour, kw.pop("tls", self.tls), **kw)
        self._closing.append(server)
        return server

    def relay(self) -> tuple[Relay, MisbehavingServer]:
        """A path to the real simulator that the test can make misbehave."""
        relay = Relay(self.running.url, self.ca)
        self._closing.append(relay)
        return relay, self.serve(relay)

    def register(self) -> str:
        out = self.agent.register(self.token(), self.now)
        assert out.ok, out.message
        state = self.agent.state()
        assert state.identity is not None
        return state.identity.piid

    def interval(self, start: datetime, usage: dict[str, int]) -> None:
        """Sample every minute of the interval starting at ``start``, then close it."""
        self.agent.sample([start + i * MIN for i in range(15)], usage)
        self.agent.close_intervals(start + STEP)

    def last_start(self, back: int = 1) -> datetime:
        """The start of the interval that ended ``back - 1`` intervals before now's."""
        return self.agent.interval_start(self.now) - back * STEP

    def credentials(self) -> Credentials | None:
        with self.store.read() as tx:
            return tx.credentials()

    def keys(self) -> list[str]:
        return sorted(p.name for p in (self.agent_dir / "keys").glob("*.pem"))

    def outbox(self) -> list[tuple[str, dict[str, Any]]]:
        with self.store.read() as tx:
            return [(i.report_id, i.payload) for i in tx.outbox_batch(10_000)]

    def alert_lines(self) -> list[str]:
        with self.store.read() as tx:
            return [line for row in tx.alerts() for line in row.lines]

    def snapshot(self) -> dict[str, Any]:
        """Everything a failed exchange must leave as it was."""
        state = self.agent.state()
        return {
            "identity": state.identity,
            "registration": state.registration,
            "authorization": state.authorization,
            "last_auth_at": state.last_auth_at,
            "entitlements": dict(state.entitlements),
            "tags": dict(state.tags),
            "credentials": self.credentials(),
            "keys": self.keys(),
            "outbox": self.outbox(),
        }

    def close(self) -> None:
        for item in reversed(self._closing):
            if isinstance(item, Relay):
                item.close()
            else:
                item.stop()
        for transport in self._transports:
            transport.close()
        self.store.close()
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def lab(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Lab]:
    """A lab whose tokens, at the end, appear in no log line and no alert."""
    caplog.set_level(logging.DEBUG)
    running = Lab(tmp_path)
    try:
        yield running
        lines = running.alert_lines()
        for token in running.tokens:
            assert token not in caplog.text
            assert not any(token in line for line in lines)
    finally:
        running.close()


# --- registration end to end ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/licservice/license",
        "/Transportgateway/services/DeviceRequestHandler",
        "/SmartTransport",
    ],
)
def test_register_report_renew_and_deregister_end_to_end(lab: Lab, path: str) -> None:
    """The whole life of an instance through ``build()``'s client (the CLI's wiring), on
    each URL an SSM or SSM On-Prem answers: every request signed, every answer verified,
    and what the server holds agrees with what the agent stored."""
    client = build(lab.running.base_url + path, lab.agent_dir, ca_bundle=lab.ca)
    assert client is not None
    lab.agent.ssm = client
    token = lab.token()
    out = lab.agent.register(token, lab.now)
    assert out.ok, out.message
    state = lab.agent.state()
    assert state.identity is not None
    piid = state.identity.piid
    assert out.message.startswith(f"registered: PIID {piid}, ID certificate valid until ")
    assert state.registration is Registration.REGISTERED
    assert dict(state.entitlements) == {PREMIUM: 1, STANDARD: 10, OUTBOUND: 0}
    assert lab.sink.take() == ["REGISTER_SUCCESS"]

    # The credentials: an ID certificate of the simulator's root naming the PIID, for the
    # one private key on disk (0600 in a 0700 directory).
    cred = lab.credentials()
    assert cred is not None and cred.piid == piid and cred.account == "default"
    cert = x509.load_der_x509_certificate(cred.cert)
    assert protocol.certificate_piid(cert) == piid
    assert cert.issuer == lab.sim.root.subject
    (key_file,) = lab.keys()
    assert stat.S_IMODE((lab.agent_dir / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((lab.agent_dir / "keys" / key_file).stat().st_mode) == 0o600
    (inst,) = lab.show()["instances"]
    assert (inst["piid"], inst["state"], inst["license_type"]) == (piid, "active", "flex")
    assert inst["udi"] == {"pid": UDI.pid, "serial": UDI.serial, "uuid": UDI.uuid}
    assert lab.show()["tokens"] == {"total": 1, "usable": 0}

    # One interval reported and acknowledged: the server holds exactly what was queued.
    start = lab.last_start()
    lab.interval(start, {PREMIUM: 1, STANDARD: 4})
    assert lab.agent.flush(lab.now) == 1
    assert lab.outbox() == []
    (held,) = lab.sim.reports(piid)
    assert (held["id"], held["start"], held["end"]) == (
        f"{piid}:{iso(start)}",
        iso(start),
        iso(start + STEP),
    )
    assert held["usage"] == {PREMIUM: 1, STANDARD: 4, OUTBOUND: 0}

    assert lab.agent.renew_auth(lab.now).ok
    renewed = lab.agent.renew_id(lab.now)
    assert renewed.ok, renewed.message
    new = lab.credentials()
    assert new is not None and new.piid == piid
    new_cert = x509.load_der_x509_certificate(new.cert)
    # A new certificate for the same key: the key file is unchanged.
    assert new_cert.serial_number != cert.serial_number
    assert new_cert.public_key() == cert.public_key()
    assert lab.keys() == [key_file]
    assert lab.sink.take() == ["AUTH_RENEW_SUCCESS", "ID_CERT_RENEW_SUCCESS"]

    out = lab.agent.deregister(lab.now)
    assert (out.ok, out.message) == (True, f"deregistered PIID {piid}")
    # Licenses are still in use: without a registration, evaluation starts counting.
    assert lab.sink.take() == ["DEREGISTER_SUCCESS", "EVAL_START"]
    assert lab.show()["instances"][0]["state"] == "deregistered"
    assert lab.credentials() is None and lab.keys() == []
    assert lab.agent.state().registration is Registration.UNREGISTERED
    client.transport.close()  # type: ignore[attr-defined]


# --- tokens ---------------------------------------------------------------------------------


def _expired(lab: Lab) -> str:
    return lab.token(expires=timedelta(seconds=1), now=lab.now - timedelta(hours=1))


def _used_up(lab: Lab) -> str:
    """A single-use token that another instance (its own state and keys) registered with."""
    token = lab.token(uses=1)
    other_dir = lab.tmp / "other"
    transport = HttpTransport(lab.running.url, ca_bundle=lab.ca)
    client = SsmClient(transport, KeyStore(other_dir), load_anchors(lab.ca))
    store = Store(other_dir / DB_NAME)
    try:
        other = Agent(config(), store, client, udi=Udi("UCCX", "FCH0000OTHER", str(uuid.uuid4())))
        assert other.register(token, lab.now).ok
    finally:
        store.close()
        transport.close()
    return token


def _revoked(lab: Lab) -> str:
    token = lab.token()
    lab.sim.revoke_token(token)
    return token


def _unknown(lab: Lab) -> str:
    token = "AbCdEf" + uuid.uuid4().hex  # well formed, but the server never issued it
    lab.tokens.append(token)
    return token


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (_unknown, "TOKEN_UNKNOWN"),
        (_expired, "TOKEN_EXPIRED"),
        (_used_up, "TOKEN_USED_UP"),
        (_revoked, "TOKEN_REVOKED"),
    ],
)
def test_a_bad_token_is_a_signed_refusal_and_is_never_shown(lab: Lab, make: Any, code: str) -> None:
    """An unusable token is the server's final word (REGISTER_FAILED, not a communication
    failure, no retry), nothing is stored but the pending key, and the token itself is in
    no message, exception or log line (the lab fixture checks the logs)."""
    token = make(lab)
    sleeps: list[float] = []
    lab.agent.ssm = lab.client(sleeps=sleeps)
    instances = len(lab.show()["instances"])
    before = lab.snapshot()
    lab.sink.take()
    out = lab.agent.register(token, lab.now)
    assert not out.ok
    assert out.message.startswith("registration failed: ") and out.message.endswith(f"({code})")
    assert token not in out.message
    assert lab.sink.take() == ["REGISTER_FAILED"]
    assert sleeps == []  # a refusal is final: not retried
    assert lab.agent.state().comm_ok
    assert {**lab.snapshot(), "keys": []} == {**before, "keys": []}
    assert len(lab.show()["instances"]) == instances
    # The exception the client raises says the same, without the token.
    with pytest.raises(SsmRefused) as caught:
        lab.agent.ssm.register(token, UDI, "flex", lab.now)
    assert caught.value.code == code
    assert token not in str(caught.value)


# --- tampering on the path -------------------------------------------------------------------


def test_a_request_with_one_byte_flipped_is_refused_by_the_server(lab: Lab) -> None:
    """A byte changed on the way (the serial of a REGISTER, the usage in a report) breaks
    the request's signature: the server refuses it with a signed BAD_SIGNATURE, so the
    agent sees a refusal (no COMM_FAILED), stores nothing and the server records nothing."""
    relay, path = lab.relay()
    lab.agent.ssm = lab.client(path.url)
    token = lab.token()
    relay.on_request = lambda raw: flip_digit(raw, b'"serial":"FCH')
    out = lab.agent.register(token, lab.now)
    assert not out.ok and out.message.endswith("(BAD_SIGNATURE)")
    assert lab.sink.take() == ["REGISTER_FAILED"]
    assert lab.agent.state().comm_ok and lab.credentials() is None
    assert lab.show()["instances"] == []
    assert lab.show()["tokens"]["usable"] == 1  # the token was not used

    relay.on_request = None
    assert lab.agent.register(token, lab.now).ok
    piid = lab.agent.state().identity.piid  # type: ignore[union-attr]
    lab.interval(lab.last_start(), {PREMIUM: 3})
    lab.sink.take()
    before = lab.snapshot()
    relay.on_request = lambda raw: flip_digit(raw, f'"{PREMIUM}":'.encode())
    assert lab.agent.flush(lab.now) == 0
    # A refusal: the report waits (ENTITLEMENT_REPORT_FAILED), communication is fine.
    assert lab.sink.take() == ["ENTITLEMENT_REPORT_FAILED"]
    assert lab.agent.state().comm_ok
    assert lab.snapshot() == before
    assert lab.sim.reports(piid) == []
    cred = lab.credentials()
    assert cred is not None
    with pytest.raises(SsmRefused) as caught:
        lab.agent.ssm.report(cred, [p for _, p in lab.outbox()], lab.now)
    assert caught.value.code == "BAD_SIGNATURE"

    relay.on_request = None
    assert lab.agent.flush(lab.now, force=True) == 1
    assert [r["usage"][PREMIUM] for r in lab.sim.reports(piid)] == [3]


def test_a_response_with_one_byte_flipped_is_rejected_and_changes_nothing(lab: Lab) -> None:
    """A changed byte in an answer fails its signature: a communication failure that
    changes nothing on the agent. The server did act (registered, stored the report), so
    sending again gets the same instance and the report is held once (docs/protocol.md §5)."""
    relay, path = lab.relay()
    lab.agent.ssm = lab.client(path.url)
    token = lab.token()

    def tamper(request: bytes, reply: Reply) -> Reply:
        return Reply(reply.status, flip_digit(reply.body, b'"entitlements":{'), reply.headers)

    relay.on_response = tamper
    before = lab.snapshot()
    out = lab.agent.register(token, lab.now)
    assert not out.ok and "was rejected" in out.message
    assert lab.sink.take() == ["COMM_FAILED", "REGISTER_FAILED"]
    assert {**lab.snapshot(), "keys": []} == {**before, "keys": []}
    assert len(lab.keys()) == 1  # the pending registration's key, kept for the next try
    (inst,) = lab.show()["instances"]

    relay.on_response = None
    assert lab.agent.register(token, lab.now).ok
    piid = lab.agent.state().identity.piid  # type: ignore[union-attr]
    assert piid == inst["piid"]
    assert lab.show()["tokens"] == {"total": 1, "usable": 0}
    assert lab.sink.take() == ["COMM_RESTORED", "REGISTER_SUCCESS"]

    start = lab.last_start()
    lab.interval(start, {PREMIUM: 1})
    before = lab.snapshot()
    relay.on_response = tamper
    assert lab.agent.flush(lab.now) == 0
    assert lab.sink.take() == ["COMM_FAILED", "ENTITLEMENT_REPORT_FAILED"]
    assert lab.snapshot() == before  # the report is still queued, entitlements as they were
    assert len(lab.sim.reports(piid)) == 1  # ... though the server has it

    relay.on_response = None
    assert lab.agent.flush(lab.now, force=True) == 1
    assert [r["id"] for r in lab.sim.reports(piid)] == [f"{piid}:{iso(start)}"]
    assert lab.sink.take() == ["COMM_RESTORED"]


def test_a_response_signed_by_another_ca_is_not_believed(lab: Lab) -> None:
    """An answer re-signed by a certificate of another CA, content untouched, does not
    chain to the trust anchor: rejected as a communication failure."""
    other = other_authority(lab.tmp / "other-ca", lab.now)
    relay, path = lab.relay()
    relay.on_response = lambda req, reply: Reply(
        reply.status, resign(reply.body, other.signing_key, other.signing_cert)
    )
    lab.agent.ssm = lab.client(path.url)
    before = lab.snapshot()
    out = lab.agent.register(lab.token(), lab.now)
    assert not out.ok and "was rejected" in out.message
    assert lab.sink.take() == ["COMM_FAILED", "REGISTER_FAILED"]
    assert {**lab.snapshot(), "keys": []} == {**before, "keys": []}
    with pytest.raises(SsmUnreachable, match="signing certificate"):
        lab.agent.ssm.register(lab.tokens[0], UDI, "flex", lab.now)


def test_a_refusal_signed_by_another_ca_is_a_communication_failure(lab: Lab) -> None:
    """A "token revoked" from anyone but the SSM (here a server signing with another CA)
    must not pass for the SSM's refusal: it is a communication failure, retried later."""
    other = other_authority(lab.tmp / "other-ca", lab.now)

    def forge(server: MisbehavingServer, raw: bytes) -> Reply:
        error = ProtocolError(ErrorCode.TOKEN_REVOKED, "the registration token was revoked")
        envelope = protocol.seal_response(
            json.loads(raw), wall_clock(), other.signing_key, other.signing_cert, error=error
        )
        return Reply(403, protocol.canonical(envelope))

    forger = lab.serve(forge)
    lab.agent.ssm = lab.client(forger.url)
    out = lab.agent.register(lab.token(), lab.now)
    assert not out.ok and not out.message.endswith("(TOKEN_REVOKED)")
    assert lab.sink.take() == ["COMM_FAILED", "REGISTER_FAILED"]
    with pytest.raises(SsmUnreachable, match=r"HTTP 403 .* was rejected"):
        lab.agent.ssm.register(lab.tokens[0], UDI, "flex", lab.now)
    assert len(forger.received) == 2  # a refusal is not retried, forged or not


def test_a_replayed_response_with_another_nonce_is_rejected(lab: Lab) -> None:
    """A recorded AUTHORIZE answer, genuine and signed, replayed to a later AUTHORIZE
    does not echo the new request's nonce: rejected, the authorization is not renewed."""
    relay, path = lab.relay()
    lab.agent.ssm = lab.client(path.url)
    lab.register()
    assert lab.agent.renew_auth(lab.now).ok
    first = relay.exchanges[-1][1]
    lab.sink.take()
    before = lab.snapshot()
    relay.on_response = lambda req, reply: first
    out = lab.agent.renew_auth(lab.now + MIN)
    assert not out.ok and "nonce" in out.message
    assert lab.sink.take() == ["COMM_FAILED", "AUTH_RENEW_FAILED"]
    assert lab.snapshot() == before


def test_a_response_naming_another_piid_is_rejected(lab: Lab) -> None:
    """Even signed by the SSM's own key, an answer about another instance is not ours:
    an AUTHORIZE answer must echo our PIID, and a REGISTER answer's PIID must be the one
    its ID certificate names."""
    authority = ca.load(lab.ssm_dir)
    stranger = str(uuid.uuid4())

    def rename(envelope: dict[str, Any]) -> None:
        envelope["piid"] = stranger
        if "piid" in envelope["body"]:
            envelope["body"]["piid"] = stranger

    relay, path = lab.relay()
    lab.agent.ssm = lab.client(path.url)
    relay.on_response = lambda req, reply: Reply(
        reply.status, resign(reply.body, authority.signing_key, authority.signing_cert, rename)
    )
    token = lab.token()
    out = lab.agent.register(token, lab.now)
    assert not out.ok and "names another PIID" in out.message
    assert lab.sink.take() == ["COMM_FAILED", "REGISTER_FAILED"]
    assert lab.credentials() is None

    relay.on_response = None
    piid = lab.register()
    lab.sink.take()
    before = lab.snapshot()
    relay.on_response = lambda req, reply: Reply(
        reply.status, resign(reply.body, authority.signing_key, authority.signing_cert, rename)
    )
    out = lab.agent.renew_auth(lab.now)
    assert not out.ok and "names another instance" in out.message
    assert lab.sink.take() == ["COMM_FAILED", "AUTH_RENEW_FAILED"]
    assert lab.snapshot() == before
    assert lab.agent.state().identity.piid == piid  # type: ignore[union-attr]


# --- an expired ID certificate ---------------------------------------------------------------


def test_an_expired_id_certificate_is_refused_and_registering_again_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server refuses a request signed with an ID certificate that is no longer valid
    (CERTIFICATE_EXPIRED, a signed refusal, not a communication failure); registering
    again with a new token is the way out, and replaces the old instance.

    The certificate is made in the past by the same simulator state in process (its CA
    created a month ago, an instance registered three days ago with a one-day lifetime);
    the refusal and the new registration go over HTTPS on the real clock."""
    caplog.set_level(logging.DEBUG)
    now = wall_clock()
    past = now - timedelta(days=3)
    ssm_dir, agent_dir = tmp_path / "ssm", tmp_path / "agent"
    earlier = Simulator.open(ssm_dir, now - timedelta(days=30), id_lifetime=timedelta(days=1))
    earlier.add_licenses(PREMIUM, 2)
    store = Store(agent_dir / DB_NAME)
    sink = Sink()
    in_process = SsmClient(
        InProcessTransport(earlier), KeyStore(agent_dir), [earlier.root], attempts=1
    )
    agent = Agent(config(), store, in_process, udi=UDI, emit=sink)
    try:
        assert agent.register(earlier.create_token(now=past), past).ok
        old = agent.state().identity
        assert old is not None and old.cert_expires_at == past + timedelta(days=1)
        earlier.close()

        with start(ssm_dir) as running:
            client = SsmClient(
                HttpTransport(running.url, ca_bundle=ca.ca_path(ssm_dir)),
                KeyStore(agent_dir),
                load_anchors(ca.ca_path(ssm_dir)),
                sleep=lambda _s: None,
            )
            agent.ssm = client
            agent.housekeeping(now)
            assert agent.state().registration is Registration.REGISTRATION_EXPIRED
            sink.take()
            with store.read() as tx:
                cred = tx.credentials()
            assert cred is not None

            with pytest.raises(SsmRefused) as caught:
                client.authorize(cred, "flex", {PREMIUM: 1}, now)
            assert caught.value.code == "CERTIFICATE_EXPIRED"
            out = agent.renew_id(now)
            assert not out.ok and out.message.endswith("(CERTIFICATE_EXPIRED)")
            assert sink.take() == ["ID_CERT_RENEW_FAILED"]
            assert agent.state().comm_ok
            with store.read() as tx:
                assert tx.credentials() == cred

            # An expired registration needs no --force: a new token, a new instance.
            token = running.simulator.create_token(now=now)
            again = agent.register(token, now)
            assert again.ok, again.message
            new = agent.state().identity
            assert new is not None and new.piid != old.piid
            assert agent.state().registration is Registration.REGISTERED
            states = {i["piid"]: i["state"] for i in running.simulator.show(now)["instances"]}
            assert states == {old.piid: "deregistered", new.piid: "active"}
            assert token not in caplog.text
            client.transport.close()  # type: ignore[attr-defined]
    finally:
        store.close()


# --- servers that fail ------------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("down", "connection refused"),
        ("500", "answered HTTP 500 (3 tries)"),
        ("garbage", "was rejected"),
        ("10MB", f"larger than {protocol.MAX_MESSAGE_BYTES} bytes"),
        ("hang", "did not answer within the timeout"),
        ("tls-other-ca", "TLS verification of"),
    ],
)
def test_a_failing_server_is_a_communication_failure_that_changes_nothing(
    lab: Lab, kind: str, reason: str
) -> None:
    """Whatever the server does wrong, the report waits in the outbox, nothing else
    changes, COMM_FAILED and ENTITLEMENT_REPORT_FAILED say why, and the next delivery to
    a working server sends it (COMM_RESTORED)."""
    piid = lab.register()
    lab.interval(lab.last_start(), {STANDARD: 2})
    lab.sink.take()
    before = lab.snapshot()
    bad: MisbehavingServer | None = None
    attempts, timeout = 3, timedelta(seconds=10)
    if kind == "down":
        url = f"https://127.0.0.1:{free_port()}/licservice/license"
    else:
        if kind == "500":
            bad = lab.serve(fixed(500, b"<html>Internal Server Error</html>"))
        elif kind == "garbage":
            bad = lab.serve(fixed(200, b"\x00\xff{not json at all"))
        elif kind == "10MB":
            # A small send buffer: the server cannot push the body into kernel buffers,
            # so it shows how much the client actually took.
            bad = lab.serve(fixed(200, b"{" + b" " * (TEN_MB - 2) + b"}"), send_buffer=65536)
        elif kind == "hang":
            bad = lab.serve(hang)
            attempts, timeout = 1, timedelta(seconds=0.5)
        else:
            other = other_authority(lab.tmp / "other-ca", lab.now)
            assert other.tls_cert.issuer != lab.sim.root.subject
            bad = lab.serve(fixed(200, b"{}"), tls=ca.tls_files(lab.tmp / "other-ca"))
        url = bad.url
    client = lab.client(url, attempts=attempts, timeout=timeout)
    good = lab.agent.ssm
    lab.agent.ssm = client

    assert lab.agent.flush(lab.now) == 0
    assert lab.sink.take() == ["COMM_FAILED", "ENTITLEMENT_REPORT_FAILED"]
    assert lab.snapshot() == before
    state = lab.agent.state()
    assert not state.comm_ok and reason in (state.last_comm_error or "")
    cred = lab.credentials()
    assert cred is not None
    with pytest.raises(SsmUnreachable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        client.authorize(cred, "flex", {STANDARD: 2}, lab.now)

    if kind == "500":
        assert bad is not None and len(bad.received) == 2 * 3  # 5xx is retried
    if kind == "10MB":
        assert bad is not None and bad.answered.wait(10)
        # Refused after about 1 MiB: the client hung up, it did not read 10 MB.
        assert bad.answers and all(not complete for _, complete in bad.answers)
        assert all(sent < TEN_MB / 2 for sent, _ in bad.answers)
    if kind == "tls-other-ca":
        assert bad is not None and bad.received == []

    lab.agent.ssm = good
    assert lab.agent.flush(lab.now, force=True) == 1
    assert lab.sink.take() == ["COMM_RESTORED"]
    assert len(lab.sim.reports(piid)) == 1


def test_register_while_the_server_is_down_is_retried_then_fails(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection refused is retried (each try logged with the message type and the
    reason, never the token), then the registration fails as a communication failure."""
    sleeps: list[float] = []
    lab.agent.ssm = lab.client(
        f"https://127.0.0.1:{free_port()}/licservice/license", attempts=3, sleeps=sleeps
    )
    before = lab.snapshot()
    out = lab.agent.register(lab.token(), lab.now)
    assert not out.ok and out.message.endswith("connection refused")
    assert lab.sink.take() == ["COMM_FAILED", "REGISTER_FAILED"]
    assert {**lab.snapshot(), "keys": []} == {**before, "keys": []}
    assert len(sleeps) == 2
    retries = [r.getMessage() for r in caplog.records if "failed (try" in r.getMessage()]
    assert len(retries) == 2
    assert retries[0].startswith("REGISTER to https://127.0.0.1:")
    assert "(try 1 of 3): cannot reach" in retries[0]
    assert lab.show()["tokens"]["usable"] == 1


@pytest.mark.parametrize(("retry_after", "waited"), [("0", 0.0), ("3600", 30.0)])
def test_429_is_retried_after_the_servers_retry_after_capped(
    lab: Lab, retry_after: str, waited: float
) -> None:
    """A busy server (429) is asked again after its Retry-After (at most 30 s), and the
    exchange then succeeds: no alert about communication at all."""
    relay = Relay(lab.running.url, lab.ca)
    busy = lab.serve(throttle_once(relay, retry_after))
    sleeps: list[float] = []
    lab.agent.ssm = lab.client(busy.url, sleeps=sleeps)
    try:
        out = lab.agent.register(lab.token(), lab.now)
    finally:
        relay.close()
    assert out.ok, out.message
    assert sleeps == [waited]
    assert len(busy.received) == 2
    assert lab.sink.take() == ["REGISTER_SUCCESS"]
    # Each try carries a new nonce (the server refuses a nonce it has seen).
    nonces = {json.loads(body)["nonce"] for body in busy.received}
    assert len(nonces) == 2


# --- idempotency ----------------------------------------------------------------------------


def test_a_register_whose_response_is_lost_is_sent_again_and_uses_the_token_once(
    lab: Lab,
) -> None:
    """The server registers, but its answers never arrive: the agent keeps the key of the
    attempt, so the next REGISTER (same single-use token) gets the same instance back
    instead of a TOKEN_USED_UP or a second instance."""
    relay, path = lab.relay()
    relay.on_response = lambda req, reply: None  # the connection drops, unanswered
    lab.agent.ssm = lab.client(path.url, attempts=2)
    token = lab.token(uses=1)
    out = lab.agent.register(token, lab.now)
    assert not out.ok and out.message.endswith("remote end closed")
    assert lab.sink.take() == ["COMM_FAILED", "REGISTER_FAILED"]
    assert lab.credentials() is None and lab.agent.state().identity is None
    pending = lab.keys()
    assert len(pending) == 1
    # Both tries reached the server and got the same instance; the token was used once.
    piids = {json.loads(reply.body)["piid"] for _, reply in relay.exchanges}
    assert len(relay.exchanges) == 2 and len(piids) == 1
    (inst,) = lab.show()["instances"]
    assert lab.show()["tokens"] == {"total": 1, "usable": 0}

    relay.on_response = None
    again = lab.agent.register(token, lab.now)
    assert again.ok, again.message
    assert lab.agent.state().identity.piid == inst["piid"]  # type: ignore[union-attr]
    assert [i["piid"] for i in lab.show()["instances"]] == [inst["piid"]]
    assert lab.keys() == pending
    assert lab.sink.take() == ["COMM_RESTORED", "REGISTER_SUCCESS"]


def test_three_days_of_outage_then_every_interval_reaches_the_server_once_in_order(
    lab: Lab,
) -> None:
    """288 intervals (three days) close while the server is down: the outbox keeps them
    and backs off (a few tries an hour, not one per report). When the server is back,
    one delivery run sends them all, oldest first, and the server holds each exactly once.

    The three days are the 288 intervals that ended two hours ago (the server refuses an
    interval that has not ended; it only checks that a message's sent_at is fresh)."""
    piid = lab.register()
    port = lab.stop_server()
    first = lab.last_start(back=288 + 8)
    starts = [first + i * STEP for i in range(288)]
    for n, begin in enumerate(starts):
        lab.interval(begin, {STANDARD: 1 + n % 5, PREMIUM: n % 2})
        lab.agent.flush(begin + STEP)
    queued = lab.outbox()
    assert [rid for rid, _ in queued] == [f"{piid}:{iso(s)}" for s in starts]
    with lab.store.read() as tx:
        tries = tx.outbox_batch(1)[0].attempts
    # Backing off: one interval, doubling, then hourly (72 hours).
    assert 60 <= tries <= 80
    mnemonics = lab.sink.take()
    assert mnemonics[:3] == ["REGISTER_SUCCESS", "COMM_FAILED", "ENTITLEMENT_REPORT_FAILED"]
    assert mnemonics.count("COMM_FAILED") == 1
    # A standing condition: repeated at most once a day (alerts.repeat).
    assert 3 <= mnemonics.count("ENTITLEMENT_REPORT_FAILED") <= 4

    lab.restart_server(port)
    assert lab.agent.flush(lab.now) == 288
    assert lab.outbox() == []
    assert lab.sink.take() == ["COMM_RESTORED"]
    held = lab.sim.reports(piid)
    assert [r["start"] for r in held] == [iso(s) for s in starts]
    assert [r["id"] for r in held] == [rid for rid, _ in queued]
    assert [r["usage"] for r in held] == [p["usage"] for _, p in queued]
    state = lab.agent.state()
    assert state.comm_ok and state.report_failures == 0


def test_a_stopped_simulator_answers_no_more_requests(lab: Lab) -> None:
    """After ``RunningServer.stop()`` the simulator is down for every client, including
    one whose connection pool holds a keep-alive connection from before: the next request
    must find no server (refused or closed), not an answer from a closed database."""
    lab.register()  # the agent's session now pools a keep-alive connection
    client = lab.agent.ssm
    assert client is not None
    cred = lab.credentials()
    assert cred is not None
    lab.running.stop()
    lab.server = None
    with pytest.raises(SsmUnreachable) as caught:
        client.authorize(cred, "flex", {}, lab.now)
    assert "HTTP 500" not in str(caught.value)


def test_deregistration_while_unreachable_wipes_the_local_identity(lab: Lab) -> None:
    """Deregistering must work offline: the credentials and every key file go, the
    unsent reports are dropped, and the message says that the server was not told (it
    still holds the instance as active)."""
    piid = lab.register()
    lab.interval(lab.last_start(), {STANDARD: 1})
    lab.sink.take()
    lab.stop_server()
    out = lab.agent.deregister(lab.now)
    assert out.ok
    assert out.message.startswith(f"deregistered PIID {piid} locally; the server was not told: ")
    assert "connection refused" in out.message
    assert out.message.endswith("(1 unsent report(s) dropped)")
    assert lab.sink.take()[0] == "DEREGISTER_FAILED"
    assert lab.credentials() is None and lab.keys() == [] and lab.outbox() == []
    assert lab.agent.state().registration is Registration.UNREGISTERED
    admin = Admin.for_state_dir(lab.ssm_dir)
    try:
        (inst,) = admin.show(wall_clock())["instances"]
    finally:
        admin.close()
    assert (inst["piid"], inst["state"]) == (piid, "active")


# --- licenses bought mid-run ---------------------------------------------------------------------


def test_a_purchase_mid_run_ends_out_of_compliance(tmp_path: Path) -> None:
    """Over-use past the threshold locks a tag OUT_OF_COMPLIANCE; licenses bought through
    the admin endpoint reach the agent in the next report's acknowledgement, and the
    interval after that is back in compliance."""
    lab = Lab(tmp_path, config(compliance={"ooc_threshold": 2}))
    try:
        piid = lab.register()
        assert lab.agent.state().entitlements[PREMIUM] == 1
        starts = [lab.last_start(back=4 - i) for i in range(4)]
        lab.interval(starts[0], {PREMIUM: 3})
        assert lab.agent.flush(lab.now) == 1
        lab.interval(starts[1], {PREMIUM: 3})
        assert lab.agent.flush(lab.now) == 1
        state = lab.agent.state()
        assert state.tag(PREMIUM).state.value == "OUT_OF_COMPLIANCE"
        assert state.authorization is Authorization.OUT_OF_COMPLIANCE
        assert lab.sink.take() == [
            "REGISTER_SUCCESS",
            "SYSTEM_TO_ENTER_OOC_STATE_SHORTLY",
            "SYSTEM_IN_OOC_STATE",
        ]

        bought = requests.post(
            lab.running.base_url + "/admin/licenses",
            json={"tag": PREMIUM, "count": 5},
            headers={"Authorization": f"Bearer {lab.running.admin_token}"},
            verify=str(lab.ca),
            timeout=10,
        )
        assert bought.status_code == 200 and bought.json()["purchased"] == 6

        # The interval that ran while licenses were bought is judged on what the agent knew.
        lab.interval(starts[2], {PREMIUM: 3})
        assert lab.agent.state().tag(PREMIUM).state.value == "OUT_OF_COMPLIANCE"
        assert lab.agent.flush(lab.now) == 1
        assert lab.agent.state().entitlements[PREMIUM] == 6
        lab.interval(starts[3], {PREMIUM: 3})
        state = lab.agent.state()
        assert state.tag(PREMIUM).state.value == "IN_COMPLIANCE"
        assert state.authorization is Authorization.AUTHORIZED
        assert lab.sink.take() == ["SYSTEM_BACK_IN_COMPLIANCE"]
        assert lab.agent.flush(lab.now) == 1
        assert [r["usage"][PREMIUM] for r in lab.sim.reports(piid)] == [3, 3, 3, 3]
    finally:
        lab.close()


# --- through the command line -------------------------------------------------------------------


def _ccx(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCX_", "REQUESTS_"))}
    return subprocess.run(
        [sys.executable, "-m", "ccx_agent", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_cli_registers_over_https_and_status_shows_it(tmp_path: Path) -> None:
    """``ccx-agent register TOKEN`` as an operator runs it, with a token from
    ``ccx-agent ssm token create``, against the simulator over HTTPS; ``status --json``
    then reads the registration from the database. The token is never echoed back."""
    ssm_dir = tmp_path / "ssm"
    with start(ssm_dir) as running:
        running.simulator.add_licenses(STANDARD, 5)
        # The operator's second terminal: the simulator's admin command, on the database
        # the running server uses, prints the new token alone.
        made = _ccx("ssm", "--state-dir", ssm_dir, "token", "create")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token and "\n" not in token
        cfg = tmp_path / "ccx-agent.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "state_dir": str(tmp_path / "agent"),
                    "license": {"type": LicenseType.FLEX.value},
                    "alerts": {"node_id": "uccx1"},
                    "identity": {"serial": "FCH-CLI-0001"},
                    "transport": {"url": running.url, "ca_bundle": str(running.ca_path)},
                    "source": {"kind": "file", "path": str(SNAPSHOT)},
                },
                indent=2,
            )
        )
        done = _ccx("--config", cfg, "register", token)
        assert done.returncode == 0, done.stderr
        (inst,) = running.simulator.show(wall_clock())["instances"]
        piid = inst["piid"]
        assert done.stdout.startswith(f"registered: PIID {piid}, ID certificate valid until ")
        assert token not in done.stdout + done.stderr
        assert inst["udi"]["serial"] == "FCH-CLI-0001"

        shown = _ccx("--config", cfg, "status", "--json")
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert doc["registration"]["state"] == "REGISTERED"
        assert doc["registration"]["piid"] == piid
        assert token not in shown.stdout + shown.stderr
