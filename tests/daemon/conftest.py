"""Real processes for the daemon tests: the SSM simulator, `ccx-agent run` in a
subprocess, and syslog / sd_notify listeners on real sockets. Nothing is mocked.

Every helper here waits by polling with a deadline; none sleeps a fixed time for a timer.
All captured output (daemon stdout/stderr, CLI output, syslog bytes) is recorded in
:data:`CAPTURED` so that the secrets checks see everything.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from ccx_agent.cli import commands
from ccx_agent.licensing.timeutil import iso
from ccx_agent.simulator import server as ssm_server
from ccx_agent.simulator.admin import Admin
from ccx_agent.store.db import Store

TAG = "flex-standard-seat"

#: Everything any process or listener printed or sent during the session.
CAPTURED: list[str] = []
#: Values that must never appear in CAPTURED (tokens, passwords).
SECRETS: set[str] = set()


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or fail at the
    deadline with ``what`` in the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def cli(config: Path, *args: str) -> list[str]:
    # As the console script starts: hang-ups held before the CLI is even imported.
    return [sys.executable, "-m", "ccx_agent", "--config", str(config), *args]


def run_cli(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cli(config, *args), check=False, capture_output=True, text=True, timeout=timeout
    )
    CAPTURED.extend([done.stdout, done.stderr])
    return done


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                out.append(doc)
    return out


# --- the simulator --------------------------------------------------------------------


@dataclass
class Sim:
    server: ssm_server.RunningServer
    state_dir: Path

    def admin(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        answer = requests.post(
            self.server.base_url + path,
            json=doc,
            headers={"Authorization": f"Bearer {self.server.admin_token}"},
            verify=str(self.server.ca_path),
            timeout=10,
        )
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def reports(self, piid: str) -> list[dict[str, Any]]:
        admin = Admin.for_state_dir(self.state_dir)
        try:
            return admin.reports(piid)
        finally:
            admin.close()


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    state_dir = tmp_path_factory.mktemp("ssm")
    server = ssm_server.start(state_dir, id_lifetime=timedelta(minutes=5))
    SECRETS.add(server.admin_token)
    try:
        yield Sim(server, state_dir)
    finally:
        server.stop()


# --- an instance: its config, its account, its registration ----------------------------


def base_config(state_dir: Path, sim: Sim, syslog_target: str) -> dict[str, Any]:
    """Production keys with second-scale timers (the shape of ccx_agent.cli.demo)."""
    return {
        "state_dir": str(state_dir),
        "license": {"type": "flex"},
        "report": {"interval": "1s", "jitter": "0s"},
        "sample": {"interval": "1s"},
        "id_certificate": {
            "lifetime": "5m",
            "renew_after": "4m",
            "expiry_warning": "1m",
            "retry": "5s",
        },
        "authorization": {
            "renew_after": "90s",
            "validity": "2m",
            "expiry_warning": "1m",
            "grace": "2m",
            "retry": "5s",
        },
        "alerts": {"node_id": "uccxpubsu1", "syslog": {"target": syslog_target}},
        "transport": {
            "url": sim.server.url,
            "ca_bundle": str(sim.server.ca_path),
            "timeout": "5s",
            "attempts": 2,
        },
        "identity": {"pid": "UCCX", "serial": "TEST0001"},
        # Any free port: daemons of several tests never fight over 9725.
        "metrics": {"listen": "127.0.0.1:0"},
        "source": {"kind": "scripted", "steps": [{"at": "0s", "agents": 8}]},
    }


@dataclass
class Instance:
    dir: Path
    config: Path
    cfg: dict[str, Any]
    token: str = ""
    piid: str = ""

    @property
    def state_dir(self) -> Path:
        return Path(self.cfg["state_dir"])

    def write(self, cfg: dict[str, Any] | None = None) -> None:
        if cfg is not None:
            self.cfg = cfg
        self.config.write_text(yaml.safe_dump(self.cfg, sort_keys=False), encoding="utf-8")

    def store(self) -> Store:
        return Store(self.state_dir / "ccx-agent.db")

    def status(self, in_process: bool = False) -> dict[str, Any]:
        """``ccx-agent status --json``: the real CLI, or the same command in this process
        (no interpreter start-up)."""
        if in_process:
            out, err = io.StringIO(), io.StringIO()
            assert commands.status(self.config, True, out=out, err=err) == 0, err.getvalue()
            CAPTURED.extend([out.getvalue(), err.getvalue()])
            return json.loads(out.getvalue())  # type: ignore[no-any-return]
        done = run_cli(self.config, "status", "--json")
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def reported_ids(self) -> list[str]:
        """Report ids of the intervals the agent's DB recorded as queued for SSM."""
        store = self.store()
        try:
            with store.read() as tx:
                return [f"{self.piid}:{iso(r.start)}" for r in tx.intervals() if r.queued]
        finally:
            store.close()


