"""Command starts: the CPU and peak memory of one real ``python -m ccx_agent COMMAND``,
against floors started in the same rounds (interleaved, so that a change of load hits
subject and floor alike; medians).

* ``status --check`` (monitoring runs it every minute), on an instance as a running
  daemon leaves it (its record of the config, ``ccx_agent/checkconfig.py``): against an
  interpreter that imports sqlite3 and reads what the check reads (the config file's
  bytes; the product state, credentials, meta, open interval, outbox count, last
  interval and last export rows). Goal: at most 3 x its CPU, at most 25 MiB.
* ``--help``, ``--version``: against a bare interpreter (``python -c pass``). Goal:
  at most 0.06 s of CPU.
* ``status``, ``usage``, ``alerts``, ``report``: against an interpreter importing
  what they truly need (the config schema's pydantic and PyYAML, msgspec and sqlite3 of
  the database). Goal: at most 2 x. Each row also names the third-party packages the
  command loaded beyond those (none is the goal).

The CPU of each child (user + system) and its peak RSS come from ``wait4``. The package
is byte-compiled first, as pip installs it.

    .venv/bin/python -m benchmarks.bench_cli [--rounds N]
"""

from __future__ import annotations

import argparse
import compileall
import json
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

import ccx_agent
from ccx_agent import checkconfig
from ccx_agent.config import schema as config_mod
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.compliance import TagCompliance
from ccx_agent.licensing.lifecycle import Identity, ProductState, Registration
from ccx_agent.licensing.timeutil import iso
from ccx_agent.status import LAST_REPORT_KEY
from ccx_agent.store import statedir
from ccx_agent.store.db import DB_NAME, UDI_UUID_KEY, OpenInterval, Store

STD = "flex-standard-seat"

#: What ``status --check`` reads, read by hand: the floor.
_CHECK_FLOOR = """
import sqlite3, sys
open(sys.argv[1], "rb").read()
c = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True)
for sql in (
    "SELECT * FROM product", "SELECT * FROM credentials", "SELECT * FROM meta",
    "SELECT * FROM open_interval", "SELECT COUNT(*) FROM outbox",
    "SELECT * FROM outbox ORDER BY rowid LIMIT 1",
    "SELECT * FROM intervals ORDER BY rowid DESC LIMIT 1",
    "SELECT * FROM offline_exports ORDER BY rowid DESC LIMIT 1",
):
    c.execute(sql).fetchall()
print("CCX-LICENSE OK")
"""

#: What the other commands truly need: the config schema (pydantic, PyYAML), and the
#: database (sqlite3, msgspec for its JSON columns).
DEPS = ("pydantic", "yaml", "msgspec", "sqlite3")
_DEPS_FLOOR = f"import {', '.join(DEPS)}"
#: Third-party packages a command may load without being told off: the deps and theirs.
_ALLOWED = {
    *DEPS,
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "org",  # probed by PyYAML's C extension for Jython
}
COMMANDS = ("status", "usage", "alerts", "report")


