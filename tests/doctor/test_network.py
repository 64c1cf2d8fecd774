"""The way to SSM, fault by fault: each planted on a real socket or certificate, each
found by the right check with the right fix, and every check above it skipped."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.cli import commands
from ccx_agent.cli.doctor import Result
from ccx_agent.simulator import server as ssm_server
from ccx_agent.simulator.ca import tls_files
from tests.doctor.conftest import Blackhole, Silent, Ssm, config, free_port, register, run
from tests.ssm.servers import MisbehavingServer, fixed, other_authority


def _results(found: dict[str, Any], *names: str) -> list[Result]:
    return [found[n].result for n in names]


def test_a_healthy_registered_instance_passes_every_network_check(ssm: Ssm, tmp_path: Path) -> None:
    path = config(tmp_path, ssm)
    register(path, ssm)
    found = run(path)
    assert _results(found, "dns", "tcp", "tls", "clock", "ssm") == [Result.PASS] * 5
    assert found["dns"].finding == "127.0.0.1 is an address: nothing to resolve"
    assert found["tcp"].finding.startswith(f"127.0.0.1:{ssm.server.port} accepts connections")
    assert "verifies against transport.ca_bundle" in found["tls"].finding
    assert found["clock"].finding == "this host's clock agrees with 127.0.0.1's (within 2 s)"
    piid = json.loads(_status(path))["registration"]["piid"]
    assert found["ssm"].finding == (
        f"127.0.0.1 answered a signed PING: instance {piid} is active (flex)"
    )


def _status(path: Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert commands.status(path, True, out, err) == 0, err.getvalue()
    return out.getvalue()


def test_an_unregistered_instance_still_proves_the_server_speaks_the_protocol(
    ssm: Ssm, tmp_path: Path
) -> None:
    found = run(config(tmp_path, ssm))
    assert found["ssm"].result is Result.PASS
    assert "speaks ccx-sl/1" in found["ssm"].finding
    assert "not registered" in found["ssm"].finding


def test_an_unresolvable_ssm_host(ssm: Ssm, tmp_path: Path) -> None:
    """``.invalid`` never resolves (RFC 6761)."""

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["transport"]["url"] = "https://ssm.doctor.invalid/licservice/license"

    found = run(config(tmp_path, ssm, tweak=tweak))
    dns = found["dns"]
    assert dns.result is Result.FAIL
    assert dns.finding.startswith("ssm.doctor.invalid does not resolve (")
    assert dns.fix is not None and "transport.url" in dns.fix
    assert "getent hosts ssm.doctor.invalid" in dns.fix
    for name in ("tcp", "tls", "clock", "ssm"):
        assert found[name].result is Result.SKIP, found[name]


def test_a_server_whose_certificate_chains_to_another_ca(ssm: Ssm, tmp_path: Path) -> None:
    other = other_authority(tmp_path / "other", datetime.now(UTC))
    with MisbehavingServer(fixed(200, b"{}"), tls_files(tmp_path / "other")) as server:

        def tweak(cfg: dict[str, Any]) -> None:
            cfg["transport"]["url"] = server.url

        found = run(config(tmp_path, ssm, tweak=tweak))
    assert found["tcp"].result is Result.PASS
    tls = found["tls"]
    assert tls.result is Result.FAIL
    assert tls.finding.startswith(
        "the certificate of 127.0.0.1 does not verify against transport.ca_bundle ("
    )
    # What the server actually presented, named: the other authority's TLS certificate.
    assert f"subject '{other.tls_cert.subject.rfc4514_string()}'" in tls.finding
    assert f"issued by '{other.tls_cert.issuer.rfc4514_string()}'" in tls.finding
    assert "intercepting" not in tls.finding
    assert tls.fix is not None and "transport.ca_bundle" in tls.fix and "FN72323" in tls.fix
    assert _results(found, "clock", "ssm") == [Result.SKIP, Result.SKIP]


def test_a_blackholed_port_fails_tcp_and_the_whole_run_stays_short(
    ssm: Ssm, tmp_path: Path, blackhole: Blackhole
) -> None:
    """SSM down behind a firewall that drops packets: the worst case for time."""

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["transport"]["url"] = f"https://127.0.0.1:{blackhole.port}/licservice/license"

    path = config(tmp_path, ssm, tweak=tweak)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", str(path), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert took < 30, took
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    tcp = next(line for line in lines if line.startswith("FAIL  tcp  "))
    assert "no answer to the connection within the timeout" in tcp
    fix = lines[lines.index(tcp) + 1]
    assert fix.startswith("      fix: open outbound TCP ")
    for name in ("tls", "clock", "ssm"):
        assert f"SKIP  {name}  the " in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_port_that_accepts_and_stays_silent_fails_tls(
    ssm: Ssm, tmp_path: Path, silent: Silent
) -> None:
    def tweak(cfg: dict[str, Any]) -> None:
        cfg["transport"]["url"] = f"https://127.0.0.1:{silent.port}/licservice/license"

    started = time.monotonic()
    found = run(config(tmp_path, ssm, tweak=tweak))
    assert time.monotonic() - started < 15
    assert found["tcp"].result is Result.PASS
    tls = found["tls"]
    assert tls.result is Result.FAIL
    assert "accepted the connection but did not complete a TLS handshake" in tls.finding
    assert tls.fix is not None and "port in transport.url" in tls.fix


def test_a_closed_port_is_refused(ssm: Ssm, tmp_path: Path) -> None:
    port = free_port()

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["transport"]["url"] = f"https://127.0.0.1:{port}/licservice/license"

    tcp = run(config(tmp_path, ssm, tweak=tweak))["tcp"]
    assert tcp.result is Result.FAIL
    assert (
        tcp.finding
        == f"127.0.0.1:{port}: the connection was refused (nothing listens on that port)"
    )
    assert tcp.fix is not None and "check the port in transport.url" in tcp.fix


@pytest.mark.parametrize(
    ("skew", "clock_result"),
    [(timedelta(hours=2), Result.FAIL), (timedelta(minutes=-7), Result.WARN)],
    ids=["2h-ahead-fail", "7min-behind-warn"],
)
def test_a_skewed_server_clock(tmp_path: Path, skew: timedelta, clock_result: Result) -> None:
    server = ssm_server.start(tmp_path / "skewed", clock_skew=skew)
    try:
        found = run(config(tmp_path, Ssm(server)))
    finally:
        server.stop()
    clock = found["clock"]
    assert clock.result is clock_result
    way = "behind" if skew > timedelta(0) else "ahead of"
    match = re.fullmatch(
        rf"this host's clock is (?:(\d+) h )?(\d+) min {way} 127\.0\.0\.1's \(its Date header\)",
        clock.finding,
    )
    assert match, clock.finding
    shown = int(match[1] or 0) * 60 + int(match[2])
    # The Date header has whole seconds: the skew shown may be a minute short.
    assert abs(skew).total_seconds() // 60 - 1 <= shown <= abs(skew).total_seconds() // 60
    assert clock.fix is not None and "timedatectl set-ntp true" in clock.fix
    ssm_found = found["ssm"]
    if abs(skew) > timedelta(minutes=10):
        # The server refuses a message more than 10 minutes off its clock.
        assert ssm_found.result is Result.FAIL
        assert "STALE_MESSAGE" in ssm_found.finding
        assert ssm_found.fix is not None and "clock" in ssm_found.fix
    else:
        assert ssm_found.result is Result.PASS


def test_a_deregistered_instance_is_refused_by_the_ping(ssm: Ssm, tmp_path: Path) -> None:
    """The server no longer trusts the instance (deregistered on the server's side)."""
    path = config(tmp_path, ssm)
    register(path, ssm)
    piid = json.loads(_status(path))["registration"]["piid"]
    from ccx_agent.simulator.admin import Admin

    admin = Admin.for_state_dir(ssm.server.state_dir)
    try:
        with admin.db.transaction() as tx:
            tx.deregister(piid, datetime.now(UTC))
    finally:
        admin.close()
    found = run(path)
    assert found["ssm"].result is Result.FAIL
    assert "INSTANCE_DEREGISTERED" in found["ssm"].finding
    assert found["ssm"].fix is not None and "register again" in found["ssm"].fix


class ConnectProxy:
    """A real HTTP proxy on loopback that knows only CONNECT, and records each target."""

    def __init__(self, allow: bool = True) -> None:
        import socket

        self.allow = allow
        self.targets: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: Any) -> None:
        import socket

        conn.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            head += chunk
        target = head.split(b" ")[1].decode()
        self.targets.append(target)
        if not self.allow:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=10)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(a: Any, b: Any) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
        pipe(conn, upstream)
        conn.close()
        upstream.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


