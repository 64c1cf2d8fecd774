"""The daemon's parts, owned by :class:`ccx_agent.daemon.runtime.Runtime`, in this process with
real ones: a SQLite database, syslog sinks on UDP sockets (threads), scripted sources.
What a reload leaves unchanged is kept, what it replaces is retired and closed, what a
refused reload made is closed at once, and closing twice is harmless."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccx_agent.config import schema as config_mod
from ccx_agent.config.schema import Config
from ccx_agent.daemon.monitoring import Monitor
from ccx_agent.daemon.runtime import Runtime
from ccx_agent.ssm.port import SsmError


@pytest.fixture
def ports() -> Iterator[list[int]]:
    """Two UDP syslog targets that exist (nothing reads them: UDP sends never block)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


def load(tmp_path: Path, port: int, agents: int = 5, **extra: Any) -> Config:
    doc: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "license": {"type": "flex"},
        "alerts": {"syslog": {"target": f"udp://127.0.0.1:{port}"}},
        "metrics": {"listen": None},
        "source": {"kind": "scripted", "steps": [{"agents": agents}]},
        **extra,
    }
    path = tmp_path / f"ccx-agent-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return config_mod.load(path)


def sink_threads() -> int:
    return sum(t.name == "ccx-agent-syslog" for t in threading.enumerate())


def test_a_reload_keeps_what_it_leaves_unchanged_and_closes_what_it_replaces(
    tmp_path: Path, ports: list[int]
) -> None:
    rt = Runtime(Monitor(lambda: (True, {})), lambda run: lambda rows: None)
    first = rt.open(load(tmp_path, ports[0]))
    try:
        threads = sink_threads()
        assert threads >= 1

        same = rt.reload(load(tmp_path, ports[0]))
        assert same.source is first.source and same.sink is first.sink
        assert rt.retired() == 0

        # Another source: the old one is retired, closed by close_retired (the daemon runs
        # it on the sample thread), not before.
        other = rt.reload(load(tmp_path, ports[0], agents=7))
        assert other.source is not first.source and other.sink is first.sink
        assert rt.retired() == 1
        rt.close_retired()
        assert rt.retired() == 0

        # Another syslog target: a new sink; the old one's thread ends once retired parts
        # are closed.
        moved = rt.reload(load(tmp_path, ports[1], agents=7))
        assert moved.sink is not other.sink and moved.source is other.source
        assert rt.sink is moved.sink
        assert sink_threads() == threads + 1
        rt.close_retired()
        assert sink_threads() == threads

        # Refused while building (an SSM trust anchor that is no certificate): the sink
        # made for it is closed at once, the running parts stay.
        bad = tmp_path / "not-a-ca.pem"
        bad.write_text("no certificate here\n", encoding="utf-8")
        refused = load(
            tmp_path,
            ports[0],
            transport={"url": "https://127.0.0.1:9/", "ca_bundle": str(bad)},
        )
        with pytest.raises(SsmError):
            rt.reload(refused)
        assert rt.running is moved and rt.sink is moved.sink and rt.retired() == 0
        assert sink_threads() == threads
    finally:
        rt.close()
    assert sink_threads() == threads - 1
    assert rt.store is None and rt.running is None
    rt.close()  # a second close does nothing
