"""``ccx-agent demo``: the whole licensing life of an instance, live, in under a minute.

Nothing here is staged: the SSM simulator is the real HTTPS server, ``register`` is the
real CLI, and the daemon is ``ccx-agent run`` in its own process, reading a ``scripted``
source and sending its alerts to a syslog listener that this command prints. Only the
timers are short: one report interval is 2 seconds instead of 15 minutes, so the
countdown reads ``=8 seconds`` where a production system says ``=60 minutes``.
Everything lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import requests
import yaml

from ccx_agent.cli import commands
from ccx_agent.config.schema import load
from ccx_agent.instance import Open, open_store
from ccx_agent.licensing.alerts import Mnemonic
from ccx_agent.licensing.timeutil import iso
from ccx_agent.simulator import server as ssm_server
from ccx_agent.simulator.admin import Admin

#: The demo's clock: one report interval, and what the countdown counts in.
REPORT = 2
#: Licenses bought at the start, and agents logged in before and after the overage.
BOUGHT = 10
BEFORE, AFTER = 8, 13
TAG = "flex-standard-seat"
#: Whole demo deadline; each step waits at most until then.
DEADLINE_S = 55.0

_SYSLOG = re.compile(r"^<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+?)\[(\d+)\]: (.*)$", re.S)


def demo_config(state_dir: Path, url: str, ca: Path, syslog_port: int) -> dict[str, Any]:
    """The agent's config: production keys, with second-scale timers."""
    return {
        "state_dir": str(state_dir),
        "license": {"type": "flex"},
        "report": {"interval": f"{REPORT}s", "jitter": "0s"},
        "sample": {"interval": "1s"},
        "id_certificate": {
            "lifetime": "5m",
            "renew_after": "24s",
            "expiry_warning": "1m",
            "retry": "5s",
        },
        "authorization": {
            "renew_after": "26s",
            "validity": "2m",
            "expiry_warning": "1m",
            "grace": "2m",
            "retry": "5s",
        },
        "alerts": {
            "node_id": "uccxpubsu1",
            "syslog": {"target": f"udp://127.0.0.1:{syslog_port}"},
        },
        "transport": {"url": url, "ca_bundle": str(ca), "timeout": "5s", "attempts": 2},
        "identity": {"pid": "UCCX", "serial": "DEMO0001"},
        # Any free port: the demo prints the URL that the daemon logs.
        "metrics": {"listen": "127.0.0.1:0"},
        "source": {
            "kind": "scripted",
            "steps": [
                {"at": "0s", "agents": BEFORE},
                {"at": "6s", "agents": AFTER},
            ],
        },
    }


