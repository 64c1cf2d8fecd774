"""The alert sink: alert lines to a syslog daemon or collector (docs/alerts.md).

:meth:`SyslogSink.send` only formats the message and puts it on a bounded in-memory
queue; one background thread delivers the queue in order. A message leaves the queue only
once it has been handed to the socket, so an unreachable target keeps it at the head
while the thread reconnects with exponential backoff. When the queue is full the oldest
message is dropped (and counted): the newest alerts say the most about the present.

Targets (``alerts.syslog.target``, validated by :mod:`ccx_agent.config.schema`):

* an absolute path: a local unix socket, ``SOCK_DGRAM`` first, then ``SOCK_STREAM``
  (as :class:`logging.handlers.SysLogHandler` does);
* ``udp://HOST:PORT``: one message per datagram;
* ``tcp://HOST:PORT`` and ``tls://HOST:PORT``: one persistent connection, RFC 6587
  octet-counting framing (``LEN SP MSG``), which is also the framing on a unix stream
  socket (rsyslog's imptcp accepts it by default, on a port or a ``path=``).

Every message is cut to :data:`MAX_MESSAGE` bytes of UTF-8, on a character boundary.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import structlog

from ccx_agent.config.schema import SyslogConfig, SyslogFormat

#: The longest message sent, in bytes (header included): rsyslog's default
#: ``maxMessageSize``, and well inside a UDP datagram (65507 bytes over IPv4).
MAX_MESSAGE = 8192
#: Connecting to a network target (TCP, and the TLS handshake for ``tls://``) gives up
#: after this long in all.
CONNECT_TIMEOUT = 5.0
#: A message that cannot be sent whole in this long (a stalled or slow-reading peer)
#: counts as a lost connection.
SEND_TIMEOUT = 10.0
#: Reconnection backoff: the first wait, and the longest; it doubles in between.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: A UDP target that refuses datagrams is said in the log at most this often (seconds).
REFUSED_EVERY = 3600.0

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

log = structlog.get_logger("ccx_agent.syslog")


def _printable(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces (RFC 5424 PRINTUSASCII)."""
    return "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]


def _utc(when: datetime) -> datetime:
    """Aware UTC; a naive ``when`` is taken as UTC (the project's convention)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def format_rfc3164(
    pri: int, when: datetime, hostname: str | None, app: str, pid: int, msg: str
) -> str:
    """``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG``, in the host's local time.

    ``hostname`` None leaves the field out, as glibc's ``syslog()`` does on ``/dev/log``:
    the local daemon adds its own, and would otherwise read the hostname as the tag.
    """
    local = _utc(when).astimezone()
    stamp = f"{_MONTHS[local.month - 1]} {local.day:2d} {local:%H:%M:%S}"
    host = "" if hostname is None else f"{_printable(hostname, 255) or '-'} "
    return f"<{pri}>{stamp} {host}{_printable(app, 32) or '-'}[{pid}]: {msg}"


def format_rfc5424(pri: int, when: datetime, hostname: str, app: str, pid: int, msg: str) -> str:
    """``<PRI>1 TIMESTAMP HOSTNAME APP PROCID - - MSG``, TIMESTAMP in UTC with
    microseconds; MSGID and STRUCTURED-DATA are nil."""
    stamp = _utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    host = _printable(hostname, 255) or "-"
    return f"<{pri}>1 {stamp} {host} {_printable(app, 48) or '-'} {pid} - - {msg}"


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)


def _encode(message: str) -> bytes:
    """UTF-8 (a lone surrogate becomes ``?``), cut to :data:`MAX_MESSAGE` bytes without
    splitting a character."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_MESSAGE:
        return data
    return data[:MAX_MESSAGE].decode("utf-8", "ignore").encode("utf-8")


def _header_host(hostname: str, fmt: SyslogFormat) -> str:
    """RFC 3164 wants the host name without its domain (an address stays whole);
    RFC 5424 prefers the FQDN."""
    if fmt is SyslogFormat.RFC5424:
        return hostname
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return hostname.split(".", 1)[0]
    return hostname


