"""``ccx-agent simulate`` over long runs: how long 400 simulated days take (issue 16).

The subject is a whole run (the real agent jobs and SQLite store on the simulated clock,
the real simulator in process, one sample a minute), in two scenarios: **quiet**
(registered, usage constant, SSM reachable) and **outage** (SSM unreachable after a day,
to the end). Each run's ``simulate --json`` output is hashed and compared with the hash
recorded from main before the speed work (``REFERENCE``): a faster run that changed an
alert or a record says so on its line.

* **floor**, measured in the same run (CPU time, as the ratio): the licensing core alone over the same 400 days
  (``lifecycle.sample`` for each interval's 15 samples and ``interval.close`` for each of
  the 38,400 intervals, in memory): what any implementation must compute. The ratio says
  how much the store, the protocol and the jobs cost on top.
* **stepped**: the same scenarios stepped at every report boundary (``MAX_QUIET = 1``)
  over a shorter span, per simulated day, for the effect of catching up quiet days.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from ccx_agent.config.schema import CommonConfig
from ccx_agent.config.yamldoc import parse_yaml
from ccx_agent.licensing import interval, lifecycle
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.lifecycle import Identity, ProductState
from ccx_agent.scenario import runner
from ccx_agent.scenario.model import DEFAULT_START, load_scenario

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

#: sha256 of ``simulate --json`` of the 400-day runs, recorded from main at 7915923
#: (before the issue-16 work); tests/scenario/test_golden_output.py pins shorter runs.
REFERENCE = {
    ("quiet", 400): "bb9a9261b6e508f7f1a8277a5346af3c0e8409da17d9da904e696402fb7d82fe",
    ("outage", 400): "96af73cdb9229cfec419210b3a82941d335483ab3da27061e9d0ee33522018a3",
}
#: The goals of issue 16 (seconds for 400 days, on a quiet machine).
GOALS = {"quiet": 8.0, "outage": 12.0}


def _run(text: str, days: int, max_quiet: int) -> tuple[float, str, float]:
    """Seconds of ``runner.run`` (wall clock), the sha256 of the ``--json`` output it
    gives, and the CPU seconds of the run (on a busy machine, the figure to compare)."""
    loaded = load_scenario(parse_yaml(text.format(days=days), "bench.yaml"))
    saved = runner.MAX_QUIET
    runner.MAX_QUIET = max_quiet
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu = time.perf_counter(), time.process_time()
            result = runner.run(loaded, Path(tmp))
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        runner.MAX_QUIET = saved
    # As `ccx-agent simulate --json` writes it (ccx_agent/cli/commands.py).
    out = json.dumps(result.as_json(), separators=(",", ":")) + "\n"
    return elapsed, hashlib.sha256(out.encode("utf-8")).hexdigest(), cpu


def core_floor(days: int) -> float:
    """CPU seconds the licensing core alone takes for ``days`` of the quiet scenario."""
    cfg = CommonConfig()
    timers, rules = cfg.timers(), cfg.rules()
    step = cfg.report.interval
    minute = timedelta(minutes=1)
    usage = {"flex-premium-seat": 80, "flex-standard-seat": 40, "flex-outbound-port": 0}
    ident = Identity("bench", DEFAULT_START, DEFAULT_START, DEFAULT_START + timedelta(days=365))
    state, _ = lifecycle.registered(
        ProductState(LicenseType.FLEX),
        DEFAULT_START,
        ident,
        {"flex-premium-seat": 100, "flex-standard-seat": 50},
        timers,
    )
    samples = int(step / minute)
    t0 = time.process_time()
    for i in range(days * int(timedelta(days=1) / step)):
        start = DEFAULT_START + step * i
        times = [start + minute * k for k in range(samples)]
        state, _ = lifecycle.sample(state, times, usage, timers)
        state, _, _ = interval.close(state, start, start + step, usage, rules, timers)
    return time.process_time() - t0


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_simulate")
    p.add_argument("--days", type=int, default=400, help="length of the timed runs (400)")
    p.add_argument(
        "--baseline-days", type=int, default=20, help="length of the stepped runs (20; 0: none)"
    )
    args = p.parse_args(argv)
    out: dict[str, float] = {}
    floor = core_floor(args.days)
    out["floor_seconds"] = floor
    print(f"   floor : licensing core alone, {args.days} days: {floor:6.2f} s CPU")
    for name, text in (("quiet", QUIET), ("outage", OUTAGE)):
        full, digest, cpu = _run(text, args.days, runner.MAX_QUIET)
        reference = REFERENCE.get((name, args.days))
        same = "no reference" if reference is None else (
            "output identical to main" if digest == reference else "OUTPUT DIFFERS FROM MAIN"
        )  # fmt: skip
        out[f"{name}_seconds"] = full
        out[f"{name}_cpu_seconds"] = cpu
        out[f"{name}_ratio"] = cpu / floor
        print(
            f"   {name:6}: {args.days} days in {full:6.2f} s ({cpu:.2f} s CPU; goal "
            f"{GOALS[name]:.0f} s on a quiet machine); {same}"
        )
        print(f"   {name:6}: ratio to the floor (CPU) {cpu / floor:.2f}")
        if args.baseline_days:
            base = _run(text, args.baseline_days, 1)[0]
            caught = _run(text, args.baseline_days, runner.MAX_QUIET)[0]
            base, caught = base / args.baseline_days, caught / args.baseline_days
            out[f"{name}_stepped_ratio"] = caught / base
            print(
                f"   {name:6}: per simulated day {caught * 1000:6.1f} ms caught up vs "
                f"{base * 1000:6.1f} ms stepped (ratio {caught / base:.2f})"
            )
    return out


if __name__ == "__main__":
    main()
