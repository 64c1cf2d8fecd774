"""The ``ssm`` commands through a tiny argparse (the real CLI wires the same functions)."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import requests

from ccx_agent.simulator import cli
from ccx_agent.simulator.core import Simulator
from tests.simulator.helpers import NOW, Device

ROOT = Path(__file__).resolve().parents[2]
MAIN = (
    "import argparse, sys\n"
    "from ccx_agent.simulator import cli\n"
    "p = argparse.ArgumentParser(prog='ccx-agent')\n"
    "sub = p.add_subparsers(dest='command', required=True)\n"
    "cli.add_parser(sub)\n"
    "sys.exit(cli.run(p.parse_args()))\n"
)


def ssm(state_dir: Path, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ccx-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    args = parser.parse_args(["ssm", "--state-dir", str(state_dir), *argv])
    assert args.command == "ssm"
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_token_create_prints_the_token_alone(state_dir: Path) -> None:
    code, out, err = ssm(state_dir, "token", "create", "--uses", "2", "--expires", "2d")
    assert (code, err) == (0, "")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}\n", out)
    sim = Simulator.open(state_dir, datetime.now(UTC))
    try:
        dev = Device(sim)
        dev.register(out.strip(), datetime.now(UTC))
        assert sim.show(NOW)["tokens"] == {"total": 1, "usable": 1}
    finally:
        sim.close()


def test_token_revoke(state_dir: Path) -> None:
    token = ssm(state_dir, "token", "create")[1].strip()
    assert ssm(state_dir, "token", "revoke", token)[:2] == (0, "token revoked\n")
    code, out, err = ssm(state_dir, "token", "revoke", token + "x")
    assert (code, out, err) == (1, "", "error: no such token\n")


def test_bad_input_is_one_line_on_stderr(state_dir: Path) -> None:
    for argv in (
        ["license", "add", "gold-seat", "3"],
        ["license", "add", "flex-standard-seat", "-3"],
        ["license", "remove", "flex-standard-seat", "1", "--account", "nobody"],
        ["token", "create", "--account", "nobody"],
        ["token", "create", "--uses", "0"],
    ):
        code, out, err = ssm(state_dir, *argv)
        assert code == 1, argv
        assert out == ""
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_malformed_options_are_usage_errors_exit_2(state_dir: Path) -> None:
    """Like argparse's own usage errors of the main CLI: exit 2, one line."""
    for argv in (
        ["token", "create", "--expires", "soon"],
        ["serve", "--listen", "localhost"],
        ["serve", "--id-lifetime", "forever"],
    ):
        code, out, err = ssm(state_dir, *argv)
        assert code == 2, argv
        assert out == ""
        assert err.startswith("ccx-agent ssm: error: ") and err.count("\n") == 1, err


def test_show_without_state(tmp_path: Path) -> None:
    code, _, err = ssm(tmp_path / "none", "show")
    assert code == 1 and "no simulator state" in err


def test_licenses_and_show(state_dir: Path) -> None:
    assert ssm(state_dir, "license", "add", "flex-standard-seat", "10")[1] == (
        "flex-standard-seat: 10 purchased in account default\n"
    )
    assert ssm(state_dir, "license", "add", "nfr-seat", "2", "--account", "lab")[0] == 0
    assert ssm(state_dir, "license", "remove", "flex-standard-seat", "3")[1].startswith(
        "flex-standard-seat: 7 purchased"
    )
    token = ssm(state_dir, "token", "create")[1].strip()
    now = datetime.now(UTC)
    sim = Simulator.open(state_dir, now)
    try:
        dev = Device(sim)
        dev.register(token, now)
        start = "2026-01-01T00:00:00Z"
        dev.report([(start, {"flex-standard-seat": 4})], now)
    finally:
        sim.close()

    code, out, _ = ssm(state_dir, "show", "--json")
    assert code == 0
    state = json.loads(out)
    assert set(state) == {"accounts", "instances", "tokens"}
    assert state["accounts"]["default"]["tags"]["flex-standard-seat"] == {
        "purchased": 7,
        "usage": 4,
        "available": 3,
    }
    assert state["accounts"]["lab"]["purchased"] == {"nfr-seat": 2}
    [inst] = state["instances"]
    assert inst["piid"] == dev.piid
    assert inst["udi"] == {"pid": dev.udi.pid, "serial": dev.udi.serial, "uuid": dev.udi.uuid}
    assert inst["state"] == "active"
    assert inst["last_report"]["usage"] == {"flex-standard-seat": 4}
    assert state["tokens"] == {"total": 1, "usable": 0}

    code, out, _ = ssm(state_dir, "show")
    assert code == 0
    assert "flex-standard-seat          7     4          3" in out
    assert str(dev.piid) in out and dev.udi.uuid in out
    assert "flex-standard-seat=4" in out
    assert token not in out


def test_serve_until_sigterm_while_admin_commands_run(state_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            MAIN,
            "ssm",
            "--state-dir",
            str(state_dir),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.fullmatch(
            r"SSM simulator listening on (https://127\.0\.0\.1:\d+/licservice/license)\n", first
        )
        assert match, first
        url = match.group(1)
        lines = [proc.stdout.readline() for _ in range(3)]
        assert f"root CA (transport.ca_bundle): {state_dir / 'ca.pem'}\n" in lines
        # The admin CLI works on the database while the server runs.
        assert ssm(state_dir, "license", "add", "flex-standard-seat", "5")[0] == 0
        token = ssm(state_dir, "token", "create")[1].strip()
        now = datetime.now(UTC)
        authority_sim = Simulator.open(state_dir, now)  # same CA, to build requests
        dev = Device(authority_sim)
        envelope = dev.register_request(token, now)
        answer = requests.post(
            url, data=json.dumps(envelope), verify=str(state_dir / "ca.pem"), timeout=10
        )
        assert answer.status_code == 200, answer.text
        body = json.loads(answer.content)["body"]
        assert body["entitlements"]["flex-standard-seat"] == 5
        authority_sim.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        _, err = proc.communicate(timeout=5)
        assert token not in err
        assert "POST /licservice/license -> 200" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_state_dir_may_come_before_or_after_the_subcommand(state_dir: Path) -> None:
    """The real CLI: ``ssm --state-dir DIR token create`` as documented, and ``ssm token
    create --state-dir DIR`` as one types it; none at all is a usage error."""
    base = [sys.executable, "-m", "ccx_agent", "ssm"]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *argv], capture_output=True, text=True, timeout=60, check=False
        )

    after = run("token", "create", "--state-dir", str(state_dir))
    assert after.returncode == 0, after.stderr
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}\n", after.stdout)
    before = run("--state-dir", str(state_dir), "license", "add", "flex-standard-seat", "3")
    assert before.returncode == 0, before.stderr
    shown = run("show", "--json", "--state-dir", str(state_dir))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["tokens"] == {"total": 1, "usable": 1}
    missing = run("show")
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("the following arguments are required: --state-dir")