def _instance(work: Path) -> Path:
    """A registered instance as a running daemon leaves it, and its config's record."""
    now = datetime.now(UTC)
    state_dir = work / "state"
    path = work / "ccx-agent.yaml"
    cfg = {
        "state_dir": str(state_dir),
        "source": {"kind": "scripted", "steps": [{"agents": 8}]},
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    state = ProductState(
        LicenseType.FLEX,
        identity=Identity(
            "PIID-1", now - timedelta(days=10), now - timedelta(days=10), now + timedelta(days=355)
        ),
        registration=Registration.REGISTERED,
        last_auth_at=now - timedelta(days=1),
        entitlements={STD: 10},
        tags={STD: TagCompliance(run_peak=8)},
        tags_in_use=frozenset({STD}),
        last_sample_at=now - timedelta(seconds=30),
    )
    store = Store(state_dir / DB_NAME)
    try:
        with store.transaction() as tx:
            tx.save_product(state, now)
            tx.put_open_interval(OpenInterval(now - timedelta(minutes=1), {STD: 8}, 1, 0))
            tx.set_meta(LAST_REPORT_KEY, iso(now - timedelta(minutes=5)))
            tx.set_meta(UDI_UUID_KEY, "6f1c1f4e-3f49-4a2b-9d0e-8e1c2b7a5d10")  # made at birth
        before = checkconfig.digest(path)
        checkconfig.record(store, path, config_mod.load(path), before)  # as the daemon does
    finally:
        store.close()
    statedir.write_marker(state_dir, now.isoformat())
    return path


#: Starts each child and says its CPU and peak RSS. A child's peak RSS counts the memory
#: of the process it was forked from (the high-water mark survives ``exec``), so the
#: children are forked from this small launcher, never from the benchmark's interpreter.
_LAUNCHER = """
import json, os, subprocess, sys, tempfile
for line in sys.stdin:
    argv = json.loads(line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, _, use = os.wait4(proc.pid, 0)
        proc.returncode = 0
        out.seek(0); err.seek(0)
        said = [out.read().decode(errors="replace"), err.read().decode(errors="replace")]
    print(json.dumps([use.ru_utime + use.ru_stime, use.ru_maxrss / 1024, *said]), flush=True)
"""


class Launcher:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: Sequence[str]) -> tuple[float, float, str, str]:
        """CPU seconds, peak RSS in MiB, stdout and stderr of one child."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(list(argv)) + "\n")
        self.proc.stdin.flush()
        cpu, rss, out, err = json.loads(self.proc.stdout.readline())
        return float(cpu), float(rss), str(out), str(err)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _third_party(launcher: Launcher, argv: Sequence[str]) -> set[str]:
    """The top-level non-stdlib packages ``argv`` (a ccx_agent command) imports."""
    _, _, _, err = launcher.run([argv[0], "-X", "importtime", *argv[1:]])
    names = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", err, re.M))
    top = {n.split(".")[0] for n in names}
    return {n for n in top if n not in sys.stdlib_module_names and not n.startswith("_")} - {
        "ccx_agent",
        "sitecustomize",  # the interpreter's own start (pyenv), before any import of ours
    }


def main(argv: Sequence[str]) -> dict[str, float]:
    ap = argparse.ArgumentParser(prog="bench_cli")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(list(argv))
    compileall.compile_dir(str(Path(ccx_agent.__file__).parent), quiet=1)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="ccx-bench-cli-") as tmp:
        config = _instance(Path(tmp))
        db = Path(tmp) / "state" / DB_NAME
        cli = [py, "-m", "ccx_agent", "--config", str(config)]
        subjects: dict[str, list[str]] = {
            "check": [*cli, "status", "--check"],
            "check_floor": [py, "-c", _CHECK_FLOOR, str(config), str(db)],
            "help": [py, "-m", "ccx_agent", "--help"],
            "version": [py, "-m", "ccx_agent", "--version"],
            "bare": [py, "-c", "pass"],
            "deps": [py, "-c", _DEPS_FLOOR],
            **{name: [*cli, name] for name in COMMANDS},
        }
        launcher = Launcher()
        try:
            _, _, line, _ = launcher.run(subjects["check"])
            print(f"status --check says: {line.strip()}")
            if "pydantic" in _third_party(launcher, subjects["check"]):
                raise AssertionError("status --check validated the config: no record used")
            extra = {
                name: sorted(_third_party(launcher, subjects[name]) - _ALLOWED) for name in COMMANDS
            }
            cpu: dict[str, list[float]] = {name: [] for name in subjects}
            rss: dict[str, list[float]] = {name: [] for name in subjects}
            for _ in range(args.rounds):
                for name, command in subjects.items():
                    c, r, _, _ = launcher.run(command)
                    cpu[name].append(c)
                    rss[name].append(r)
        finally:
            launcher.close()
    med = {name: statistics.median(values) for name, values in cpu.items()}
    mem = {name: statistics.median(values) for name, values in rss.items()}
    print(f"{'start':<16} {'CPU s':>7} {'peak MiB':>9}  {'ratio':>6}  floor")
    floors = {
        "check": "check_floor",
        "help": "bare",
        "version": "bare",
        **{name: "deps" for name in COMMANDS},
    }
    for name in subjects:
        floor = floors.get(name)
        ratio = f"{med[name] / med[floor]:5.2f}x" if floor else ""
        note = floor or ""
        if name in extra:
            note += f"; beyond its deps: {', '.join(extra[name]) or 'nothing'}"
        print(f"{name:<16} {med[name]:7.3f} {mem[name]:9.1f}  {ratio:>6}  {note}")
    out: dict[str, float] = {}
    for name in subjects:
        out[f"{name}_cpu_s"] = med[name]
        out[f"{name}_rss_mib"] = mem[name]
    out["check_ratio"] = med["check"] / med["check_floor"]
    worst = max(COMMANDS, key=lambda n: med[n] / med["deps"])
    out["commands_worst_ratio"] = med[worst] / med["deps"]
    out["commands_worst_index"] = float(COMMANDS.index(worst))
    out["commands_extra_packages"] = float(sum(len(v) for v in extra.values()))
    return out


if __name__ == "__main__":
    figures = main(sys.argv[1:])
    print({k: round(v, 4) for k, v in figures.items()})
