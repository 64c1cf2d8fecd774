"""``ccx-agent report`` over one year: 35,040 fifteen-minute intervals x 3 tags.

The subject is the JSON report by interval (read snapshot, rows, aggregation, summary,
JSON text), in process. The baseline, measured in the same run on the same database, is
a bare ``SELECT start, "end", tags FROM intervals`` of the same year with Python's
``sqlite3`` (rows fetched, nothing decoded): the floor of any report. The HTML report of
the same year is timed against the same baseline; the whole command (a new process, as
an operator runs it) is timed too, and the database size of the year is measured.
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ccx_agent.history import render_html, render_json
from ccx_agent.history.report import build
from ccx_agent.licensing.catalogue import LicenseType, tags_of
from ccx_agent.store import Store
from tests.history.instance import YEAR_START, config, write, year_alerts, year_records

END = datetime(2028, 1, 4, tzinfo=UTC)
TAGS = tags_of(LicenseType.FLEX)


def _best(fn: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _report(db: Path, render: Callable[..., None]) -> int:
    store = Store(db, readonly=True)
    try:
        with store.read() as tx:
            rows = tx.interval_tag_rows(YEAR_START, END)
            alerts = [a for a, _ in tx.alert_log(YEAR_START)]
    finally:
        store.close()
    rep = build(
        rows,
        license_type="flex",
        start=YEAR_START,
        end=END,
        by="interval",
        tags=TAGS,
        alerts=alerts,
    )
    out = io.StringIO()
    render(rep, out)
    return len(out.getvalue())


def _bare(db: Path) -> int:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            'SELECT start, "end", tags FROM intervals WHERE start >= ? AND start < ? '
            "ORDER BY start",
            (YEAR_START.isoformat(), END.isoformat()),
        ).fetchall()
    finally:
        conn.close()
    return len(rows)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_report")
    p.add_argument("--runs", type=int, default=5, help="best of this many runs (5)")
    args = p.parse_args(argv)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        db = write(base / "state", year_records(), year_alerts())
        size = db.stat().st_size
        out["db_mib_per_year"] = size / 2**20
        assert _bare(db) == 35_040
        bare = _best(lambda: _bare(db), args.runs)
        as_json = _best(lambda: _report(db, render_json.write), args.runs)
        as_html = _best(lambda: _report(db, render_html.write), max(1, args.runs // 2))
        out |= {"bare_s": bare, "json_s": as_json, "html_s": as_html}
        out["json_ratio"] = as_json / bare
        out["html_ratio"] = as_html / bare
        cfg = config(base)
        exe = Path(sys.executable).parent / "ccx-agent"
        for fmt in ("json", "html"):
            argv_ = [str(exe), "--config", str(cfg), "report", "--by", "interval"]
            argv_ += ["--from", "2027-01-04", "--to", "2028-01-04", "--format", fmt]
            argv_ += ["--output", os.devnull]
            out[f"command_{fmt}_s"] = _best(
                lambda a=argv_: subprocess.run(a, check=True, capture_output=True),
                3,  # type: ignore[misc]
            )
    print(
        f"   one year, 35,040 intervals x 3 tags; database {out['db_mib_per_year']:.1f} MiB\n"
        f"   bare SELECT of the year       {bare * 1000:7.1f} ms\n"
        f"   report --format json          {as_json * 1000:7.1f} ms  (ratio {out['json_ratio']:.1f})\n"
        f"   report --format html          {as_html * 1000:7.1f} ms  (ratio {out['html_ratio']:.1f})\n"
        f"   the command, json / html      {out['command_json_s'] * 1000:7.0f} ms / "
        f"{out['command_html_s'] * 1000:.0f} ms (a new process each)"
    )
    return out


if __name__ == "__main__":
    main()
