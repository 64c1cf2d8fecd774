"""Run every benchmark module (``benchmarks/bench_*.py``) in name order: ``make bench``."""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import sys
import time

import benchmarks


def modules() -> list[str]:
    return sorted(
        f"{benchmarks.__name__}.{info.name}"
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )


def run() -> int:
    print(
        f"ccx-agent benchmarks: Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.machine()}, "
        f"{os.cpu_count()} CPU(s), {platform.system()} {platform.release()}"
    )
    for name in modules():
        print(f"\n== {name}")
        start = time.perf_counter()
        importlib.import_module(name).main([])
        print(f"   ({time.perf_counter() - start:.1f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(run())
