"""The simulator's cost of one report as the account grows (issue 16).

Every answer to a REPORT_USAGE carries the instance's entitlements: what the account
bought less what its *other* active instances last reported. That pool used to be
recomputed from the reports for each request (O(instances) per report, O(instances²) per
fleet interval); it is now kept up to date when a report is stored.

* **subject**: ``Simulator.handle`` of one pre-signed REPORT_USAGE (one interval) from a
  registered instance, in an account of N active instances that each reported before:
  open and verify the request, check it, store the report and the pool, answer signed.
  Median over the rounds, for N = 10, 100, 500 and 2,000.
* **floor**: the same at the smallest N (10), in the same run: flat means the ratio stays
  near 1.0. Goal: ≤ 1.5 ms at 2,000 instances.
* **reference**: the same request with the pool recomputed from the reports as before
  (``Tx.latest_usages``, the definition the maintained pool is tested against), fewer
  rounds: what the change saves.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from ccx_agent.licensing.timeutil import iso
from ccx_agent.scenario.simssm import ScenarioSsm
from ccx_agent.simulator.db import Instance, Tx
from ccx_agent.ssm import protocol
from ccx_agent.ssm.port import Udi
from ccx_agent.ssm.protocol import MessageType

NOW = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
UDI = Udi("CCX-BENCH", "BENCH0001", "00000000-0000-4000-8000-00000000be01")
SIZES = (10, 100, 500, 2000)


def _reference_pool(self: Tx, account: str, *, exclude: str | None = None) -> dict[str, int]:
    """The pool recomputed from every instance's reports: what each request paid before."""
    total: dict[str, int] = {}
    for piid, usage in self.latest_usages(account).items():
        if piid != exclude:
            for tag, n in usage.items():
                total[tag] = total.get(tag, 0) + int(n)
    return total


@contextmanager
def _recomputed() -> Iterator[None]:
    saved = Tx.pooled_usage
    Tx.pooled_usage = _reference_pool  # type: ignore[method-assign]
    try:
        yield
    finally:
        Tx.pooled_usage = saved  # type: ignore[method-assign]


class _Account:
    """One in-memory simulator, an instance registered through the protocol, and N-1
    other active instances (rows, each with a few reports)."""

    def __init__(self, tmp: Path, instances: int) -> None:
        self.ssm = ScenarioSsm({"flex-premium-seat": 10 * instances}, timedelta(days=365), NOW, tmp)
        reg = self.ssm.register("scenario-token", UDI, "flex", NOW)
        assert reg.credentials is not None
        self.cred = reg.credentials
        self.cert = x509.load_der_x509_certificate(self.cred.cert)
        self.key = self.ssm.client.keys.key_for(self.cert)
        sim = self.ssm.simulator
        with sim.db.transaction() as tx:
            for i in range(instances - 1):
                piid = f"bench-{i:05d}"
                tx.add_instance(
                    Instance(
                        piid,
                        "default",
                        "CCX",
                        f"S{i}",
                        f"00000000-0000-4000-8000-{i:012d}",
                        f"key-{i}",
                        "flex",
                        NOW,
                        None,
                        NOW,
                    )
                )
                for k in range(4):
                    start = NOW - STEP * (k + 1)
                    tx.add_report(
                        f"{piid}:{iso(start)}",
                        piid,
                        iso(start),
                        iso(start + STEP),
                        {"flex-premium-seat": 1 + (i + k) % 7, "flex-standard-seat": k},
                        NOW,
                    )
        self.sent = 0

    def requests(self, n: int) -> list[bytes]:
        """``n`` signed REPORT_USAGE messages, each of one new interval (fresh nonces)."""
        out = []
        for _ in range(n):
            self.sent += 1
            start = NOW - STEP * (self.sent + 10)
            report = {
                "id": f"{self.cred.piid}:{iso(start)}",
                "start": iso(start),
                "end": iso(start + STEP),
                "usage": {"flex-premium-seat": 5},
            }
            envelope = protocol.seal_request(
                MessageType.REPORT_USAGE,
                {"reports": [report]},
                NOW,
                self.key,
                piid=self.cred.piid,
                cert=self.cert,
            )
            out.append(protocol.canonical(envelope))
        return out

    def time(self, raws: Sequence[bytes]) -> float:
        """Median seconds of ``Simulator.handle`` over ``raws``; each must be acknowledged."""
        times = []
        handle = self.ssm.simulator.handle
        for raw in raws:
            t0 = time.perf_counter()
            status, _ = handle(raw, NOW)
            times.append(time.perf_counter() - t0)
            assert status == 200, status
        return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_simulator")
    p.add_argument("--rounds", type=int, default=400, help="reports timed per size (400)")
    p.add_argument(
        "--reference-rounds", type=int, default=30, help="reports timed the old way (30)"
    )
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = p.parse_args(argv)
    out: dict[str, float] = {}
    floor = 0.0
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            acct = _Account(Path(tmp), n)
            # Interleaved: maintained pool, recomputed pool, maintained pool again.
            half = args.rounds // 2
            first = acct.requests(half)
            ref = acct.requests(args.reference_rounds)
            second = acct.requests(args.rounds - half)
            kept_a = acct.time(first)
            with _recomputed():
                recomputed = acct.time(ref)
            kept_b = acct.time(second)
            kept = (kept_a * half + kept_b * (args.rounds - half)) / args.rounds
            with acct.ssm.simulator.db.read() as tx:
                assert tx.pooled_usage("default") == _reference_pool(tx, "default")
            acct.ssm.simulator.close()
        if not floor:
            floor = kept
        out[f"report_ms_{n}"] = kept * 1000
        out[f"recomputed_ms_{n}"] = recomputed * 1000
        print(
            f"   {n:5} instances: {kept * 1000:6.3f} ms per report "
            f"(pool recomputed per request, as before: {recomputed * 1000:6.3f} ms)"
        )
    largest = max(args.sizes)
    figure = out[f"report_ms_{largest}"]
    print(f"   figure: {figure:.3f} ms per report at {largest} instances (goal <= 1.5 ms)")
    print(f"   floor:  {floor * 1000:.3f} ms per report at {min(args.sizes)} instances")
    print(f"   ratio:  {figure / (floor * 1000):.2f} (flat = 1.0)")
    out["ratio"] = figure / (floor * 1000)
    return out


if __name__ == "__main__":
    main()
