"""The HTTPS transport against real servers on loopback that fail the way networks do: an
answer cut short, a plain-HTTP server on the port, a kept-alive connection the server
dropped unseen, and the retry budget that bounds all the tries of one exchange."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ccx_agent.ssm.client import HttpTransport, SsmClient, build
from ccx_agent.ssm.identity import KeyStore, load_anchors
from ccx_agent.ssm.port import SsmUnreachable
from tests.ssm.servers import Reply, Socks5Proxy, fixed, free_port, hang
from tests.ssm.test_https import Lab

#: How long past a deadline an exchange may take to end on a loaded test machine.
SLACK = 2.0


@pytest.fixture
def lab(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Lab]:
    caplog.set_level(logging.DEBUG)
    running = Lab(tmp_path)
    try:
        yield running
    finally:
        running.close()


def test_an_answer_cut_short_is_a_transport_error_retried_not_a_rejected_response(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """The server announces the whole length, sends half and closes: a network cut, said
    as one and tried again, never "the response was rejected" (a bad signature)."""
    relay, path = lab.relay()
    cuts = [1]

    def cut_once(request: bytes, reply: Reply) -> Reply:
        if not cuts:
            return reply
        cuts.pop()
        return Reply(reply.status, reply.body, cut_after=len(reply.body) // 2)

    relay.on_response = cut_once
    sleeps: list[float] = []
    client = lab.client(path.url, attempts=2, sleeps=sleeps)
    client.ping(None, lab.now)  # the second try gets the whole answer
    assert len(sleeps) == 1 and len(path.received) == 2
    (warning,) = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert "was cut short: connection closed after" in warning, warning
    assert "rejected" not in warning

    cuts.append(1)
    one = lab.client(path.url, attempts=1)
    with pytest.raises(
        SsmUnreachable, match=r"cut short: connection closed after \d+ of \d+ bytes"
    ):
        one.ping(None, lab.now)


def test_a_plain_http_server_on_the_port_is_a_retried_tls_failure_not_a_ca_problem(
    lab: Lab,
) -> None:
    """A TLS error that is not a certificate verification failure (here the port answers
    in plain HTTP) is the network's: tried again, and ``ca_bundle`` is not blamed."""
    server = lab.serve(fixed(200, b"{}"), tls=None)
    sleeps: list[float] = []
    client = lab.client(server.url, attempts=2, sleeps=sleeps)
    with pytest.raises(SsmUnreachable) as info:
        client.ping(None, lab.now)
    assert len(sleeps) == 1
    assert "TLS with https://127.0.0.1:" in str(info.value)
    assert "ca_bundle" not in str(info.value)


def test_only_a_certificate_that_does_not_verify_names_ca_bundle(lab: Lab) -> None:
    """Not the server's CA: one try, and the cause as the TLS library says it."""
    sleeps: list[float] = []
    transport = HttpTransport(lab.running.url)  # the system's CAs: not the simulator's
    client = SsmClient(transport, KeyStore(lab.agent_dir), [], attempts=3, sleep=sleeps.append)
    try:
        with pytest.raises(SsmUnreachable, match=r"check transport\.ca_bundle\): \w") as info:
            client.ping(None, lab.now)
    finally:
        transport.close()
    assert sleeps == []
    assert "certificate" in str(info.value)


def test_a_kept_alive_connection_dropped_unseen_is_retried_on_a_new_one(lab: Lab) -> None:
    """The server closes the kept-alive connection when the next request arrives on it
    (what an idle timeout racing the request looks like): the request goes again at once
    on a new connection, inside the same try: no back-off, no error."""
    relay, path = lab.relay()
    seen = [0]

    def drop_the_second(request: bytes, reply: Reply) -> Reply | None:
        seen[0] += 1
        return None if seen[0] == 2 else reply

    relay.on_response = drop_the_second
    sleeps: list[float] = []
    client = lab.client(path.url, attempts=3, sleeps=sleeps)
    client.ping(None, lab.now)
    client.ping(None, lab.now)  # on the kept-alive connection, which the server drops
    assert sleeps == [] and len(path.received) == 3


def test_a_fresh_connection_closed_unanswered_is_left_to_the_retries(lab: Lab) -> None:
    """Only a reused connection is tried again at once: on a new one a close without an
    answer is the server's doing, and goes through the back-off like any failure."""
    server = lab.serve(lambda _server, _request: None)
    sleeps: list[float] = []
    client = lab.client(server.url, attempts=2, sleeps=sleeps)
    with pytest.raises(SsmUnreachable, match="remote end closed"):
        client.ping(None, lab.now)
    assert len(sleeps) == 1 and len(server.received) == 2


