"""The metrics endpoint: the cost of one scrape, and the daemon's resident memory with
metrics on against metrics off.

Scrape: a registry with 3 license tags and both histograms holding observations in every
bucket, as a daemon that has run for a while has them. Timed are the exposition alone
(``generate_latest``) and a whole HTTP scrape over loopback (``GET /metrics``, a new TCP
connection each time as the server closes it after every answer, like a Prometheus
scrape); the baseline, in the same run and in turns, is ``GET /`` on the same server (a
30-byte answer): the HTTP machinery without the metrics. Target: under 5 ms a scrape.

Memory: two ``ccx-agent run`` processes side by side, the same config but for
``metrics.listen`` (``127.0.0.1:0`` / ``null``), unregistered, reading a scripted source of
400 agents every second; the one with metrics is scraped once a second meanwhile, as
Prometheus would. Peak VmRSS over the window, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import requests
import structlog
import yaml
from prometheus_client import generate_latest

from benchmarks.bench_daemon import _rss_kib
from ccx_agent.daemon.metrics import SOURCE_BUCKETS, SSM_BUCKETS, Metrics
from ccx_agent.daemon.metrics_http import Endpoint, Settings

TAGS = ("flex-standard-seat", "flex-premium-seat", "flex-outbound-port")


def _doc() -> dict[str, object]:
    return {
        "license_type": "flex",
        "registration": {
            "state": "REGISTERED",
            "piid": "PIID-1",
            "certificate_expires_at": "2030-01-01T00:00:00Z",
        },
        "authorization": {"state": "AUTHORIZED", "expires_at": "2030-01-01T00:00:00Z"},
        "enforcement": None,
        "evaluation_seconds_left": 0,
        "outbox": 0,
        "last_report_at": "2029-01-01T00:00:00Z",
        "last_sample_at": "2029-01-01T00:00:00Z",
        "tags": {
            t: {
                "usage": 300,
                "entitlement": 350,
                "reported": 290,
                "state": "IN_COMPLIANCE",
                "overage_count": 0,
                "locked": None,
            }
            for t in TAGS
        },
    }


def _full_registry() -> Metrics:
    m = Metrics()
    m.refresh(_doc())
    for b in SSM_BUCKETS:
        m.ssm_duration.observe(b * 0.9)
    for b in SOURCE_BUCKETS:
        m.source_duration.observe(b * 0.9)
    for type_ in ("report", "authorize", "renew_id"):
        m.ssm_requests.labels(type_, "ok").inc(100)
    m.emitted([("AGENT_READY", 6), ("SYSTEM_TO_ENTER_OOC_STATE", 4), ("SYSTEM_IN_OOC_STATE", 2)])
    return m


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def scrape(n: int) -> None:
    # The endpoint logs each request at debug level; the daemon's log drops those.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    m = _full_registry()
    body = generate_latest(m.registry)
    ep = Endpoint("127.0.0.1:0", Settings(), m.registry, lambda: (True, {"status": "ok"}))
    ep.start()
    session = requests.Session()
    base = ep.url.removesuffix("/metrics")
    try:
        for _ in range(20):  # warm up both paths
            session.get(ep.url, timeout=5)
            session.get(base + "/", timeout=5)
        expo = _timed(lambda: generate_latest(m.registry), n)
        http, bare = [], []
        for _ in range(n):  # in turns, so that both see the same machine
            http += _timed(lambda: session.get(ep.url, timeout=5).content, 1)
            bare += _timed(lambda: session.get(base + "/", timeout=5).content, 1)
    finally:
        session.close()
        ep.stop()
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    med = statistics.median
    print(f"   one scrape: {series} series, {len(body)} bytes (3 tags, full histograms), n={n}")
    print(
        f"   exposition alone: {med(expo) * 1000:.3f} ms median, "
        f"{sorted(expo)[int(n * 0.95)] * 1000:.3f} ms p95"
    )
    print(
        f"   GET /metrics over loopback: {med(http) * 1000:.3f} ms median, "
        f"{sorted(http)[int(n * 0.95)] * 1000:.3f} ms p95; GET / (baseline) "
        f"{med(bare) * 1000:.3f} ms median: ratio {med(http) / med(bare):.2f} "
        f"(target: under 5 ms)"
    )


def _config(work: Path, name: str, listen: str | None) -> Path:
    cfg = {
        "state_dir": str(work / name),
        "report": {"interval": "15m"},
        "sample": {"interval": "1s"},
        "alerts": {"syslog": {"target": "udp://127.0.0.1:9"}},
        "metrics": {"listen": listen},
        "source": {"kind": "scripted", "steps": [{"agents": 300, "premium_agents": 100}]},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def memory(seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="ccx-bench-metrics-") as tmp:
        work = Path(tmp)
        procs, logs = [], []
        for name, listen in (("on", "127.0.0.1:0"), ("off", None)):
            log = work / f"{name}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "ccx_agent",
                            "--config",
                            str(_config(work, name, listen)),
                            "run",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            url = None
            deadline = time.monotonic() + 30
            while url is None and time.monotonic() < deadline:
                for line in logs[0].read_text().splitlines():
                    if '"metrics listening"' in line:
                        url = json.loads(line)["url"]
                time.sleep(0.1)
            if url is None:
                raise RuntimeError("the daemon with metrics did not start listening")
            time.sleep(2.0)  # both past their start-up
            peak = [0, 0]
            scrapes = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                requests.get(url, timeout=5)
                scrapes += 1
                for k, proc in enumerate(procs):
                    peak[k] = max(peak[k], _rss_kib(proc.pid)[0])
                time.sleep(1.0)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=60)
    print(
        f"   idle daemon, {seconds:.0f} s window, sample every 1 s ({scrapes} scrapes of the "
        f"one with metrics): metrics on {peak[0] / 1024:.1f} MiB, off {peak[1] / 1024:.1f} "
        f"MiB peak VmRSS: ratio {peak[0] / peak[1]:.3f}"
    )


def main(argv: Sequence[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_metrics")
    ap.add_argument("--scrapes", type=int, default=500, help="scrapes timed (default 500)")
    ap.add_argument("--seconds", type=float, default=20.0, help="memory window (default 20)")
    args = ap.parse_args(argv)
    scrape(args.scrapes)
    memory(args.seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