def make_instance(
    base: Path,
    sim: Sim,
    syslog_target: str,
    *,
    bought: int = 10,
    register: bool = True,
    tweak: Callable[[dict[str, Any]], None] | None = None,
) -> Instance:
    """A config in ``base``, in a virtual account of its own (licenses are pooled per
    account, so instances of other tests never change this one's compliance), registered
    with the real CLI."""
    base.mkdir(parents=True, exist_ok=True)
    cfg = base_config(base / "state", sim, syslog_target)
    if tweak is not None:
        tweak(cfg)
    inst = Instance(base, base / "ccx-agent.yaml", cfg)
    inst.write()
    if not register:
        return inst
    account = f"acct-{uuid.uuid4().hex[:12]}"
    sim.admin("/admin/licenses", {"tag": TAG, "count": bought, "account": account})
    inst.token = sim.admin("/admin/tokens", {"account": account})["token"]
    SECRETS.add(inst.token)
    # "--": a token_urlsafe token starts with "-" one time in 64 (see test_process.py).
    done = run_cli(inst.config, "register", "--", inst.token)
    assert done.returncode == 0, done.stderr
    inst.piid = inst.status(in_process=True)["registration"]["piid"]
    return inst


# --- the daemon ---------------------------------------------------------------------


class Daemon:
    """``ccx-agent --config X run`` in its own session, output to files."""

    def __init__(self, inst: Instance, env: dict[str, str] | None = None, name: str = "run"):
        self.inst = inst
        n = 0
        while (inst.dir / f"{name}{n}.out").exists():
            n += 1
        self.out_path = inst.dir / f"{name}{n}.out"
        self.err_path = inst.dir / f"{name}{n}.err"
        full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET",)}
        full_env.pop("WATCHDOG_USEC", None)
        full_env.pop("WATCHDOG_PID", None)
        full_env.update(env or {})
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cli(inst.config, "run"),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        self._captured = False
        RUNNING.append(self)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        return json_lines(self.stdout)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [d for d in self.logs() if d.get("event") == event]

    def wait_event(self, event: str, timeout: float = 20, count: int = 1) -> list[dict[str, Any]]:
        def seen() -> list[dict[str, Any]] | None:
            self.assert_alive()
            found = self.events(event)
            return found if len(found) >= count else None

        result: list[dict[str, Any]] = wait_until(f"log event {event!r}", seen, timeout)
        return result

    def metrics_url(self, timeout: float = 20) -> str:
        """The URL of ``/metrics`` as the daemon's log names it (the last one bound)."""
        url: str = self.wait_event("metrics listening", timeout)[-1]["url"]
        return url

    def assert_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(
                f"the daemon exited with {code}\n--- stdout\n{self.stdout[-3000:]}"
                f"\n--- stderr\n{self.stderr[-3000:]}"
            )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        took = time.monotonic() - started
        self.capture()
        return code, took

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.capture()

    def capture(self) -> None:
        if not self._captured:
            self._captured = True
            CAPTURED.extend([self.stdout, self.stderr])

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.capture()


