"""The protocol's two steps without a transport: build and sign a request, check its answer.

The online client and the file exchange are both callers of these; here the bytes go to
a real simulator in process (``Simulator.handle``), with no client around them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm import protocol
from ccx_agent.ssm.identity import KeyStore
from ccx_agent.ssm.messages import Messages
from ccx_agent.ssm.port import SsmRefused, SsmUnreachable, Udi

NOW = datetime(2026, 11, 1, tzinfo=UTC)
UDI = Udi("UCCX", "SN1", "00000000-0000-4000-8000-000000000001")


def _ask(sim: Simulator, sent: dict[str, object], now: datetime) -> tuple[int, bytes]:
    return sim.handle(protocol.canonical(sent), now)


def test_a_request_is_built_sealed_and_its_answer_checked_with_no_transport(
    tmp_path: Path,
) -> None:
    sim = Simulator.in_memory(NOW)
    sim.add_licenses("flex-premium-seat", 5)
    messages = Messages(KeyStore(tmp_path), [sim.root], "the test's simulator")
    token = sim.create_token(uses=1, expires=timedelta(days=1), now=NOW)

    register = messages.register(token, UDI, "flex")
    sent = register.seal(NOW)
    status, raw = _ask(sim, sent, NOW)
    done = messages.check(register, sent, status, raw, {}, NOW)
    assert done.piid in {i["piid"] for i in sim.show(NOW)["instances"]}
    assert done.entitlements["flex-premium-seat"] == 5

    # Every seal is a new nonce: a request is sealed again for each try.
    cred = done.credentials
    report = messages.report(cred, [{"id": "r1", "start": "2026-11-01T00:00:00Z"}])
    assert report.seal(NOW)["nonce"] != report.seal(NOW)["nonce"]

    # A DEREGISTER sent again after a lost answer: the refusal "already deregistered"
    # means done, not a refusal.
    deregister = messages.deregister(cred)
    for _ in range(2):
        sent = deregister.seal(NOW)
        status, raw = _ask(sim, sent, NOW)
        assert messages.check(deregister, sent, status, raw, {}, NOW) is None

    # Any other refusal is one.
    authorize = messages.authorize(cred, "flex", {})
    sent = authorize.seal(NOW)
    status, raw = _ask(sim, sent, NOW)
    with pytest.raises(SsmRefused):
        messages.check(authorize, sent, status, raw, {}, NOW)


def test_an_answer_to_another_request_is_rejected_and_says_where_it_came_from(
    tmp_path: Path,
) -> None:
    sim = Simulator.in_memory(NOW)
    messages = Messages(KeyStore(tmp_path), [sim.root], "the exchange file")
    ping = messages.ping(None)
    sent = ping.seal(NOW)
    status, raw = _ask(sim, sent, NOW)
    assert messages.check(ping, sent, status, raw, {}, NOW).instance is None
    other = ping.seal(NOW)  # the same request, another nonce: not what was answered
    with pytest.raises(SsmUnreachable, match="PING: the response from the exchange file was"):
        messages.check(ping, other, status, raw, {}, NOW)
