"""The simulator over HTTPS: the protocol endpoints and a small admin endpoint.

Only this module reads the clock: every request is answered by
``Simulator.handle(body, datetime.now(UTC))``. TLS 1.2+ with the simulator's own server
certificate (``localhost``, ``127.0.0.1``, ``::1``); loopback by default. The admin
endpoint takes a bearer token kept in ``DIR/admin-token`` (0600).

Logs name the method, a known path and the status, never a header or a body: request
bodies carry registration tokens, and the Authorization header the admin token.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import resource
import secrets
import selectors
import signal
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from ccx_agent.config.durations import parse_positive_duration
from ccx_agent.simulator.admin import DEFAULT_TOKEN_EXPIRY, AdminError
from ccx_agent.simulator.ca import DEFAULT_ID_LIFETIME, ca_path, tls_files, write_file
from ccx_agent.simulator.core import Simulator
from ccx_agent.simulator.db import DEFAULT_ACCOUNT
from ccx_agent.ssm.protocol import MAX_MESSAGE_BYTES, ErrorCode, ProtocolError

log = logging.getLogger(__name__)

DIRECT_PATH = "/licservice/license"
PROTOCOL_PATHS = frozenset(
    {DIRECT_PATH, "/Transportgateway/services/DeviceRequestHandler", "/SmartTransport"}
)
ADMIN_PATHS = frozenset(
    {"/admin/licenses", "/admin/tokens", "/admin/tokens/revoke", "/admin/state"}
)
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
MAX_ADMIN_BODY = 64 * 1024
#: A client that stalls (handshake or body) is dropped after this many seconds, and so
#: is a kept-alive connection idle that long.
SOCKET_TIMEOUT_S = 30.0
#: Worker threads: each answers one connection's waiting request at a time.
WORKERS = 16
#: Accepted connections waiting for a worker, at most; then new clients wait in the
#: kernel's listen backlog (which is LISTEN_BACKLOG, or the kernel's cap if lower).
MAX_QUEUED = 256
LISTEN_BACKLOG = 1024
#: Open connections at most (fewer if the descriptor limit says so).
MAX_CONNECTIONS = 10_000
DEFAULT_LISTEN = ("127.0.0.1", 8443)


class ServeError(Exception):
    """The server cannot start (the address is in use, not allowed …)."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def load_or_create_admin_token(state_dir: Path) -> str:
    """The admin endpoint's bearer token, created on first start (0600)."""
    path = state_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    token = secrets.token_urlsafe(32)
    write_file(path, (token + "\n").encode("ascii"), 0o600)
    return token


