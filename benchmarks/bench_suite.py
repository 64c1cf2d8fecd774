"""The test suite's interpreter starts: what one ``python -m ccx_agent`` costs the suite,
with the package's bytecode (as ``make test`` leaves it: compileall at install and
before the run) and without it (``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__``,
as every start was before).

The suite starts hundreds of these (the CLI tests, every daemon, ``register``,
``status``, ``sync`` …), and on two cores it is CPU-bound, so their CPU is the suite's
wall time.

Then the row of issue 16 itself (``make test`` in at most 120 s): the suite as
``make test`` runs it (``pytest -n 4 --dist loadgroup``, bytecode kept), its wall time,
and beside it the floor a CPU-bound run cannot beat on this machine: the CPU the suite
used (its own and its children's, from ``wait4``) divided by the CPU count. ``--no-suite``
leaves that part out (it takes minutes).

Two copies of the package in a temporary directory, one byte-compiled, put first on
``PYTHONPATH`` (ahead of the editable install); ``ccx-agent --version`` started from each
in turn (interleaved, so a change of load hits both), the CPU (user + sys) of each child
from ``wait4``. The floor: a bare ``python -c pass``, in the same rounds.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import ccx_agent

PACKAGE = Path(ccx_agent.__file__).parent


def _cpu(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """User + sys CPU of one child, from its own rusage. ``cwd`` holds no ``ccx_agent``
    (``-m`` puts the working directory first on the path)."""
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv}: exit {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def suite(workers: int) -> dict[str, float]:
    """Wall and CPU seconds of the whole suite as ``make test`` runs it (ruff and mypy
    aside: they take about a second with warm caches)."""
    root = PACKAGE.parent
    compileall.compile_dir(root / "ccx_agent", quiet=1)
    compileall.compile_dir(root / "tests", quiet=1)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers)]
    argv += ["--dist", "loadgroup", "-p", "benchmarks.suite_children"]
    with tempfile.TemporaryDirectory(prefix="ccx-bench-children-") as children:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", "CCX_BENCH_CHILDREN": children}
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        tail = proc.stdout.read().strip().splitlines()[-1:]
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        cpu = usage.ru_utime + usage.ru_stime
        print(f"  the suite, pytest -n {workers} --dist loadgroup: {' '.join(tail)} (exit {code})")
        split = _split(Path(children))
    return {"wall_s": wall, "cpu_s": cpu, "exit_status": float(code), **split}


def _split(children: Path) -> dict[str, float]:
    """Where the suite's CPU went (:mod:`benchmarks.suite_children`): the xdist workers'
    own (collection and the in-process tests) and the processes the tests started, by
    command, the costliest first."""
    workers_cpu = 0.0
    by_command: dict[str, list[float]] = {}
    for path in sorted(children.glob("*.json")):
        for command, cpu in json.loads(path.read_text()):
            if path.stem == "controller":
                workers_cpu += cpu  # a worker, with every child it reaped
            else:
                by_command.setdefault(command, []).append(cpu)
    started = sum(len(v) for v in by_command.values())
    started_cpu = sum(sum(v) for v in by_command.values())
    print(f"  processes the tests started: {started}, {started_cpu:.0f} s of CPU;")
    print(
        f"  the workers' own CPU (collection, in-process tests): {workers_cpu - started_cpu:.0f} s"
    )
    costly = sorted(by_command.items(), key=lambda kv: -sum(kv[1]))
    for command, cpus in costly[:12]:
        print(f"    {sum(cpus):6.1f} s  {len(cpus):4d} x {statistics.mean(cpus):5.2f} s  {command}")
    tests: dict[str, list[float]] = {}
    for path in sorted(children.glob("*.tests")):
        tests.update(json.loads(path.read_text()))
    print("  the costliest tests (their worker's CPU + their children's):")
    for nodeid, (own, kids) in sorted(tests.items(), key=lambda kv: -sum(kv[1]))[:15]:
        print(f"    {own + kids:6.1f} s = {own:5.1f} + {kids:5.1f}  {nodeid}")
    return {
        "children": float(started),
        "children_cpu_s": started_cpu,
        "workers_own_cpu_s": workers_cpu - started_cpu,
    }


def main(argv: Sequence[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="bench_suite", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=6, help="as make test (6)")
    parser.add_argument("--no-suite", action="store_true", help="only the interpreter starts")
    args = parser.parse_args(list(argv))

    with tempfile.TemporaryDirectory(prefix="ccx-bench-suite-") as tmp:
        work = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__")
        for name in ("source", "compiled"):
            shutil.copytree(PACKAGE, work / name / "ccx_agent", ignore=ignore)
        if not compileall.compile_dir(work / "compiled" / "ccx_agent", quiet=1):
            raise SystemExit("compileall failed")
        base = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        envs = {name: {**base, "PYTHONPATH": str(work / name)} for name in ("source", "compiled")}
        start = [sys.executable, "-m", "ccx_agent", "--version"]
        times: dict[str, list[float]] = {"source": [], "compiled": [], "bare": []}
        for _ in range(args.rounds):
            for name, env in envs.items():
                times[name].append(_cpu(start, env, work))
            times["bare"].append(_cpu([sys.executable, "-c", "pass"], base, work))
        left = sorted(p.name for p in (work / "source" / "ccx_agent").rglob("__pycache__"))
        if left:
            raise SystemExit(f"the uncompiled copy got bytecode: {left}")

    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"  CPU of one `python -m ccx_agent --version`, median of {args.rounds} (interleaved)")
    print(f"  figure: with the bytecode (make test)    {med['compiled'] * 1000:7.1f} ms")
    print(f"  before: without it                       {med['source'] * 1000:7.1f} ms")
    print(f"  floor:  bare `python -c pass`            {med['bare'] * 1000:7.1f} ms")
    print(f"  ratio with / without bytecode            {med['compiled'] / med['source']:7.2f}")
    print(f"  ratio with bytecode / floor              {med['compiled'] / med['bare']:7.1f}")
    out = {f"start_{name}_ms": value * 1000 for name, value in med.items()}
    if args.no_suite:
        return out
    run = suite(args.workers)
    cores = os.cpu_count() or 1
    floor = run["cpu_s"] / cores
    print(f"  figure: the suite's wall time              {run['wall_s']:7.1f} s (goal <= 120 s)")
    print(f"  floor:  its CPU / {cores} cores ({run['cpu_s']:.0f} s of CPU)   {floor:7.1f} s")
    print(f"  ratio wall / floor                         {run['wall_s'] / floor:7.2f}")
    return {**out, **{f"suite_{k}": v for k, v in run.items()}, "suite_floor_s": floor}


if __name__ == "__main__":
    main(sys.argv[1:])
