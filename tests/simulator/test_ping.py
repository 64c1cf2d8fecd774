"""PING (docs/protocol.md §3): a signed exchange that changes nothing on the server, for
``ccx-agent doctor``; by a registered instance it proves the server still trusts it."""

from __future__ import annotations

import json
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm import protocol
from ccx_agent.ssm.protocol import MessageType
from tests.simulator.helpers import NOW, Device


def _unregistered_ping(key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey):  # type: ignore[no-untyped-def]
    body = {"key": protocol.public_key_text(key.public_key())}
    return protocol.seal_request(MessageType.PING, body, NOW, signer)


def test_an_unregistered_ping_is_answered_and_signed(sim: Simulator) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    envelope = _unregistered_ping(key, key)
    status, answer = sim.handle(json.dumps(envelope).encode(), NOW)
    resp = protocol.open_response(answer, envelope, NOW, [sim.root])
    assert status == 200 and resp.error is None
    assert resp.body == {"instance": None}
    assert sim.show(NOW)["instances"] == []


def test_a_ping_signed_by_another_key_than_it_names_is_refused(sim: Simulator) -> None:
    named, signer = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    envelope = _unregistered_ping(named, signer)
    status, answer = sim.handle(json.dumps(envelope).encode(), NOW)
    resp = protocol.open_response(answer, envelope, NOW, [sim.root])
    assert status == 401 and resp.error is not None
    assert resp.error.code.value == "BAD_SIGNATURE"


def test_a_registered_ping_changes_nothing_not_even_the_last_contact(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    before = sim.show(NOW + timedelta(hours=1))
    status, resp = dev.send(MessageType.PING, {}, NOW + timedelta(hours=1))
    assert status == 200 and resp.error is None
    assert resp.body == {"instance": "active", "license_type": "flex"}
    assert sim.show(NOW + timedelta(hours=1)) == before
    # A report, by contrast, is a contact.
    dev.send(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}}, NOW + timedelta(hours=1))
    assert sim.show(NOW + timedelta(hours=1)) != before


def test_a_deregistered_instance_is_refused_as_for_any_message(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    dev.send(MessageType.DEREGISTER, {})
    status, resp = dev.send(MessageType.PING, {}, NOW + timedelta(minutes=1))
    assert status == 410 and resp.error is not None
    assert resp.error.code.value == "INSTANCE_DEREGISTERED"
