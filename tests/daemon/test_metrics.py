"""The metrics endpoint of a real ``ccx-agent run``: what it serves, ``/healthz`` going
503 and back when a job hangs, a port in use at start (exit 78), and SIGHUP reloads that
keep or move the listener. Real processes, real sockets; every wait polls a deadline."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.conftest import TAG, Daemon, Sim, make_instance, run_cli, wait_until

SNAPSHOT = Path(__file__).parents[1] / "data" / "snapshots" / "mixed.json"


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_running_daemon_serves_its_state_and_reloads_its_listener(
    sim: Sim, tmp_path: Path
) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9")
    daemon = Daemon(inst)
    url = daemon.metrics_url()
    assert url.startswith("http://127.0.0.1:")
    # What the jobs committed: 8 agents, a report acknowledged by the simulator.
    std = (("tag", TAG),)
    got = wait_until(
        "a report acknowledged, in the metrics",
        lambda: (
            m
            if (m := samples(url)).get(
                ("ccx_ssm_requests_total", (("outcome", "ok"), ("type", "report")))
            )
            and ("ccx_last_report_success_timestamp_seconds", ()) in m
            else None
        ),
        timeout=30,
    )
    assert got[("ccx_license_usage", std)] == 8
    assert got[("ccx_license_entitlement", std)] == 10
    assert got[("ccx_registration_state", (("state", "REGISTERED"),))] == 1
    assert got[("ccx_alerts_total", (("mnemonic", "AGENT_READY"), ("severity", "6")))] == 1
    # How many samples ran by the scrape depends on the machine's speed (one a second);
    # that none failed does not.
    assert got[("ccx_source_samples_total", (("outcome", "ok"),))] >= 1
    assert got[("ccx_source_samples_total", (("outcome", "error"),))] == 0
    assert got[("ccx_info", (("license_type", "flex"), ("piid", inst.piid), ("version", "0.1.0")))]
    health = requests.get(url.replace("/metrics", "/healthz"), timeout=5)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"

    # SIGHUP to a port that is taken: refused, the old listener serves on.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        inst.cfg["metrics"] = {"listen": f"127.0.0.1:{taken.getsockname()[1]}"}
        inst.write()
        daemon.signal(signal.SIGHUP)
        [refused] = daemon.wait_event("metrics reload refused, keeping the old listener")
        assert "address already in use" in refused["error"]
        assert requests.get(url, timeout=5).ok
    # SIGHUP to a free port: bound, the old one let go.
    port = free_port()
    inst.cfg["metrics"] = {"listen": f"127.0.0.1:{port}"}
    inst.write()
    daemon.signal(signal.SIGHUP)
    wait_until("the new listener", lambda: len(daemon.events("metrics listening")) == 2, 20)
    assert daemon.metrics_url() == f"http://127.0.0.1:{port}/metrics"
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).ok
    try:
        requests.get(url, timeout=5)
        raise AssertionError("the old listener still answers")
    except requests.exceptions.ConnectionError:
        pass
    code, _ = daemon.stop()
    assert code == 0


def test_healthz_says_503_while_the_sample_job_hangs_and_200_after(
    sim: Sim, tmp_path: Path
) -> None:
    flag = tmp_path / "hang"
    script = tmp_path / "snap.py"
    script.write_text(
        "import pathlib, sys, time\n"
        f"if pathlib.Path({str(flag)!r}).exists():\n"
        "    time.sleep(30)\n"
        f"sys.stdout.write(pathlib.Path({str(SNAPSHOT)!r}).read_text())\n",
        encoding="utf-8",
    )

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["report"]["interval"] = "2s"
        cfg["source"] = {
            "kind": "command",
            "command": [sys.executable, str(script)],
            "timeout": "5s",
        }

    inst = make_instance(tmp_path / "agent", sim, "udp://127.0.0.1:9", tweak=tweak)
    daemon = Daemon(inst)
    healthz = daemon.metrics_url().replace("/metrics", "/healthz")

    def status() -> tuple[int, dict[str, Any]]:
        r = requests.get(healthz, timeout=5)
        return r.status_code, r.json()

    wait_until("healthy", lambda: status()[0] == 200, 20)
    flag.touch()
    _, doc = wait_until("503", lambda: s if (s := status())[0] == 503 else None, 20)
    assert doc["status"] == "unhealthy"
    assert doc["reason"].startswith("the sample job has not completed for "), doc
    assert "(more than 2 x its interval, 2s)" in doc["reason"]
    flag.unlink()
    # The hung read times out (5 s), the job completes, the next ones are on time.
    wait_until("healthy again", lambda: status()[0] == 200, 30)
    assert daemon.stop()[0] == 0


def test_a_metrics_port_in_use_is_one_line_and_exit_78(sim: Sim, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        def tweak(cfg: dict[str, Any]) -> None:
            cfg["metrics"] = {"listen": f"127.0.0.1:{port}"}

        inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9", register=False, tweak=tweak)
        daemon = Daemon(inst)
        code = daemon.proc.wait(timeout=60)
        daemon.capture()
    assert code == 78
    assert daemon.stderr.splitlines() == [
        f"error: cannot start: metrics.listen 127.0.0.1:{port}: cannot listen there: address "
        "already in use (change metrics.listen, or null to turn the endpoint off)"
    ]
    # status --check still answers from the database the start-up left.
    done = run_cli(inst.config, "status", "--check")
    assert done.stdout.startswith("CCX-LICENSE ")