class _Server(HTTPServer):
    """An HTTPS server with a bounded pool of worker threads and one selector thread.

    Thread-per-connection held one thread (and its stack) per connected agent: 2,003
    threads and 253 MiB under 2,000 agents connecting at once. Here the thread of
    :meth:`serve_forever` accepts and waits, in one selector, on every connection that has
    nothing to be done yet (a TLS handshake waiting for the client's next flight, a
    kept-alive connection between two requests); a worker takes a connection only while it
    has a request to answer. So threads stay at ``workers`` + 1 however many agents
    connect, and an idle agent costs a socket, not a thread.

    Bounds: at most ``max_queued`` accepted connections wait for a worker (beyond that new
    clients wait in the kernel's listen backlog), and at most ``max_connections`` are open
    (at that count the longest-idle kept-alive connection is closed to make room; a client
    re-connects as it does after any idle close).
    """

    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        simulator: Simulator,
        admin_token: str,
        tls: ssl.SSLContext,
        clock_skew: timedelta = timedelta(0),
        *,
        workers: int = WORKERS,
        max_queued: int = MAX_QUEUED,
        max_connections: int | None = None,
    ) -> None:
        self.clock_skew = clock_skew
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.simulator = simulator
        self.admin_token = admin_token
        self.workers = workers
        self._max_queued = max_queued
        self._max_connections = max_connections or _fd_budget()
        self._lock = threading.Lock()
        self._open: set[Any] = set()  # every accepted socket not yet closed
        self._busy = 0  # connections queued for or held by a worker
        self._handed_back: list[_Handler] = []  # kept alive: for the selector to wait on
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ssm-simulator-worker")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        # The handshake is driven by the workers, a flight at a time (see _Handler.serve):
        # a slow or silent client holds no thread.
        self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.socket.setblocking(False)

    def now(self) -> datetime:
        """This server's clock: the host's, off by ``clock_skew`` (a server whose clock is
        wrong, for the agent's clock check; its Date header and its protocol agree)."""
        return datetime.now(UTC) + self.clock_skew

    # --- the selector thread ------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        idle: dict[_Handler, float] = {}  # waiting connections, oldest first
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self._wake_r, selectors.EVENT_READ, None)
                listening = False
                while not self._stopping.is_set():
                    with self._lock:
                        handed, self._handed_back = self._handed_back, []
                        busy, n_open = self._busy, len(self._open)
                    now = time.monotonic()
                    for handler in handed:
                        try:
                            sel.register(handler.request, selectors.EVENT_READ, handler)
                        except (OSError, ValueError):  # closed meanwhile: nothing to wait for
                            self._close(handler)
                            continue
                        idle[handler] = now
                    want = busy < self._max_queued and (
                        n_open < self._max_connections or bool(idle)
                    )
                    if want != listening:
                        if want:
                            sel.register(self.socket, selectors.EVENT_READ, self)
                        else:
                            sel.unregister(self.socket)
                        listening = want
                    timeout = poll_interval
                    if idle:
                        oldest = next(iter(idle.values()))
                        timeout = max(0.0, min(timeout, oldest + SOCKET_TIMEOUT_S - now))
                    for key, _ in sel.select(timeout):
                        if key.data is None:
                            with contextlib.suppress(OSError):
                                self._wake_r.recv(4096)
                        elif key.data is self:
                            if n_open >= self._max_connections and idle:
                                self._drop(sel, idle, next(iter(idle)))
                            self._accept()
                        else:
                            handler = key.data
                            sel.unregister(handler.request)
                            del idle[handler]
                            self._submit(handler)
                    now = time.monotonic()
                    while idle:
                        handler, since = next(iter(idle.items()))
                        if now - since < SOCKET_TIMEOUT_S:
                            break
                        self._drop(sel, idle, handler)
                for handler in list(idle):
                    self._drop(sel, idle, handler)
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned."""
        self._stopping.set()
        self._wake()
        self._stopped.wait()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _accept(self) -> None:
        try:
            request, client_address = self.socket.accept()
        except OSError:  # gone before we took it, or out of descriptors for now
            return
        with self._lock:
            self._open.add(request)
        self._submit(_Handler(request, client_address, self))

    def _drop(self, sel: selectors.BaseSelector, idle: dict[_Handler, float], h: _Handler) -> None:
        sel.unregister(h.request)
        del idle[h]
        self._close(h)

    # --- the workers --------------------------------------------------------------------

    def _submit(self, handler: _Handler) -> None:
        with self._lock:
            self._busy += 1
        try:
            self._pool.submit(self._work, handler)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._close(handler)
            with self._lock:
                self._busy -= 1

    def _work(self, handler: _Handler) -> None:
        try:
            keep = handler.serve()
        except Exception:
            self.handle_error(handler.request, handler.client_address)
            keep = False
        if keep and not self._stopping.is_set():
            with self._lock:
                self._handed_back.append(handler)
                self._busy -= 1
        else:
            self._close(handler)
            with self._lock:
                self._busy -= 1
        self._wake()

    def _close(self, handler: _Handler) -> None:
        with contextlib.suppress(Exception):
            handler.finish()
        with self._lock:
            self._open.discard(handler.request)
        self.shutdown_request(handler.request)

    def close_connections(self) -> None:
        """End every open connection: a worker reading or writing one then finishes."""
        with self._lock:
            open_now = list(self._open)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def server_close(self) -> None:
        """Close the listening socket, wait for the workers, close what is left."""
        super().server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            left, self._open = list(self._open), set()
        for conn in left:
            with contextlib.suppress(OSError):
                conn.close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's FQDN up in DNS, which can take seconds;
        # nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake, a reset connection … are the client's business; no
        # traceback (and nothing the client sent) goes to the log.
        log.debug("connection from %s ended in an error", client_address[0])


def _fd_budget() -> int:
    """How many connections may be open: what the descriptor limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - 64))


