"""The test suite's interpreter starts: what one ``python -m ccx_agent`` costs the suite,
with the package's bytecode (as ``make test`` leaves it: compileall at install and
before the run) and without it (``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__``,
as every start was before).

The suite starts hundreds of these (the CLI tests, every daemon, ``register``,
``status``, ``sync`` …), and on two cores it is CPU-bound, so their CPU is the suite's
wall time. The row of issue 16 itself (``make test`` in at most 120 s) is measured by
``time make test``, which runs for minutes: too long for ``make bench``; the figures are
in docs/performance.md, "Test suite".

Two copies of the package in a temporary directory, one byte-compiled, put first on
``PYTHONPATH`` (ahead of the editable install); ``ccx-agent --version`` started from each
in turn (interleaved, so a change of load hits both), the CPU (user + sys) of each child
from ``wait4``. The floor: a bare ``python -c pass``, in the same rounds.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_suite", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
