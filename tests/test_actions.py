"""``admit``, ``register``'s token from a file or standard input, and ``deregister``'s
confirmation on a real terminal (a pty)."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.agent import Agent
from ccx_agent.cli import actions, commands
from ccx_agent.config.schema import load
from ccx_agent.instance import open_store
from ccx_agent.simulator import server as ssm_server
from tests.doctor.conftest import Ssm, config


@pytest.fixture(scope="module")
def ssm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ssm]:
    running = ssm_server.start(tmp_path_factory.mktemp("ssm"))
    try:
        yield Ssm(running)
    finally:
        running.stop()


def _cli(path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccx_agent", "-c", str(path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _registered(tmp_path: Path, ssm: Ssm, *, overage: bool, in_use: int = 4) -> Path:
    """Registered with 10 standard seats bought; one sample of ``in_use`` agents."""

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["license"]["allow_overage"] = overage

    path = config(tmp_path, ssm, tweak=tweak)
    out, err = io.StringIO(), io.StringIO()
    assert commands.register(path, ssm.token(bought=10), False, out, err) == 0, err.getvalue()
    cfg = load(path)
    store = open_store(cfg)
    try:
        Agent(cfg, store, None).sample([datetime.now(UTC)], {"flex-standard-seat": in_use})
    finally:
        store.close()
    return path


def _admit(path: Path, *args: str) -> tuple[int, str, str]:
    done = _cli(path, "admit", *args)
    return done.returncode, done.stdout, done.stderr


# --- admit --------------------------------------------------------------------------------


def test_admit_under_license_control(ssm: Ssm, tmp_path: Path) -> None:
    path = _registered(tmp_path, ssm, overage=False)
    assert _admit(path, "--count", "6") == (
        0,
        "yes: 6 more flex-standard-seat: 4 in use + 6 = 10, 10 entitled "
        "(license.allow_overage: false)\n",
        "",
    )
    assert _admit(path, "--count", "7") == (
        1,
        "no: 7 more flex-standard-seat: 4 in use + 7 = 11, 10 entitled, 1 over "
        "(license.allow_overage: false)\n",
        "",
    )
    code, out, _ = _admit(path, "--tag", "flex-premium-seat", "--json")
    doc = json.loads(out)
    assert code == 1
    assert doc == {
        "allowed": False,
        "tag": "flex-premium-seat",
        "count": 1,
        "in_use": 0,
        "entitlement": 0,
        "over": 1,
        "allow_overage": False,
        "registered": True,
        "reason": "license limit reached: 0 of 0 flex-premium-seat in use, 1 more asked",
        "usage_at": doc["usage_at"],
        "usage_current": True,
        "source_failing_since": None,
    }


def test_admit_with_overage_allowed_says_by_how_much(ssm: Ssm, tmp_path: Path) -> None:
    path = _registered(tmp_path, ssm, overage=True, in_use=9)
    code, out, _ = _admit(path, "--count", "3")
    assert code == 0
    assert out == (
        "yes: 3 more flex-standard-seat: 9 in use + 3 = 12, 10 entitled, 2 over "
        "(license.allow_overage: true)\n"
    )


def test_admit_in_evaluation_and_with_bad_arguments(tmp_path: Path) -> None:
    path = config(tmp_path, None, tweak=lambda c: c["license"].update(allow_overage=False))
    assert _admit(path)[0] == 1  # no database yet: one line, exit 1
    from ccx_agent.store.db import DB_NAME, Store

    (tmp_path / "state").mkdir()
    Store(tmp_path / "state" / DB_NAME).close()
    code, out, _ = _admit(path, "--count", "500")
    assert code == 0 and "no limit in evaluation" in out
    code, _, err = _admit(path, "--tag", "premium-seat")
    assert code == 2 and err.startswith("error: --tag: ") and "flex-standard-seat" in err
    assert _admit(path, "--count", "0")[0] == 2


# --- register's token ---------------------------------------------------------------------


def test_register_reads_the_token_from_a_file(ssm: Ssm, tmp_path: Path) -> None:
    path = config(tmp_path, ssm)
    token_file = tmp_path / "token"
    token_file.write_text(f"  {ssm.token()}  \n\nignored\n")
    done = _cli(path, "register", "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("registered: PIID ")


def test_register_reads_the_token_from_standard_input(ssm: Ssm, tmp_path: Path) -> None:
    path = config(tmp_path, ssm)
    token = ssm.token()
    done = _cli(path, "register", "-", stdin=token + "\n")
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout + done.stderr
    # --token-file - is the same.
    again = _cli(path, "register", "--force", "--token-file", "-", stdin=ssm.token())
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (
            (),
            None,
            2,
            "error: no token: give --token-file FILE, or - to read it from standard input\n",
        ),
        (
            ("tok", "--token-file", "f"),
            None,
            2,
            "error: give the token once: TOKEN, or --token-file FILE (- for stdin)\n",
        ),
        # What was read is bad input: exit 1, whether missing, empty or not a file.
        (("-",), "\n\n", 1, "error: the token from standard input is empty\n"),
        (
            ("--token-file", "/nonexistent/token"),
            None,
            1,
            "error: --token-file /nonexistent/token: cannot be read: No such file or directory\n",
        ),
        (("--token-file", "{tmp}/empty"), None, 1, "error: the token from {tmp}/empty is empty\n"),
        (
            ("--token-file", "{tmp}/fifo"),
            None,
            1,
            "error: --token-file {tmp}/fifo: is a FIFO (named pipe), not a regular file: refused\n",
        ),
    ],
)
def test_register_without_a_usable_token_is_one_line(
    tmp_path: Path, args: tuple[str, ...], stdin: str | None, code: int, message: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    os.mkfifo(tmp_path / "fifo")  # nothing writes it: reading it would block for ever
    args = tuple(a.format(tmp=tmp_path) for a in args)
    message = message.format(tmp=tmp_path)
    done = _cli(config(tmp_path, None), "register", *args, stdin=stdin or "")
    assert (done.returncode, done.stdout, done.stderr) == (code, "", message)


def test_a_token_asked_on_a_terminal_is_not_echoed() -> None:
    """On a terminal, ``-`` asks with getpass (no echo); the prompt is what is called."""
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "r", closefd=False) as tty:
            asked: list[str] = []
            token = actions.read_token("-", None, tty, prompt=lambda p: asked.append(p) or "T0KEN")
    finally:
        os.close(master)
        os.close(slave)
    assert token == "T0KEN" and asked == ["ID token (not echoed): "]


# --- deregister's confirmation -------------------------------------------------------------


def _on_a_terminal(path: Path, *args: str, answer: str | None) -> tuple[int, str]:
    """``deregister`` with its standard streams on a pty, as typed by an operator."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccx_agent", "-c", str(path), "deregister", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    answered = answer is None
    while proc.poll() is None or select.select([master], [], [], 0)[0]:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"deregister hung; the terminal shows {seen!r}")
        ready = select.select([master], [], [], 0.1)[0]
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(master, answer.encode() + b"\n")
            answered = True
    os.close(master)
    return proc.wait(10), seen.decode(errors="replace")


