"""The agent's one HTTP client: a ``requests`` session whose requests run inside an
:class:`~ccx_agent.net.deadline.Exchange`, on urllib3 connections whose sockets the
exchange watches from before ``connect`` (direct, through an HTTP(S) proxy or a SOCKS5
one), and the reading of what went wrong (:func:`describe`).

The SSM client (:mod:`ccx_agent.ssm.client`), the UCCX/Finesse source and the doctor's
PING all use it. A module of its own so that the light commands (``status --check``,
``--help``) do not import ``requests``.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter
from urllib3 import connection as u3connection
from urllib3 import connectionpool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProxyError,
)
from urllib3.exceptions import IncompleteRead as U3IncompleteRead

from ccx_agent.net.deadline import Deadlines, Exchange, connect, current


def _new_conn(conn: u3connection.HTTPConnection) -> socket.socket:
    exchange = current()
    assert exchange is not None
    timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
    try:
        return connect(
            (conn._dns_host, conn.port or 0),  # urllib3 resolves _dns_host, not host
            timeout,
            conn.source_address,
            conn.socket_options,
            exchange,
        )
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    except TimeoutError as exc:
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"Failed to establish a new connection: {exc}") from exc


class _HTTPConnection(u3connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        if current() is None:
            return super()._new_conn()
        return _new_conn(self)


class _HTTPSConnection(u3connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        if current() is None:
            return super()._new_conn()
        return _new_conn(self)


def _watch_pooled(conn: Any) -> None:
    """A kept-alive connection taken from the pool is this exchange's too (urllib3 has
    already closed one the server dropped visibly; a new one has no socket yet)."""
    exchange = current()
    if exchange is None:
        return
    sock = getattr(conn, "sock", None)
    exchange.reused = isinstance(sock, socket.socket)
    if isinstance(sock, socket.socket):
        exchange.watch(sock)


class _HTTPPool(connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _watch_pooled(conn)
        return conn


class _HTTPSPool(connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _watch_pooled(conn)
        return conn


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


def _socks_pools() -> dict[str, Any]:
    """Pools for a SOCKS proxy (urllib3's, on PySocks): loaded only when one is set.

    PySocks makes the socket and connects it through the proxy in one call, so the
    exchange watches it from just after: a stop waits for that connect, which the
    connect timeout bounds (``transport.connect_timeout``)."""
    from urllib3.contrib import socks  # noqa: PLC0415 - only for a SOCKS proxy

    def watched(conn: Any, new_conn: Any) -> socket.socket:
        exchange = current()
        if exchange is not None and exchange.cancelled is not None:
            raise ConnectTimeoutError(conn, f"the exchange was cut ({exchange.cancelled})")
        sock: socket.socket = new_conn()
        if exchange is not None:
            exchange.watch(sock)
        return sock

    class _SOCKSConnection(socks.SOCKSConnection):
        def _new_conn(self) -> Any:
            return watched(self, super()._new_conn)

    class _SOCKSHTTPSConnection(socks.SOCKSHTTPSConnection):
        def _new_conn(self) -> Any:
            return watched(self, super()._new_conn)

    class _SOCKSHTTPPool(socks.SOCKSHTTPConnectionPool):
        ConnectionCls = _SOCKSConnection

        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            _watch_pooled(conn)
            return conn

    class _SOCKSHTTPSPool(socks.SOCKSHTTPSConnectionPool):
        ConnectionCls = _SOCKSHTTPSConnection

        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            _watch_pooled(conn)
            return conn

    return {"http": _SOCKSHTTPPool, "https": _SOCKSHTTPSPool}


class _Adapter(HTTPAdapter):
    """Connections whose sockets the running :class:`Exchange` watches (direct or
    through an HTTP(S) or SOCKS proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _socks_pools()
        else:
            manager.pool_classes_by_scheme = _POOLS
        return manager


class DeadlineSession(requests.Session):
    """A ``requests`` session whose requests run inside :meth:`exchange`, and that
    :meth:`abort` stops for good from any thread."""

    def __init__(self) -> None:
        super().__init__()
        adapter = _Adapter()
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self._deadlines = Deadlines()

    @property
    def aborted(self) -> bool:
        return self._deadlines.aborted

    def exchange(self, seconds: float) -> contextlib.AbstractContextManager[Exchange]:
        """See :meth:`Deadlines.exchange`."""
        return self._deadlines.exchange(seconds)

    def abort(self) -> None:
        """Cut every exchange in flight and every later one (the daemon is stopping)."""
        self._deadlines.abort()


Kind = Literal["verify", "tls", "connect_timeout", "read_timeout", "proxy", "short", "connection"]


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with one request, in a few words of our own.

    ``kind`` sorts it for the callers: only ``verify`` (the server's certificate does not
    verify against the trusted CAs) is a matter of configuration; every other kind (a
    TLS alert, a plain-HTTP server on the port, a reset, an answer cut short) is the
    network's and may go away when tried again. ``detail`` is the cause as the library
    or the system said it (never a URL: ``requests`` puts one in its messages).
    """

    kind: Kind
    detail: str


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: ``requests`` wraps urllib3's errors (in their
    ``args`` or ``reason``), which wrap the standard library's."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        for inner in (err.__cause__, err.__context__, getattr(err, "reason", None), *err.args):
            if isinstance(inner, BaseException):
                todo.append(inner)


#: Causes worth naming, found in a system's or a library's message (lower-cased).
_SOCKET_REASONS = (
    "Connection refused",
    "Connection reset",
    "Remote end closed",
    "Broken pipe",
    "Name or service not known",
    "Temporary failure in name resolution",
    "No address associated with hostname",
    "No route to host",
    "Network is unreachable",
    "timed out",
    "Connection aborted",  # requests' words around one of the above
)


def _tls_detail(err: ssl.SSLError) -> str:
    if isinstance(err, ssl.SSLCertVerificationError) and err.verify_message:
        return str(err.verify_message)
    reason = getattr(err, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.replace("_", " ").lower()
    return type(err).__name__


def describe(exc: BaseException) -> Failure:
    """The :class:`Failure` a request raised (``requests``, urllib3 or the system's)."""
    chain = list(causes(exc))
    for err in chain:
        if isinstance(err, ssl.SSLCertVerificationError):
            return Failure("verify", _tls_detail(err))
    for err in chain:
        if isinstance(err, U3IncompleteRead | http.client.IncompleteRead):
            return Failure("short", _short(err))
    if any(isinstance(err, requests.exceptions.ConnectTimeout) for err in chain):
        return Failure("connect_timeout", "no connection within the timeout")
    if any(isinstance(err, requests.exceptions.ReadTimeout | TimeoutError) for err in chain):
        return Failure("read_timeout", "no answer within the timeout")
    if any(isinstance(err, requests.exceptions.ProxyError | ProxyError) for err in chain):
        return Failure("proxy", _socket_reason(chain) or "the proxy refused the connection")
    for err in chain:
        if isinstance(err, ssl.SSLError) and not isinstance(err, ssl.SSLEOFError):
            return Failure("tls", _tls_detail(err))
    return Failure("connection", _socket_reason(chain) or "the connection broke")


def _short(err: BaseException) -> str:
    got = getattr(err, "partial", None)
    more = getattr(err, "expected", None)
    if isinstance(got, bytes):  # http.client's: the bytes themselves
        got = len(got)
    if isinstance(got, int) and isinstance(more, int):
        # Both libraries' "expected" is what was still missing.
        return f"connection closed after {got} of {got + more} bytes"
    return "connection closed before the end of the answer"


def _socket_reason(chain: list[BaseException]) -> str | None:
    for err in chain:
        text = str(err)
        for reason in _SOCKET_REASONS:
            if reason.lower() in text.lower():
                return reason.lower()
        if isinstance(err, ssl.SSLEOFError):
            return "connection closed during the TLS handshake"
    return None
