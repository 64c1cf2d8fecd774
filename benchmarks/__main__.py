"""Run every benchmark module (``benchmarks/bench_*.py``) in name order: ``make bench``.

At the end it prints the table of docs/performance.md's summary: each row's figure, the
floor it is measured against in the same run, the ratio and the goal, so that one run of
``make bench`` gives every row (a row whose module failed says so instead of a figure).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import benchmarks

Figures = Mapping[str, float]


@dataclass(frozen=True)
class Row:
    """One row of the summary: where its figures come from and how to read them."""

    job: str
    module: str
    #: (figure, floor, ratio) as text, from the module's returned figures.
    show: Callable[[Figures], tuple[str, str, str]]
    goal: str
    met: Callable[[Figures], bool]
    #: A goal no longer pursued: the figure is still measured and shown, honestly.
    retired: bool = False


def _report_row(fmt: str) -> Row:
    """Issue 26: a year's report in one format, as a new process (CPU and peak RSS)."""

    def show(f: Figures) -> tuple[str, str, str]:
        return (
            f"{f[fmt + '_cpu_s']:.2f} s CPU, {f[fmt + '_rss_mib']:.1f} MiB "
            f"(start-up {f['startup_cpu_s']:.2f} s, {f['startup_rss_mib']:.1f} MiB)",
            f"bare SELECT {f['bare_cpu_s']:.3f} s, {f['bare_rss_mib']:.1f} MiB",
            f"{f[fmt + '_cpu_ratio']:.1f} x CPU, {f[fmt + '_rss_ratio']:.2f} x RSS",
        )

    def met(f: Figures) -> bool:
        return f[fmt + "_cpu_s"] <= 0.5 and f[fmt + "_rss_mib"] <= 64

    return Row(
        f"report over a year by interval, {fmt} (a new process)",
        "bench_report",
        show,
        "<= 0.5 s CPU, <= 64 MiB",
        met,
    )


ROWS = (
    Row(
        "consumption of a 100,000-agent snapshot (product path)",
        "bench_consumption",
        lambda f: (
            f"{f['subject_median_s'] * 1000:.1f} ms",
            f"json.loads, GC paused as the product does {f['floor_median_s'] * 1000:.1f} ms "
            f"(GC on {f['baseline_median_s'] * 1000:.1f} ms)",
            f"{f['floor_ratio_median']:.2f} x (against GC on: {f['ratio_median']:.2f} x)",
        ),
        "<= 1.0 x",
        lambda f: f["floor_ratio_median"] <= 1.0,
    ),
    Row(
        "one report job (close, sign, POST over TLS, verify, commit, WAL checkpoint)",
        "bench_ssm",
        lambda f: (
            f"{f['cycle_job_ms']:.2f} ms (checkpoint {f['cycle_checkpoint_ms']:.2f} ms)",
            f"fresh pre-signed POST {f['cycle_floor_ms']:.2f} ms",
            f"{f['cycle_ratio']:.2f} x",
        ),
        "retired (was <= 1.5 x)",
        lambda f: True,
        retired=True,
    ),
    Row(
        "daemon idle RSS",
        "bench_daemon",
        lambda f: (
            f"{f['rss_mib']:.1f} MiB, CPU {f['idle_cpu_percent']:.3f} %",
            f"deps-only {f['deps_only_mib']:.1f} MiB (bare {f['bare_mib']:.1f})",
            f"{f['ratio']:.2f} x",
        ),
        "<= 1.10 x, CPU <= 0.1 %",
        lambda f: f["ratio"] <= 1.10 and f["idle_cpu_percent"] <= 0.1,
    ),
    Row(
        "daemon idle wake-ups",
        "bench_daemon",
        lambda f: (
            f"{f['wakeups_per_s']:.2f} /s",
            f"bare interpreter {f['bare_wakeups_per_s']:.2f} /s",
            "",
        ),
        "<= 0.3 /s",
        lambda f: f["wakeups_per_s"] <= 0.3,
    ),
    Row(
        "simulate 400 days, quiet",
        "bench_simulate",
        lambda f: (
            f"{f['quiet_seconds']:.1f} s",
            f"core alone {f['floor_seconds']:.1f} s CPU",
            f"{f['quiet_ratio']:.2f} x (CPU)",
        ),
        "<= 8 s",
        lambda f: f["quiet_seconds"] <= 8,
    ),
    Row(
        "simulate 400 days, outage",
        "bench_simulate",
        lambda f: (
            f"{f['outage_seconds']:.1f} s",
            f"core alone {f['floor_seconds']:.1f} s CPU",
            f"{f['outage_ratio']:.2f} x (CPU)",
        ),
        "<= 12 s",
        lambda f: f["outage_seconds"] <= 12,
    ),
    Row(
        "the simulator's cost of one report at 2,000 instances",
        "bench_simulator",
        lambda f: (
            f"{f['report_ms_2000']:.3f} ms",
            f"at 10 instances {f['report_ms_10']:.3f} ms",
            f"{f['ratio']:.2f} x",
        ),
        "<= 1.5 ms, flat",
        lambda f: f["report_ms_2000"] <= 1.5,
    ),
    *(_report_row(fmt) for fmt in ("json", "csv", "text", "html")),
    Row(
        "status --check start (record of the config)",
        "bench_cli",
        lambda f: (
            f"{f['check_cpu_s']:.3f} s CPU, {f['check_rss_mib']:.1f} MiB",
            f"python + sqlite3 reading its rows {f['check_floor_cpu_s']:.3f} s, "
            f"{f['check_floor_rss_mib']:.1f} MiB",
            f"{f['check_ratio']:.2f} x",
        ),
        "<= 3 x, <= 25 MiB",
        lambda f: f["check_ratio"] <= 3 and f["check_rss_mib"] <= 25,
    ),
    Row(
        "--help / --version start",
        "bench_cli",
        lambda f: (
            f"{f['help_cpu_s']:.3f} / {f['version_cpu_s']:.3f} s CPU",
            f"bare interpreter {f['bare_cpu_s']:.3f} s",
            f"{max(f['help_cpu_s'], f['version_cpu_s']) / f['bare_cpu_s']:.2f} x",
        ),
        "<= 0.06 s",
        lambda f: max(f["help_cpu_s"], f["version_cpu_s"]) <= 0.06,
    ),
    Row(
        "status, usage, alerts, report start",
        "bench_cli",
        lambda f: (
            " / ".join(f"{f[f'{n}_cpu_s']:.3f}" for n in ("status", "usage", "alerts", "report"))
            + f" s CPU; {f['commands_extra_packages']:.0f} package(s) beyond their deps",
            f"import pydantic, yaml, msgspec, sqlite3 {f['deps_cpu_s']:.3f} s",
            f"{f['commands_worst_ratio']:.2f} x (worst)",
        ),
        "<= 2 x, nothing beyond",
        lambda f: f["commands_worst_ratio"] <= 2 and f["commands_extra_packages"] == 0,
    ),
    Row(
        "the simulator served (TLS, file DB): one report at 2,000 instances",
        "bench_served",
        lambda f: (
            f"kept-alive {f['kept_ms_2000']:.2f} ms (server CPU {f['kept_cpu_ms_2000']:.2f}), "
            f"new connection {f['handshake_ms_2000']:.2f} ms "
            f"(server CPU {f['handshake_cpu_ms_2000']:.2f})",
            f"at 10 instances: {f['kept_ms_10']:.2f} ms ({f['kept_cpu_ms_10']:.2f}), "
            f"{f['handshake_ms_10']:.2f} ms ({f['handshake_cpu_ms_10']:.2f})",
            f"server CPU {f['kept_cpu_ms_2000'] / f['kept_cpu_ms_10']:.2f} x kept-alive, "
            f"{f['handshake_cpu_ms_2000'] / f['handshake_cpu_ms_10']:.2f} x new connection",
        ),
        "flat: server CPU <= 1.2 x",
        lambda f: (
            f["kept_cpu_ms_2000"] <= 1.2 * f["kept_cpu_ms_10"]
            and f["handshake_cpu_ms_2000"] <= 1.2 * f["handshake_cpu_ms_10"]
        ),
    ),
    Row(
        "the simulator under 2,000 agents connecting at once",
        "bench_served",
        lambda f: (
            f"{f['threads_peak']:.0f} threads, {f['rss_peak_mib']:.0f} MiB at most; "
            f"{f['rss_after_mib']:.0f} MiB after; {f['storm_failed']:.0f} not answered",
            f"idle: {f['threads_idle']:.0f} threads, {f['rss_idle_mib']:.0f} MiB",
            f"RSS {f['rss_peak_mib'] / f['rss_idle_mib']:.2f} x",
        ),
        "threads <= workers + 2, all answered (was 2,003 threads, 253 MiB)",
        lambda f: f["threads_peak"] <= f["workers"] + 2 and f["storm_failed"] == 0,
    ),
    Row(
        "make test (the suite, -n 6)",
        "bench_suite",
        lambda f: (
            f"{f['suite_wall_s']:.0f} s wall (exit {f['suite_exit_status']:.0f})",
            f"its CPU / cores {f['suite_floor_s']:.0f} s (of its CPU, "
            f"{f['suite_children_cpu_s']:.0f} s in the {f['suite_children']:.0f} processes "
            f"the tests start, {f['suite_workers_own_cpu_s']:.0f} s in the test processes)",
            f"{f['suite_wall_s'] / f['suite_floor_s']:.2f} x",
        ),
        "<= 120 s, green",
        lambda f: f["suite_wall_s"] <= 120 and f["suite_exit_status"] == 0,
    ),
)


def modules() -> list[str]:
    return sorted(
        f"{benchmarks.__name__}.{info.name}"
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )


def summary(results: Mapping[str, Figures | None]) -> list[str]:
    """The summary table in Markdown, one line per row (docs/performance.md's table)."""
    out = [
        "| job | figure | floor, same run | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        figures = results.get(f"{benchmarks.__name__}.{row.module}")
        try:
            if not figures:
                raise KeyError(row.module)
            figure, floor, ratio = row.show(figures)
            met = "retired" if row.retired else "yes" if row.met(figures) else "**no**"
        except KeyError:
            figure, floor, ratio, met = "not measured", "", "", "**no**"
        out.append(f"| {row.job} | {figure} | {floor} | {ratio} | {row.goal} | {met} |")
    return out


def run(argv: list[str]) -> int:
    """Run the modules named in argv (default: all), then print the summary table."""
    print(
        f"ccx-agent benchmarks: Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.machine()}, "
        f"{os.cpu_count()} CPU(s), {platform.system()} {platform.release()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    names = [n for n in modules() if not argv or n.rsplit(".", 1)[1] in argv]
    results: dict[str, Figures | None] = {}
    failed = 0
    for name in names:
        print(f"\n== {name}", flush=True)
        start = time.perf_counter()
        try:
            results[name] = importlib.import_module(name).main([])
        except Exception:  # one module's failure must not hide the other rows
            traceback.print_exc()
            results[name] = None
            failed += 1
        print(f"   ({time.perf_counter() - start:.1f} s in all)", flush=True)
    print("\n== summary (docs/performance.md, issue 16's table)")
    print("\n".join(summary(results)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
