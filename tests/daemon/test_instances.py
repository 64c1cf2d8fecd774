"""Several instances on one host, as the template unit ccx-agent@.service runs them: each
its own config, state directory and lock, metrics port, and syslog app name."""

from __future__ import annotations

from pathlib import Path

from ccx_agent.daemon.scheduler import syslog_app
from tests.daemon.conftest import Daemon, DatagramListener, Sim, make_instance


def test_two_instances_side_by_side(sim: Sim, tmp_path: Path, udp_syslog: DatagramListener) -> None:
    target = f"udp://127.0.0.1:{udp_syslog.port}"
    a = make_instance(tmp_path / "a", sim, target)
    b = make_instance(tmp_path / "b", sim, target)
    first = Daemon(a, env={"CCX_AGENT_INSTANCE": "cluster-a"})
    second = Daemon(b, env={"CCX_AGENT_INSTANCE": "cluster-b"})
    first.wait_event("ready")
    second.wait_event("ready")
    assert first.metrics_url() != second.metrics_url()
    assert a.status()["daemon"]["pid"] == first.pid
    assert b.status()["daemon"]["pid"] == second.pid
    got = udp_syslog.wait(
        "alert lines of both instances",
        lambda items: (
            {
                app
                for r in items
                for app in ("ccx-agent-cluster-a[", "ccx-agent-cluster-b[")
                if app in r.text
            }
            == {"ccx-agent-cluster-a[", "ccx-agent-cluster-b["}
        ),
        20,
    )
    assert got
    assert first.stop()[0] == 0 and second.stop()[0] == 0


def test_the_syslog_app_name(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CCX_AGENT_INSTANCE", raising=False)
    assert syslog_app() == "ccx-agent"
    monkeypatch.setenv("CCX_AGENT_INSTANCE", "hcs 1:[x]")
    assert syslog_app() == "ccx-agent-hcs1x"  # nothing that would break a syslog header
