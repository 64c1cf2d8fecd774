"""The HTTPS transport's defaults: what an operator's environment must not change, and what
must never reach a log line."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ccx_agent.simulator.server import start
from ccx_agent.ssm.client import HttpTransport, SsmClient, TransportError, safe_url
from ccx_agent.ssm.identity import KeyStore, load_anchors
from ccx_agent.ssm.port import SsmUnreachable, Udi

UDI = Udi("UCCX", "SN1", "00000000-0000-4000-8000-000000000001")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@ssm.example.com:8443/x?y=1", "https://ssm.example.com:8443/x?y=1"),
        ("https://u@[::1]/x", "https://[::1]/x"),
        ("https://ssm.example.com/x", "https://ssm.example.com/x"),
    ],
)
def test_safe_url_drops_credentials(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_requests_ca_bundle_in_the_environment_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment names the simulator's CA, the config does not: TLS must fail,
    or any process environment could re-point the agent's trust."""
    server = start(tmp_path / "ssm")
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_path))
        monkeypatch.setenv("CURL_CA_BUNDLE", str(server.ca_path))
        with pytest.raises(TransportError, match=r"TLS verification .* failed"):
            HttpTransport(server.url).post(b"{}", datetime.now(UTC))
        # With the config's CA bundle the same request gets an answer.
        status, _, _ = HttpTransport(server.url, ca_bundle=server.ca_path).post(
            b"{}", datetime.now(UTC)
        )
        assert status == 400
    finally:
        server.stop()


def test_a_proxy_in_the_environment_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start(tmp_path / "ssm")
    try:
        dead = f"http://127.0.0.1:{_free_port()}"
        monkeypatch.setenv("HTTPS_PROXY", dead)
        monkeypatch.setenv("https_proxy", dead)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        status, _, _ = HttpTransport(server.url, ca_bundle=server.ca_path).post(
            b"{}", datetime.now(UTC)
        )
        assert status == 400
        # The configured proxy, though, is used (and here it is dead).
        with pytest.raises(TransportError):
            HttpTransport(server.url, ca_bundle=server.ca_path, proxy=dead).post(
                b"{}", datetime.now(UTC)
            )
    finally:
        server.stop()


def test_retries_are_logged_without_credentials_or_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"https://admin:s3cr3t-pw@127.0.0.1:{_free_port()}/licservice/license"
    waits: list[float] = []
    client = SsmClient(
        HttpTransport(url), KeyStore(tmp_path), load_anchors(None), attempts=3, sleep=waits.append
    )
    caplog.set_level(logging.DEBUG)
    token = "tok-VERY-SECRET-123"
    with pytest.raises(SsmUnreachable) as info:
        client.register(token, UDI, "flex", datetime.now(UTC))
    assert len(waits) == 2  # three tries, two back-offs
    assert all(0 <= w <= 30 for w in waits)
    text = caplog.text + str(info.value)
    assert "refused" in str(info.value)
    assert "s3cr3t" not in text and "admin:" not in text and token not in text
    assert "REGISTER to https://127.0.0.1:" in caplog.text


def test_a_tls_failure_is_not_retried(tmp_path: Path) -> None:
    """A certificate that does not verify will not verify a second later: one try, then
    a communication failure that names the setting to check."""
    server = start(tmp_path / "ssm")
    try:
        waits: list[float] = []
        client = SsmClient(
            HttpTransport(server.url), KeyStore(tmp_path), [], attempts=3, sleep=waits.append
        )
        with pytest.raises(SsmUnreachable, match=r"check transport\.ca_bundle"):
            client.register("tok", UDI, "flex", datetime.now(UTC))
        assert waits == []
    finally:
        server.stop()


def test_a_kept_alive_connection_the_server_closed_is_replaced_not_used(tmp_path: Path) -> None:
    """The daemon posts every 15 minutes and a server drops an idle connection long
    before that: the next post must make a new connection, not fail on the dead one."""
    server = start(tmp_path / "ssm")
    port = server.port
    transport = HttpTransport(server.url, ca_bundle=server.ca_path)
    try:
        assert transport.post(b"{}", datetime.now(UTC))[0] == 400
        server.stop()  # closes every open connection, as an idle timeout does
        server = start(tmp_path / "ssm", ("127.0.0.1", port))
        assert transport.post(b"{}", datetime.now(UTC))[0] == 400
    finally:
        transport.close()
        server.stop()
