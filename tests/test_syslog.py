"""The syslog alert sink against real listeners on loopback and unix sockets."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ccx_agent.config.schema import Facility, SyslogConfig, SyslogFormat
from ccx_agent.daemon.syslog import (
    MAX_MESSAGE,
    SyslogSink,
    format_rfc3164,
    format_rfc5424,
    octet_frame,
)

WHEN = datetime(2026, 11, 28, 0, 41, 7, 123456, tzinfo=UTC)
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>\S+) "
    r"(?P<app>\S+) (?P<pid>\d+) - - (?P<msg>.*)$",
    re.DOTALL,
)
RFC3164 = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<ts>[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d) (?:(?P<host>\S+) )?"
    r"(?P<tag>[^\s\[]+)\[(?P<pid>\d+)\]: (?P<msg>.*)$",
    re.DOTALL,
)


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def make_sink(target: str, **kw: object) -> SyslogSink:
    opts = {k: kw.pop(k) for k in list(kw) if k in ("hostname", "app", "pid")}
    cfg = SyslogConfig.model_validate({"target": target, **kw})
    return SyslogSink(cfg, **opts)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(sink: SyslogSink) -> Iterator[SyslogSink]:
    sink.start()
    try:
        yield sink
    finally:
        sink.close(timeout=1.0)


# --- listeners ----------------------------------------------------------------------


class StreamCollector:
    """A TCP (or TLS, or unix stream) syslog server: every connection's bytes, kept."""

    def __init__(
        self,
        family: int = socket.AF_INET,
        address: object = ("127.0.0.1", 0),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.srv = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET:
            self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(address)
        self.srv.listen(8)
        self.tls = tls
        self.conns: list[bytearray] = []
        self.socks: list[socket.socket] = []
        self.handshake_errors: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.srv.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError) as exc:
                    self.handshake_errors.append(str(exc))
                    conn.close()
                    continue
            buf = bytearray()
            with self.lock:
                self.conns.append(buf)
                self.socks.append(conn)
            threading.Thread(target=self._read, args=(conn, buf), daemon=True).start()

    def _read(self, conn: socket.socket, buf: bytearray) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                buf.extend(data)

    def frames(self) -> list[list[bytes]]:
        """Each connection's messages, parsed strictly as RFC 6587 octet-counted frames
        (a trailing incomplete frame is left out)."""
        out = []
        with self.lock:
            bufs = [bytes(b) for b in self.conns]
        for data in bufs:
            msgs, i = [], 0
            while i < len(data):
                m = re.match(rb"([1-9]\d*) ", data[i:])
                assert m, f"not octet-counted at {i}: {data[i : i + 40]!r}"
                n, start = int(m[1]), i + m.end()
                if start + n > len(data):
                    break
                msgs.append(data[start : start + n])
                i = start + n
            out.append(msgs)
        return out

    def messages(self) -> list[str]:
        return [m.decode() for conn in self.frames() for m in conn]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.srv.shutdown(socket.SHUT_RDWR)  # wakes accept(), so the port is free
        self.srv.close()
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class DatagramCollector:
    def __init__(self, family: int = socket.AF_INET, address: object = ("127.0.0.1", 0)):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5.0)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def recv(self) -> bytes:
        return self.sock.recv(65536)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock_dir(tmp_path: Path) -> Path:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be long.
    if len(str(tmp_path)) < 90:
        return tmp_path
    import tempfile

    return Path(tempfile.mkdtemp(prefix="sl", dir="/tmp"))


