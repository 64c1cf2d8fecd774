"""ccx_agent/daemon/metrics_http.py and the reload rules of ccx_agent/daemon/monitoring.py: a real
listening socket on loopback, real HTTP and TLS clients (requests), real bcrypt hashes."""

from __future__ import annotations

import hashlib
import json
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from ccx_agent.config.schema import MetricsConfig
from ccx_agent.daemon.metrics import Metrics
from ccx_agent.daemon.metrics_http import Endpoint, MetricsError, Settings, Users, settings
from ccx_agent.daemon.monitoring import Monitor
from ccx_agent.simulator import ca

HEALTH: list[tuple[bool, dict[str, Any]]] = [(True, {"status": "ok"})]


def health() -> tuple[bool, dict[str, Any]]:
    return HEALTH[-1]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint("127.0.0.1:0", Settings(), Metrics().registry, health)
    ep.start()
    yield ep
    ep.stop()


def base(ep: Endpoint) -> str:
    return ep.url.removesuffix("/metrics")


def test_metrics_healthz_and_the_rest(endpoint: Endpoint) -> None:
    r = requests.get(endpoint.url, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "ccx_ssm_requests_total{" in r.text
    # OpenMetrics when Prometheus asks for it.
    om = requests.get(
        endpoint.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=5
    )
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")

    HEALTH.append((True, {"status": "ok", "sample_age_seconds": 0.5}))
    r = requests.get(base(endpoint) + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.text.count("\n") == 1 and r.text.endswith("\n")  # one line
    assert r.json() == {"status": "ok", "sample_age_seconds": 0.5}
    HEALTH.append((False, {"status": "unhealthy", "reason": "the scheduler is not running"}))
    r = requests.get(base(endpoint) + "/healthz", timeout=5)
    assert r.status_code == 503
    assert r.json()["reason"] == "the scheduler is not running"
    HEALTH.pop()
    HEALTH.pop()
    assert requests.get(base(endpoint) + "/nope", timeout=5).status_code == 404
    assert requests.post(endpoint.url, timeout=5).status_code == 501


def test_a_port_in_use_is_one_line_naming_the_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ep = Endpoint(f"127.0.0.1:{port}", Settings(), Metrics().registry, health)
        with pytest.raises(MetricsError) as err:
            ep.start()
    assert str(err.value) == (
        f"metrics.listen 127.0.0.1:{port}: cannot listen there: address already in use "
        "(change metrics.listen, or null to turn the endpoint off)"
    )


def test_a_scraper_gone_mid_response_is_no_traceback(
    endpoint: Endpoint, capfd: pytest.CaptureFixture[str]
) -> None:
    """A client that sends its request and resets the connection at once: the server's
    read or write fails. That is a debug line, never a raw traceback on stderr."""
    before = set(threading.enumerate())
    for _ in range(30):
        with socket.create_connection(endpoint.address, timeout=5) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            # SO_LINGER 0: close() sends a reset, not a FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The server goes on (one request after the resets is answered).
    assert requests.get(endpoint.url, timeout=5).ok
    # Each request has a thread of its own, and one handling a reset may still be writing
    # its debug line: wait for them all, so that what they print is read here, and none
    # prints after the capture is closed (once, under xdist, into the next test's set-up).
    deadline = time.monotonic() + 10
    while any(
        t.name.endswith("(process_request_thread)") for t in set(threading.enumerate()) - before
    ):
        assert time.monotonic() < deadline, "a request thread never ended"
        time.sleep(0.01)
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "Exception occurred during processing" not in err


def _burst(address: tuple[str, int], n: int, within: float) -> int:
    """``n`` clients connect at once and each sends a request; how many were answered
    (read to the end) within ``within`` seconds."""
    selector = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(address)
        socks.append(sock)
        selector.register(sock, selectors.EVENT_WRITE)
    answered = 0
    deadline = time.monotonic() + within
    try:
        while answered < n and time.monotonic() < deadline:
            for key, events in selector.select(0.2):
                sock = key.fileobj  # type: ignore[assignment]
                if events & selectors.EVENT_WRITE:
                    sock.send(b"GET / HTTP/1.0\r\n\r\n")
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    answered += 1
    finally:
        for sock in socks:
            sock.close()
        selector.close()
    return answered


def test_a_thousand_parallel_scrapes_are_all_answered(endpoint: Endpoint) -> None:
    """A listen backlog of 5 dropped the SYNs of a burst: many clients waited for the
    kernel's retries (1 s, 3 s, 7 s …) or timed out. With a real backlog every one of a
    thousand parallel clients is answered promptly."""
    assert _burst(endpoint.address, 1000, within=10) == 1000


def test_an_idle_endpoint_never_wakes_up(endpoint: Endpoint) -> None:
    """The accept loop sleeps in one select with no timeout: over a second and a half of
    idleness its thread is not woken once (``serve_forever`` polled every 0.5 s)."""
    (thread,) = [t for t in threading.enumerate() if t.name == "metrics"]
    status = Path(f"/proc/self/task/{thread.native_id}/status")

    def switches() -> int:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])

    # The thread has just been started: let it reach its select first (no switch over
    # 0.2 s), or its own start is counted as a wake-up (a loaded machine delays it).
    settled, deadline = switches(), time.monotonic() + 10
    while True:
        time.sleep(0.2)
        now = switches()
        if now == settled or time.monotonic() > deadline:
            break
        settled = now
    before = switches()
    time.sleep(1.6)  # the window measured, not a wait for a timer of the product
    assert switches() - before == 0
    assert requests.get(endpoint.url, timeout=5).ok  # and it still serves
    ep_stopped = time.monotonic()
    endpoint.stop()
    assert time.monotonic() - ep_stopped < 1  # stop wakes it at once
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for localhost / 127.0.0.1 (the simulator's CA code)."""
    d = tmp_path_factory.mktemp("tls")
    ca.load_or_create(d, datetime.now(UTC))
    return d


def test_tls(tls_dir: Path) -> None:
    cert, key = ca.tls_files(tls_dir)
    cfg = MetricsConfig(listen="127.0.0.1:0", tls={"cert": cert, "key": key})  # type: ignore[arg-type]
    ep = Endpoint("127.0.0.1:0", settings(cfg), Metrics().registry, health)
    ep.start()
    try:
        assert ep.url.startswith("https://127.0.0.1:")
        r = requests.get(ep.url, verify=str(ca.ca_path(tls_dir)), timeout=5)
        assert r.status_code == 200 and "ccx_alerts" in r.text
        # Not signed by a CA the client trusts: refused by the client.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(ep.url, timeout=5)
        # Plain HTTP to the TLS port gets no HTTP answer, and the server goes on.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(ep.url.replace("https://", "http://"), timeout=5)
        assert requests.get(ep.url, verify=str(ca.ca_path(tls_dir)), timeout=5).ok
    finally:
        ep.stop()


def test_unusable_tls_files_name_the_key(tmp_path: Path, tls_dir: Path) -> None:
    cert, _ = ca.tls_files(tls_dir)
    cfg = MetricsConfig(tls={"cert": cert, "key": tmp_path / "missing.key"})  # type: ignore[arg-type]
    with pytest.raises(MetricsError, match=r"^metrics\.tls: cannot use cert .*: No such file"):
        settings(cfg)


def _users(tmp_path: Path) -> Path:
    """bcrypt as Python writes it ($2b$), as htpasswd -B writes it ($2y$, the same
    algorithm), and a hex SHA-256."""
    path = tmp_path / "users"
    prom = bcrypt.hashpw(b"s3cret-prom", bcrypt.gensalt(4)).decode()
    nagios = bcrypt.hashpw(b"nag", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    grafana = hashlib.sha256(b"pass for grafana").hexdigest()
    path.write_text(
        f"# the scrapers\nprometheus:{prom}\n\ngrafana:{grafana}\nnagios:{nagios}\n",
        encoding="utf-8",
    )
    return path


def test_basic_auth(tmp_path: Path) -> None:
    cfg = MetricsConfig(basic_auth_file=_users(tmp_path))
    ep = Endpoint("127.0.0.1:0", settings(cfg), Metrics().registry, health)
    ep.start()
    try:
        none = requests.get(ep.url, timeout=5)
        assert none.status_code == 401
        assert none.headers["WWW-Authenticate"].startswith('Basic realm="ccx-agent"')
        assert requests.get(base(ep) + "/healthz", timeout=5).status_code == 401
        for user, password in (
            ("prometheus", "s3cret-prom"),
            ("grafana", "pass for grafana"),
            ("nagios", "nag"),
        ):
            assert requests.get(ep.url, auth=(user, password), timeout=5).status_code == 200
            # Again: the remembered good password (no second bcrypt).
            assert requests.get(ep.url, auth=(user, password), timeout=5).status_code == 200
            assert requests.get(ep.url, auth=(user, password + "x"), timeout=5).status_code == 401
        assert requests.get(ep.url, auth=("nobody", "nag"), timeout=5).status_code == 401
        bad = requests.get(ep.url, headers={"Authorization": "Basic !!!"}, timeout=5)
        assert bad.status_code == 401
    finally:
        ep.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prometheus:hunter2\n", "users:1: the hash of user 'prometheus' is neither bcrypt"),
        ("# nobody\n", "users: names no user"),
        ("justaname\n", "users:1: must be USER:HASH"),
        (f"a:{'0' * 64}\na:{'1' * 64}\n", "users:2: user 'a' is listed twice"),
    ],
)
def test_a_bad_users_file_is_one_line_without_the_secret(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "users"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MetricsError) as err:
        Users.load(path)
    assert str(err.value).startswith("metrics.basic_auth_file ")
    assert message in str(err.value)
    assert "hunter2" not in str(err.value)