RUNNING: list[Daemon] = []


@pytest.fixture(autouse=True)
def _no_leftover_daemons_and_no_secrets() -> Iterator[None]:
    """Kills what a failed test left running; then no secret in anything captured."""
    yield
    while RUNNING:
        RUNNING.pop().cleanup()
    assert_no_secrets()


def assert_no_secrets(extra: list[str] | None = None) -> None:
    texts = CAPTURED + (extra or [])
    for secret in SECRETS:
        assert secret
        for text in texts:
            assert secret not in text, f"a secret leaked into captured output: {text[:300]!r}"


# --- listeners --------------------------------------------------------------------------


@dataclass
class Received:
    at: float
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass
class _Listener:
    items: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def _add(self, data: bytes) -> None:
        with self.cond:
            self.items.append(Received(time.monotonic(), data))
            CAPTURED.append(data.decode("utf-8", "replace"))
            self.cond.notify_all()

    def snapshot(self) -> list[Received]:
        with self.cond:
            return list(self.items)

    def wait(self, what: str, predicate: Callable[[list[Received]], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate(list(self.items))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout:.0f}s waiting for {what}; received: "
                        + "\n".join(r.data.decode("utf-8", "replace") for r in self.items[-20:])
                    )
                self.cond.wait(min(left, 0.2))


class DatagramListener(_Listener):
    """UDP syslog (``family`` INET) or sd_notify (``family`` UNIX, ``address`` a path)."""

    def __init__(self, family: int = socket.AF_INET, address: Any = ("127.0.0.1", 0)):
        super().__init__()
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.address[1])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self._add(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class TcpListener(_Listener):
    """A TCP syslog collector that keeps the raw byte stream of every connection."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.streams: list[bytearray] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            buf = bytearray()
            with self.cond:
                self.streams.append(buf)
            t = threading.Thread(target=self._read, args=(conn, buf), daemon=True)
            t.start()
            self._threads.append(t)

    def _read(self, conn: socket.socket, buf: bytearray) -> None:
        conn.settimeout(0.1)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                with self.cond:
                    buf.extend(data)
                self._add(data)

    def messages(self) -> list[bytes]:
        """Every stream parsed strictly as RFC 6587 octet counting (``LEN SP MSG``); a
        partial frame at the end of a stream is left out."""
        out: list[bytes] = []
        with self.cond:
            streams = [bytes(s) for s in self.streams]
        for data in streams:
            pos = 0
            while pos < len(data):
                sp = data.find(b" ", pos)
                if sp < 0:
                    break
                head = data[pos:sp]
                assert head.isdigit() and not head.startswith(b"0"), (
                    f"bad octet count {head!r} at byte {pos}"
                )
                length = int(head)
                if sp + 1 + length > len(data):
                    break
                out.append(data[sp + 1 : sp + 1 + length])
                pos = sp + 1 + length
        return out

    def wait_messages(self, what: str, predicate: Callable[[list[bytes]], Any], timeout: float):
        return self.wait(what, lambda _: predicate(self.messages()), timeout)

    def close(self) -> None:
        self._stop.set()
        self._accepter.join()
        for t in self._threads:
            t.join()
        self.sock.close()


@pytest.fixture
def udp_syslog() -> Iterator[DatagramListener]:
    listener = DatagramListener()
    yield listener
    listener.close()


def syslog_messages(items: list[Received]) -> list[str]:
    """The MSG part of each RFC 3164 datagram (after ``]: ``)."""
    return [r.text.split("]: ", 1)[1] if "]: " in r.text else r.text for r in items]


def lines_arrived(wanted: set[str]) -> Callable[[list[bytes]], bool]:
    """A TcpListener.wait_messages predicate: each of ``wanted`` is in some message."""

    def arrived(messages: list[bytes]) -> bool:
        got = "\n".join(m.decode(errors="replace") for m in messages)
        return all(line in got for line in wanted)

    return arrived
