"""The deadline of a whole exchange, on raw sockets on loopback (no mock).

Each server here is a plain TCP listener whose handler decides, byte by byte, what a
misbehaving peer sends: a TLS handshake dripped one byte at a time, a kept-alive
connection that answers once and then drips, nothing at all. The client is the real
:class:`DeadlineSession` (``requests`` and urllib3 underneath). The deadlines are a
second of real time: they are what is under test.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from ccx_agent.net.deadline import ABORTED, TIMED_OUT
from ccx_agent.net.http import DeadlineSession

#: A dripping peer sends one byte this often.
DRIP = 0.2
#: Per-operation timeouts far longer than the exchange's deadline: only it can end it.
SLOW = (10.0, 10.0)


class RawServer:
    """A TCP listener on 127.0.0.1; ``handler(conn, stop)`` serves each connection."""

    def __init__(self, handler: Callable[[socket.socket, threading.Event], None]) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        # OSError: the client hung up, which is what these tests provoke.
        with conn, contextlib.suppress(OSError):
            self.handler(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        self._accepter.join()
        for thread in self.threads:
            thread.join(5)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


def drip(conn: socket.socket, stop: threading.Event, data: bytes) -> None:
    for i in range(len(data)):
        conn.sendall(data[i : i + 1])
        if stop.wait(DRIP):
            return


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
SLOW_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000


def test_a_tls_handshake_dripped_byte_by_byte_is_cut_at_the_deadline(
    serve: Callable[..., RawServer],
) -> None:
    """The first bytes of a TLS ServerHello, one every 0.2 s: each read gets a byte long
    before its 10 s timeout, so only the deadline, watching the socket from before its
    connect, can end the handshake."""

    def handshake(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(4096)  # the ClientHello
        drip(conn, stop, b"\x16\x03\x03\x40\x00" + b"\x02" * 0x4000)

    server = serve(handshake)
    with DeadlineSession() as session:
        started = time.monotonic()
        with session.exchange(1.0) as exchange, pytest.raises(requests.RequestException):
            session.get(f"https://127.0.0.1:{server.port}/", timeout=SLOW)
        took = time.monotonic() - started
    assert exchange.cancelled == TIMED_OUT
    assert 0.9 <= took < 3


def test_a_kept_alive_connection_that_drips_its_second_answer_is_cut(
    serve: Callable[..., RawServer],
) -> None:
    """The connection comes from the pool, made by an earlier exchange: the new one
    watches it too. And an exchange that has ended cuts nothing any more."""

    def keep_alive(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        conn.sendall(OK)
        read_request(conn)
        drip(conn, stop, SLOW_ANSWER)

    server = serve(keep_alive)
    url = f"http://127.0.0.1:{server.port}/"
    with DeadlineSession() as session:
        with session.exchange(1.0) as first:
            assert session.get(url, timeout=SLOW).text == "ok"
        first.cancel(TIMED_OUT)  # over: this must not touch the pooled connection
        assert first.cancelled is None
        started = time.monotonic()
        with session.exchange(1.0) as second, pytest.raises(requests.RequestException):
            session.get(url, timeout=SLOW).content  # noqa: B018
        took = time.monotonic() - started
    assert second.cancelled == TIMED_OUT
    assert server.accepted == 1  # the second request did go over the kept-alive one
    assert 0.9 <= took < 3


def test_abort_from_another_thread_ends_a_drip_at_once_and_refuses_later_exchanges(
    serve: Callable[..., RawServer],
) -> None:
    began = threading.Event()

    def slow(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        began.set()
        drip(conn, stop, SLOW_ANSWER)

    server = serve(slow)
    url = f"http://127.0.0.1:{server.port}/"
    outcome: list[str | None] = []
    with DeadlineSession() as session:

        def job() -> None:
            with (
                session.exchange(60.0) as exchange,
                contextlib.suppress(requests.RequestException),
            ):
                session.get(url, timeout=SLOW, stream=True).content  # noqa: B018
            outcome.append(exchange.cancelled)

        thread = threading.Thread(target=job)
        thread.start()
        assert began.wait(10)
        started = time.monotonic()
        session.abort()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - started < 1
        assert outcome == [ABORTED]

        # Later exchanges are cut before they connect.
        with session.exchange(60.0) as later:
            assert later.cancelled == ABORTED
            with pytest.raises(requests.RequestException):
                session.get(url, timeout=SLOW)
    assert server.accepted == 1


def test_an_exchange_within_its_deadline_is_not_touched(serve: Callable[..., RawServer]) -> None:
    def prompt(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        conn.sendall(OK)

    server = serve(prompt)
    with DeadlineSession() as session, session.exchange(5.0) as exchange:
        assert session.get(f"http://127.0.0.1:{server.port}/", timeout=SLOW).text == "ok"
    assert exchange.cancelled is None


def test_abort_ends_a_connect_that_hangs(blackhole: int) -> None:
    """A connect to a peer that never completes the TCP handshake is cut by the stop
    too (the socket is watched before it connects), not after ``connect_timeout``."""
    outcome: list[str | None] = []
    with DeadlineSession() as session:

        def job() -> None:
            with (
                session.exchange(60.0) as exchange,
                contextlib.suppress(requests.RequestException),
            ):
                session.get(f"http://127.0.0.1:{blackhole}/", timeout=(30.0, 30.0))
            outcome.append(exchange.cancelled)

        thread = threading.Thread(target=job)
        thread.start()
        thread.join(0.5)  # it is now inside connect (or the test proves less, not wrongly)
        assert thread.is_alive()
        started = time.monotonic()
        session.abort()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - started < 1
    assert outcome == [ABORTED]


def test_the_deadline_bounds_a_connect_that_hangs(blackhole: int) -> None:
    with DeadlineSession() as session:
        started = time.monotonic()
        with session.exchange(0.5), pytest.raises(requests.ConnectionError):
            session.get(f"http://127.0.0.1:{blackhole}/", timeout=(30.0, 30.0))
        assert time.monotonic() - started < 2
