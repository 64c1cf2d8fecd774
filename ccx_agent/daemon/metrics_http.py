"""The metrics endpoint of ``ccx-agent run``: ``/metrics`` and ``/healthz`` over HTTP or
HTTPS, with optional basic auth (``metrics.*`` in the config, docs/monitoring.md).

One listening socket, served by :mod:`http.server` threads; the exposition itself is
:mod:`prometheus_client`'s. TLS is applied per connection, in the connection's own thread
(a slow or broken handshake never holds up the accept loop), with the context of the
moment: so a SIGHUP that changes only the certificate or the password file takes effect
on the same socket, and one that changes ``metrics.listen`` binds the new address before
it lets the old one go (:class:`Endpoint`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import selectors
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from ccx_agent.config.schema import MetricsConfig, listen_address
from ccx_agent.errors import LocalError

log = structlog.get_logger("ccx_agent.metrics")

#: A TLS handshake or a request that takes longer than this is dropped.
CONNECTION_TIMEOUT_S = 10.0
#: The listen backlog: a burst of parallel scrapes (a fleet of Prometheus servers, a
#: dashboard refreshing many panels) waits in the kernel's queue instead of having its
#: SYNs dropped and retried seconds later (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 1024
#: ``/healthz``: what the daemon says of itself (healthy, and the one-line JSON document).
Health = Callable[[], tuple[bool, dict[str, Any]]]
_BCRYPT = ("$2a$", "$2b$", "$2y$")


class MetricsError(LocalError):
    """The endpoint cannot be set up as configured (a port in use, an unreadable file):
    one line that names the key; at start the daemon exits 78 with it."""


class Users:
    """``metrics.basic_auth_file``: one ``user:hash`` per line, the hash bcrypt or the hex
    SHA-256 of the password. A good password is remembered (as its SHA-256, in memory) so
    that bcrypt's deliberate slowness is paid once, not at every scrape."""

    def __init__(self, hashes: dict[str, str]) -> None:
        self._hashes = hashes
        self._good: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> Users:
        where = f"metrics.basic_auth_file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise MetricsError(f"{where}: cannot read it: {reason}") from None
        hashes: dict[str, str] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, digest = line.partition(":")
            # Never echo the part after the colon: it may be a password written by mistake.
            if not sep or not user or not digest:
                raise MetricsError(f"{where}:{n}: must be USER:HASH")
            if user in hashes:
                raise MetricsError(f"{where}:{n}: user {user!r} is listed twice")
            if not (digest.startswith(_BCRYPT) or _is_sha256(digest)):
                raise MetricsError(
                    f"{where}:{n}: the hash of user {user!r} is neither bcrypt ($2b$...) nor "
                    "the 64 hex digits of a SHA-256 (a password never goes in this file)"
                )
            hashes[user] = digest.lower() if _is_sha256(digest) else digest
        if not hashes:
            raise MetricsError(f"{where}: names no user (USER:HASH lines)")
        return cls(hashes)

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header holds a listed user and its password."""
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).partition(
                b":"
            )
        except (binascii.Error, ValueError):
            return False
        if not sep:
            return False
        name = user.decode("utf-8", "replace")
        digest = self._hashes.get(name)
        seen = hashlib.sha256(password).digest()
        if digest is None:
            return False
        with self._lock:
            if (name, seen) in self._good:
                return True
        if digest.startswith(_BCRYPT):
            import bcrypt  # noqa: PLC0415 - only for a file that has bcrypt hashes

            ok = bcrypt.checkpw(password, digest.encode("ascii"))
        else:
            ok = hmac.compare_digest(seen.hex(), digest)
        if ok:
            with self._lock:
                self._good.add((name, seen))
        return ok


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


@dataclass(frozen=True)
class Settings:
    """What a connection is served with, besides the address: swapped whole on reload."""

    tls: ssl.SSLContext | None = None
    users: Users | None = None


def settings(cfg: MetricsConfig) -> Settings:
    """The TLS context and the users of ``cfg``, read now (raises :class:`MetricsError`)."""
    tls = None
    if cfg.tls.cert is not None and cfg.tls.key is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            tls.load_cert_chain(cfg.tls.cert, cfg.tls.key)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise MetricsError(
                f"metrics.tls: cannot use cert {cfg.tls.cert} with key {cfg.tls.key}: {reason}"
            ) from None
    users = Users.load(cfg.basic_auth_file) if cfg.basic_auth_file is not None else None
    return Settings(tls, users)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self, family: socket.AddressFamily, address: tuple[Any, ...], endpoint: Endpoint
    ) -> None:
        self.address_family = family
        self.endpoint = endpoint
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name: not needed, and slow.
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        tls = self.endpoint.settings.tls
        if tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CONNECTION_TIMEOUT_S)
        try:
            conn = tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("metrics TLS handshake failed", peer=str(client_address[0]), error=str(exc))
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that goes away mid-response is not news: one debug line (the
        default prints a raw traceback on stderr). Anything else is one error line in
        the log, its traceback with it, never a bare one on stderr."""
        exc = sys.exception()
        peer = str(client_address[0]) if client_address else "?"
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.debug("metrics client went away", peer=peer, error=repr(exc))
            return
        log.error("metrics request failed", peer=peer, error=repr(exc), exc_info=exc)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CONNECTION_TIMEOUT_S
    server_version = "ccx-agent"
    sys_version = ""

    def version_string(self) -> str:
        return "ccx-agent"

    def do_GET(self) -> None:
        endpoint = self.server.endpoint
        users = endpoint.settings.users
        if users is not None and not users.allows(self.headers.get("Authorization")):
            self._send(
                401,
                b"unauthorized\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": 'Basic realm="ccx-agent", charset="UTF-8"'},
            )
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(endpoint.registry), content_type)
        elif path == "/healthz":
            ok, doc = endpoint.health()
            body = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
            self._send(200 if ok else 503, body, "application/json")
        elif path == "/":
            self._send(200, b"ccx-agent: /metrics /healthz\n", "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found: /metrics or /healthz\n", "text/plain; charset=utf-8")

    def _send(
        self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news: one debug line each, never on stderr."""
        log.debug("metrics request", peer=self.client_address[0], line=format % args)


class Endpoint:
    """One listening socket and the settings its connections are served with."""

    def __init__(
        self, listen: str, settings: Settings, registry: CollectorRegistry, health: Health
    ) -> None:
        self.listen = listen
        self.settings = settings
        self.registry = registry
        self.health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    def start(self) -> None:
        """Bind and serve (raises :class:`MetricsError` when the address cannot be had)."""
        host, port = listen_address(self.listen)
        where = f"metrics.listen {self.listen}"
        try:
            family, _, _, _, address = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            self._server = _Server(family, address, self)
        except socket.gaierror as exc:
            raise MetricsError(f"{where}: unknown host {host!r} ({exc.strerror})") from None
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise MetricsError(
                f"{where}: cannot listen there: {reason} (change metrics.listen, or null to "
                "turn the endpoint off)"
            ) from None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve, args=(self._server, self._wake_r), name="metrics", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _serve(server: _Server, wake: socket.socket) -> None:
        """Accept connections until :meth:`stop` writes to ``wake``. It sleeps in one
        select with no timeout: an idle endpoint costs no wake-up at all, where
        ``serve_forever`` polls twice a second to see whether it should stop."""
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is wake:
                        return
                    # Readable: a connection waits, accepted at once (a failed accept
                    # is ignored there), then served in its own thread.
                    server.handle_request()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return str(self._server.server_address[0]), int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.settings.tls else 'http'}://{shown}:{port}/metrics"

    def stop(self) -> None:
        if self._server is None:
            return
        if self._wake_w is not None:
            self._wake_w.send(b"\0")  # the accept loop returns
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server.server_close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
        self._server = None