@dataclass
class Listener:
    """A UDP syslog listener that prints each alert line as it arrives."""

    out: TextIO
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-syslog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            match = _SYSLOG.match(text)
            msg = match.group(5) if match else text
            self.say(f"syslog  {msg}")
            with self.cond:
                self.lines.append(msg)
                self.cond.notify_all()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", file=self.out, flush=True)

    def wait_for(self, mnemonic: str, deadline: float, count: int = 1) -> None:
        """Until ``count`` alerts ``mnemonic`` have arrived (raises at the deadline)."""
        # Both styles of the alert (MCVD "…: [CONTEXT]", UC "…: %[…"), so output stays in order.
        patterns = (f"-{mnemonic}: [", f"-{mnemonic}: %[")

        def seen() -> bool:
            return all(sum(1 for x in self.lines if p in x) >= count for p in patterns)

        with self.cond:
            if not self.cond.wait_for(seen, timeout=max(0.0, deadline - time.monotonic())):
                raise DemoError(f"{mnemonic} did not arrive in time")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class DemoError(Exception):
    pass


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ccx-demo-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _admin(sim: ssm_server.RunningServer, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The simulator's admin endpoint, over verified TLS like any client."""
    answer = requests.post(
        sim.base_url + path,
        json=doc,
        headers={"Authorization": f"Bearer {sim.admin_token}"},
        verify=str(sim.ca_path),
        timeout=10,
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ccx_agent", "--config", str(config), *args]


def _status(config: Path) -> dict[str, Any]:
    buf = io.StringIO()
    commands.status(config, True, out=buf, err=io.StringIO())
    doc: dict[str, Any] = json.loads(buf.getvalue())
    return doc


def _metrics_url(log: Path, deadline: float) -> str:
    """The URL the daemon logged when its metrics endpoint started listening."""
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and doc.get("event") == "metrics listening":
                    return str(doc["url"])
        time.sleep(0.1)
    raise DemoError("the daemon did not log its metrics URL in time")


def _scrape(url: str, name: str, *words: str) -> str:
    """The line of the exposition for ``name`` that holds every one of ``words`` and says
    1; the metrics follow the job that raised the alert, so they may lag it a moment."""
    line = f"(no {name} line)"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            text = requests.get(url, timeout=5).text
        except requests.RequestException as exc:
            return f"(scrape failed: {exc})"
        for found in text.splitlines():
            if found.startswith(name + "{") and all(w in found for w in words):
                line = found
        if line.endswith(" 1.0"):
            break
        time.sleep(0.1)
    return line


@dataclass(frozen=True, slots=True)
class Delivery:
    """Exactly once, counted: the intervals the agent's database queued for SSM against
    the reports the simulator's database stored."""

    #: Report ids of the intervals the agent recorded as reported (queued for SSM).
    queued: tuple[str, ...]
    #: Of those, the ones still in the agent's outbox (a stop may cut an exchange short).
    waiting: tuple[str, ...]
    #: ``(id, interval start)`` of each report the simulator stored from this instance.
    stored: tuple[tuple[str, str], ...]

    @property
    def intervals(self) -> int:
        """The distinct intervals the simulator's reports cover."""
        return len({start for _, start in self.stored})

    @property
    def lost(self) -> list[str]:
        """Queued by the agent, neither at the simulator nor still waiting to be sent."""
        there = {rid for rid, _ in self.stored} | set(self.waiting)
        return [rid for rid in self.queued if rid not in there]

    @property
    def twice(self) -> list[str]:
        """Interval starts the simulator holds more than one report for."""
        starts = [start for _, start in self.stored]
        return sorted({s for s in starts if starts.count(s) > 1})

    @property
    def unknown(self) -> list[str]:
        """Reports at the simulator for an interval the agent never queued."""
        queued = set(self.queued)
        return [rid for rid, _ in self.stored if rid not in queued]

    @property
    def exactly_once(self) -> bool:
        return bool(self.queued) and not (self.lost or self.twice or self.unknown)

    def summary(self) -> str:
        return (
            f"the agent queued {len(self.queued)} usage reports ({len(self.waiting)} still in "
            f"its outbox); the simulator holds {len(self.stored)} from this instance, for "
            f"{self.intervals} distinct intervals: {len(self.lost)} lost, "
            f"{len(self.twice)} counted twice"
        )

    def problems(self) -> str:
        parts = [
            f"{name}: {', '.join(ids)}"
            for name, ids in (
                ("lost", self.lost),
                ("counted twice", self.twice),
                ("never queued", self.unknown),
            )
            if ids
        ]
        return "; ".join(parts) or "the agent queued nothing"


def _delivery(config: Path, ssm_dir: Path) -> Delivery:
    """Read both databases (the daemon has stopped): what was queued, what arrived."""
    store = open_store(load(config), Open.READ)
    try:
        with store.read() as tx:
            product = tx.load_product()
            piid = product.identity.piid if product and product.identity else ""
            queued = tuple(f"{piid}:{iso(r.start)}" for r in tx.intervals() if r.queued)
            waiting = tuple(item.report_id for item in tx.outbox_batch(1_000_000))
    finally:
        store.close()
    admin = Admin.for_state_dir(ssm_dir)
    try:
        stored = tuple((r["id"], r["start"]) for r in admin.reports(piid))
    finally:
        admin.close()
    return Delivery(queued, waiting, stored)


def main(*, keep: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with _workdir(keep) as work:
        try:
            return _run(work, out)
        except DemoError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            log = work / "daemon.log"
            if log.exists():
                print("--- the daemon's log (last lines) ---", file=sys.stderr)
                for line in log.read_text(errors="replace").splitlines()[-30:]:
                    print(line, file=sys.stderr)
            return 1


def _run(work: Path, out: TextIO) -> int:
    listen = Listener(out)
    deadline = listen.started + DEADLINE_S
    sim = ssm_server.start(work / "ssm", id_lifetime=timedelta(minutes=5))
    daemon: subprocess.Popen[bytes] | None = None
    try:
        listen.say(f"SSM simulator on {sim.url} (its CA: {sim.ca_path.name})")
        _admin(sim, "/admin/licenses", {"tag": TAG, "count": BOUGHT})
        token = _admin(sim, "/admin/tokens", {})["token"]
        listen.say(f"bought {BOUGHT} {TAG} licenses; created an ID token")
        listen.say(
            f"time scale: one report interval is {REPORT} s here (15 min in production), so "
            f"'={4 * REPORT} seconds' below is '=60 minutes' on a production system"
        )
        config = work / "ccx-agent.yaml"
        cfg = demo_config(work / "state", sim.url, sim.ca_path, listen.port)
        config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        reg = subprocess.run(
            _cli(config, "register", token), check=False, capture_output=True, text=True, timeout=30
        )
        if reg.returncode != 0:
            raise DemoError(f"register failed: {reg.stderr.strip()}")
        listen.say(f"$ ccx-agent register <token>  ->  {reg.stdout.strip()}")
        listen.say(f"$ ccx-agent run   (scripted source: {BEFORE} agents, {AFTER} from 6 s on)")
        log = (work / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            _cli(config, "run"), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        listen.wait_for(Mnemonic.AGENT_READY, deadline)
        metrics = _metrics_url(work / "daemon.log", deadline)
        listen.say(
            f"metrics: {metrics}  (and /healthz; try: curl -s {metrics} | grep ^ccx_license)"
        )
        listen.wait_for(Mnemonic.AUTH_RENEW_SUCCESS, deadline)
        listen.wait_for(Mnemonic.SYSTEM_TO_ENTER_OOC_STATE, deadline, count=3)
        listen.wait_for(Mnemonic.SYSTEM_TO_ENTER_OOC_STATE_SHORTLY, deadline)
        listen.wait_for(Mnemonic.SYSTEM_IN_OOC_STATE, deadline)
        listen.say(
            f"metrics: {_scrape(metrics, 'ccx_license_compliance', TAG, 'OUT_OF_COMPLIANCE')}"
        )
        tag = _status(config)["tags"][TAG]
        deficit = tag["locked"] - tag["entitlement"]
        listen.say(
            f"status: {TAG} usage {tag['usage']}, entitlement {tag['entitlement']}, "
            f"locked {tag['locked']} -> buying the {deficit} missing"
        )
        _admin(sim, "/admin/licenses", {"tag": TAG, "count": deficit})
        listen.wait_for(Mnemonic.SYSTEM_BACK_IN_COMPLIANCE, deadline)
        listen.wait_for(Mnemonic.ID_CERT_RENEW_SUCCESS, deadline)
        listen.wait_for(Mnemonic.AUTH_RENEW_SUCCESS, deadline, count=2)
        listen.say("stopping the daemon (SIGTERM)")
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=max(1.0, deadline + 5 - time.monotonic()))
        daemon = None
        if code != 0:
            raise DemoError(f"the daemon exited with status {code}")
        listen.say("the daemon stopped cleanly (exit 0)")
        print("\n$ ccx-agent status", file=out)
        commands.status(config, False, out=out)
        counted = _delivery(config, work / "ssm")
        print(f"\n{counted.summary()}", file=out)
        if not counted.exactly_once:
            raise DemoError(f"reports not delivered exactly once: {counted.problems()}")
        return 0
    finally:
        if daemon is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        sim.stop()
        listen.close()
