"""The simulator served for real (issue 26): TLS on loopback, the database a file.

``bench_simulator`` times ``Simulator.handle`` in memory from one instance; what an agent
meets is the server: a TLS connection (kept alive, or a new one with a full handshake, as
after 15 idle minutes), the HTTP layer, a worker thread, the database file. Here:

* the fleet: N instances registered through the protocol (each its own key and ID
  certificate), so every report verifies another chain, as a real fleet's do; each
  reports once, untimed, before the timing (a fleet's server saw every instance in the
  last 15 minutes);
* **kept-alive**: one connection, reports sent one after another, each from the next
  instance (round robin); median wall time per report, client included (the requests
  are signed beforehand), and the server's CPU per report (its /proc stat);
* **handshake**: the same with a new connection (a full TLS handshake) per report;
* both at 10 and at 2,000 instances: the floor is the 10-instance figure, flat is 1.0;
* **connecting agents**: C agents (2,000) connect at once, each sends one report and
  keeps its connection open until every agent has its answer; the server's threads and
  RSS are sampled throughout (peak), and again once the server has closed them all
  (retained). Every report should be answered 200; those that were not (a handshake
  longer than asyncio's 60 s, a reset) are counted and printed.

The server is a real ``ccx-agent ssm serve`` process on 127.0.0.1, port 0; it is stopped
(SIGTERM, then SIGKILL) whatever happens, and each phase has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ccx_agent.licensing.timeutil import iso
from ccx_agent.simulator.core import Simulator
from ccx_agent.simulator.server import DIRECT_PATH, WORKERS
from ccx_agent.ssm import protocol
from ccx_agent.ssm.protocol import MessageType
from tests.simulator.helpers import Device

STEP = timedelta(minutes=15)
SIZES = (10, 2000)
TAG = "flex-premium-seat"


@dataclass
class _Agent:
    device: Device
    sent: int = 0

    def report(self, now: datetime) -> bytes:
        """A signed REPORT_USAGE of a new interval (each one earlier than the last)."""
        self.sent += 1
        end = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
        start = end - STEP * self.sent
        body = {
            "reports": [
                {
                    "id": f"{self.device.piid}:{iso(start)}",
                    "start": iso(start),
                    "end": iso(start + STEP),
                    "usage": {TAG: 1 + self.sent % 5},
                }
            ]
        }
        envelope = self.device.request(MessageType.REPORT_USAGE, body, now)
        return protocol.canonical(envelope)


def _fleet(state_dir: Path, n: int) -> list[_Agent]:
    """``n`` instances registered through the protocol (in process: the set-up, not timed)."""
    now = datetime.now(UTC)
    sim = Simulator.open(state_dir, now)
    try:
        sim.add_licenses(TAG, 10 * n)
        token = sim.create_token(uses=n, now=now)
        agents = []
        for i in range(n):
            device = Device(sim, serial=f"FCH{i:08d}")
            device.register(token, now)
            agents.append(_Agent(device))
        return agents
    finally:
        sim.close()


class _Served:
    """``ccx-agent ssm serve`` on 127.0.0.1 (a free port), stopped on exit."""

    def __init__(self, state_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ccx_agent",
                "ssm",
                "--state-dir",
                str(state_dir),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        found = re.search(r"https://127\.0\.0\.1:(\d+)/", line)
        if not found:
            self.stop()
            raise RuntimeError(f"the simulator did not start: {line!r}")
        self.port = int(found.group(1))
        self.context = ssl.create_default_context(cafile=str(state_dir / "ca.pem"))
        self.fds_at_start = 0

    def status(self) -> tuple[int, float]:
        """The server's (threads, RSS in MiB) now."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        threads = int(re.search(r"^Threads:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
        rss_kib = int(re.search(r"^VmRSS:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
        return threads, rss_kib / 1024

    def fds(self) -> int:
        """The server's open file descriptors now."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def cpu(self) -> float:
        """The server's CPU seconds so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@contextmanager
def _served(state_dir: Path) -> Iterator[_Served]:
    server = _Served(state_dir)
    try:
        yield server
    finally:
        server.stop()


def _post(conn: http.client.HTTPSConnection, raw: bytes) -> None:
    conn.request("POST", DIRECT_PATH, raw, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(f"a report was answered {resp.status}")


def _time_reports(
    server: _Served, agents: list[_Agent], count: int, *, kept: bool
) -> tuple[float, float]:
    """(median wall seconds per report, server CPU seconds per report)."""
    now = datetime.now(UTC)
    raws = [agents[i % len(agents)].report(now) for i in range(count)]
    times = []
    conn = server.connection() if kept else None
    if conn is not None:
        _post(conn, agents[0].report(now))  # the handshake is not what this phase times
    cpu0 = server.cpu()
    for raw in raws:
        t0 = time.perf_counter()
        if conn is not None:
            _post(conn, raw)
        else:
            fresh = server.connection()
            try:
                _post(fresh, raw)
            finally:
                fresh.close()
        times.append(time.perf_counter() - t0)
    cpu = server.cpu() - cpu0
    if conn is not None:
        conn.close()
    return statistics.median(times), cpu / count


def _warm(server: _Served, agents: list[_Agent]) -> None:
    """Every instance reports once, untimed: a fleet's server has seen each of them within
    the last 15 minutes (what it keeps per instance, such as its verified chain, is warm)."""
    now = datetime.now(UTC)
    conn = server.connection()
    try:
        for agent in agents:
            _post(conn, agent.report(now))
    finally:
        conn.close()


def _connecting(server: _Served, agents: list[_Agent], clients: int) -> dict[str, float]:
    """``clients`` agents connect at once, report, and stay connected until all are
    answered; the server's peak threads and RSS meanwhile, and its RSS after."""
    now = datetime.now(UTC)
    raws = [agents[i % len(agents)].report(now) for i in range(clients)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < clients + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, clients + 256), hard))
    threads0, rss0 = server.status()
    server.fds_at_start = server.fds()
    peak = [threads0, rss0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.02):
            threads, rss = server.status()
            peak[0], peak[1] = max(peak[0], threads), max(peak[1], rss)

    async def run() -> list[int]:
        all_answered = asyncio.Event()
        answered = 0

        async def agent(raw: bytes) -> int:
            nonlocal answered
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=server.context, server_hostname="127.0.0.1"
            )
            try:
                writer.write(
                    f"POST {DIRECT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode(
                        "ascii"
                    )
                    + raw
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                answered += 1
                if answered == clients:
                    all_answered.set()
                await all_answered.wait()
                return int(head.split(b" ", 2)[1])
            finally:
                writer.close()

        async def guarded(raw: bytes) -> int:
            nonlocal answered
            try:
                return await agent(raw)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                answered += 1  # not answered: the others need not wait for it
                if answered == clients:
                    all_answered.set()
                return 0

        return await asyncio.wait_for(asyncio.gather(*(guarded(r) for r in raws)), 600)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        statuses = asyncio.run(run())
    finally:
        sampling.set()
        sampler.join()
    wall = time.perf_counter() - t0
    failed = sum(s != 200 for s in statuses)
    fds0 = server.fds_at_start
    deadline = time.monotonic() + 60
    while server.fds() > fds0 + 8 and time.monotonic() < deadline:
        time.sleep(0.1)  # until the server has closed what the agents closed
    threads1, rss1 = server.status()
    return {
        "threads_idle": threads0,
        "rss_idle_mib": rss0,
        "threads_peak": peak[0],
        "rss_peak_mib": peak[1],
        "threads_after": threads1,
        "rss_after_mib": rss1,
        "storm_wall_s": wall,
        "storm_failed": failed,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_served")
    p.add_argument("--rounds", type=int, default=300, help="kept-alive reports timed per size")
    p.add_argument(
        "--handshakes", type=int, default=150, help="reports on new connections per size"
    )
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--clients", type=int, default=2000, help="agents connecting at once")
    args = p.parse_args(argv)
    out: dict[str, float] = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            state_dir = Path(tmp) / "ssm"
            t0 = time.perf_counter()
            agents = _fleet(state_dir, n)
            setup = time.perf_counter() - t0
            with _served(state_dir) as server:
                _warm(server, agents)
                kept, kept_cpu = _time_reports(server, agents, args.rounds, kept=True)
                fresh, fresh_cpu = _time_reports(server, agents, args.handshakes, kept=False)
                print(
                    f"   {n:5} instances (registered in {setup:.1f} s): kept-alive "
                    f"{kept * 1000:.3f} ms per report (server CPU {kept_cpu * 1000:.3f} ms), "
                    f"new connection {fresh * 1000:.3f} ms (server CPU {fresh_cpu * 1000:.3f} ms)",
                    flush=True,
                )
                out[f"kept_ms_{n}"] = kept * 1000
                out[f"kept_cpu_ms_{n}"] = kept_cpu * 1000
                out[f"handshake_ms_{n}"] = fresh * 1000
                out[f"handshake_cpu_ms_{n}"] = fresh_cpu * 1000
                if n == max(args.sizes) and args.clients:
                    storm = _connecting(server, agents, args.clients)
                    out.update(storm)
                    out["clients"] = args.clients
                    print(
                        f"   {args.clients} agents connecting at once ({storm['storm_wall_s']:.1f} s, "
                        f"{args.clients - storm['storm_failed']:.0f} answered 200, "
                        f"{storm['storm_failed']:.0f} not): "
                        f"server threads {storm['threads_idle']:.0f} idle, "
                        f"{storm['threads_peak']:.0f} at most, {storm['threads_after']:.0f} after "
                        f"(workers: {WORKERS}); RSS {storm['rss_idle_mib']:.1f} MiB idle, "
                        f"{storm['rss_peak_mib']:.1f} at most, {storm['rss_after_mib']:.1f} after",
                        flush=True,
                    )
    small, large = min(args.sizes), max(args.sizes)
    out["kept_ratio"] = out[f"kept_ms_{large}"] / out[f"kept_ms_{small}"]
    out["handshake_ratio"] = out[f"handshake_ms_{large}"] / out[f"handshake_ms_{small}"]
    out["workers"] = WORKERS
    print(
        f"   figure: {out[f'kept_ms_{large}']:.3f} ms kept-alive, "
        f"{out[f'handshake_ms_{large}']:.3f} ms with a handshake, at {large} instances"
    )
    print(f"   floor:  the same at {small} instances")
    print(
        f"   ratio:  {out['kept_ratio']:.2f} kept-alive, {out['handshake_ratio']:.2f} handshake (flat = 1.0)"
    )
    return out


if __name__ == "__main__":
    main()