class Clock:
    """The client's retry clock, moved only by its back-off."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_no_try_starts_that_the_retry_budget_cannot_hold(lab: Lab) -> None:
    """``Retry-After: 10`` with a 15 s budget: a second try at 10 s, and no third one at
    20 s, however many attempts are allowed (stop before the delay, not after it)."""
    server = lab.serve(fixed(503, b"busy", {"Retry-After": "10"}))
    clock = Clock()
    transport = HttpTransport(server.url, ca_bundle=lab.ca)
    client = SsmClient(
        transport,
        KeyStore(lab.agent_dir),
        load_anchors(lab.ca),
        attempts=5,
        budget=timedelta(seconds=15),
        sleep=clock.sleep,
        clock=clock,
    )
    try:
        with pytest.raises(SsmUnreachable, match="HTTP 503"):
            client.ping(None, lab.now)
    finally:
        transport.close()
    assert len(server.received) == 2 and clock.now == 1010.0


def test_each_try_is_cut_at_what_is_left_of_the_budget(lab: Lab) -> None:
    """A server that never answers, a 10 s per-try timeout and a 1 s budget: the exchange
    ends after about 1 s, not 10."""
    server = lab.serve(hang)
    transport = HttpTransport(server.url, ca_bundle=lab.ca, timeout=timedelta(seconds=10))
    client = SsmClient(
        transport,
        KeyStore(lab.agent_dir),
        load_anchors(lab.ca),
        attempts=3,
        budget=timedelta(seconds=1),
        sleep=lambda _s: None,
    )
    started = time.monotonic()
    try:
        with pytest.raises(SsmUnreachable, match=r"within the timeout \((?:0\.9\d*|1) s"):
            client.ping(None, lab.now)
    finally:
        transport.close()
    took = time.monotonic() - started
    assert 0.9 <= took < 1 + 3 * SLACK, took
    assert len(server.received) == 1


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_messages_go_through_a_socks5_proxy(lab: Lab, scheme: str) -> None:
    """``transport.proxy: socks5://…`` carries the messages (TLS end to end, verified
    against the simulator's CA); ``socks5h`` lets the proxy resolve the name."""
    proxy = Socks5Proxy()
    transport = HttpTransport(
        lab.running.url, ca_bundle=lab.ca, proxy=f"{scheme}://127.0.0.1:{proxy.port}"
    )
    client = SsmClient(transport, KeyStore(lab.agent_dir), load_anchors(lab.ca), attempts=1)
    try:
        client.ping(None, lab.now)
        client.ping(None, lab.now)  # on the kept-alive connection through the proxy
    finally:
        transport.close()
        proxy.stop()
    assert proxy.targets == [("127.0.0.1", lab.running.port)]


def test_a_dead_socks5_proxy_is_a_retried_proxy_failure(lab: Lab) -> None:
    proxy = Socks5Proxy()
    proxy.stop()  # nothing listens on its port now
    sleeps: list[float] = []
    transport = HttpTransport(
        lab.running.url, ca_bundle=lab.ca, proxy=f"socks5://127.0.0.1:{proxy.port}"
    )
    client = SsmClient(
        transport, KeyStore(lab.agent_dir), load_anchors(lab.ca), attempts=2, sleep=sleeps.append
    )
    try:
        with pytest.raises(SsmUnreachable, match="refused"):
            client.ping(None, lab.now)
    finally:
        transport.close()
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    ("interval", "budget"),
    [
        (timedelta(minutes=15), timedelta(minutes=5)),
        (timedelta(minutes=3), timedelta(minutes=1)),
        (timedelta(seconds=2), timedelta(seconds=30)),  # never less than one try's timeout
    ],
)
def test_the_retry_budget_is_a_third_of_the_report_interval(
    lab: Lab, interval: timedelta, budget: timedelta
) -> None:
    client = build(
        lab.running.url,
        lab.agent_dir,
        ca_bundle=lab.ca,
        timeout=timedelta(seconds=30),
        report_interval=interval,
    )
    assert client is not None
    try:
        assert client.budget == budget
    finally:
        client.close()


def test_the_back_off_between_tries_is_1_to_30_s_never_an_immediate_retry(lab: Lab) -> None:
    """docs/config.md promises 1-30 s between two tries: full jitter alone would draw the
    first wait from 0-1 s and could knock on a refused port again within a millisecond."""

    sleeps: list[float] = []
    client = lab.client(
        f"https://127.0.0.1:{free_port()}/licservice/license", attempts=10, sleeps=sleeps
    )
    with pytest.raises(SsmUnreachable):
        client.ping(None, lab.now)
    assert len(sleeps) == 9
    assert all(1.0 <= s <= 30.0 for s in sleeps), sleeps
