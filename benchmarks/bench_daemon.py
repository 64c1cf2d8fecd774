"""The daemon at rest: resident memory and CPU of ``ccx-agent run`` over 60 s, and its
start-up time to ``READY=1``.

The daemon runs with the production intervals (sample every minute, report every 15
minutes), registered to the real simulator on loopback, reading a scripted source of 400
agents, its alerts going to a UDP syslog listener. The baseline, measured in the same run
and side by side, is a bare ``python -c "import ccx_agent.daemon"`` process that then
sleeps: what the interpreter and the imports cost before the daemon does anything. For
start-up, the baseline is that import alone, until it prints that it is done.

Measured from ``/proc/PID/status`` (VmRSS, VmHWM) and ``/proc/PID/stat`` (utime + stime).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import yaml

from ccx_agent.demo import _admin
from ccx_agent.simulator.server import start

TICKS = os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _cpu_s(pid: int) -> float:
    """CPU time of every thread of ``pid``, in seconds, at nanosecond resolution
    (``/proc/PID/task/*/schedstat``; ``stat``'s clock ticks are too coarse for an idle
    daemon). Threads that ended are in ``stat``'s totals only, so both are read and the
    larger taken."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2 :].split()
    ticks = (int(parts[11]) + int(parts[12])) / TICKS
    return max(total_ns / 1e9, ticks)


def _config(work: Path, url: str, ca: Path, syslog_port: int) -> Path:
    cfg = {
        "state_dir": str(work / "state"),
        "alerts": {"syslog": {"target": f"udp://127.0.0.1:{syslog_port}"}},
        "transport": {"url": url, "ca_bundle": str(ca)},
        # On, as by default, on any free port (bench_metrics compares on against off).
        "metrics": {"listen": "127.0.0.1:0"},
        "source": {"kind": "scripted", "steps": [{"agents": 300, "premium_agents": 100}]},
    }
    path = work / "ccx-agent.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _wait_ready(notify: socket.socket, deadline: float) -> float:
    while time.monotonic() < deadline:
        notify.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = notify.recv(4096)
        except TimeoutError:
            break
        if b"READY=1" in data.split(b"\n"):
            return time.monotonic()
    raise RuntimeError("the daemon did not send READY=1")


def main(argv: Sequence[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_daemon")
    ap.add_argument("--seconds", type=float, default=60.0, help="idle window (default 60)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ccx-bench-daemon-") as tmp:
        work = Path(tmp)
        sim = start(work / "ssm", id_lifetime=timedelta(days=365))
        syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        syslog.bind(("127.0.0.1", 0))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = work / "notify"
        notify.bind(str(notify_path))
        try:
            _admin(sim, "/admin/licenses", {"tag": "flex-standard-seat", "count": 500})
            token = _admin(sim, "/admin/tokens", {})["token"]
            config = _config(work, sim.url, sim.ca_path, syslog.getsockname()[1])
            cli = [sys.executable, "-m", "ccx_agent", "--config", str(config)]
            subprocess.run([*cli, "register", token], check=True, capture_output=True)

            # Start-up: the bare import to exit, and the daemon to READY=1, taken in turns
            # so that both see the same machine (best and median of 5).
            bare_start, daemon_start = [], []
            env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
            for i in range(5):
                t0 = time.monotonic()
                bare = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "import ccx_agent.daemon; print('imported', flush=True)",
                    ],
                    stdout=subprocess.PIPE,
                )
                assert bare.stdout is not None
                bare.stdout.readline()  # the imports are done (the interpreter's exit is not counted)
                bare_start.append(time.monotonic() - t0)
                bare.wait()
                t0 = time.monotonic()
                proc = subprocess.Popen(
                    [*cli, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                ready = _wait_ready(notify, t0 + 30)
                daemon_start.append(ready - t0)
                if i < 4:
                    proc.terminate()
                    proc.wait(timeout=30)
            # The idle window: the last daemon, and a bare process beside it.
            bare = subprocess.Popen(
                [sys.executable, "-c", "import ccx_agent.daemon, time; time.sleep(3600)"]
            )
            time.sleep(2.0)  # the bare process finishes its imports
            cpu0 = (_cpu_s(proc.pid), _cpu_s(bare.pid))
            peak = [0, 0]
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                for k, pid in enumerate((proc.pid, bare.pid)):
                    peak[k] = max(peak[k], _rss_kib(pid)[0])
                time.sleep(1.0)
            cpu = (_cpu_s(proc.pid) - cpu0[0], _cpu_s(bare.pid) - cpu0[1])
            rss = (_rss_kib(proc.pid), _rss_kib(bare.pid))
            bare.kill()
            bare.wait()
            proc.terminate()
            code = proc.wait(timeout=60)
        finally:
            notify.close()
            syslog.close()
            sim.stop()
    print(f"   idle window: {args.seconds:.0f} s (sample every 1 min, report every 15 min)")
    print(
        f"   resident memory: daemon {peak[0] / 1024:.1f} MiB peak (VmHWM "
        f"{rss[0][1] / 1024:.1f} MiB), bare import {peak[1] / 1024:.1f} MiB: "
        f"ratio {peak[0] / peak[1]:.2f}"
    )
    print(
        f"   CPU over the window: daemon {cpu[0] * 1000:.1f} ms "
        f"({100 * cpu[0] / args.seconds:.3f} % of one core), bare {cpu[1] * 1000:.1f} ms"
    )
    best = (min(daemon_start), min(bare_start))
    mid = (statistics.median(daemon_start), statistics.median(bare_start))
    print(
        f"   start-up: to READY=1 {best[0] * 1000:.0f} ms best / {mid[0] * 1000:.0f} ms median "
        f"of 5, bare import {best[1] * 1000:.0f} / {mid[1] * 1000:.0f} ms: ratio "
        f"{best[0] / best[1]:.2f} best, {mid[0] / mid[1]:.2f} median"
    )
    print(f"   the daemon exited {code} on SIGTERM")


if __name__ == "__main__":
    main(sys.argv[1:])