class _Handler(BaseHTTPRequestHandler):
    """One connection, answered by whichever worker takes it; between two requests it is
    the selector thread's to wait on (see :class:`_Server`)."""

    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    server_version = "ccx-ssm-simulator"
    sys_version = ""

    def __init__(self, request: Any, client_address: Any, server: _Server) -> None:
        # BaseRequestHandler.__init__ would answer the whole connection in this thread.
        self.request = request
        self.client_address = client_address
        self.server = server
        self._handshaken = False

    def serve(self) -> bool:
        """Do what can be done now: True to wait for the client (kept alive), False when
        the connection is over."""
        if not self._handshaken:
            self.request.settimeout(0.0)
            try:
                self.request.do_handshake()
            except ssl.SSLWantReadError:
                return True
            except ssl.SSLWantWriteError:  # a full send buffer: finish it blocking
                self.request.settimeout(self.timeout)
                self.request.do_handshake()
            self._handshaken = True
            self.setup()
        while True:
            waiting = self._request_waiting()
            if waiting is None:
                return True
            if not waiting:
                return False
            self.close_connection = True
            self.handle_one_request()
            if self.close_connection:
                return False

    def _request_waiting(self) -> bool | None:
        """Whether a request has begun to arrive (True), the client closed (False), or
        nothing has come yet (None); without blocking, and without losing what was read."""
        self.request.settimeout(0.0)
        try:
            rfile: Any = self.rfile  # a BufferedReader (StreamRequestHandler.rbufsize -1)
            return bool(rfile.peek(1))
        except (ssl.SSLWantReadError, BlockingIOError):
            return None
        except OSError:
            return False
        finally:
            self.request.settimeout(self.timeout)

    def setup(self) -> None:
        # Headers and body leave in two writes: without this, Nagle's algorithm holds the
        # body until the client's delayed ACK (~40 ms on every kept-alive exchange).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def finish(self) -> None:
        if self._handshaken:
            super().finish()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header from this server's clock (see :meth:`_Server.now`)."""
        if timestamp is None:
            timestamp = self.server.now().timestamp()
        return super().date_time_string(timestamp)

    # --- logging: never a token -----------------------------------------------------------

    def _logged_path(self) -> str:
        path = urlsplit(self.path).path
        return path if path in PROTOCOL_PATHS or path in ADMIN_PATHS else "(other path)"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info("%s %s %s -> %s", self.client_address[0], self.command, self._logged_path(), code)

    def log_error(self, format: str, *args: Any) -> None:
        log.info("%s: refused an unreadable HTTP request", self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(
            "%s: an HTTP server message (not logged: it may quote the request)",
            self.client_address[0],
        )

    # --- routing ----------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path in PROTOCOL_PATHS:
                self._protocol()
            elif path in ADMIN_PATHS:
                self._admin(path)
            else:
                self.close_connection = True  # its body is left unread
                self._json(404, {"error": "not found"})
        except _BadRequest as exc:
            self.close_connection = True
            self._json(exc.status, {"error": exc.message})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/admin/state":
                self._authorize()
                self._json(200, self.server.simulator.show(self.server.now()))
            elif path in PROTOCOL_PATHS or path in ADMIN_PATHS:
                self._json(405, {"error": "use POST"}, {"Allow": "POST"})
            else:
                self._json(404, {"error": "not found"})
        except _BadRequest as exc:
            self._json(exc.status, {"error": exc.message})

    # --- the protocol -------------------------------------------------------------------------

    def _protocol(self) -> None:
        simulator = self.server.simulator
        length = self._length()
        if length > MAX_MESSAGE_BYTES:
            # Refused unread; the rest of the body is never read, so the connection ends.
            self.close_connection = True
            error = ProtocolError(
                ErrorCode.TOO_LARGE, f"message of {length} bytes exceeds {MAX_MESSAGE_BYTES}"
            )
            status, answer = simulator.refusal(error, self.server.now())
        else:
            body = self.rfile.read(length)
            status, answer = simulator.handle(body, self.server.now())
        self._send(status, answer)

    def _length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise _BadRequest(411, "send a Content-Length (no chunked bodies)")
        value = self.headers.get("Content-Length")
        if value is None:
            raise _BadRequest(411, "a Content-Length is required")
        try:
            length = int(value)
        except ValueError:
            raise _BadRequest(400, "invalid Content-Length") from None
        if length < 0:
            raise _BadRequest(400, "invalid Content-Length")
        return length

    # --- the admin endpoint ---------------------------------------------------------------

    def _authorize(self) -> None:
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        expected = self.server.admin_token.encode("ascii")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("utf-8", "replace"), expected
        ):
            raise _BadRequest(401, "the admin endpoint needs 'Authorization: Bearer <admin-token>'")

    def _admin(self, path: str) -> None:
        self._authorize()
        length = self._length()
        if length > MAX_ADMIN_BODY:
            raise _BadRequest(413, f"an admin request is at most {MAX_ADMIN_BODY} bytes")
        try:
            doc = json.loads(self.rfile.read(length) or b"{}")
        except (UnicodeDecodeError, ValueError):
            raise _BadRequest(400, "the body must be a JSON object") from None
        if not isinstance(doc, dict):
            raise _BadRequest(400, "the body must be a JSON object")
        if path == "/admin/state":
            self._json(200, self.server.simulator.show(self.server.now()))
            return
        try:
            self._json(200, _ADMIN[path](self.server.simulator, doc))
        except (AdminError, ValueError, TypeError) as exc:
            raise _BadRequest(400, str(exc).splitlines()[0][:300] or "bad request") from None

    # --- answers ----------------------------------------------------------------------------

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(doc, sort_keys=True).encode("utf-8"), headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _field(doc: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = doc.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AdminError(f"{key!r} must be {'a string' if kind is str else 'an integer'}")
    return value


def _admin_licenses(sim: Simulator, doc: dict[str, Any]) -> dict[str, Any]:
    tag = _field(doc, "tag", str, None)
    count = _field(doc, "count", int, None)
    account = _field(doc, "account", str, DEFAULT_ACCOUNT)
    if count >= 0:
        total = sim.add_licenses(tag, count, account)
    else:
        total = sim.remove_licenses(tag, -count, account)
    return {"account": account, "tag": tag, "purchased": total}


def _admin_tokens(sim: Simulator, doc: dict[str, Any]) -> dict[str, Any]:
    account = _field(doc, "account", str, DEFAULT_ACCOUNT)
    uses = _field(doc, "uses", int, 1)
    expires = doc.get("expires")
    try:
        lifetime = DEFAULT_TOKEN_EXPIRY if expires is None else parse_positive_duration(expires)
    except ValueError as exc:
        raise AdminError(f"'expires' {exc}") from None
    token = sim.create_token(account, uses, lifetime, now=datetime.now(UTC))
    return {"token": token}


def _admin_revoke(sim: Simulator, doc: dict[str, Any]) -> dict[str, Any]:
    sim.revoke_token(_field(doc, "token", str, None))
    return {"revoked": True}


_ADMIN: dict[str, Callable[[Simulator, dict[str, Any]], dict[str, Any]]] = {
    "/admin/licenses": _admin_licenses,
    "/admin/tokens": _admin_tokens,
    "/admin/tokens/revoke": _admin_revoke,
}


# --- running it ------------------------------------------------------------------------------


@dataclass
class RunningServer:
    """A simulator serving HTTPS on a background thread (tests, the demo, ``ssm serve``)."""

    simulator: Simulator
    state_dir: Path
    host: str
    port: int
    admin_token: str = field(repr=False)
    _httpd: _Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The direct endpoint: what an agent's ``transport.url`` is set to."""
        return self.base_url + DIRECT_PATH

    @property
    def ca_path(self) -> Path:
        """The root CA PEM: what an agent's ``transport.ca_bundle`` is set to."""
        return ca_path(self.state_dir)

    def stop(self) -> None:
        """Stop accepting, end open connections, wait for the workers, close the
        database: afterwards the port answers nothing, as a server that is down."""
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.close_connections()
        self._httpd.server_close()
        self.simulator.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tls_context(state_dir: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = tls_files(state_dir)
    context.load_cert_chain(cert, key)
    return context


def start(
    state_dir: Path,
    listen: tuple[str, int] = ("127.0.0.1", 0),
    *,
    id_lifetime: timedelta = DEFAULT_ID_LIFETIME,
    clock_skew: timedelta = timedelta(0),
    max_connections: int | None = None,
) -> RunningServer:
    """Serve ``state_dir``'s simulator on ``listen`` (port 0: any free port) in a thread.

    ``clock_skew`` sets the server's clock that far from the host's, in its ``Date``
    header and its protocol alike (a lab SSM with a wrong clock). ``max_connections``:
    how many may be open at once (default: what the descriptor limit leaves room for, at
    most MAX_CONNECTIONS)."""
    simulator = Simulator.open(state_dir, datetime.now(UTC), id_lifetime=id_lifetime)
    try:
        admin_token = load_or_create_admin_token(state_dir)
        tls = tls_context(state_dir)
        try:
            httpd = _Server(
                listen, simulator, admin_token, tls, clock_skew, max_connections=max_connections
            )
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}"
            ) from None
    except BaseException:
        simulator.close()
        raise
    bound = httpd.server_address
    host = _client_host(str(bound[0]))
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="ssm-simulator",
        daemon=True,
    )
    thread.start()
    return RunningServer(simulator, state_dir, host, int(bound[1]), admin_token, httpd, thread)


def _client_host(bound: str) -> str:
    """Where a client on this machine reaches a server bound to ``bound``."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bound, bound)  # noqa: S104


def serve_forever(
    state_dir: Path,
    listen: tuple[str, int] = DEFAULT_LISTEN,
    *,
    announce: Callable[[RunningServer], None] | None = None,
    id_lifetime: timedelta = DEFAULT_ID_LIFETIME,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (the CLI's ``ssm serve``)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous: dict[signal.Signals, Any] = {}
    if in_main:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        running = start(state_dir, listen, id_lifetime=id_lifetime)
        try:
            if announce is not None:
                announce(running)
            while not stop.wait(0.5):
                pass
        finally:
            running.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
