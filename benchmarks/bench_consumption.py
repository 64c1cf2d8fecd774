"""Consumption of a 100,000-agent snapshot: parsing and counting against ``json.loads``.

The baseline (a) is decoding the JSON bytes alone (C code, the least any source can do);
the subject (b) is what a sample does with a file snapshot once it has the bytes: decode,
validate every agent (:func:`parse_snapshot`) and count seats (:func:`compute`). Both are
timed in the same run on the same bytes, so their ratio is comparable across machines.
(c), for reference, is the whole file source: read the file, decode it refusing
duplicate keys, parse and count.

Run: ``.venv/bin/python -m benchmarks.bench_consumption [--agents N] [--repeat R]``.
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

from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import Consumption, compute
from ccx_agent.licensing.snapshot import parse_snapshot
from ccx_agent.sources.file import FileSource

AGENTS = 100_000
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


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_consumption")
    p.add_argument("--agents", type=int, default=AGENTS, help=f"default {AGENTS:,}")
    p.add_argument("--repeat", type=int, default=REPEAT, help=f"default {REPEAT}")
    p.add_argument(
        "--no-gc",
        action="store_true",
        help="switch the garbage collector off while timing (to see the pure CPU cost)",
    )
    args = p.parse_args(argv)
    raw = json.dumps(build_document(args.agents)).encode()

    def baseline() -> object:
        return json.loads(raw)

    def subject() -> object:
        return compute(parse_snapshot(json.loads(raw)), LicenseType.FLEX, ALL_FEATURES)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.json"
        path.write_bytes(raw)
        source = FileSource(path)

        def file_source() -> Consumption:
            return compute(source.read(), LicenseType.FLEX, ALL_FEATURES)

        result = file_source()  # also warms up every path before timing
        if args.no_gc:
            gc.disable()
        try:
            base, subj, whole = _interleaved((baseline, subject, file_source), args.repeat)
        finally:
            gc.enable()

    figures = {
        "agents": float(args.agents),
        "bytes": float(len(raw)),
        "baseline_median_s": statistics.median(base),
        "baseline_min_s": min(base),
        "subject_median_s": statistics.median(subj),
        "subject_min_s": min(subj),
        "file_source_median_s": statistics.median(whole),
        "file_source_min_s": min(whole),
    }
    figures["ratio_median"] = figures["subject_median_s"] / figures["baseline_median_s"]
    figures["ratio_min"] = figures["subject_min_s"] / figures["baseline_min_s"]
    logged_in = len(result.agents)
    print(
        f"consumption of a {args.agents:,}-agent snapshot ({len(raw) / 1e6:.1f} MB of JSON, "
        f"{logged_in:,} logged in), {args.repeat} repetitions, "
        f"Python {platform.python_version()}{', GC off' if args.no_gc else ''}"
    )
    print(f"  tags: {result.tags}")
    print(_line("(a) baseline: json.loads", base))
    print(_line("(b) subject: json.loads+parse_snapshot+compute", subj))
    print(
        f"  {'ratio (b)/(a)':<48} median {figures['ratio_median']:8.2f}   "
        f"   min {figures['ratio_min']:8.2f}"
    )
    print(_line("(c) FileSource.read+compute (for reference)", whole))
    sys.stdout.flush()
    return figures


if __name__ == "__main__":
    main()
