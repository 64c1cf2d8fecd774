"""The systemd notify protocol (sd_notify(3)), written directly on a unix datagram socket.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service: a filesystem path
(``/run/systemd/notify``) or an abstract socket name written with a leading ``@``. A
message is one datagram of newline-separated ``KEY=VALUE`` assignments (``READY=1``,
``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``). Without ``NOTIFY_SOCKET`` (not run by
systemd, or another service type) the notifier is disabled and every call is a no-op.

Nothing here raises: a notification that cannot be delivered is logged (once until a
later one succeeds) and reported by a ``False`` return, so the daemon never stops
because its supervisor is not listening. ``vsock:`` addresses (systemd 254+, for
virtual machines) are not supported: they disable the notifier, with one log line.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from types import TracebackType

log = logging.getLogger("ccx_agent.sdnotify")

# Longest wait for room in a full socket buffer before a notification is given up: a
# wedged service manager must not block the scheduler's heartbeat for long.
SEND_TIMEOUT = 1.0

_CLOEXEC = getattr(socket, "SOCK_CLOEXEC", 0)
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_DIGITS = re.compile(r"[0-9]+")


def _address(value: str) -> bytes | None:
    """The AF_UNIX address of a NOTIFY_SOCKET value, or None when unusable (logged)."""
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("vsock:"):
        log.warning("NOTIFY_SOCKET %r: vsock addresses are not supported; notifications off", value)
    else:
        log.warning(
            "NOTIFY_SOCKET %r: not an absolute path or @abstract name; notifications off", value
        )
    return None


class Notifier:
    """Sends notifications to the service manager; thread-safe, never raises."""

    def __init__(self, address: bytes | None) -> None:
        self._address = address
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closed = False
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier of ``NOTIFY_SOCKET`` (``os.environ`` by default); disabled when
        the variable is unset or empty, or names an unsupported address."""
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        return cls(_address(value) if value else None)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (and close() was not called)."""
        return self._address is not None and not self._closed

    def send(self, *assignments: str) -> bool:
        """Sends the assignments (``"READY=1"``, ``"STATUS=…"``) as one datagram, one per
        line. True when it was sent; False when disabled, closed, an assignment is not a
        single-line ``KEY=VALUE``, or the socket refused it (logged)."""
        if self._address is None:
            return False
        if not assignments or any(
            "\n" in a or "=" not in a or a.startswith("=") for a in assignments
        ):
            log.warning("sd_notify: not single-line KEY=VALUE assignments: %r", assignments)
            return False
        payload = "\n".join(assignments).encode("utf-8")
        with self._lock:
            if self._closed:
                return False
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | _CLOEXEC)
                    sock.settimeout(SEND_TIMEOUT)
                    self._sock = sock
                sent = self._sock.sendto(payload, _NOSIGNAL, self._address)
            except OSError as exc:
                if not self._failing:
                    log.warning("sd_notify: cannot notify %r: %s", self._address, exc)
                self._failing = True
                return False
            if sent != len(payload):  # a datagram is never split; be sure anyway
                return False
            if self._failing:
                log.info("sd_notify: notifications delivered again")
            self._failing = False
            return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``, with ``STATUS=`` when given: start-up is complete."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=text`` (shown by ``systemctl status``); newlines become spaces."""
        return self.send(*_status(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive (see watchdog_interval())."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``, with ``STATUS=`` when given: the service is shutting down."""
        return self.send("STOPPING=1", *_status(status))

    def close(self) -> None:
        """Closes the socket; later calls send nothing and return False."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + text.replace("\r\n", " ").replace("\n", " ").replace("\r", " "),)


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between two ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, as
    sd_watchdog_enabled(3) recommends. None when the watchdog is off: ``WATCHDOG_USEC``
    unset, not a whole number or 0, or ``WATCHDOG_PID`` set to another process than
    ``pid`` (this process by default) or to something that is not a pid."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if usec is None or not _DIGITS.fullmatch(usec) or int(usec) == 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        own = os.getpid() if pid is None else pid
        if not _DIGITS.fullmatch(watchdog_pid) or int(watchdog_pid) != own:
            return None
    return int(usec) / 2 / 1e6
