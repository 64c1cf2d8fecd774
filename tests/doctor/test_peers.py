"""The source and syslog checks against a real fake UCCX and real syslog sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.cli.doctor import Result
from ccx_agent.cli.doctor.peers import TEST_LINE
from tests.daemon.conftest import TcpListener
from tests.doctor.conftest import config, free_port, run
from tests.sources.fake_uccx import Cluster, FakeUccx, Pki, make_cluster, make_pki

USER = "licensing"
PASSWORD = "Right-Pa55word"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return make_cluster(agents=40)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("uccx-pki"))


@pytest.fixture
def uccx(cluster: Cluster, pki: Pki) -> Iterator[FakeUccx]:
    with FakeUccx(cluster, pki, USER, PASSWORD) as fake:
        yield fake


def _uccx_config(tmp_path: Path, fake: FakeUccx, pki: Pki, password: str) -> Path:
    secret = tmp_path / "uccx-password"
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["source"] = {
            "kind": "uccx",
            "uccx": {
                "url": fake.url,
                "user": USER,
                "password_file": str(secret),
                "ca_bundle": str(pki.ca),
            },
        }

    return config(tmp_path, None, tweak=tweak)


def test_the_uccx_source_with_the_right_password(tmp_path: Path, uccx: FakeUccx, pki: Pki) -> None:
    found = run(_uccx_config(tmp_path, uccx, pki, PASSWORD))["source"]
    assert found.result in (Result.PASS, Result.WARN), found
    assert found.finding.startswith("UCCX Admin API and Finesse answered: ")
    assert "logged in (flex-standard-seat " in found.finding
    assert uccx.hits.get("/finesse/api/Users") == 1


def test_a_wrong_uccx_password(tmp_path: Path, uccx: FakeUccx, pki: Pki) -> None:
    found = run(_uccx_config(tmp_path, uccx, pki, "Wrong-Pa55word"))
    source = found["source"]
    assert source.result is Result.FAIL
    assert "HTTP 401 Unauthorized: the user name or password was refused" in source.finding
    assert source.fix is not None
    assert "source.uccx.user and its password" in source.fix
    assert "Wrong-Pa55word" not in source.finding + source.fix
    # Nothing recorded: the doctor never creates a state database.
    assert not (tmp_path / "state").exists()


def test_a_uccx_password_that_only_the_service_gets(
    tmp_path: Path, uccx: FakeUccx, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["source"] = {"kind": "uccx", "uccx": {"url": uccx.url, "user": USER}}

    found = run(config(tmp_path, None, tweak=tweak))["source"]
    assert found.result is Result.WARN
    assert "systemd credential 'uccx-password'" in found.finding
    assert found.fix is not None and "systemd-run" in found.fix and "LoadCredential=" in found.fix
    assert not uccx.hits


def test_an_unreachable_syslog_tcp_target(tmp_path: Path) -> None:
    port = free_port()
    found = run(config(tmp_path, None, syslog=f"tcp://127.0.0.1:{port}"))["syslog"]
    assert found.result is Result.FAIL
    assert found.finding == (
        f"tcp://127.0.0.1:{port}: the connection was refused (nothing listens there)"
    )
    assert found.fix is not None and "alerts.syslog.target" in found.fix


def test_a_syslog_tcp_target_gets_a_test_line_only_when_asked(tmp_path: Path) -> None:
    listener = TcpListener()
    try:
        target = f"tcp://127.0.0.1:{listener.port}"
        path = config(tmp_path, None, syslog=target)
        found = run(path)["syslog"]
        assert found.result is Result.PASS
        assert found.finding == f"{target} accepts a TCP connection"
        assert listener.messages() == []
        found = run(path, send_test_alert=True)["syslog"]
        assert found.result is Result.PASS
        assert found.finding.endswith("; a test line was sent")
        got = listener.wait_messages("the test line", lambda m: m, 10)
        assert len(got) == 1 and got[0].decode().endswith(TEST_LINE)
    finally:
        listener.close()


CLI = (sys.executable, "-m", "ccx_agent")


def test_send_test_alert_json_is_json_alone_on_stdout(tmp_path: Path) -> None:
    """The real CLI: the sender's "syslog target connected" line (info) is not for a
    command's output; without -v nothing but the JSON document reaches stdout."""
    listener = TcpListener()
    try:
        path = config(tmp_path, None, syslog=f"tcp://127.0.0.1:{listener.port}")
        done = subprocess.run(
            [*CLI, "--config", str(path), "doctor", "--send-test-alert", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert checks["syslog"]["finding"].endswith("; a test line was sent")
        assert "syslog target connected" not in done.stdout + done.stderr
    finally:
        listener.close()


def test_a_local_syslog_socket(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        found = run(config(tmp_path, None, syslog=str(path)))["syslog"]
    finally:
        sock.close()
    assert found.result is Result.PASS
    assert found.finding == f"{path} accepts connections (a unix datagram socket)"
    missing = run(config(tmp_path, None, syslog=str(tmp_path / "nothing")))["syslog"]
    assert missing.result is Result.FAIL
    assert "no such socket" in missing.finding


def test_a_failing_command_source(tmp_path: Path) -> None:
    program = tmp_path / "snap.sh"
    program.write_text("#!/bin/sh\necho 'not json'\n", encoding="utf-8")
    program.chmod(0o755)

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["source"] = {"kind": "command", "command": [str(program)]}

    found = run(config(tmp_path, None, tweak=tweak))["source"]
    assert found.result is Result.FAIL
    assert found.finding.startswith("command: ")
