"""The ``requests`` side of :mod:`ccx_agent.deadline`: a session whose requests run inside
an :class:`~ccx_agent.deadline.Exchange`, on urllib3 connections whose sockets the
exchange watches from before ``connect`` (direct or through a proxy).

A module of its own so that what never uses ``requests`` (the daemon with a file or
command source and no proxy, most commands) does not import it.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import connection as u3connection
from urllib3 import connectionpool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from ccx_agent.deadline import Deadlines, Exchange, connect, current


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
    """A kept-alive connection taken from the pool is this exchange's too."""
    exchange = current()
    sock = getattr(conn, "sock", None)
    if exchange is not None and isinstance(sock, socket.socket):
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


class _Adapter(HTTPAdapter):
    """Connections whose sockets the running :class:`Exchange` watches (direct or
    through a proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
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
