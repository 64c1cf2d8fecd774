"""sdnotify: real AF_UNIX datagram sockets (a path in tmp_path and an abstract name)."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccx_agent.daemon.sdnotify import Notifier, watchdog_interval


class Receiver:
    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.notify_socket = notify_socket

    def recv(self) -> bytes:
        return self.sock.recv(65536)

    def pending(self) -> bytes | None:
        """The next datagram if one is queued, else None (never waits)."""
        self.sock.settimeout(0.0)
        try:
            return self.sock.recv(65536)
        except BlockingIOError:
            return None
        finally:
            self.sock.settimeout(5)


def _bound(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture
def path_receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = tmp_path / "notify"
    sock = _bound(str(path))
    yield Receiver(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"ccx-test-{secrets.token_hex(8)}"
    sock = _bound("\0" + name)
    yield Receiver(sock, "@" + name)
    sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    fixture = "path_receiver" if request.param == "path" else "abstract_receiver"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def _notifier(receiver: Receiver) -> Notifier:
    return Notifier.from_env({"NOTIFY_SOCKET": receiver.notify_socket})


# -- payloads ------------------------------------------------------------------------------


def test_ready_with_status(receiver: Receiver) -> None:
    with _notifier(receiver) as n:
        assert n.enabled
        assert n.ready("registered, 12 seats in use") is True
    assert receiver.recv() == b"READY=1\nSTATUS=registered, 12 seats in use"


def test_ready_without_status(receiver: Receiver) -> None:
    with _notifier(receiver) as n:
        assert n.ready() is True
    assert receiver.recv() == b"READY=1"


def test_watchdog(receiver: Receiver) -> None:
    with _notifier(receiver) as n:
        assert n.watchdog() is True
        assert n.watchdog() is True
    assert receiver.recv() == b"WATCHDOG=1"
    assert receiver.recv() == b"WATCHDOG=1"


def test_stopping(receiver: Receiver) -> None:
    with _notifier(receiver) as n:
        assert n.stopping() is True
        assert n.stopping("stopping: job finished") is True
    assert receiver.recv() == b"STOPPING=1"
    assert receiver.recv() == b"STOPPING=1\nSTATUS=stopping: job finished"


def test_status_newlines_become_spaces(receiver: Receiver) -> None:
    with _notifier(receiver) as n:
        assert n.status("OUT_OF_COMPLIANCE\nflex-premium-seat 130/100\r\nlocked") is True
    assert receiver.recv() == b"STATUS=OUT_OF_COMPLIANCE flex-premium-seat 130/100 locked"


def test_send_is_one_datagram_of_lines(receiver: Receiver) -> None:
    with _notifier(receiver) as n:
        assert n.send("READY=1", "STATUS=évaluation: 90 days left", "MAINPID=4242") is True
    assert receiver.recv() == "READY=1\nSTATUS=évaluation: 90 days left\nMAINPID=4242".encode()
    assert receiver.pending() is None


@pytest.mark.parametrize(
    "assignments",
    [(), ("READY",), ("=1",), ("READY=1", "STATUS=a\nWATCHDOG=1")],
    ids=["none", "no-equals", "no-key", "embedded-newline"],
)
def test_send_refuses_malformed_assignments(
    receiver: Receiver, assignments: tuple[str, ...]
) -> None:
    with _notifier(receiver) as n:
        assert n.send(*assignments) is False
    assert receiver.pending() is None


def test_send_is_thread_safe(path_receiver: Receiver) -> None:
    n = _notifier(path_receiver)
    per_thread, threads = 25, 8
    results: list[bool] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for j in range(per_thread):
            ok = n.send(f"STATUS=thread {i} message {j}")
            with lock:
                results.append(ok)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    received = {path_receiver.recv() for _ in range(per_thread * threads)}
    for w in workers:
        w.join()
    n.close()
    assert results == [True] * (per_thread * threads)
    assert received == {
        f"STATUS=thread {i} message {j}".encode() for i in range(threads) for j in range(per_thread)
    }


def test_socket_is_close_on_exec(path_receiver: Receiver) -> None:
    n = _notifier(path_receiver)
    assert n.watchdog()
    sock = n._sock
    assert sock is not None
    assert not os.get_inheritable(sock.fileno())
    assert sock.gettimeout() is not None
    n.close()


# -- disabled and failing ------------------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}], ids=["unset", "empty"])
def test_disabled_without_notify_socket(environ: dict[str, str]) -> None:
    n = Notifier.from_env(environ)
    assert n.enabled is False
    assert n.ready("x") is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    n.close()


@pytest.mark.parametrize(
    "value", ["vsock:2:1234", "relative/notify", "@"], ids=["vsock", "relative", "bare-at"]
)
def test_disabled_for_unsupported_addresses(value: str, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": value})
    assert n.enabled is False
    assert n.ready() is False
    assert len([r for r in caplog.records if "NOTIFY_SOCKET" in r.getMessage()]) == 1


def test_from_env_reads_os_environ(
    path_receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.notify_socket)
    with Notifier.from_env() as n:
        assert n.ready()
    assert path_receiver.recv() == b"READY=1"


def test_missing_socket_path_returns_false(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled is True
    assert n.ready("up") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    warnings = [r for r in caplog.records if "cannot notify" in r.getMessage()]
    assert len(warnings) == 1  # logged once while failing, not at every ping
    n.close()


def test_missing_abstract_socket_returns_false() -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": f"@ccx-test-{secrets.token_hex(8)}-absent"})
    assert n.watchdog() is False
    n.close()


def test_recovers_when_the_socket_appears(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    assert n.watchdog() is False
    sock = _bound(str(path))
    try:
        assert n.watchdog() is True
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()
        n.close()


def test_closed_notifier_sends_nothing(path_receiver: Receiver) -> None:
    n = _notifier(path_receiver)
    assert n.watchdog()
    n.close()
    assert n.enabled is False
    assert n.watchdog() is False
    n.close()  # twice is harmless
    assert path_receiver.recv() == b"WATCHDOG=1"
    assert path_receiver.pending() is None


# -- watchdog_interval ---------------------------------------------------------------------


def test_watchdog_interval_is_half_the_timeout() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert watchdog_interval({"WATCHDOG_USEC": "1"}) == 5e-7


def test_watchdog_interval_with_our_pid() -> None:
    env = {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 5.0
    assert watchdog_interval({**env, "WATCHDOG_PID": "4242"}, pid=4242) == 5.0


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "garbage"},
        {"WATCHDOG_USEC": "-10000000"},
        {"WATCHDOG_USEC": "1.5e7"},
        {"WATCHDOG_USEC": " 10000000"},
        {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)},
        {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "garbage"},
        {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": ""},
    ],
    ids=[
        "unset",
        "empty",
        "zero",
        "garbage",
        "negative",
        "float",
        "space",
        "other-pid",
        "garbage-pid",
        "empty-pid",
    ],
)
def test_watchdog_interval_off(environ: dict[str, str]) -> None:
    assert watchdog_interval(environ) is None


def test_watchdog_interval_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", "1" if os.getpid() != 1 else "2")
    assert watchdog_interval() is None
