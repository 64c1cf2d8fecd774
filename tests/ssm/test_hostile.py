"""A slow or hostile SSM, for real, on loopback: it can neither hang the agent nor crash a job.

Each test puts a misbehaving HTTPS server (:mod:`tests.ssm.servers`) between the agent's
real :class:`SsmClient` and the real simulator, or in its place: an answer dripped one
byte at a time (slowloris), a body that never ends, JSON nested 10,000 deep, numbers out
of range, fields of the wrong type, a genuinely signed answer to another nonce. Every one
must end within the exchange's deadline as a communication failure (COMM_FAILED), with
one log line and no traceback, leave the agent's state, credentials, keys and outbox as
they were, and the next good exchange must deliver everything, once.

The deadlines are a second or two of real time: they are what is under test (the server's
drip is paced by the wall clock too). No test waits for a licensing timer.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from ccx_agent.ssm import protocol
from ccx_agent.ssm.client import HttpTransport, SsmClient
from ccx_agent.ssm.identity import KeyStore, load_anchors
from ccx_agent.ssm.port import SsmAborted, SsmUnreachable
from tests.ssm.servers import MisbehavingServer, Reply, drip, endless, free_port, resign
from tests.ssm.test_https import STANDARD, Lab

#: The whole-exchange deadline of the clients under test.
DEADLINE = timedelta(seconds=1)
#: A dripping server sends one byte this often: far inside any per-read timeout.
DRIP = 0.2
#: How long past the deadline an exchange may take to end (thread start-up, TLS close,
#: a loaded test machine).
SLACK = 2.0


@pytest.fixture
def lab(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> Iterator[Lab]:
    """A lab whose log, at the end, holds no traceback: a bad answer is one line."""
    caplog.set_level(logging.DEBUG)
    running = Lab(tmp_path)
    try:
        yield running
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        assert "Traceback" not in caplog.text
    finally:
        running.close()


def message_type(request: bytes) -> str:
    return str(json.loads(request)["type"])


def dripping(server: MisbehavingServer, kind: str) -> Callable[[bytes, Reply], Reply | None]:
    """A relay hook: the simulator's genuine answer to ``kind``, dripped byte by byte."""

    def on_response(request: bytes, reply: Reply) -> Reply | None:
        if message_type(request) != kind:
            return reply
        return Reply(reply.status, b"", stream=drip(server, [reply.body], DRIP))

    return on_response