def test_an_unreadable_users_file(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match=r"metrics.basic_auth_file .*: cannot read it: No such"):
        Users.load(tmp_path / "absent")


# --- reloads (ccx_agent/daemon/monitoring.py) -----------------------------------------------------


def test_reload_rules(tmp_path: Path) -> None:
    mon = Monitor(health)
    first = MetricsConfig(listen="127.0.0.1:0")
    mon.start(first)
    try:
        assert mon.endpoint is not None
        url = mon.endpoint.url
        assert requests.get(url, timeout=5).ok

        # Same address, a users file: the same socket asks for a password from now on.
        users = MetricsConfig(listen="127.0.0.1:0", basic_auth_file=_users(tmp_path))
        mon.reload(users, first)
        assert mon.endpoint.url == url
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(url, auth=("grafana", "pass for grafana"), timeout=5).ok

        # A users file that cannot be read: refused, the old settings stay.
        broken = MetricsConfig(listen="127.0.0.1:0", basic_auth_file=tmp_path / "absent")
        mon.reload(broken, users)
        assert requests.get(url, auth=("grafana", "pass for grafana"), timeout=5).ok

        # A new address that is taken: the old listener is kept.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = MetricsConfig(listen=f"127.0.0.1:{taken.getsockname()[1]}")
            mon.reload(busy, users)
            assert mon.endpoint.url == url
            assert requests.get(url, timeout=5).status_code == 401

        # A free new address: bound, and the old one closed.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        moved = MetricsConfig(listen=f"127.0.0.1:{free}")
        mon.reload(moved, users)
        assert mon.endpoint.url == f"http://127.0.0.1:{free}/metrics"
        assert requests.get(mon.endpoint.url, timeout=5).ok
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url, timeout=5)

        # null: closed.
        mon.reload(MetricsConfig(listen=None), moved)
        assert mon.endpoint is None
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{free}/metrics", timeout=5)
    finally:
        mon.stop()


def test_metrics_off_imports_nothing_of_prometheus_client() -> None:
    """A config with metrics off never loads prometheus_client (a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys; from ccx_agent.daemon import scheduler as daemon; from ccx_agent.daemon.monitoring import Monitor\n"
        "from ccx_agent.config.schema import MetricsConfig\n"
        "m = Monitor(lambda: (True, {})); m.start(MetricsConfig(listen=None))\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.startswith('prometheus'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == []
