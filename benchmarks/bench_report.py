"""``ccx-agent report`` over one year: 35,040 fifteen-minute intervals x 3 tags.

Issue 26's row: the whole command, as an operator runs it (a new ``python -m ccx_agent
report --by interval`` process over the year, ``--output`` to a file), in each format
(json, csv, text, html), its CPU time (user + system) and its peak RSS from the kernel
(``wait4`` of the process). Goal: at most 0.5 s of CPU and 64 MiB in every format.

Floors, measured in the same run, taking turns with the subject (medians):

* **bare SELECT**: a new interpreter that runs ``SELECT start, "end", tags FROM
  intervals`` of the same year with ``sqlite3`` and fetches every row (nothing decoded):
  the floor of any report.
* **start-up**: the same command over an empty range (2029): what the command costs
  before it reads a row (interpreter, imports, config, opening the database); the
  report's own part is the figure less this.

The instance is as a running daemon leaves it: with its record of the config
(``ccx_agent/checkconfig.py``), which ``report`` reads instead of validating the file.
Also printed: the start-up of the same command on a copy of the config that nothing
recorded (the file validated in full: the schema's pydantic models, PyYAML).

Each process is started from a small launcher interpreter that reports its child's
``wait4`` figures: a child forked from this (large) process would count this process's
pages in its peak RSS, which survives ``exec``. Also printed: the in-process cost of
each format (read, aggregate, write to memory), the database size of the year.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ccx_agent.history import render_csv, render_html, render_json, render_text
from ccx_agent.history.report import stream
from ccx_agent.licensing.catalogue import LicenseType, tags_of
from ccx_agent.store.db import Store
from tests.history.instance import YEAR_START, config, write, year_alerts, year_records

END = datetime(2028, 1, 4, tzinfo=UTC)
TAGS = tags_of(LicenseType.FLEX)
FORMATS = ("json", "csv", "text", "html")
WRITERS = {"json": render_json, "csv": render_csv, "text": render_text, "html": render_html}
GOAL_CPU_S = 0.5
GOAL_RSS_MIB = 64.0

#: Runs argv[1:] and prints its exit status, CPU seconds and peak RSS (KiB) from wait4.
_LAUNCH = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, ru = os.wait4(proc.pid, 0)
print(status, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)
"""

_BARE = """import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], uri=True)
rows = conn.execute(
    'SELECT start, "end", tags FROM intervals WHERE start >= ? AND start < ? ORDER BY start',
    (sys.argv[2], sys.argv[3]),
).fetchall()
assert len(rows) == 35040, len(rows)
"""


def measured(argv: Sequence[str]) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of one process running ``argv``."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCH, *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    status, cpu, kib = done.stdout.split()
    if status != "0":
        raise RuntimeError(f"{argv[:6]} ended with wait status {status}: {done.stderr[-500:]}")
    return float(cpu), int(kib) / 1024


def in_process(db: Path, fmt: str) -> float:
    """CPU seconds of one report in this process: the read snapshot, the streamed rows,
    the aggregation and the writer (into memory)."""
    store = Store(db, readonly=True)
    try:
        start = time.process_time()
        with store.read() as tx:
            alerts = [a for a, _ in tx.alert_log(YEAR_START)]
            rep = stream(
                lambda: tx.iter_interval_tag_rows(YEAR_START, END),
                license_type="flex",
                start=YEAR_START,
                end=END,
                by="interval",
                tags=TAGS,
                alerts=alerts,
            )
            WRITERS[fmt].write(rep, io.StringIO())
        return time.process_time() - start
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_report")
    p.add_argument("--runs", type=int, default=5, help="median of this many runs (5)")
    args = p.parse_args(argv)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        db = write(base / "state", year_records(), year_alerts())
        out["db_mib_per_year"] = db.stat().st_size / 2**20
        cfg = config(base)
        _record(cfg)
        unrecorded = base / "copy.yaml"  # the same file, elsewhere: no record of it
        unrecorded.write_bytes(cfg.read_bytes())
        command = [sys.executable, "-m", "ccx_agent", "--config", str(cfg), "report"]
        command += ["--by", "interval"]
        year = ["--from", "2027-01-04", "--to", "2028-01-04"]
        empty = ["--from", "2029-01-01", "--to", "2029-01-02"]
        subjects: dict[str, list[str]] = {
            "bare": [
                sys.executable,
                "-c",
                _BARE,
                f"{db.resolve().as_uri()}?mode=ro",
                YEAR_START.isoformat(),
                END.isoformat(),
            ],
            "startup": [*command, *empty, "--format", "json", "--output", str(base / "e.json")],
            "startup_unrecorded": [
                *command[:4],
                str(unrecorded),
                *command[5:],
                *empty,
                "--format",
                "json",
                "--output",
                str(base / "e2.json"),
            ],
        }
        for fmt in FORMATS:
            subjects[fmt] = [*command, *year, "--format", fmt, "--output", str(base / f"y.{fmt}")]
        cpu: dict[str, list[float]] = {k: [] for k in subjects}
        rss: dict[str, list[float]] = {k: [] for k in subjects}
        measured(subjects["bare"])  # page cache warm for all alike
        for _ in range(args.runs):  # taking turns: a change of load hits all alike
            for name, cmd in subjects.items():
                c, r = measured(cmd)
                cpu[name].append(c)
                rss[name].append(r)
        for name in subjects:
            out[f"{name}_cpu_s"] = statistics.median(cpu[name])
            out[f"{name}_rss_mib"] = statistics.median(rss[name])
        for fmt in FORMATS:
            out[f"{fmt}_bytes"] = float((base / f"y.{fmt}").stat().st_size)
            out[f"{fmt}_cpu_ratio"] = out[f"{fmt}_cpu_s"] / out["bare_cpu_s"]
            out[f"{fmt}_rss_ratio"] = out[f"{fmt}_rss_mib"] / out["bare_rss_mib"]
            out[f"{fmt}_inproc_s"] = statistics.median(
                in_process(db, fmt) for _ in range(args.runs)
            )
        out["max_cpu_s"] = max(out[f"{f}_cpu_s"] for f in FORMATS)
        out["max_rss_mib"] = max(out[f"{f}_rss_mib"] for f in FORMATS)
    print(
        f"   one year, 35,040 intervals x 3 tags; database {out['db_mib_per_year']:.1f} MiB; "
        f"medians of {args.runs} runs, a new process each\n"
        f"   {'':28s} {'CPU':>8s} {'peak RSS':>10s} {'x floor':>14s} {'in process':>11s}"
        f" {'output':>10s}\n"
        f"   {'bare SELECT (floor)':28s} {out['bare_cpu_s']:7.3f}s {out['bare_rss_mib']:7.1f} MiB\n"
        f"   {'start-up (an empty range)':28s} {out['startup_cpu_s']:7.3f}s "
        f"{out['startup_rss_mib']:7.1f} MiB\n"
        f"   {'start-up, config not recorded':28s} {out['startup_unrecorded_cpu_s']:7.3f}s "
        f"{out['startup_unrecorded_rss_mib']:7.1f} MiB"
    )
    for fmt in FORMATS:
        print(
            f"   {'report --format ' + fmt:28s} {out[f'{fmt}_cpu_s']:7.3f}s "
            f"{out[f'{fmt}_rss_mib']:7.1f} MiB {out[f'{fmt}_cpu_ratio']:5.1f} / "
            f"{out[f'{fmt}_rss_ratio']:4.2f} {out[f'{fmt}_inproc_s'] * 1000:8.0f} ms "
            f"{out[f'{fmt}_bytes'] / 2**20:7.1f} MiB"
        )
    print(
        f"   goal: <= {GOAL_CPU_S} s CPU and <= {GOAL_RSS_MIB:.0f} MiB in every format: "
        f"{'met' if met(out) else 'NOT met'} (worst {out['max_cpu_s']:.3f} s, "
        f"{out['max_rss_mib']:.1f} MiB)"
    )
    return out


def _record(path: Path) -> None:
    """What the daemon does at start: record the config it validated (for ``status
    --check``, ``status``, ``report`` and ``alerts``)."""
    from ccx_agent import checkconfig  # noqa: PLC0415 - the bench's set-up only
    from ccx_agent.config import schema as config_mod  # noqa: PLC0415
    from ccx_agent.store.db import DB_NAME  # noqa: PLC0415

    before = checkconfig.digest(path)
    cfg = config_mod.load(path)
    store = Store(cfg.state_dir / DB_NAME)
    try:
        checkconfig.record(store, path, cfg, before)
    finally:
        store.close()


def met(figures: Mapping[str, float]) -> bool:
    """Issue 26's goal: every format within both bounds."""
    return figures["max_cpu_s"] <= GOAL_CPU_S and figures["max_rss_mib"] <= GOAL_RSS_MIB


if __name__ == "__main__":
    main()
