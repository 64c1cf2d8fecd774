"""Talking to SSM over HTTPS: one report cycle, and draining a 90-day outbox.

Both run against the real simulator (``ccx-agent ssm``'s server) on loopback, started in a
temporary directory by the bench itself.

* **report cycle**: what the daemon does every 15 minutes for one interval: sample (the
  consumption of a snapshot), close the interval (SQLite commit with its outbox row),
  then flush: sign the REPORT_USAGE, POST it over TLS, verify the signed answer, commit
  the acknowledgement. The baseline, in the same run, is a bare ``requests`` POST of the
  same bytes to the same server on a kept-alive session (the server checks and refuses
  it as a replay, so it still verifies the signature and the certificate).
* **90-day drain**: an outbox of 8,640 intervals (90 days of 15-minute reports, as after
  a long outage) delivered in batches until empty.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from ccx_agent.agent import Agent
from ccx_agent.config import CommonConfig
from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import compute
from ccx_agent.licensing.snapshot import parse_snapshot
from ccx_agent.licensing.timeutil import floor_to, iso
from ccx_agent.simulator.server import start
from ccx_agent.ssm.client import HttpTransport, SsmClient
from ccx_agent.ssm.identity import KeyStore, load_anchors
from ccx_agent.ssm.port import Udi
from ccx_agent.store import DB_NAME, Store

STEP = timedelta(minutes=15)
UDI = Udi("UCCX", "BENCH1", "00000000-0000-4000-8000-0000000000be")


def _snapshot(agents: int) -> dict[str, object]:
    return {
        "csqs": [
            {"name": "voice", "type": "VOICE", "skills": ["s1"]},
            {"name": "chat", "type": "CHAT", "skills": ["s2"]},
        ],
        "agents": [
            {
                "id": f"a{i}",
                "state": "READY",
                "skills": ["s1", "s2"] if i % 4 == 0 else ["s1"],
            }
            for i in range(agents)
        ],
    }


class _Rig:
    def __init__(self, tmp: Path) -> None:
        self.server = start(tmp / "ssm")
        sim = self.server.simulator
        sim.add_licenses("flex-premium-seat", 10_000)
        sim.add_licenses("flex-standard-seat", 10_000)
        self.now = datetime.now(UTC)
        token = sim.create_token(now=self.now)
        cfg = CommonConfig(state_dir=tmp / "agent")
        self.store = Store(tmp / DB_NAME)
        transport = HttpTransport(self.server.url, ca_bundle=self.server.ca_path)
        self.transport = transport
        client = SsmClient(transport, KeyStore(tmp / "agent"), load_anchors(self.server.ca_path))
        self.agent = Agent(cfg, self.store, client, udi=UDI)
        outcome = self.agent.register(token, self.now)
        assert outcome.ok, outcome.message

    def close(self) -> None:
        self.transport.close()
        self.store.close()
        self.server.stop()


def report_cycle(rounds: int, agents: int) -> dict[str, float]:
    doc = _snapshot(agents)
    with tempfile.TemporaryDirectory() as tmp:
        rig = _Rig(Path(tmp))
        try:
            # Intervals in the past (the server only checks a message's sent_at).
            first = floor_to(rig.now, STEP) - STEP * (rounds + 2)
            cycle, bare = [], []
            session = requests.Session()
            session.trust_env = False
            session.verify = str(rig.server.ca_path)
            last_request = b""
            sent: list[bytes] = []
            orig_post = rig.transport.post

            def keep(body: bytes, now: datetime) -> tuple[int, bytes, dict[str, str]]:
                sent.append(body)
                status, raw, headers = orig_post(body, now)
                return status, raw, dict(headers)

            rig.transport.post = keep  # type: ignore[method-assign]
            for i in range(rounds):
                start_at = first + STEP * i
                t0 = time.perf_counter()
                usage = compute(parse_snapshot(doc), LicenseType.FLEX, ALL_FEATURES).tags
                rig.agent.sample([start_at], dict(usage))
                rig.agent.close_intervals(start_at + STEP)
                acked = rig.agent.flush(rig.now, force=True)
                cycle.append(time.perf_counter() - t0)
                assert acked == 1, acked
                last_request = sent[-1]
                t0 = time.perf_counter()
                resp = session.post(
                    rig.server.url,
                    data=last_request,
                    timeout=(10, 30),
                    headers={"Content-Type": "application/json"},
                )
                resp.content  # noqa: B018 - read the body, as the client does
                bare.append(time.perf_counter() - t0)
            session.close()
            reports = rig.server.simulator.reports()
            assert len(reports) == rounds
        finally:
            rig.close()
    c, b = statistics.median(cycle), statistics.median(bare)
    return {"cycle_ms": c * 1000, "bare_post_ms": b * 1000, "ratio": c / b}


def drain(days: int) -> dict[str, float]:
    n = days * 96
    with tempfile.TemporaryDirectory() as tmp:
        rig = _Rig(Path(tmp))
        try:
            first = floor_to(rig.now, STEP) - STEP * (n + 2)
            piid = rig.agent.state().identity.piid  # type: ignore[union-attr]
            usage = {"flex-premium-seat": 40, "flex-standard-seat": 60}
            queued = []
            for i in range(n):
                s = first + STEP * i
                rid = f"{piid}:{iso(s)}"
                payload = {
                    "id": rid,
                    "start": iso(s),
                    "end": iso(s + STEP),
                    "usage": usage,
                }
                queued.append((rid, piid, s, payload))
            with rig.store.transaction() as tx:
                tx.enqueue_many(queued, rig.now)
            t0 = time.perf_counter()
            acked = rig.agent.flush(rig.now, force=True)
            elapsed = time.perf_counter() - t0
            assert acked == n, (acked, n)
            assert len(rig.server.simulator.reports(piid)) == n
        finally:
            rig.close()
    return {"intervals": n, "seconds": elapsed, "per_interval_ms": elapsed / n * 1000}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ssm")
    p.add_argument("--rounds", type=int, default=50, help="report cycles timed (50)")
    p.add_argument("--agents", type=int, default=400, help="agents in the snapshot (400)")
    p.add_argument("--days", type=int, default=90, help="days of outbox to drain (90)")
    args = p.parse_args(argv)
    cycle = report_cycle(args.rounds, args.agents)
    print(
        f"report cycle ({args.agents} agents): median {cycle['cycle_ms']:.2f} ms; bare POST "
        f"of the same bytes {cycle['bare_post_ms']:.2f} ms; ratio {cycle['ratio']:.2f}"
    )
    d = drain(args.days)
    print(
        f"drain of {d['intervals']:.0f} intervals ({args.days} days): {d['seconds']:.2f} s "
        f"({d['per_interval_ms']:.3f} ms per interval)"
    )
    return {
        **{f"cycle_{k}": v for k, v in cycle.items()},
        **{f"drain_{k}": v for k, v in d.items()},
    }


if __name__ == "__main__":
    main()
