"""``ccx-agent simulate`` over long runs: how long 400 simulated days take.

The subject is a whole run (the real agent jobs and SQLite store on the simulated clock,
one sample a minute). The baseline, measured in the same run, is the same scenario
stepped at every report boundary (``runner.MAX_QUIET = 1``), which is what simulate did
before it learned to catch up quiet boundaries; it is timed over a shorter span and the
ratio is per simulated day, so the bench stays within a couple of minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ccx_agent.scenario import runner
from ccx_agent.scenario.model import load_scenario
from ccx_agent.yamldoc import parse_yaml

QUIET = """
license_type: flex
registered: true
entitlements: {{flex-premium-seat: 100, flex-standard-seat: 50}}
events:
  - at: 0m
    usage: {{flex-premium-seat: 80, flex-standard-seat: 40}}
duration: {days}d
"""
OUTAGE = QUIET.replace("duration:", "  - at: 1d\n    ssm: unreachable\nduration:")


def _time(text: str, days: int, max_quiet: int) -> float:
    loaded = load_scenario(parse_yaml(text.format(days=days), "bench.yaml"))
    saved = runner.MAX_QUIET
    runner.MAX_QUIET = max_quiet
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            runner.run(loaded, Path(tmp))
            return time.perf_counter() - start
    finally:
        runner.MAX_QUIET = saved


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_simulate")
    p.add_argument("--days", type=int, default=400, help="length of the timed runs (400)")
    p.add_argument(
        "--baseline-days", type=int, default=40, help="length of the stepped baseline (40)"
    )
    args = p.parse_args(argv)
    out: dict[str, float] = {}
    for name, text in (("quiet", QUIET), ("outage", OUTAGE)):
        base = _time(text, args.baseline_days, 1) / args.baseline_days
        caught = _time(text, args.baseline_days, runner.MAX_QUIET) / args.baseline_days
        full = _time(text, args.days, runner.MAX_QUIET)
        out[f"{name}_seconds"] = full
        out[f"{name}_ratio"] = caught / base
        print(
            f"   {name:6}: {args.days} days in {full:6.1f} s; per simulated day "
            f"{caught * 1000:6.1f} ms caught up vs {base * 1000:6.1f} ms stepped "
            f"(ratio {caught / base:.2f})"
        )
    return out


if __name__ == "__main__":
    main()
