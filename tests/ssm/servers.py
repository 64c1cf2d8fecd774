"""Real HTTPS servers on loopback that misbehave, for the agent's end-to-end tests.

Each is a ``ThreadingHTTPServer`` on ``127.0.0.1:0`` behind TLS. By default it presents
the simulator's own TLS certificate (``tls_files(state_dir)``), so the agent's
``transport.ca_bundle`` (the simulator's ``ca.pem``) verifies it and the test reaches the
part it is about: what the server *says*. What it says is a :data:`Behaviour`: a fixed
answer, a 10 MB body, silence, an answer dripped a byte at a time or one that never ends
(:attr:`Reply.stream`), or a :class:`Relay` that forwards to the real simulator and may
change a byte on the way in or out, replay an old answer, or re-sign an answer.

Nothing here mocks the client: the agent's ``requests`` session talks TLS to a socket.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ccx_agent.simulator.ca import Authority, create_authority, save
from ccx_agent.ssm import protocol

#: Where the agent POSTs (the simulator's direct path); these servers answer any path.
PATH = "/licservice/license"
CHUNK = 64 * 1024


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: When set, the answer is these pieces, each written as it comes, without a
    #: Content-Length (the end of the connection ends it): ``body`` is not sent.
    stream: Iterable[bytes] | None = None
    #: When set, only this many bytes of ``body`` are sent (its whole length announced),
    #: then the connection is closed: an answer cut short.
    cut_after: int | None = None


#: What a server does with one request body: a reply, or None to close the connection
#: without a word (a lost response).
Behaviour = Callable[["MisbehavingServer", bytes], Reply | None]


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    owner: MisbehavingServer

    def server_bind(self) -> None:
        # No reverse DNS look-up of the host name: it can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (TLS refused, read timeout, size cap) is what the tests
        # provoke; no traceback on stderr.
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Httpd
    protocol_version = "HTTP/1.1"
    timeout = 10.0

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        owner = self.server.owner
        if owner.send_buffer is not None:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, owner.send_buffer)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with owner.lock:
            owner.received.append(body)
        reply = owner.behaviour(owner, body)
        if reply is None:
            self.close_connection = True
            return
        if reply.stream is not None:
            self._stream(reply)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        sent, complete = 0, True
        body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
        try:
            for i in range(0, len(body), CHUNK):
                self.wfile.write(body[i : i + CHUNK])
                sent += min(CHUNK, len(body) - i)
        except OSError:
            complete = False
            self.close_connection = True
        if reply.cut_after is not None:
            complete = False
            self.close_connection = True
        with owner.lock:
            owner.answers.append((sent, complete))
        owner.answered.set()

    def _stream(self, reply: Reply) -> None:
        owner = self.server.owner
        self.close_connection = True
        sent, complete = 0, True
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            assert reply.stream is not None
            for piece in reply.stream:
                self.wfile.write(piece)
                sent += len(piece)
        except OSError:
            complete = False
        with owner.lock:
            owner.answers.append((sent, complete))
            owner.hung_up.append(time.monotonic())
        owner.answered.set()


class MisbehavingServer:
    """An HTTPS server on 127.0.0.1 whose every POST is answered by ``behaviour``."""

    def __init__(
        self,
        behaviour: Behaviour,
        tls: tuple[Path, Path] | None,
        *,
        send_buffer: int | None = None,
    ) -> None:
        """``tls`` None: plain HTTP on the port (what a client expecting TLS meets when
        the URL names the wrong port)."""
        self.behaviour = behaviour
        self.send_buffer = send_buffer
        self.lock = threading.Lock()
        #: Request bodies in arrival order.
        self.received: list[bytes] = []
        #: Per answer written: (bytes the client took, whether it took them all).
        self.answers: list[tuple[int, bool]] = []
        #: When each streamed answer ended (``time.monotonic()``): written whole, or the
        #: client hung up.
        self.hung_up: list[float] = []
        #: Set when a streamed answer has begun (its headers are out).
        self.streaming = threading.Event()
        self.answered = threading.Event()
        #: Set at stop: a server holding a request open lets go.
        self.released = threading.Event()
        self._httpd = _Httpd(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{PATH}"

    def stop(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> MisbehavingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- behaviours ----------------------------------------------------------------------------


def fixed(status: int, body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    """The same answer to everything (500, garbage with 200, a 10 MB body …)."""

    def answer(server: MisbehavingServer, request: bytes) -> Reply:
        return Reply(status, body, dict(headers or {}))

    return answer


def throttle_once(then: Behaviour, retry_after: str) -> Behaviour:
    """429 with ``Retry-After`` to the first request, then ``then`` (a busy server)."""

    def answer(server: MisbehavingServer, request: bytes) -> Reply | None:
        if len(server.received) == 1:
            return Reply(429, b'{"error": "slow down"}', {"Retry-After": retry_after})
        return then(server, request)

    return answer


def hang(server: MisbehavingServer, request: bytes) -> Reply | None:
    """Read the request, then say nothing until the test ends (the client's read timeout
    is what ends the exchange)."""
    server.released.wait(30)
    return None


def drip(server: MisbehavingServer, data: Iterable[bytes], every: float) -> Iterator[bytes]:
    """``data`` one byte at a time, ``every`` seconds apart (slowloris): each read of the
    client gets a byte long before any per-read timeout. Stops when the server stops."""
    server.streaming.set()
    for piece in data:
        for i in range(len(piece)):
            yield piece[i : i + 1]
            if server.released.wait(every):
                return


def endless(server: MisbehavingServer, piece: bytes = b" " * 65536) -> Iterator[bytes]:
    """A body that never ends, as fast as the client takes it."""
    server.streaming.set()
    for chunk in itertools.repeat(piece):
        if server.released.is_set():
            return
        yield chunk


class Relay:
    """Forward each request to the real simulator and relay its answer.

    The hooks stand for whoever sits on the path: ``on_request`` may change the bytes
    before they go on, ``on_response`` may change, replace or drop (None) the answer.
    Every exchange as the simulator saw it is kept in ``exchanges``.
    """

    def __init__(self, upstream: str, ca_bundle: Path) -> None:
        self.upstream = upstream
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(ca_bundle)
        self.on_request: Callable[[bytes], bytes] | None = None
        self.on_response: Callable[[bytes, Reply], Reply | None] | None = None
        self.exchanges: list[tuple[bytes, Reply]] = []

    def __call__(self, server: MisbehavingServer, request: bytes) -> Reply | None:
        sent = self.on_request(request) if self.on_request else request
        resp = self.session.post(
            self.upstream,
            data=sent,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        reply = Reply(resp.status_code, resp.content)
        self.exchanges.append((sent, reply))
        return self.on_response(sent, reply) if self.on_response else reply

    def close(self) -> None:
        self.session.close()


# --- what a tampering path does to the bytes -------------------------------------------------


def flip_digit(raw: bytes, marker: bytes) -> bytes:
    """``raw`` with one byte changed: the first digit after ``marker``, XOR 1 (``3`` ->
    ``2``), so the JSON stays valid and only the signature can tell."""
    at = raw.index(marker) + len(marker)
    while not chr(raw[at]).isdigit():
        at += 1
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]


def resign(
    raw: bytes,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    change: Callable[[dict[str, Any]], None] | None = None,
) -> bytes:
    """The envelope ``raw``, changed by ``change``, signed again by ``key`` / ``cert``."""
    envelope = json.loads(raw)
    if change is not None:
        change(envelope)
    envelope["cert"] = protocol.cert_to_text(cert)
    envelope["chain"] = []
    return protocol.canonical(protocol.sign(envelope, key))


def other_authority(directory: Path, now: datetime) -> Authority:
    """A second, unrelated simulator CA with its files in ``directory`` (for a server that
    presents a TLS certificate our ``ca.pem`` did not issue, or signs with it)."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = create_authority(now)
    save(authority, directory)
    return authority


