"""End to end with a real Prometheus: the daemon (simulator, scripted source, 2 s report
intervals, 13 agents on 10 licenses) is scraped every second by the ``prometheus`` server
of the Debian package, on loopback with its own temporary data directory, loading
contrib/prometheus/ccx-agent.rules.yml. When the countdown has run out, Prometheus's HTTP
API must say what ``status --json`` says, the out-of-compliance alert must fire, and
every query of the Grafana dashboard must return data.

The rules are loaded from a copy whose ``for:`` durations are 0 s: the production ones
(1 to 5 minutes) are driven by ``promtool test rules`` (tests/test_contrib.py); here the
expressions are what is tested, against live data. Skipped where ``prometheus`` is not
installed, except in CI, where that fails.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from ccx_agent.daemon.metrics import JOBS
from tests.daemon.conftest import CAPTURED, TAG, Daemon, Sim, make_instance, wait_until
from tests.promtools import RULES, dashboard_exprs, tool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        doc = r.json()
        assert doc["status"] == "success", (expr, doc)
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single sample ``expr`` selects now (None: no sample)."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None


@contextlib.contextmanager
def prometheus(work: Path, target: str) -> Iterator[Prometheus]:
    binary = tool("prometheus")
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (work / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "ccx-agent",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    prom = Prometheus(proc, f"http://127.0.0.1:{port}", log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(requests.exceptions.ConnectionError):
                return requests.get(f"{prom.url}/-/ready", timeout=5).status_code == 200
            return False

        wait_until("prometheus ready", ready, timeout=60, step=0.2)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        CAPTURED.append(log.read_text(errors="replace"))


def test_a_real_prometheus_scrapes_the_countdown_to_out_of_compliance(
    sim: Sim, tmp_path: Path
) -> None:
    tool("prometheus")  # skip (or fail in CI) before anything starts

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["report"]["interval"] = "2s"
        # 13 until the countdown has run out (5 intervals, ~12 s), then 11: the locked
        # usage (13) and the usage (11) differ.
        cfg["source"]["steps"] = [{"at": "0s", "agents": 13}, {"at": "20s", "agents": 11}]

    inst = make_instance(tmp_path / "agent", sim, "udp://127.0.0.1:9", tweak=tweak)
    daemon = Daemon(inst)
    url = daemon.metrics_url()
    target = url.removeprefix("http://").removesuffix("/metrics")
    work = tmp_path / "prometheus"
    work.mkdir()
    with prometheus(work, target) as prom:
        wait_until(
            "the target up",
            lambda: prom.value('up{job="ccx-agent"}') == 1,
            timeout=30,
            step=0.5,
        )
        # The countdown runs out: 5 overage intervals of 2 s.
        wait_until(
            "OUT_OF_COMPLIANCE in status, 11 agents in use",
            lambda: (
                (t := inst.status(in_process=True)["tags"][TAG])["state"] == "OUT_OF_COMPLIANCE"
                and t["usage"] == 11
            ),
            timeout=60,
            step=0.5,
        )
        daemon.assert_alive()
        sel = f'{{job="ccx-agent",tag="{TAG}"}}'

        def agree() -> dict[str, Any] | None:
            """Prometheus and status --json say the same, read one after the other (a
            report may land in between: then try again)."""
            doc = inst.status()  # the real CLI
            t = doc["tags"][TAG]
            seen = {
                "ooc": prom.value(
                    f'ccx_license_compliance{{job="ccx-agent",tag="{TAG}",state="OUT_OF_COMPLIANCE"}}'
                ),
                "locked": prom.value(f"ccx_license_locked_usage{sel}"),
                "pending": prom.value('ccx_reports_pending{job="ccx-agent"}'),
                "usage": prom.value(f"ccx_license_usage{sel}"),
            }
            want = {
                "ooc": float(t["state"] == "OUT_OF_COMPLIANCE"),
                "locked": float(t["locked"] or 0),
                "pending": float(doc["outbox"]),
                "usage": float(t["usage"]),
            }
            return doc if seen == want else None

        doc = wait_until("Prometheus to agree with status --json", agree, timeout=30, step=0.5)
        assert doc["tags"][TAG]["state"] == "OUT_OF_COMPLIANCE"
        assert (doc["tags"][TAG]["locked"], doc["tags"][TAG]["usage"]) == (13, 11)
        assert prom.value(f"ccx_license_entitlement{sel}") == doc["tags"][TAG]["entitlement"] == 10
        assert (
            prom.value(
                f'ccx_license_compliance{{job="ccx-agent",tag="{TAG}",state="IN_COMPLIANCE"}}'
            )
            == 0
        )

        # The rules file's alert fires, for this tag.
        def firing() -> list[dict[str, Any]]:
            r = requests.get(f"{prom.url}/api/v1/alerts", timeout=10).json()
            return [
                a
                for a in r["data"]["alerts"]
                if a["labels"]["alertname"] == "CcxLicenseOutOfCompliance"
                and a["state"] == "firing"
            ]

        [alert] = wait_until("CcxLicenseOutOfCompliance firing", firing, timeout=30, step=0.5)
        assert alert["labels"]["tag"] == TAG
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["summary"] == f"{TAG} is OUT_OF_COMPLIANCE"
        # ... and the countdown's alert fired before it (the ALERTS series keeps it).
        assert (
            prom.value(
                'max_over_time(ALERTS{alertname="CcxLicenseCountdownStarted",'
                f'alertstate="firing",tag="{TAG}"}}[5m])'
            )
            == 1
        )
        assert prom.value('ALERTS{alertname="CcxAgentDown"}') is None

        # Every query of the dashboard has data to show.
        def all_answered() -> bool:
            return all(prom.query(e) for _, e in dashboard_exprs())

        try:
            wait_until("every dashboard query answered", all_answered, timeout=30, step=1)
        except AssertionError:
            empty = [f"{t}: {e}" for t, e in dashboard_exprs() if not prom.query(e)]
            raise AssertionError(f"dashboard queries without data: {empty}") from None
        # The job failures keep their job name: a label ``job`` clashed with the scrape
        # job's and came out as ``exported_job``, so the panel "Alerts and failures" drew
        # one series for all of them.
        failures = prom.query('ccx_job_failures_total{job="ccx-agent"}')
        assert sorted(s["metric"].get("task", "") for s in failures) == sorted(JOBS)
        assert not any("exported_job" in s["metric"] for s in failures)
        (by_job,) = [e for _, e in dashboard_exprs() if "ccx_job_failures_total" in e]
        assert len(prom.query(by_job)) == len(JOBS)
        code, _ = daemon.stop()
        assert code == 0
