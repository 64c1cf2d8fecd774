"""Consumption of a snapshot of 1,000 / 10,000 / 100,000 agents: the product path
against ``json.loads`` of the same bytes (issue 16, first row).

* (a0) floor: ``json.loads`` of the bytes with the garbage collector paused, as the
  product pauses it while it decodes (``licensing/snapshot.py``): the same GC policy on
  both sides, so (b)/(a0) is the ratio the summary reports and the goal is read against.
* (a) for reference, the same ``json.loads`` with the collector on: what a naive Python
  source pays. The collector makes it superlinear (it walks the freshly decoded dicts
  again and again), so (b)/(a) flatters the product (0.84x where (b)/(a0) is 2.3-2.5x);
  it is printed beside the other, never instead of it.
* (b) subject, the product path: ``FileSource.read()`` (read the file, decode it with
  duplicate keys refused, validate every agent) + :func:`compute` (count the seats).
* (r) for reference, the reference path the product falls back to when in doubt:
  ``decode`` (``json.loads`` refusing duplicate keys) + ``parse_snapshot`` + ``compute``.
* (m) for reference, ``msgspec.json.decode`` of the bytes into plain dicts and lists.

All are timed in one run, taking turns (a, a0, b, r, m, a, a0, ...), on the same bytes, so
the ratios are comparable across machines. The goal: (b)/(a0) <= 1.0 at 100,000 agents, and
a cost per agent of (b) that does not grow with the size (linear).

Run: ``.venv/bin/python -m benchmarks.bench_consumption [--agents N] [--repeat R] [--no-gc]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import Consumption, compute
from ccx_agent.licensing.snapshot import parse_snapshot
from ccx_agent.sources.file import FileSource, decode

AGENTS = 100_000
#: The sizes of the default run: the cost per agent must not grow with the size.
SIZES = (1_000, 10_000, 100_000)
REPEAT = 7
SEED = 20240601

# Weights of Finesse states in a busy contact center: most agents logged in and working,
# some logged out; UNKNOWN is rare.
STATES = {
    "READY": 25,
    "NOT_READY": 15,
    "TALKING": 25,
    "RESERVED": 3,
    "WORK": 5,
    "WORK_READY": 5,
    "HOLD": 4,
    "LOGOUT": 17,
    "UNKNOWN": 1,
}
CSQ_TYPES = {"VOICE": 70, "CHAT": 20, "EMAIL": 10}


def build_document(agents: int = AGENTS, seed: int = SEED) -> dict[str, object]:
    """A realistic snapshot: teams of agents sharing skill sets, CSQs of all three types."""
    rng = random.Random(seed)  # test data, not security
    n_skills = max(10, agents // 250)
    skills = [f"Skill{i:04d}" for i in range(n_skills)]
    csqs = []
    for i in range(max(5, agents // 300)):
        kind = rng.choices(list(CSQ_TYPES), weights=list(CSQ_TYPES.values()))[0]
        csqs.append(
            {"name": f"{kind.title()}CSQ{i:04d}", "type": kind, "skills": rng.sample(skills, 3)}
        )
    # Agents of one team mostly share a skill set, as UCCX resource groups do.
    team_skills = [rng.sample(skills, rng.randint(1, 6)) for _ in range(max(1, agents // 40))]
    states, weights = list(STATES), list(STATES.values())
    out = []
    for i in range(agents):
        team = rng.randrange(len(team_skills))
        own = list(team_skills[team])
        if rng.random() < 0.2:
            own.append(rng.choice(skills))
        agent: dict[str, object] = {
            "id": f"agent{i:06d}",
            "type": "supervisor" if rng.random() < 0.08 else "agent",
            "state": rng.choices(states, weights=weights)[0],
            "skills": own if rng.random() > 0.02 else [],
            "team": f"Team{team:04d}",
        }
        if rng.random() < 0.05:
            agent["outbound"] = True
        out.append(agent)
    return {"agents": out, "csqs": csqs, "ports": {"outbound": 120}}


def _interleaved(fns: Sequence[Callable[[], object]], repeat: int) -> list[list[float]]:
    """Times of each function, run in turn ``repeat`` times (a, b, c, a, b, c ...).

    Taking turns spreads any change in machine load over every function alike. The
    garbage collector stays on (a sample pays for it too) but starts each call from a
    clean slate.
    """
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            gc.collect()
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times


def _line(label: str, times: list[float]) -> str:
    return (
        f"  {label:<48} median {statistics.median(times) * 1000:8.1f} ms"
        f"   min {min(times) * 1000:8.1f} ms"
    )


def _interleaved_cpu(
    fns: Sequence[Callable[[], object]], repeat: int
) -> tuple[list[list[float]], list[list[float]]]:
    """As :func:`_interleaved`, with the CPU time of this process beside the wall time.

    On a machine shared with other work the wall time also counts the time this process
    waited for a CPU; its CPU time does not, so the CPU-time ratio is the steadier one.
    """
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, w, c in zip(fns, wall, cpu, strict=True):
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            c.append(time.process_time() - start_cpu)
            w.append(time.perf_counter() - start)
    return wall, cpu


def _no_gc(fn: Callable[[], object]) -> Callable[[], object]:
    def paused() -> object:
        gc.disable()
        try:
            return fn()
        finally:
            gc.enable()

    return paused


def measure(agents: int, repeat: int, no_gc: bool) -> dict[str, float]:
    """Time (a), (a0), (b), (r) and (m) on one document of ``agents`` agents; print them."""
    raw = json.dumps(build_document(agents)).encode()
    figures: dict[str, float] = {"agents": float(agents), "bytes": float(len(raw))}

    def baseline() -> object:
        return json.loads(raw)

    def decoded_by_msgspec() -> object:
        return msgspec.json.decode(raw)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.json"
        path.write_bytes(raw)
        source = FileSource(path)

        def product() -> Consumption:
            return compute(source.read(), LicenseType.FLEX, ALL_FEATURES)

        def reference() -> Consumption:
            return compute(parse_snapshot(decode(raw, str(path))), LicenseType.FLEX, ALL_FEATURES)

        result = product()  # also warms up every path before timing
        if reference() != result:
            raise SystemExit("the product and the reference path disagree")
        fns = (baseline, _no_gc(baseline), product, reference, decoded_by_msgspec)
        if no_gc:
            gc.disable()
        try:
            (base, floor, subj, ref, msg), cpu = _interleaved_cpu(fns, repeat)
        finally:
            gc.enable()

    for key, times in (
        ("baseline", base),
        ("floor", floor),
        ("subject", subj),
        ("reference", ref),
        ("msgspec", msg),
    ):
        figures[f"{key}_median_s"] = statistics.median(times)
        figures[f"{key}_min_s"] = min(times)
    for key, over in (("ratio", "baseline"), ("floor_ratio", "floor")):
        for stat in ("median", "min"):
            figures[f"{key}_{stat}"] = figures[f"subject_{stat}_s"] / figures[f"{over}_{stat}_s"]
    cpu_base, cpu_floor, cpu_subj = (statistics.median(t) for t in cpu[:3])
    figures["ratio_cpu_median"] = cpu_subj / cpu_base
    figures["floor_ratio_cpu_median"] = cpu_subj / cpu_floor
    figures["subject_us_per_agent"] = figures["subject_median_s"] / agents * 1e6

    print(
        f"consumption of a {agents:,}-agent snapshot ({len(raw) / 1e6:.2f} MB of JSON, "
        f"{len(result.agents):,} logged in), {repeat} repetitions"
        f"{', GC off' if no_gc else ''}"
    )
    print(f"  tags: {result.tags}")
    per = 1e6 / agents
    for label, times in (
        ("(a) baseline: json.loads, GC on", base),
        ("(a0) floor: json.loads, GC off", floor),
        ("(b) product: FileSource.read+compute", subj),
        ("(r) reference path: decode+parse_snapshot+compute", ref),
        ("(m) msgspec.json.decode alone", msg),
    ):
        print(f"{_line(label, times)}   {statistics.median(times) * per:6.2f} us/agent")
    print(
        f"  {'ratio (b)/(a0), same GC policy, goal <= 1.0':<48} median "
        f"{figures['floor_ratio_median']:8.2f}      min {figures['floor_ratio_min']:8.2f}"
        f"   CPU time {figures['floor_ratio_cpu_median']:5.2f}"
    )
    print(
        f"  {'ratio (b)/(a), json.loads with the GC on':<48} median "
        f"{figures['ratio_median']:8.2f}      min {figures['ratio_min']:8.2f}"
        f"   CPU time {figures['ratio_cpu_median']:5.2f}"
    )
    sys.stdout.flush()
    return figures


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_consumption")
    p.add_argument(
        "--agents",
        type=int,
        action="append",
        help=f"a size to measure (repeatable); default {', '.join(f'{n:,}' for n in SIZES)}",
    )
    p.add_argument(
        "--repeat",
        type=int,
        help=f"repetitions; default {REPEAT} at {AGENTS:,} agents, more for smaller sizes",
    )
    p.add_argument(
        "--no-gc",
        action="store_true",
        help="switch the garbage collector off while timing (to see the pure CPU cost)",
    )
    args = p.parse_args(argv)
    sizes = args.agents or list(SIZES)
    print(f"Python {platform.python_version()}, msgspec {msgspec.__version__}")
    runs = []
    for agents in sizes:
        # Small documents are timed more often, for about the same time in all.
        repeat = args.repeat or max(REPEAT, min(100, REPEAT * AGENTS // max(agents, 1)))
        runs.append(measure(agents, repeat, args.no_gc))
    if len(runs) > 1:
        shown = ", ".join(f"{int(r['agents']):,}: {r['subject_us_per_agent']:.2f}" for r in runs)
        growth = runs[-1]["subject_us_per_agent"] / runs[0]["subject_us_per_agent"]
        print(f"  (b) per agent, us (median): {shown}; largest/smallest {growth:.2f}")
        ratios = ", ".join(
            f"{int(r['agents']):,}: {r['floor_ratio_median']:.2f} (GC on {r['ratio_median']:.2f})"
            for r in runs
        )
        print(f"  (b)/(a0) by size (median wall time): {ratios}")
        ratios = ", ".join(
            f"{int(r['agents']):,}: {r['floor_ratio_cpu_median']:.2f} "
            f"(GC on {r['ratio_cpu_median']:.2f})"
            for r in runs
        )
        print(f"  (b)/(a0) by size (median CPU time):  {ratios}")
    return runs[-1]


if __name__ == "__main__":
    main()