# --- formats ------------------------------------------------------------------------


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's local time is UTC+9 (a POSIX TZ string: no tzdata needed)."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_rfc3164_header_is_local_time_with_space_padded_day(tokyo: None) -> None:
    when = datetime(2026, 11, 2, 20, 5, 9, tzinfo=UTC)  # 3 Nov 05:05:09 in Tokyo
    line = format_rfc3164(185, when, "uccxpub", "ccx-agent", 4242, "%UC-1-X: text")
    assert line == "<185>Nov  3 05:05:09 uccxpub ccx-agent[4242]: %UC-1-X: text"
    assert format_rfc3164(14, WHEN, None, "ccx-agent", 7, "m") == (
        "<14>Nov 28 09:41:07 ccx-agent[7]: m"
    )
    # A naive time is UTC, as everywhere in the agent.
    assert format_rfc3164(14, WHEN.replace(tzinfo=None), None, "ccx-agent", 7, "m") == (
        "<14>Nov 28 09:41:07 ccx-agent[7]: m"
    )


def test_rfc5424_header_is_utc_with_microseconds() -> None:
    line = format_rfc5424(185, WHEN, "uccxpub.example.com", "ccx-agent", 4242, "msg text")
    assert (
        line == "<185>1 2026-11-28T00:41:07.123456Z uccxpub.example.com ccx-agent 4242 - - msg text"
    )
    plus_one = WHEN.astimezone(timezone(timedelta(hours=1))).replace(microsecond=0)
    assert format_rfc5424(13, plus_one, "h", "a", 1, "m") == (
        "<13>1 2026-11-28T00:41:07.000000Z h a 1 - - m"
    )


def test_rfc5424_hostname_is_printable_or_nil() -> None:
    assert format_rfc5424(14, WHEN, "my host\x01", "ccx-agent", 1, "m").split()[2] == "my_host_"
    assert format_rfc5424(14, WHEN, "", "ccx-agent", 1, "m").split()[2] == "-"
    assert format_rfc5424(14, WHEN, "hôte", "ccx-agent", 1, "m").split()[2] == "h_te"


def test_octet_frame_counts_bytes() -> None:
    assert octet_frame(b"hello") == b"5 hello"
    assert octet_frame("é".encode()) == b"2 \xc3\xa9"


# --- transports ---------------------------------------------------------------------


def test_udp_rfc5424_local7_alert() -> None:
    collector = DatagramCollector()
    target = f"udp://127.0.0.1:{collector.port}"
    try:
        sink = make_sink(
            target,
            format="rfc5424",
            facility="local7",
            hostname="uccxpub.example.com",
            pid=4242,
        )
        with running(sink):
            sink.send(1, "%UC_LIB_LICENSE-1-SYSTEM_IN_OOC_STATE: text", WHEN)
            data = collector.recv()
            assert sink.flush(5.0)
            stats = sink.stats()
    finally:
        collector.close()
    m = RFC5424.match(data.decode())
    assert m, data
    assert m["pri"] == "185"  # local7 (23) * 8 + 1
    assert (m["ts"], m["host"], m["app"], m["pid"]) == (
        "2026-11-28T00:41:07.123456Z",
        "uccxpub.example.com",
        "ccx-agent",
        "4242",
    )
    assert m["msg"] == "%UC_LIB_LICENSE-1-SYSTEM_IN_OOC_STATE: text"
    assert not data.endswith((b"\n", b"\x00"))  # one message per datagram, no terminator
    assert stats == {
        "target": target,
        "queued": 0,
        "sent": 1,
        "dropped": 0,
        "refused": 0,
        "connected": True,
        "last_error": None,
    }


def test_udp_rfc3164_names_the_short_host_and_defaults() -> None:
    collector = DatagramCollector()
    try:
        sink = make_sink(f"udp://127.0.0.1:{collector.port}", hostname="uccxpub.example.com")
        with running(sink):
            sink.send(4, "warning line", WHEN)
            data = collector.recv().decode()
    finally:
        collector.close()
    m = RFC3164.match(data)
    assert m, data
    assert m["pri"] == str(Facility.USER.code * 8 + 4) == "12"
    assert (m["host"], m["tag"], m["pid"], m["msg"]) == (
        "uccxpub",
        "ccx-agent",
        str(os.getpid()),
        "warning line",
    )
    local = WHEN.astimezone()
    assert m["ts"] == f"{local:%b} {local.day:2d} {local:%H:%M:%S}"


def test_udp_message_is_cut_at_8_kib_on_a_character_boundary() -> None:
    collector = DatagramCollector()
    try:
        sink = make_sink(f"udp://127.0.0.1:{collector.port}")
        with running(sink):
            sink.send(6, "é" * 10000, WHEN)
            data = collector.recv()
    finally:
        collector.close()
    assert MAX_MESSAGE - 1 <= len(data) <= MAX_MESSAGE
    assert data.decode().endswith("éé")  # valid UTF-8 to the end


def test_tcp_octet_counting_several_messages_on_one_connection() -> None:
    server = StreamCollector()
    try:
        sink = make_sink(
            f"tcp://127.0.0.1:{server.port}", format="rfc5424", facility="local7", pid=99
        )
        with running(sink):
            lines = [f"alert {i} with spaces and ünïcode" for i in range(5)]
            for i, line in enumerate(lines):
                sink.send(i % 8, line, WHEN + timedelta(seconds=i))
            assert sink.flush(5.0)
            wait_for(lambda: sum(map(len, server.frames())) == 5)
            frames = server.frames()
            assert sink.stats()["sent"] == 5
    finally:
        server.close()
    assert len(frames) == 1, "one persistent connection"
    parsed = [RFC5424.match(f.decode()) for f in frames[0]]
    assert all(parsed)
    assert [m["msg"] for m in parsed if m] == lines
    assert [int(m["pri"]) for m in parsed if m] == [184 + i for i in range(5)]
    assert [m["pid"] for m in parsed if m] == ["99"] * 5


def test_tcp_many_threads_send_at_once() -> None:
    server = StreamCollector()
    try:
        sink = make_sink(f"tcp://127.0.0.1:{server.port}")
        with running(sink):

            def burst(t: int) -> None:
                for i in range(50):
                    sink.send(5, f"t{t} m{i}", WHEN)

            threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert sink.flush(5.0)
            wait_for(lambda: len(server.messages()) == 200)
            msgs = [RFC3164.match(m) for m in server.messages()]
    finally:
        server.close()
    bodies = [m["msg"] for m in msgs if m]
    assert sorted(bodies) == sorted(f"t{t} m{i}" for t in range(4) for i in range(50))
    for t in range(4):  # each thread's messages keep their order
        mine = [b for b in bodies if b.startswith(f"t{t} ")]
        assert mine == [f"t{t} m{i}" for i in range(50)]


# --- TLS ----------------------------------------------------------------------------


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate it signs (localhost, 127.0.0.1), and another CA."""
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("syslog test CA")
    other, _ = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {
        "ca": d / "ca.pem",
        "other": d / "other.pem",
        "cert": d / "server.pem",
        "key": d / "server.key",
    }
    files["ca"].write_bytes(_pem(ca))
    files["other"].write_bytes(_pem(other))
    files["cert"].write_bytes(_pem(server))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _server_context(pki: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["cert"], pki["key"])
    return ctx


def test_tls_with_the_servers_ca_delivers_octet_counted(pki: dict[str, Path]) -> None:
    server = StreamCollector(tls=_server_context(pki))
    try:
        sink = make_sink(
            f"tls://127.0.0.1:{server.port}", ca_bundle=str(pki["ca"]), format="rfc5424"
        )
        with running(sink):
            for i in range(3):
                sink.send(2, f"over tls {i}", WHEN)
            assert sink.flush(5.0)
            wait_for(lambda: len(server.messages()) == 3)
            assert sink.stats()["connected"] is True
            frames = server.frames()
    finally:
        server.close()
    assert len(frames) == 1
    assert [m.decode().split(" - - ", 1)[1] for m in frames[0]] == [
        f"over tls {i}" for i in range(3)
    ]


def test_tls_with_another_ca_is_refused_and_the_sink_keeps_running(
    pki: dict[str, Path],
) -> None:
    server = StreamCollector(tls=_server_context(pki))
    try:
        sink = make_sink(f"tls://127.0.0.1:{server.port}", ca_bundle=str(pki["other"]))
        with running(sink):
            sink.send(1, "must not be delivered", WHEN)
            wait_for(lambda: sink.stats()["last_error"] is not None)
            assert not sink.flush(0.3)
            stats = sink.stats()
            assert "CERTIFICATE_VERIFY_FAILED" in str(stats["last_error"])
            assert (stats["queued"], stats["sent"], stats["connected"]) == (1, 0, False)
            assert sink._thread is not None and sink._thread.is_alive()
            sink.send(1, "another", WHEN)  # still accepted
            assert sink.stats()["queued"] == 2
    finally:
        server.close()
    assert server.messages() == []


def test_tls_checks_the_host_name(pki: dict[str, Path]) -> None:
    """The certificate names localhost and 127.0.0.1, not 127.0.0.2 (also loopback)."""
    server = StreamCollector(tls=_server_context(pki), address=("0.0.0.0", 0))
    try:
        sink = make_sink(f"tls://127.0.0.2:{server.port}", ca_bundle=str(pki["ca"]))
        with running(sink):
            sink.send(1, "wrong name", WHEN)
            wait_for(lambda: sink.stats()["last_error"] is not None)
            assert "127.0.0.2" in str(sink.stats()["last_error"])
    finally:
        server.close()
    assert server.messages() == []


# --- unix sockets -------------------------------------------------------------------


def test_unix_datagram_rfc3164_leaves_the_hostname_out(sock_dir: Path) -> None:
    path = sock_dir / "log"
    collector = DatagramCollector(socket.AF_UNIX, str(path))
    try:
        sink = make_sink(str(path), hostname="uccxpub", pid=321, facility="daemon")
        with running(sink):
            sink.send(3, "%MCVD-LIB_LICENSE-3-REGISTER_FAILED: x", WHEN)
            data = collector.recv().decode()
    finally:
        collector.close()
    local = WHEN.astimezone()
    assert data == (
        f"<27>{local:%b} {local.day:2d} {local:%H:%M:%S} "
        "ccx-agent[321]: %MCVD-LIB_LICENSE-3-REGISTER_FAILED: x"
    )
    m = RFC3164.match(data)
    assert m and m["host"] is None and m["tag"] == "ccx-agent"


def test_unix_stream_socket_is_used_with_octet_counting(sock_dir: Path) -> None:
    path = sock_dir / "log"
    server = StreamCollector(socket.AF_UNIX, str(path))
    try:
        sink = make_sink(str(path), format="rfc5424", hostname="h")
        with running(sink):
            sink.send(6, "one", WHEN)
            sink.send(6, "two", WHEN)
            assert sink.flush(5.0)
            wait_for(lambda: len(server.messages()) == 2)
            frames = server.frames()
    finally:
        server.close()
    assert len(frames) == 1
    assert [f.decode() for f in frames[0]] == [
        f"<14>1 2026-11-28T00:41:07.123456Z h ccx-agent {os.getpid()} - - {w}"
        for w in ("one", "two")
    ]


# --- an unreachable target ----------------------------------------------------------


def test_queue_is_bounded_and_delivered_in_order_once_the_target_appears(
    sock_dir: Path,
) -> None:
    path = sock_dir / "later"
    sink = make_sink(str(path), queue=3, format="rfc5424", hostname="h")
    with running(sink):
        for i in range(5):
            t0 = time.monotonic()
            sink.send(5, f"m{i}", WHEN)
            assert time.monotonic() - t0 < 0.5
        wait_for(lambda: sink.stats()["last_error"] is not None)
        stats = sink.stats()
        assert (stats["queued"], stats["dropped"], stats["sent"]) == (3, 2, 0)
        assert stats["connected"] is False
        assert not sink.flush(0.1)

        collector = DatagramCollector(socket.AF_UNIX, str(path))
        try:
            assert sink.flush(5.0)  # cuts the backoff wait short
            got = [collector.recv().decode().rsplit(" ", 1)[1] for _ in range(3)]
        finally:
            collector.close()
        stats = sink.stats()
    assert got == ["m2", "m3", "m4"]  # the oldest two were dropped
    assert (stats["queued"], stats["dropped"], stats["sent"]) == (0, 2, 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp_reconnects_after_the_server_restarts_and_logs_each_change_once() -> None:
    port = _free_port()
    sink = make_sink(f"tcp://127.0.0.1:{port}", format="rfc5424", hostname="h")
    with structlog.testing.capture_logs() as logs, running(sink):
        for i in range(3):
            sink.send(5, f"early {i}", WHEN)
        wait_for(lambda: sink.stats()["last_error"] is not None)
        assert not sink.flush(0.2)
        assert not sink.flush(0.2)  # more failed attempts: still one log line

        server = StreamCollector(address=("127.0.0.1", port))
        try:
            assert sink.flush(5.0)
            wait_for(lambda: len(server.messages()) == 3)
            first = server.messages()
        finally:
            server.close()

        # The server goes away: the connection is seen closed before the next write.
        sink.send(5, "while down", WHEN)
        wait_for(lambda: sink.stats()["connected"] is False)
        server = StreamCollector(address=("127.0.0.1", port))
        try:
            sink.send(5, "after restart", WHEN)
            assert sink.flush(5.0)
            wait_for(lambda: len(server.messages()) == 2)
            second = server.messages()
        finally:
            server.close()
        stats = sink.stats()
    body = [m.split(" - - ", 1)[1] for m in first + second]
    assert body == ["early 0", "early 1", "early 2", "while down", "after restart"]
    assert (stats["sent"], stats["dropped"], stats["queued"]) == (5, 0, 0)
    events = [(e["log_level"], e["event"]) for e in logs if e.get("target")]
    assert events == [
        ("warning", "syslog target unreachable"),
        ("info", "syslog target reachable again"),
        ("warning", "syslog target connection lost"),
        ("info", "syslog target reachable again"),
    ]
    for e in logs:
        assert "early" not in str(e) and "restart" not in str(e)  # no message content


def test_send_does_not_wait_for_a_hanging_connect_and_close_keeps_its_timeout(
    blackhole: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ccx_agent.daemon.syslog.CONNECT_TIMEOUT", 1.5)
    sink = make_sink(f"tcp://127.0.0.1:{blackhole}")
    sink.start()
    sink.send(1, "first", WHEN)
    time.sleep(0.05)  # the thread is now inside its 5 s connect
    t0 = time.monotonic()
    for i in range(100):
        sink.send(1, f"more {i}", WHEN)
    assert time.monotonic() - t0 < 0.5
    assert sink.stats()["queued"] == 101
    thread = sink._thread
    t0 = time.monotonic()
    sink.close(timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    assert thread is not None
    thread.join(10)  # its connect gives up (after 1.5 s here), then it stops
    assert not thread.is_alive()


def test_udp_target_that_refuses_is_said_once_and_never_flaps() -> None:
    """Nothing listens on the UDP port: each send after the first is refused (ICMP) for
    the datagram before it. The sink goes on sending, says so once, and never logs a
    "reachable again" that it cannot know."""
    sink = make_sink(f"udp://127.0.0.1:{_free_udp_port()}")
    with structlog.testing.capture_logs() as logs, running(sink):
        for i in range(6):
            sink.send(3, f"alert {i}", WHEN)
            assert sink.flush(5.0)
        stats = sink.stats()
    events = [e["event"] for e in logs]
    assert stats["sent"] == 6 and stats["queued"] == 0
    assert stats["refused"] == 5, stats  # each send after the first: the one before it
    assert sum("refuses datagrams" in e for e in events) == 1
    assert not any("reachable again" in e or "connection lost" in e for e in events)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_close_with_a_refusing_target_returns_within_its_timeout() -> None:
    sink = make_sink(f"tcp://127.0.0.1:{_free_port()}")
    sink.start()
    sink.send(1, "never delivered", WHEN)
    wait_for(lambda: sink.stats()["last_error"] is not None)
    thread = sink._thread
    t0 = time.monotonic()
    sink.close(timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    # close() promises its timeout, not the thread's end within it (it may be waiting
    # for a core on a loaded machine): the thread, woken from its back-off, ends.
    assert thread is not None
    thread.join(5.0)
    assert not thread.is_alive()
    assert "Connection refused" in str(sink.stats()["last_error"])


def test_send_never_raises_and_queues_before_start() -> None:
    sink = make_sink("udp://127.0.0.1:9")
    sink.send(99, "severity out of range", WHEN)
    sink.send(1, "naive time", datetime(2026, 1, 1))
    sink.send(1, "lone surrogate \udc80", WHEN)
    assert sink.stats()["queued"] == 3
    assert not sink.flush(0.05)  # not started: nothing can deliver
    sink.close(timeout=0.1)


def test_flush_on_an_empty_queue_is_true_at_once() -> None:
    sink = make_sink("udp://127.0.0.1:9", format=SyslogFormat.RFC5424.value)
    with running(sink):
        assert sink.flush(0.0)


def test_flush_waits_for_the_last_lines_settling_too() -> None:
    """A written line is taken off the queue before its ``on_done`` runs (the daemon's
    marks the alert emitted in the database). A flush that returned once the queue was
    empty let a stop close the database under that mark on a loaded machine: the alert
    stayed pending and went out again at the next start."""
    server = StreamCollector()
    settled: list[float] = []

    def slow_mark(ok: bool) -> None:
        time.sleep(0.5)  # the callback's own work (a committed transaction), made long
        settled.append(time.monotonic())

    try:
        sink = make_sink(f"tcp://127.0.0.1:{server.port}", format="rfc5424")
        with running(sink):
            sink.send(3, "the last alert of a life", WHEN, on_done=slow_mark)
            assert sink.flush(5.0)
            flushed = time.monotonic()
            assert settled and settled[0] <= flushed
    finally:
        server.close()


def test_a_tls_handshake_dripped_byte_by_byte_gives_up_within_the_connect_timeout(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``tls://`` collector that answers the ClientHello one byte every 0.1 s: each
    read gets a byte long before the socket timeout, but connect + handshake get
    CONNECT_TIMEOUT in all; then the sink counts the target unreachable and keeps the
    message queued."""
    monkeypatch.setattr("ccx_agent.daemon.syslog.CONNECT_TIMEOUT", 0.5)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = int(srv.getsockname()[1])
    stop = threading.Event()

    def drip() -> None:
        conn, _ = srv.accept()
        with conn, contextlib.suppress(OSError):
            conn.recv(4096)
            for byte in b"\x16\x03\x03\x40\x00" + b"\x02" * 0x4000:
                conn.sendall(bytes([byte]))
                if stop.wait(0.1):
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    sink = make_sink(f"tls://127.0.0.1:{port}", ca_bundle=str(pki["ca"]))
    try:
        sink.start()
        started = time.monotonic()
        sink.send(2, "held", WHEN)
        wait_for(lambda: sink.stats()["last_error"] is not None, timeout=5)
        assert time.monotonic() - started < 2.0
        stats = sink.stats()
        assert "TLS handshake not complete within 0.5 s" in str(stats["last_error"])
        assert stats["queued"] == 1 and stats["sent"] == 0
    finally:
        stop.set()
        sink.close(timeout=0.5)
        srv.close()
        thread.join(5)
