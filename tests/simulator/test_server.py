"""The simulator over real HTTPS, with requests verifying TLS against DIR/ca.pem."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from ccx_agent.simulator.server import WORKERS, RunningServer, start
from ccx_agent.ssm import protocol
from ccx_agent.ssm.protocol import ErrorCode, MessageType
from tests.simulator.helpers import Device

PATHS = [
    "/licservice/license",
    "/Transportgateway/services/DeviceRequestHandler",
    "/SmartTransport",
]


@pytest.fixture
def server(state_dir: Path) -> Iterator[RunningServer]:
    running = start(state_dir)
    yield running
    running.stop()


def post(server: RunningServer, path: str, data: bytes, **kw) -> requests.Response:
    return requests.post(
        server.base_url + path,
        data=data,
        headers={"Content-Type": "application/json", **kw.pop("headers", {})},
        verify=str(server.ca_path),
        timeout=10,
        **kw,
    )


def admin(server: RunningServer, method: str, path: str, doc=None, token: str | None = "ok"):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {server.admin_token if token == 'ok' else token}"
    return requests.request(
        method,
        server.base_url + path,
        json=doc,
        headers=headers,
        verify=str(server.ca_path),
        timeout=10,
    )


def test_running_server_describes_itself(server: RunningServer, state_dir: Path) -> None:
    assert server.url == f"https://127.0.0.1:{server.port}/licservice/license"
    assert server.base_url == f"https://127.0.0.1:{server.port}"
    assert server.ca_path == state_dir / "ca.pem"
    token_file = state_dir / "admin-token"
    assert token_file.read_text().strip() == server.admin_token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("path", PATHS)
def test_protocol_on_every_path(server: RunningServer, path: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    sim = server.simulator
    sim.add_licenses("flex-standard-seat", 4)
    token = sim.create_token(now=datetime.now(UTC))
    dev = Device(sim)
    now = datetime.now(UTC)
    envelope = dev.register_request(token, now)
    answer = post(server, path, json.dumps(envelope).encode())
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    resp = protocol.open_response(answer.content, envelope, now, [sim.root])
    assert resp.body["entitlements"]["flex-standard-seat"] == 4
    dev.piid = resp.piid
    dev.cert = protocol.cert_from_text(resp.body["cert"], "cert")
    again = dev.request(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}}, now)
    answer = post(server, path, json.dumps(again).encode())
    assert answer.status_code == 200
    protocol.open_response(answer.content, again, now, [sim.root])
    # An error is a signed envelope too, with its HTTP status.
    answer = post(server, path, json.dumps(again).encode())
    assert answer.status_code == 409
    refused = protocol.open_response(answer.content, again, now, [sim.root])
    assert refused.error is not None and refused.error.code is ErrorCode.REPLAYED_NONCE
    assert token not in caplog.text
    assert server.admin_token not in caplog.text


def test_unknown_paths_and_methods(server: RunningServer) -> None:
    assert post(server, "/nothing", b"{}").status_code == 404
    assert post(server, "/licservice/license/x", b"{}").status_code == 404
    get = requests.get(server.url, verify=str(server.ca_path), timeout=10)
    assert get.status_code == 405


def test_too_large_is_refused_unread(server: RunningServer) -> None:
    # Announce more than the limit and send only the headers: the answer must come
    # without the server waiting for the body.
    context = ssl.create_default_context(cafile=str(server.ca_path))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            b"POST /licservice/license HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {protocol.MAX_MESSAGE_BYTES + 1}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    doc = json.loads(body)
    assert doc["error"]["code"] == ErrorCode.TOO_LARGE


def test_admin_needs_the_bearer_token(server: RunningServer) -> None:
    for token in (None, "wrong", ""):
        assert admin(server, "GET", "/admin/state", token=token).status_code == 401
        answer = admin(server, "POST", "/admin/tokens", {}, token=token)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert server.simulator.show(datetime.now(UTC))["tokens"]["total"] == 0


def test_admin_endpoint(server: RunningServer, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    answer = admin(server, "POST", "/admin/licenses", {"tag": "flex-premium-seat", "count": 5})
    assert answer.json() == {"account": "default", "tag": "flex-premium-seat", "purchased": 5}
    answer = admin(
        server,
        "POST",
        "/admin/licenses",
        {"tag": "flex-premium-seat", "count": -7, "account": "default"},
    )
    assert answer.json()["purchased"] == 0
    answer = admin(server, "POST", "/admin/licenses", {"tag": "gold", "count": 1})
    assert answer.status_code == 400 and "unknown tag" in answer.json()["error"]
    answer = admin(
        server, "POST", "/admin/licenses", {"tag": "nfr-seat", "count": 2, "account": "lab"}
    )
    assert answer.json()["purchased"] == 2

    answer = admin(server, "POST", "/admin/tokens", {"account": "lab", "uses": 3, "expires": "2d"})
    assert answer.status_code == 200
    token = answer.json()["token"]
    assert admin(server, "POST", "/admin/tokens", {"expires": "soon"}).status_code == 400
    assert admin(server, "POST", "/admin/tokens", {"account": "nobody"}).status_code == 400
    assert admin(server, "POST", "/admin/tokens", {"uses": "3"}).status_code == 400

    state = admin(server, "GET", "/admin/state").json()
    assert state["accounts"]["lab"]["purchased"] == {"nfr-seat": 2}
    assert state["tokens"] == {"total": 1, "usable": 1}
    answer = admin(server, "POST", "/admin/tokens/revoke", {"token": token})
    assert answer.json() == {"revoked": True}
    assert admin(server, "POST", "/admin/tokens/revoke", {"token": token + "x"}).status_code == 400
    assert admin(server, "GET", "/admin/state").json()["tokens"]["usable"] == 0
    assert admin(server, "POST", "/admin/nothing", {}).status_code == 404
    assert token not in caplog.text
    assert server.admin_token not in caplog.text
    assert "POST /admin/tokens -> 200" in caplog.text


def test_restart_keeps_state_ca_and_admin_token(state_dir: Path) -> None:
    first = start(state_dir)
    first.simulator.add_licenses("flex-standard-seat", 3)
    root, token = first.simulator.root, first.admin_token
    first.stop()
    second = start(state_dir)
    try:
        assert second.simulator.root == root
        assert second.admin_token == token
        state = admin(second, "GET", "/admin/state").json()
        assert state["accounts"]["default"]["purchased"] == {"flex-standard-seat": 3}
    finally:
        second.stop()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_below_1_2_is_refused(server: RunningServer) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_path))
    try:
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")


async def _get_state(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RunningServer
) -> int:
    writer.write(
        b"GET /admin/state HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {server.admin_token}\r\n\r\n".encode("ascii")
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    json.loads(await reader.readexactly(length))
    return status


def test_many_connections_are_all_answered_by_a_bounded_number_of_threads(
    server: RunningServer,
) -> None:
    """300 agents connect at once over real TLS and keep their connections alive between
    two requests: every request is answered, and the server never runs more than its
    workers and its selector thread (thread-per-connection ran 300)."""
    n = 300
    before = threading.active_count()
    most = before
    context = ssl.create_default_context(cafile=str(server.ca_path))

    async def run() -> list[int]:
        answered_once = asyncio.Event()
        done = 0

        async def agent() -> list[int]:
            nonlocal done
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context, server_hostname="127.0.0.1"
            )
            try:
                first = await _get_state(reader, writer, server)
                done += 1
                if done == n:
                    answered_once.set()
                await answered_once.wait()  # every connection is open and idle now
                return [first, await _get_state(reader, writer, server)]
            finally:
                writer.close()

        async def sample() -> None:
            nonlocal most
            while True:
                most = max(most, threading.active_count())
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        try:
            results = await asyncio.wait_for(asyncio.gather(*(agent() for _ in range(n))), 120)
        finally:
            sampler.cancel()
        return [status for pair in results for status in pair]

    statuses = asyncio.run(run())
    assert statuses == [200] * (2 * n)
    assert most - before <= WORKERS + 1 < n


def test_at_the_connection_limit_the_longest_idle_connection_makes_room(state_dir: Path) -> None:
    """Three connections allowed, three kept alive and idle: a fourth client is answered,
    the one idle longest is closed (its client reconnects, as after any idle close), and
    the others still work."""
    server = start(state_dir, max_connections=3)
    context = ssl.create_default_context(cafile=str(server.ca_path))
    headers = {"Authorization": f"Bearer {server.admin_token}"}

    def connect() -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)

    def get(conn: http.client.HTTPSConnection) -> int:
        conn.request("GET", "/admin/state", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status

    conns = [connect() for _ in range(3)]
    try:
        assert [get(c) for c in conns] == [200, 200, 200]
        late = connect()
        conns.append(late)
        assert get(late) == 200
        with pytest.raises((http.client.HTTPException, OSError)):
            get(conns[0])
        assert [get(c) for c in conns[1:]] == [200, 200, 200]
    finally:
        for conn in conns:
            conn.close()
        server.stop()