@pytest.mark.parametrize("allow", [True, False], ids=["tunnel", "refused"])
def test_through_an_http_proxy(ssm: Ssm, tmp_path: Path, allow: bool) -> None:
    proxy = ConnectProxy(allow)

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["transport"]["proxy"] = f"http://127.0.0.1:{proxy.port}"

    try:
        found = run(config(tmp_path, ssm, tweak=tweak))
    finally:
        proxy.close()
    assert f"127.0.0.1:{ssm.server.port}" in proxy.targets
    if allow:
        assert _results(found, "dns", "tcp", "tls", "clock", "ssm") == [Result.PASS] * 5
        assert "through the proxy 127.0.0.1:" in found["tcp"].finding
    else:
        assert found["tcp"].result is Result.FAIL
        assert "refused CONNECT" in found["tcp"].finding and "403 Forbidden" in found["tcp"].finding
        assert found["tcp"].fix is not None and "allow CONNECT" in found["tcp"].fix


def test_no_transport_url_skips_the_network_checks(tmp_path: Path) -> None:
    found = run(config(tmp_path, None))
    for name in ("dns", "tcp", "tls", "clock", "ssm"):
        assert found[name].result is Result.SKIP
        assert "transport.url is not set" in found[name].finding


def _inspecting_pki(directory: Path) -> tuple[Path, Path]:
    """A TLS certificate for 127.0.0.1 issued by a CA named as a TLS-inspecting proxy's
    (what an admin sees when a Zscaler or a firewall re-signs the connection)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zscaler Inc."),
            x509.NameAttribute(NameOID.COMMON_NAME, "Zscaler Intermediate Root CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir()
    cert_path, key_path = directory / "tls.pem", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_tls_intercepting_proxy_is_recognised(ssm: Ssm, tmp_path: Path) -> None:
    with MisbehavingServer(fixed(200, b"{}"), _inspecting_pki(tmp_path / "mitm")) as server:

        def tweak(cfg: dict[str, Any]) -> None:
            cfg["transport"]["url"] = server.url

        tls = run(config(tmp_path, ssm, tweak=tweak))["tls"]
    assert tls.result is Result.FAIL
    assert "issued by 'CN=Zscaler Intermediate Root CA,O=Zscaler Inc.'" in tls.finding
    assert tls.finding.endswith(
        "this looks like a TLS-intercepting proxy or firewall re-signing the connection"
    )
    assert tls.fix is not None and tls.fix.startswith("exempt 127.0.0.1 from TLS inspection")


class Dripping:
    """A real TLS server on loopback, with the simulator's certificate (so the tls check
    passes), that answers every request by dripping an HTTP head one byte every
    ``every`` seconds and never ending it: no per-read timeout ever trips."""

    def __init__(self, tls: tuple[Path, Path], every: float = 0.25) -> None:
        import socket
        import ssl

        self.every = every
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*tls)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.stopped = threading.Event()
        self.dripped: list[int] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: Any) -> None:
        sent = 0
        try:
            conn.settimeout(30)
            tls = self.context.wrap_socket(conn, server_side=True)
            tls.recv(65536)  # the request (its head)
            head = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 100_000
            for i in range(len(head)):
                tls.sendall(head[i : i + 1])
                sent += 1
                if self.stopped.wait(self.every):
                    break
        except OSError:
            pass  # the client cut it: what the test wants
        finally:
            self.dripped.append(sent)
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def test_a_server_dripping_its_http_head_cannot_hold_the_run(ssm: Ssm, tmp_path: Path) -> None:
    """A TLS server that drips its HTTP headers a byte at a time (each read gets a byte
    long before the 5 s per-operation timeout): doctor ran 84.6 s against one and then
    skipped the ssm check with exit 0. Every network check is now cut at its deadline:
    the run ends within its budget, the clock check says why, the ssm check fails."""
    server = Dripping(tls_files(ssm.server.state_dir))
    try:

        def tweak(cfg: dict[str, Any]) -> None:
            cfg["transport"]["url"] = f"https://127.0.0.1:{server.port}/licservice/license"
            cfg["transport"]["timeout"] = "60s"

        path = config(tmp_path, ssm, tweak=tweak)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "ccx_agent", "--config", str(path), "doctor", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        took = time.monotonic() - started
    finally:
        server.close()
    assert took < 30, took
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert [checks[n]["result"] for n in ("dns", "tcp", "tls")] == ["PASS"] * 3
    clock = checks["clock"]
    assert clock["result"] == "WARN"
    assert "did not send the head of its answer within 8 s" in clock["finding"]
    assert checks["ssm"]["result"] == "FAIL", checks["ssm"]
    assert done.returncode == 1
    assert "Traceback" not in done.stderr


def test_a_check_left_without_time_is_a_warning_not_a_skip(
    ssm: Ssm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network budget spent before a check (here a 3 s budget, eaten by a dripping
    server in the clock check): the ssm check is not run, and says so as a WARN (what it
    would have checked is unknown), never a SKIP that reads like 'not applicable'."""
    from ccx_agent.cli import doctor

    monkeypatch.setattr(doctor, "NETWORK_BUDGET_S", 3.0)  # a shorter budget, not a mock
    server = Dripping(tls_files(ssm.server.state_dir))
    try:

        def tweak(cfg: dict[str, Any]) -> None:
            cfg["transport"]["url"] = f"https://127.0.0.1:{server.port}/licservice/license"

        started = time.monotonic()
        found = run(config(tmp_path, ssm, tweak=tweak))
        assert time.monotonic() - started < 15
    finally:
        server.close()
    assert found["clock"].result is Result.WARN
    ssm_found = found["ssm"]
    assert ssm_found.result is Result.WARN
    assert ssm_found.finding.startswith("not run: the network checks' time budget (3 s)")
    assert ssm_found.fix is not None