def test_deregister_asks_on_a_terminal(ssm: Ssm, tmp_path: Path) -> None:
    path = config(tmp_path, ssm)
    out, err = io.StringIO(), io.StringIO()
    assert commands.register(path, ssm.token(), False, out, err) == 0
    piid = out.getvalue().split("PIID ")[1].split(",")[0]
    code, screen = _on_a_terminal(path, answer="n")
    assert code == 1, screen
    assert f"Deregister instance {piid} from SSM" in screen and "[y/N]" in screen
    assert "not deregistered" in screen
    assert json.loads(_cli(path, "status", "--json").stdout)["registration"]["piid"] == piid
    code, screen = _on_a_terminal(path, answer="y")
    assert code == 0, screen
    assert f"deregistered PIID {piid}" in screen


def test_deregister_asks_nothing_with_yes_or_off_a_terminal(ssm: Ssm, tmp_path: Path) -> None:
    path = config(tmp_path, ssm)
    assert commands.register(path, ssm.token(), False, io.StringIO(), io.StringIO()) == 0
    code, screen = _on_a_terminal(path, "--yes", answer=None)
    assert code == 0 and "[y/N]" not in screen and "deregistered PIID" in screen
    assert commands.register(path, ssm.token(), False, io.StringIO(), io.StringIO()) == 0
    done = _cli(path, "deregister", stdin="")  # a script: stdin is not a terminal
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deregistered PIID ")
    assert "[y/N]" not in done.stderr