def free_port() -> int:
    """A loopback port with nothing listening on it (a server that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Socks5Proxy:
    """A SOCKS5 proxy on 127.0.0.1 (RFC 1928: no authentication, CONNECT only), one
    thread per connection and one per direction. ``targets`` lists where each CONNECT
    asked to go, as the client sent it (an address, or a name for ``socks5h``)."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, int]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._open.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the client left")
            data += chunk
        return data

    def _serve(self, client: socket.socket) -> None:
        try:
            _version, methods = self._read(client, 2)
            self._read(client, methods)
            client.sendall(b"\x05\x00")  # no authentication
            _version, command, _reserved, kind = self._read(client, 4)
            if kind == 1:
                host = socket.inet_ntoa(self._read(client, 4))
            elif kind == 3:
                host = self._read(client, self._read(client, 1)[0]).decode()
            else:
                host = socket.inet_ntop(socket.AF_INET6, self._read(client, 16))
            port = int.from_bytes(self._read(client, 2), "big")
            self.targets.append((host, port))
            if command != 1:
                client.sendall(b"\x05\x07\x00\x01" + bytes(6))
                return
            upstream = socket.create_connection((host, port), timeout=5)
            self._open.append(upstream)
            client.sendall(b"\x05\x00\x00\x01" + bytes(6))
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        # Shut down first: a close alone leaves the accept() in progress listening.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._open:
            sock.close()
        self._thread.join(5)
