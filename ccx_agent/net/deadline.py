"""A wall-clock deadline for a whole HTTP exchange, and a stop that does not wait for one.

A socket timeout bounds each read, not an exchange: a server that sends one byte every
two seconds never trips a 30 s read timeout and keeps a job (and a stopping daemon) for
as long as it likes. So every request made through a :class:`DeadlineSession` runs inside
an :class:`Exchange`, and the sockets it uses are registered with it as they are made
(before ``connect``, so that a connection in progress can be cut too) or taken from the
pool. When the deadline passes, or when :meth:`DeadlineSession.abort` is called from
another thread (the daemon's stop), those sockets are shut down (``SHUT_RDWR``): a
``connect``, ``recv`` or TLS handshake blocked on one returns at once with end-of-file or
an error, and the caller, seeing :attr:`Exchange.cancelled`, reports the real reason
instead of whatever ``requests`` made of a connection that ended under it.

The exchange shuts down a duplicate of each socket's file descriptor that it owns: TLS
replaces the connection's socket object with another on the same descriptor, and a closed
descriptor's number may already name another file, but the duplicate names this
connection until the exchange ends.

Only name resolution (``getaddrinfo``) cannot be cut short: the system's resolver bounds it.

The ``requests`` side (:class:`DeadlineSession`, its urllib3 connections and pools) is
in :mod:`ccx_agent.net.http`, imported only by what makes HTTP requests (the SSM client,
the UCCX source, the doctor): importing it costs tens of milliseconds that the light
commands (``status --check``, ``--help``) do not pay.

The deadlines of every exchange of the process are kept by one watchdog thread, started
on first use: a timer thread per exchange cost a thread start (and its join handshake)
on every request, about a third of a millisecond, as much as the agent's own part of a
report exchange.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

#: :attr:`Exchange.cancelled` when the deadline passed.
TIMED_OUT = "timed out"
#: :attr:`Exchange.cancelled` when :meth:`DeadlineSession.abort` cut it.
ABORTED = "aborted"

_current = threading.local()


class Exchange:
    """One request and its answer: the deadline, the sockets, and why it was cut if it was."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        #: None while the exchange may go on; :data:`TIMED_OUT` or :data:`ABORTED` after.
        self.cancelled: str | None = None
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._ended = False
        #: Whether the request went out on a connection kept alive from an earlier
        #: exchange (set by :mod:`ccx_agent.net.http`): one the server dropped unseen may
        #: fail before any answer, and is then tried once more on a new connection.
        self.reused = False

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock`` too when the exchange is cut (at once if it already was)."""
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return
        with self._lock:
            if not self._ended and self.cancelled is None:
                self._socks.append(dup)
                return
        _cut(dup)
        dup.close()

    def cancel(self, why: str) -> None:
        """Shut down every socket of the exchange; from any thread, any number of times."""
        with self._lock:
            if self._ended or self.cancelled is not None:
                return
            self.cancelled = why
            socks = list(self._socks)
        for sock in socks:
            _cut(sock)

    def end(self) -> None:
        """The exchange is over: later cancels touch nothing; the duplicates are closed."""
        with self._lock:
            self._ended = True
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()


class _Watchdog:
    """Cancels each exchange whose deadline passed (:data:`TIMED_OUT`), from one thread.

    Exchanges that ended stay in the heap until their deadline comes up and are then
    dropped unseen; the thread sleeps while the heap is empty (an idle daemon costs
    nothing). A forked child starts afresh (the parent's thread is not in it, and its
    lock may have been held at the fork).
    """

    def __init__(self) -> None:
        self._order = itertools.count()
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Exchange]] = []
        self._thread: threading.Thread | None = None

    def watch(self, exchange: Exchange) -> None:
        with self._cond:
            entry = (exchange.deadline, next(self._order), exchange)
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="ccx-agent-deadline", daemon=True
                )
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            due: list[Exchange] = []
            with self._cond:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                    continue
            for exchange in due:
                exchange.cancel(TIMED_OUT)


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog._reset)


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def current() -> Exchange | None:
    """The exchange running in this thread, if any."""
    exchange: Exchange | None = getattr(_current, "exchange", None)
    return exchange


def connect(
    address: tuple[str, int],
    timeout: float | None,
    source_address: tuple[str, int] | None,
    socket_options: Any,
    exchange: Exchange,
) -> socket.socket:
    """``urllib3.util.connection.create_connection``, with each socket watched by
    ``exchange`` before it connects, and the connect bounded by what is left of it."""
    host, port = address
    host = host.strip("[]")
    left = max(0.01, exchange.remaining())
    timeout = left if timeout is None else min(timeout, left)
    err: OSError | None = None
    # As urllib3's allowed_gai_family: both families where the host has IPv6.
    family = socket.AF_UNSPEC if socket.has_ipv6 else socket.AF_INET
    for af, socktype, proto, _name, sa in socket.getaddrinfo(
        host, port, family, socket.SOCK_STREAM
    ):
        sock = socket.socket(af, socktype, proto)
        try:
            for opt in socket_options or ():
                sock.setsockopt(*opt)
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            exchange.watch(sock)
            if exchange.cancelled is not None:
                raise TimeoutError(f"the exchange was cut ({exchange.cancelled})")
            sock.connect(sa)
            return sock
        except OSError as exc:
            err = exc
            sock.close()
    raise err if err is not None else OSError("getaddrinfo returned nothing")


class Deadlines:
    """Exchanges with a deadline, and a stop that cuts them all: the part of a
    :class:`DeadlineSession` that needs no ``requests`` (the doctor's socket probes
    hand their sockets to :meth:`Exchange.watch` themselves)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[Exchange] = set()
        self._aborted = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    @contextlib.contextmanager
    def exchange(self, seconds: float) -> Iterator[Exchange]:
        """Everything done in the block (connect, TLS, request, reading the body) is cut
        after ``seconds`` or at :meth:`abort`; the caller checks ``cancelled`` after it,
        whatever it returned or raised. An exchange begun after :meth:`abort` is cut
        before it connects."""
        exchange = Exchange(seconds)
        with self._lock:
            self._running.add(exchange)
            if self._aborted:
                exchange.cancel(ABORTED)
        previous = current()
        _current.exchange = exchange
        _watchdog.watch(exchange)
        try:
            yield exchange
        finally:
            _current.exchange = previous
            with self._lock:
                self._running.discard(exchange)
            exchange.end()

    def abort(self) -> None:
        """Cut every exchange in flight and every later one (the daemon is stopping)."""
        with self._lock:
            self._aborted = True
            running = list(self._running)
        for exchange in running:
            exchange.cancel(ABORTED)
