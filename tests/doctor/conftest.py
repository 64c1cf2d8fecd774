"""Real peers for the doctor: the SSM simulator over HTTPS, misbehaving servers on
loopback, a fake UCCX, syslog listeners. Nothing is mocked: each planted fault is a real
socket, file or certificate."""

from __future__ import annotations

import contextlib
import io
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from ccx_agent.cli import commands, doctor
from ccx_agent.cli.doctor import Finding
from ccx_agent.simulator import server as ssm_server

TAG = "flex-standard-seat"


@dataclass
class Ssm:
    server: ssm_server.RunningServer

    def admin(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        answer = requests.post(
            self.server.base_url + path,
            json=doc,
            headers={"Authorization": f"Bearer {self.server.admin_token}"},
            verify=str(self.server.ca_path),
            timeout=10,
        )
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def token(self, bought: int = 10) -> str:
        account = f"acct-{uuid.uuid4().hex[:12]}"
        self.admin("/admin/licenses", {"tag": TAG, "count": bought, "account": account})
        token: str = self.admin("/admin/tokens", {"account": account})["token"]
        return token


@pytest.fixture(scope="module")
def ssm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ssm]:
    running = ssm_server.start(tmp_path_factory.mktemp("ssm"))
    try:
        yield Ssm(running)
    finally:
        running.stop()


def config(
    base: Path,
    ssm: Ssm | None,
    *,
    syslog: str | None = None,
    tweak: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """A config in ``base`` (state in ``base/state``), talking to ``ssm`` if given."""
    cfg: dict[str, Any] = {
        "state_dir": str(base / "state"),
        "license": {"type": "flex"},
        "source": {"kind": "scripted", "steps": [{"at": "0s", "agents": 4}]},
        "alerts": {"syslog": {"target": syslog or "udp://127.0.0.1:9"}},
        "metrics": {"listen": "127.0.0.1:0"},
        "identity": {"pid": "UCCX", "serial": "DOCTOR01"},
    }
    if ssm is not None:
        cfg["transport"] = {
            "url": ssm.server.url,
            "ca_bundle": str(ssm.server.ca_path),
            "timeout": "5s",
            "attempts": 1,
        }
    if tweak is not None:
        tweak(cfg)
    path = base / "ccx-agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def register(path: Path, ssm: Ssm) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert commands.register(path, ssm.token(), False, out, err) == 0, err.getvalue()


def run(path: Path, **kw: Any) -> dict[str, Finding]:
    """Every check, by name, in process."""
    found = doctor.run(path, **kw)
    assert [f.name for f in found] == list(doctor.NAMES)
    return {f.name: f for f in found}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Blackhole:
    """A loopback port that drops connection attempts, as a firewall does: a listener
    with a full accept queue that never accepts (the kernel then ignores new SYNs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = int(self.sock.getsockname()[1])
        self.fill: list[socket.socket] = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", self.port))
            self.fill.append(c)

    def close(self) -> None:
        for c in self.fill:
            c.close()
        self.sock.close()


class Silent:
    """A loopback port that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    port = Silent()
    yield port
    port.close()


__all__ = ["TAG", "Blackhole", "Silent", "Ssm", "config", "free_port", "register", "run"]