#: What :meth:`SyslogSink.send` calls once a line is settled (True) or given back (False).
OnDone = Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class _Item:
    data: bytes
    on_done: OnDone | None


def _settle(item: _Item, settled: bool) -> None:
    if item.on_done is None:
        return
    try:
        item.on_done(settled)
    except Exception:  # the delivery thread must outlive its callers' bugs
        log.exception("syslog delivery callback failed")


class _Target:
    """Where and how to deliver: parsed once from the validated ``target``."""

    def __init__(self, target: str) -> None:
        self.text = target
        if target.startswith("/"):
            self.scheme, self.host, self.port = "unix", target, 0
        else:
            parts = urlsplit(target)
            assert parts.hostname is not None and parts.port is not None  # validated
            self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port


class SyslogSink:
    """Thread-safe, never-blocking delivery of alert lines to one syslog target."""

    def __init__(
        self,
        cfg: SyslogConfig,
        *,
        hostname: str | None = None,
        app: str = "ccx-agent",
        pid: int | None = None,
    ) -> None:
        self._cfg = cfg
        self._target = _Target(cfg.target)
        self._format = cfg.format
        self._facility = cfg.facility.code
        host = hostname if hostname is not None else socket.gethostname()
        self._hostname = _header_host(host, cfg.format)
        self._app = app
        self._pid = pid if pid is not None else os.getpid()

        self._cond = threading.Condition()
        # Guarded by _cond:
        #: Each message with what to call once it is settled (see :meth:`send`).
        self._queue: collections.deque[_Item] = collections.deque()
        self._sent = 0
        #: Messages written and taken off the queue whose ``on_done`` has not returned
        #: yet: a flush waits for them too, so a stop never closes the database under an
        #: alert being marked emitted (it would be sent again at the next start).
        self._settling = 0
        self._dropped = 0
        self._refusals = 0
        self._refused_said: float | None = None
        self._connected = False
        self._last_error: str | None = None
        self._stopping = False
        self._kick = 0  # bumped by flush/close: cut the current backoff wait short
        self._thread: threading.Thread | None = None

        # Owned by the delivery thread:
        self._sock: socket.socket | None = None
        self._stream = False

    # --- the callers' side ---------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="ccx-agent-syslog", daemon=True)
            self._thread.start()

    def send(self, severity: int, line: str, when: datetime, on_done: OnDone | None = None) -> None:
        """Queue one alert line; never blocks on the network, never raises.

        ``on_done(True)`` is called once the line is settled: written to the socket, or
        dropped as the oldest of a full queue (counted, and in the journal). It is called
        with False for a line still queued when the sink is closed: not delivered, so the
        caller may hand it to the next sink (or the next start) again. Called from the
        delivery thread, or from the thread that closes the sink; never under a lock.
        """
        try:
            data = self._message(severity, line, when)
        except Exception:  # an alert must never take its caller down
            data = _encode(f"<{self._facility * 8 + 3}>{line}")
        dropped: _Item | None = None
        with self._cond:
            if len(self._queue) >= self._cfg.queue:
                dropped = self._queue.popleft()
                self._dropped += 1
            self._queue.append(_Item(data, on_done))
            self._cond.notify_all()
        if dropped is not None:
            _settle(dropped, True)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued message has been sent (True) or ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._kick += 1
            self._cond.notify_all()
            while self._queue or self._settling:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what can be delivered within ``timeout``, then stop the thread.

        Returns within ``timeout`` even when the thread is stuck in a connect or send
        (it is a daemon thread, and exits when that returns)."""
        deadline = time.monotonic() + timeout
        # Part of the time is kept for the thread to stop after a flush that timed out.
        self.flush(timeout - min(0.2, timeout / 4))
        with self._cond:
            self._stopping = True
            self._kick += 1
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                # Stuck in a send to a peer that reads nothing: wake it (it then exits).
                _cut(self._sock)
        if thread is None or not thread.is_alive():
            self._disconnect()
        with self._cond:
            self._thread = None if thread is None or not thread.is_alive() else thread
            left = list(self._queue)
            self._queue.clear()
        for item in left:  # never written: the caller hands them on (next sink, next start)
            _settle(item, False)

    def stats(self) -> dict[str, object]:
        with self._cond:
            return {
                "target": self._target.text,
                "queued": len(self._queue),
                "sent": self._sent,
                "dropped": self._dropped,
                "refused": self._refusals,
                "connected": self._connected,
                "last_error": self._last_error,
            }

    def _message(self, severity: int, line: str, when: datetime) -> bytes:
        pri = self._facility * 8 + (severity & 7)
        if self._format is SyslogFormat.RFC5424:
            text = format_rfc5424(pri, when, self._hostname, self._app, self._pid, line)
        else:
            host = None if self._target.scheme == "unix" else self._hostname
            text = format_rfc3164(pri, when, host, self._app, self._pid, line)
        return _encode(text)

    # --- the delivery thread ------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        failing = False  # logged as failing, not yet as restored
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    break
                item = self._queue[0]
                data = item.data
            try:
                if self._sock is None:
                    self._connect()
                try:
                    self._deliver(data)
                except ConnectionRefusedError:
                    if self._stream:
                        raise
                    # UDP: the refusal (an ICMP port unreachable) is about an earlier
                    # datagram, already gone; this one can still be sent. Treating it as
                    # an outage would flap between "lost" and "reachable again" at every
                    # alert, and hold nothing back that UDP could have delivered.
                    self._refused()
                    self._deliver(data)
            except Exception as exc:  # the thread must outlive any error
                self._disconnect()
                self._failed(exc, log_it=not failing, delay=delay)
                failing = True
                if not self._backoff(delay):
                    break
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            with self._cond:
                # ``is``: the head may have been dropped (queue full) while it was sent.
                ours = bool(self._queue) and self._queue[0] is item
                if ours:  # else dropped (queue full) while it was sent, and settled then
                    self._queue.popleft()
                    self._settling += 1
                self._sent += 1
                first = self._sent == 1
                self._connected = True
                self._cond.notify_all()
                queued, dropped = len(self._queue), self._dropped
            if ours:
                # Written to the socket: now, not when queued, the caller may call it sent.
                try:
                    _settle(item, True)
                finally:
                    with self._cond:
                        self._settling -= 1
                        self._cond.notify_all()
            if failing:
                log.info(
                    "syslog target reachable again",
                    target=self._target.text,
                    queued=queued,
                    dropped=dropped,
                )
                failing = False
            elif first:
                log.info("syslog target connected", target=self._target.text)
            delay = BACKOFF_FIRST
        self._disconnect()

    def _refused(self) -> None:
        """A UDP collector refused a datagram: said at most once an hour, and counted."""
        now = time.monotonic()
        with self._cond:
            self._refusals += 1
            self._last_error = "datagrams refused (ICMP port unreachable)"
            say = self._refused_said is None or now - self._refused_said > REFUSED_EVERY
            if say:
                self._refused_said = now
            refusals = self._refusals
        if say:
            log.warning(
                "syslog UDP target refuses datagrams: nothing listens there, alerts sent to "
                "it are lost (they are in this log too)",
                target=self._target.text,
                refusals=refusals,
            )

    def _failed(self, exc: BaseException, *, log_it: bool, delay: float) -> None:
        """Record a failure; it is logged only on the change from working to failing."""
        error = _describe(exc)
        with self._cond:
            was_connected = self._connected
            self._connected = False
            self._last_error = error
            queued = len(self._queue)
        if log_it:
            log.warning(
                "syslog target connection lost" if was_connected else "syslog target unreachable",
                target=self._target.text,
                error=error,
                queued=queued,
                retry_in=delay,
            )

    def _backoff(self, delay: float) -> bool:
        """Wait ``delay`` seconds, less if flush/close asks; False when stopping."""
        with self._cond:
            kick = self._kick
            self._cond.wait_for(lambda: self._stopping or self._kick != kick, delay)
            return not self._stopping

    def _connect(self) -> None:
        t = self._target
        if t.scheme == "unix":
            sock = _unix_socket(t.host)
            self._sock, self._stream = sock, sock.type == socket.SOCK_STREAM
        elif t.scheme == "udp":
            family, kind, proto, _, addr = socket.getaddrinfo(
                t.host, t.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(SEND_TIMEOUT)
                sock.connect(addr)
            except BaseException:
                sock.close()
                raise
            self._sock, self._stream = sock, False
        else:
            deadline = time.monotonic() + CONNECT_TIMEOUT
            sock = socket.create_connection((t.host, t.port), timeout=CONNECT_TIMEOUT)
            try:
                if t.scheme == "tls":
                    sock = self._context().wrap_socket(
                        sock, server_hostname=t.host, do_handshake_on_connect=False
                    )
                    _handshake(sock, deadline)
                sock.settimeout(SEND_TIMEOUT)
            except BaseException:
                sock.close()
                raise
            self._sock, self._stream = sock, True

    def _context(self) -> ssl.SSLContext:
        """Made for each connection, so a replaced CA bundle is read on reconnect."""
        cafile = str(self._cfg.ca_bundle) if self._cfg.ca_bundle is not None else None
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = True  # the defaults; said here so no one turns them off
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _deliver(self, data: bytes) -> None:
        sock = self._sock
        assert sock is not None
        if not self._stream:
            sock.send(data)
            return
        if _peer_closed(sock):
            raise ConnectionResetError(errno.ECONNRESET, "the syslog server closed the connection")
        _send_all(sock, octet_frame(data), time.monotonic() + SEND_TIMEOUT)

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _handshake(sock: ssl.SSLSocket, deadline: float) -> None:
    """The TLS handshake, done by ``deadline`` in all (a blocking one would give each
    read of a peer that answers byte by byte the whole timeout)."""
    sock.setblocking(False)
    wait: tuple[list[ssl.SSLSocket], list[ssl.SSLSocket]]
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            wait = ([sock], [])
        except ssl.SSLWantWriteError:
            wait = ([], [sock])
        left = deadline - time.monotonic()
        if left <= 0 or not any(select.select(*wait, [], left)[:2]):
            raise TimeoutError(f"TLS handshake not complete within {CONNECT_TIMEOUT:g} s")


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    """``sendall`` done by ``deadline`` in all (an SSL socket's ``sendall`` gives each
    partial send the whole timeout)."""
    view = memoryview(data)
    try:
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"a message not sent within {SEND_TIMEOUT:g} s")
            sock.settimeout(left)
            view = view[sock.send(view) :]
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(SEND_TIMEOUT)


def _cut(sock: socket.socket | None) -> None:
    """Shut ``sock`` down from another thread: a send or recv blocked on it returns."""
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _unix_socket(path: str) -> socket.socket:
    """A connected unix socket: datagram (journald, rsyslog's imuxsock), else stream."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.settimeout(SEND_TIMEOUT)
        sock.connect(path)
        return sock
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EPROTOTYPE:
            raise
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(path)
        sock.settimeout(SEND_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


def _peer_closed(sock: socket.socket) -> bool:
    """Whether a stream peer has closed (or reset) the connection.

    A syslog server never writes, so a readable socket means end of file, an error, or
    (TLS 1.3) a session ticket. Checking before each send means a restarted server does
    not cost the first message written into the dead connection.
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    try:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        finally:
            sock.settimeout(SEND_TIMEOUT)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except OSError:
        return True
    return not data


def _describe(exc: BaseException) -> str:
    """The error as the operator reads it (an OSError's text names no secret)."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


__all__ = [
    "MAX_MESSAGE",
    "SyslogSink",
    "format_rfc3164",
    "format_rfc5424",
    "octet_frame",
]