def resigned(lab: Lab, change: Callable[[dict[str, Any]], None]) -> Callable[..., Reply]:
    """A relay hook: the genuine answer, changed, then signed again with the simulator's
    own key: every signature check passes, only what it says is wrong."""
    authority = lab.sim.authority

    def on_response(request: bytes, reply: Reply) -> Reply:
        return Reply(
            reply.status,
            resign(reply.body, authority.signing_key, authority.signing_cert, change),
        )

    return on_response


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# --- slow drip ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["REPORT_USAGE", "REGISTER", "AUTHORIZE"])
def test_a_dripped_answer_is_cut_at_the_deadline_and_changes_nothing(lab: Lab, kind: str) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the exchange's deadline cuts
    it (the client hangs up), the job ends as a communication failure with the state as
    it was, and the next exchange through a good path delivers, once."""
    relay, path = lab.relay()
    good = lab.agent.ssm
    token = lab.token(uses=1)
    piid = ""
    if kind != "REGISTER":
        assert lab.agent.register(token, lab.now).ok
        piid = lab.agent.state().identity.piid  # type: ignore[union-attr]
        lab.interval(lab.last_start(), {STANDARD: 2})
    lab.sink.take()
    before = lab.snapshot()
    relay.on_response = dripping(path, kind)
    lab.agent.ssm = lab.client(path.url, attempts=1, timeout=DEADLINE)

    started = time.monotonic()
    if kind == "REPORT_USAGE":
        assert lab.agent.flush(lab.now) == 0
        failed = "ENTITLEMENT_REPORT_FAILED"
    elif kind == "AUTHORIZE":
        assert not lab.agent.renew_auth(lab.now).ok
        failed = "AUTH_RENEW_FAILED"
    else:
        assert not lab.agent.register(token, lab.now).ok
        failed = "REGISTER_FAILED"
    took = time.monotonic() - started

    assert path.streaming.is_set(), "the answer never began to drip"
    assert DEADLINE.total_seconds() * 0.9 <= took < DEADLINE.total_seconds() + SLACK
    # The client hung up: the server's drip ended long before the answer's last byte.
    assert path.answered.wait(5)
    ((sent, complete),) = path.answers
    assert not complete and sent < len(relay.exchanges[0][1].body)
    assert path.hung_up[0] - started < DEADLINE.total_seconds() + SLACK
    assert lab.sink.take() == ["COMM_FAILED", failed]
    state = lab.agent.state()
    assert "did not answer within the timeout (1 s for the whole exchange)" in (
        state.last_comm_error or ""
    )
    after = lab.snapshot()
    if kind == "REGISTER":
        # The attempt's key is kept for the next REGISTER (the server may have acted).
        before.pop("keys")
        assert len(after.pop("keys")) == 1
    assert after == before

    relay.on_response = None
    lab.agent.ssm = good
    if kind == "REPORT_USAGE":
        assert lab.agent.flush(lab.now, force=True) == 1
        assert [r["usage"][STANDARD] for r in lab.sim.reports(piid)] == [2]
        assert lab.outbox() == []
    elif kind == "AUTHORIZE":
        assert lab.agent.renew_auth(lab.now).ok
        assert lab.agent.state().last_auth_at == lab.now
    else:
        # The server registered at the drip; the same key and token get the same instance.
        assert lab.agent.register(token, lab.now).ok
        assert len(lab.show()["instances"]) == 1
        assert lab.show()["tokens"] == {"total": 1, "usable": 0}
    assert "COMM_RESTORED" in lab.sink.take()


def test_a_drip_that_never_ends_and_a_fast_body_that_never_ends_are_both_refused(
    lab: Lab,
) -> None:
    """A body without end: dripped, the deadline cuts it; as fast as the client reads,
    the size cap does (after about 1 MiB, not the deadline). Neither changes anything."""
    piid = lab.register()
    lab.interval(lab.last_start(), {STANDARD: 2})
    lab.sink.take()
    before = lab.snapshot()
    good = lab.agent.ssm

    slow = lab.serve(
        lambda srv, req: Reply(200, b"", stream=drip(srv, itertools.repeat(b"["), DRIP))
    )
    fast = lab.serve(lambda srv, req: Reply(200, b"", stream=endless(srv)))
    for server, reason in (
        (slow, "did not answer within the timeout (1 s for the whole exchange)"),
        (fast, f"larger than {protocol.MAX_MESSAGE_BYTES} bytes: refused"),
    ):
        lab.agent.ssm = lab.client(server.url, attempts=1, timeout=DEADLINE)
        started = time.monotonic()
        assert lab.agent.flush(lab.now, force=True) == 0
        assert time.monotonic() - started < DEADLINE.total_seconds() + SLACK
        assert reason in (lab.agent.state().last_comm_error or "")
        assert server.answered.wait(5)
        ((sent, complete),) = server.answers
        assert not complete
        if server is fast:
            assert protocol.MAX_MESSAGE_BYTES <= sent < 16 * protocol.MAX_MESSAGE_BYTES
        assert lab.snapshot() == before
    assert lab.sink.take() == ["COMM_FAILED", "ENTITLEMENT_REPORT_FAILED"]

    lab.agent.ssm = good
    assert lab.agent.flush(lab.now, force=True) == 1
    assert len(lab.sim.reports(piid)) == 1


# --- answers that cannot be read or believed ----------------------------------------------


DEEP = 10_000

#: Raw answers (HTTP 200) that are no JSON object the agent may parse, and the reason.
RAW = {
    "10,000-deep JSON": (b'{"a":' + b"[" * DEEP + b"]" * DEEP + b"}", "nested deeper than 32"),
    "10,000-deep in a string is fine, then garbage": (
        b'{"a":"' + b"[" * DEEP + b'"',
        "not a JSON message",
    ),
    "a 5,000-digit integer": (b'{"n":1' + b"0" * 5000 + b"}", "not a JSON message"),
    "not UTF-8": (b'{"n":"\xff\xfe"}', "not a JSON message"),
    "a float too large": (b'{"n":1e999}', "non-integer number"),
    "NaN": (b'{"n":NaN}', "non-integer number"),
    "a key given twice": (b'{"n":1,"n":2}', "a key is given twice"),
    "an array": (b"[1,2,3]", "must be a JSON object"),
}


@pytest.mark.parametrize("name", sorted(RAW))
def test_an_answer_that_cannot_be_decoded_is_a_communication_failure(lab: Lab, name: str) -> None:
    """Depth, size of a number, encoding, non-integers, duplicate keys: each is a bad
    answer (COMM_FAILED, one line, no traceback, no RecursionError), never a crashed job."""
    raw, reason = RAW[name]
    piid = lab.register()
    lab.interval(lab.last_start(), {STANDARD: 2})
    lab.sink.take()
    before = lab.snapshot()
    good = lab.agent.ssm
    bad = lab.serve(lambda srv, req: Reply(200, raw))
    lab.agent.ssm = lab.client(bad.url, attempts=1)

    assert lab.agent.flush(lab.now) == 0
    assert lab.sink.take() == ["COMM_FAILED", "ENTITLEMENT_REPORT_FAILED"]
    error = lab.agent.state().last_comm_error or ""
    assert "REPORT_USAGE: the response from" in error and reason in error
    assert lab.snapshot() == before
    cred = lab.credentials()
    assert cred is not None
    with pytest.raises(SsmUnreachable, match="was rejected"):
        lab.agent.ssm.authorize(cred, "flex", {STANDARD: 2}, lab.now)

    lab.agent.ssm = good
    assert lab.agent.flush(lab.now, force=True) == 1
    assert len(lab.sim.reports(piid)) == 1


def _nonce(env: dict[str, Any]) -> None:
    env["nonce"] = protocol.new_nonce()


def _huge_count(env: dict[str, Any]) -> None:
    env["body"]["entitlements"] = {STANDARD: 10**30}


def _negative_count(env: dict[str, Any]) -> None:
    env["body"]["entitlements"] = {STANDARD: -1}


def _count_as_text(env: dict[str, Any]) -> None:
    env["body"]["entitlements"] = {STANDARD: "10"}


def _count_as_bool(env: dict[str, Any]) -> None:
    env["body"]["entitlements"] = {STANDARD: True}


def _acked_as_text(env: dict[str, Any]) -> None:
    env["body"]["acked"] = "all"


def _acked_numbers(env: dict[str, Any]) -> None:
    env["body"]["acked"] = [1, 2]


def _body_deep(env: dict[str, Any]) -> None:
    env["body"]["entitlements"] = nested(100)


def _sent_at_number(env: dict[str, Any]) -> None:
    env["sent_at"] = 10**20


def _status_unknown(env: dict[str, Any]) -> None:
    env["status"] = ["OK"]


def _type_unknown(env: dict[str, Any]) -> None:
    env["type"] = {"REPORT_USAGE": 1}


def _error_code_list(env: dict[str, Any]) -> None:
    env["status"] = "ERROR"
    env["error"] = {"code": ["INTERNAL_ERROR"], "message": "x"}


SIGNED = {
    "the right signature over a different nonce": (
        _nonce,
        "NONCE_MISMATCH: the response does not echo the request's nonce",
    ),
    "a count out of range": (_huge_count, "must be an integer 0-2147483647"),
    "a negative count": (_negative_count, "must be an integer 0-2147483647"),
    "a count as text": (_count_as_text, "must be an integer 0-2147483647"),
    "a count as a boolean": (_count_as_bool, "must be an integer 0-2147483647"),
    "acked as text": (_acked_as_text, "body.acked must be a list of ids"),
    "acked as numbers": (_acked_numbers, "body.acked must be a list of ids"),
    "a body 100 deep": (_body_deep, "nested deeper than 32"),
    "sent_at a number": (_sent_at_number, "sent_at must be a non-empty string"),
    "status a list": (_status_unknown, "status must be OK or ERROR"),
    "type an object": (_type_unknown, "unknown message type"),
    "an error code that is a list": (_error_code_list, "error must have a known code"),
}


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_a_signed_answer_that_says_something_impossible_changes_nothing(
    lab: Lab, name: str
) -> None:
    """Signed by the SSM's own key, so only what it says can give it away: another
    nonce, a count out of range or of the wrong type, a field of the wrong type. The
    report waits, nothing else changes, and the next good answer delivers it once (the
    server already has it: it is not stored twice)."""
    change, reason = SIGNED[name]
    relay, path = lab.relay()
    good = lab.agent.ssm
    piid = lab.register()
    lab.interval(lab.last_start(), {STANDARD: 2})
    lab.sink.take()
    before = lab.snapshot()
    relay.on_response = resigned(lab, change)
    lab.agent.ssm = lab.client(path.url, attempts=1)

    assert lab.agent.flush(lab.now) == 0
    assert lab.sink.take() == ["COMM_FAILED", "ENTITLEMENT_REPORT_FAILED"]
    assert reason in (lab.agent.state().last_comm_error or "")
    assert lab.snapshot() == before
    assert len(relay.exchanges) == 1 and len(lab.sim.reports(piid)) == 1  # the server acted

    lab.agent.ssm = good
    assert lab.agent.flush(lab.now, force=True) == 1
    assert len(lab.sim.reports(piid)) == 1
    assert lab.outbox() == []


def test_an_authorize_answer_with_a_count_out_of_range_is_not_believed(lab: Lab) -> None:
    """AUTHORIZE's entitlements are checked as a report's are: 10**30 licenses is no
    answer, the authorization is not renewed, and would not fit the database anyway."""
    relay, path = lab.relay()
    good = lab.agent.ssm
    lab.register()
    lab.sink.take()
    before = lab.snapshot()
    relay.on_response = resigned(lab, _huge_count)
    lab.agent.ssm = lab.client(path.url, attempts=1)
    out = lab.agent.renew_auth(lab.now)
    assert not out.ok and "must be an integer 0-2147483647" in out.message
    assert lab.sink.take() == ["COMM_FAILED", "AUTH_RENEW_FAILED"]
    assert lab.snapshot() == before
    lab.agent.ssm = good
    assert lab.agent.renew_auth(lab.now).ok


# --- stopping -----------------------------------------------------------------------------


def test_abort_cuts_a_dripped_exchange_at_once_and_records_nothing(lab: Lab) -> None:
    """The daemon's stop calls ``abort()`` from another thread: the exchange in flight
    ends at once (not at its deadline), as :class:`SsmAborted`, which the report job
    records nowhere (no COMM_FAILED, no back-off): the report is sent at the next start."""
    relay, path = lab.relay()
    good = lab.agent.ssm
    piid = lab.register()
    lab.interval(lab.last_start(), {STANDARD: 2})
    lab.sink.take()
    before = lab.snapshot()
    state_before = lab.agent.state()
    relay.on_response = dripping(path, "REPORT_USAGE")
    client = lab.client(path.url, attempts=3, timeout=timedelta(seconds=60))
    lab.agent.ssm = client
    sent: list[int] = []
    job = threading.Thread(target=lambda: sent.append(lab.agent.flush(lab.now)))
    job.start()
    assert path.streaming.wait(10), "the answer never began to drip"
    started = time.monotonic()
    client.abort()
    job.join(5)
    assert not job.is_alive() and sent == [0]
    assert time.monotonic() - started < 1.0
    assert lab.sink.take() == []
    assert lab.snapshot() == before
    state = lab.agent.state()
    assert state.comm_ok == state_before.comm_ok
    assert state.report_failures == 0 and state.report_next_attempt is None
    assert len(relay.exchanges) == 1  # an aborted exchange is not tried again
    # And every later one is refused at once, without a connection.
    cred = lab.credentials()
    assert cred is not None
    with pytest.raises(SsmAborted, match="the agent is stopping"):
        client.authorize(cred, "flex", {STANDARD: 2}, lab.now)
    assert len(path.received) == 1

    lab.agent.ssm = good  # the next start
    assert lab.agent.flush(lab.now) == 1
    assert len(lab.sim.reports(piid)) == 1


def test_abort_ends_a_retry_back_off_at_once(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    """A server that is down makes the client wait (1-30 s) between tries: ``abort()``
    ends the wait too, and no further try is made."""
    piid = lab.register()
    lab.interval(lab.last_start(), {STANDARD: 2})
    lab.sink.take()
    before = lab.snapshot()
    transport = HttpTransport(
        f"https://127.0.0.1:{free_port()}/licservice/license", ca_bundle=lab.ca
    )
    # The real back-off (no injected sleep), long enough never to end by itself here.
    client = SsmClient(
        transport,
        KeyStore(lab.agent_dir),
        load_anchors(lab.ca),
        attempts=10,
        budget=timedelta(minutes=5),
    )
    lab.agent.ssm = client
    job = threading.Thread(target=lab.agent.flush, args=(lab.now,))
    job.start()

    def backing_off() -> bool:
        return any("retrying in" in r.getMessage() for r in caplog.records)

    deadline = time.monotonic() + 10
    while not backing_off():
        assert time.monotonic() < deadline, "the client never backed off"
        time.sleep(0.02)
    started = time.monotonic()
    client.abort()
    job.join(5)
    assert not job.is_alive()
    assert time.monotonic() - started < 1.0
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 1
    assert lab.sink.take() == []
    assert lab.snapshot() == before
    transport.close()
    assert lab.sim.reports(piid) == []
