"""The command line as an admin meets it: ``--help`` for every command with its exit
statuses, ``-c`` before or after the command, ``-v``/``--log-level``, and never a
traceback."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.cli import helptext as cli_help
from ccx_agent.cli import main as cli
from tests.doctor.conftest import config, free_port
from tests.sources.fake_uccx import make_pki

COMMANDS = sorted(
    next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
)


def _ccx(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccx_agent", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_command_is_described() -> None:
    assert set(COMMANDS) <= set(cli_help.COMMANDS), set(COMMANDS) - set(cli_help.COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_says_what_it_does_and_its_exit_statuses(command: str) -> None:
    done = _ccx(command, "--help")
    assert done.returncode == 0 and done.stderr == ""
    text = done.stdout
    assert text.count("usage: ") == 1  # printed once, also as root
    description, codes = cli_help.COMMANDS[command]
    assert " ".join(description.split()[:6]) in " ".join(text.split())
    assert "\nexit status:\n" in text
    for code, _ in codes:
        assert f"\n  {code:<3} " in text
    assert "\n  130 interrupted (Ctrl-C)" in text
    for option in ("-c PATH, --config PATH", "-v, --verbose", "--log-level"):
        assert option in text


def test_the_config_may_come_before_or_after_the_command(tmp_path: Path) -> None:
    path = str(config(tmp_path, None))
    for args in (
        ("-c", path, "check-config"),
        ("--config", path, "check-config"),
        ("check-config", "-c", path),
        ("check-config", "--config", path),
        ("--config", "/nonexistent.yaml", "check-config", "-c", path),  # the later wins
    ):
        done = _ccx(*args)
        assert (done.returncode, done.stdout) == (0, "OK\n"), (args, done.stderr)
    missing = _ccx("check-config", "-c", str(tmp_path / "none.yaml"))
    assert missing.returncode == 78 and "none.yaml:1: (file): no such file" in missing.stderr


def test_verbose_shows_a_commands_log_lines_on_stderr_only(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    port = free_port()  # SSM down: register fails, and says why in its log lines

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["transport"] = {
            "url": f"https://127.0.0.1:{port}/x",
            "ca_bundle": str(pki.ca),
            "attempts": 1,
        }

    path = str(config(tmp_path, None, tweak=tweak))
    quiet = _ccx("-c", path, "register", "-", stdin="tok")
    loud = _ccx("register", "-", "-c", path, "--log-level", "debug", stdin="tok")
    verbose = _ccx("-v", "-c", path, "register", "-", stdin="tok")
    assert quiet.returncode == loud.returncode == verbose.returncode == 1
    assert quiet.stdout == loud.stdout == verbose.stdout == ""
    connection = f"Starting new HTTPS connection (1): 127.0.0.1:{port}"  # urllib3, at debug
    assert connection not in quiet.stderr
    assert connection in loud.stderr and connection in verbose.stderr
    assert "registration failed: cannot reach" in loud.stderr
    bad = _ccx("-c", path, "--log-level", "chatty", "usage")
    assert bad.returncode == 2 and "invalid choice: 'chatty'" in bad.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("run",),
        ("check-config",),
        ("usage",),
        ("register", "--token-file", "-"),
        ("deregister", "--yes"),
        ("renew", "id"),
        ("status",),
        ("status", "--check"),
        ("sync",),
        ("admit",),
        ("doctor",),
        ("report",),
        ("alerts",),
        ("support-bundle", "--output", "/nonexistent/dir/b.tar.gz"),
    ],
    ids=" ".join,
)
def test_no_command_ends_in_a_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A config that is not there, a config that is garbage: one line or a few, never a
    Python traceback."""
    for path in (tmp_path / "missing.yaml", tmp_path / "garbage.yaml"):
        if path.name == "garbage.yaml":
            path.write_bytes(b"\x00\xff: [unclosed\n")
        done = _ccx("-c", str(path), *args, stdin="tok\n")
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        assert done.returncode in (1, 3, 78), (done.returncode, done.stderr)
        assert done.stderr.strip() or done.stdout.strip()


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["run"], "run"),
        (["--config", "/x.yaml", "run"], "run"),
        (["-c", "/x.yaml", "-vv", "--log-level", "debug", "run"], "run"),
        (["run", "--config", "/x.yaml"], "run"),
        (["status", "--json"], "status"),
        (["ssm", "--state-dir", "/tmp/s", "serve"], "ssm"),
        (["--help"], None),
        ([], None),
        (["--log-level", "loud", "run"], None),  # the full parser says what is wrong
    ],
)
def test_the_command_word_is_read_as_the_full_parser_reads_it(
    argv: list[str], command: str | None
) -> None:
    assert cli.command_of(argv) == command


def _choices(p: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_a_commands_parser_builds_only_that_commands_sub_parser() -> None:
    """``status --check`` runs every minute: its parser builds the ``status`` sub-parser
    alone, not nineteen (and never imports the modules of the heavy commands). Those
    modules build their commands together (``report``, ``alerts``, ``features``)."""
    assert _choices(cli.parser()) == list(cli.COMMANDS) == sorted(COMMANDS, key=cli.COMMANDS.index)
    assert _choices(cli.parser(None)) == list(cli.COMMANDS)
    for command in cli.COMMANDS:
        history = {"report", "alerts", "features"}
        group = history if command in history else {command}
        assert set(_choices(cli.parser(command))) == group, command
    assert _choices(cli.parser("reprot")) == list(cli.COMMANDS)  # mistyped: all, for the error


#: Command lines whose reading must not depend on which parser reads them: valid ones,
#: help, and every kind of usage error.
_LINES = [
    ["-c", "/x.yaml", "run", "-v", "--log-level", "debug"],
    ["status", "--check"],
    ["-c", "/x.yaml", "status", "--json", "-c", "/y.yaml"],
    ["status", "--check", "--json"],
    ["status", "extra"],
    ["status", "--version"],
    ["-cstatus", "usage", "--explain"],
    ["--ver", "status"],
    ["-v", "3", "status"],
    ["--", "status"],
    ["renew"],
    ["renew", "foo"],
    ["admit", "--count", "x"],
    ["report", "--by", "decade"],
    ["report", "--from", "2026-01-01", "--format", "csv", "--tag", "a", "--tag", "b"],
    ["alerts", "--since"],
    ["features", "--json"],
    ["ssm", "tokens", "--help"],
    ["offline", "export", "--help"],
    ["simulate", "x.yaml", "--state-dir", "/tmp/s"],
    ["reprot"],
    ["-h", "status"],
    *([command, "--help"] for command in cli.COMMANDS),
]


def _outcome(p: argparse.ArgumentParser, argv: list[str]) -> tuple[Any, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: Any = vars(p.parse_args(argv))
        except SystemExit as exc:
            result = exc.code
    return result, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", _LINES, ids=" ".join)
def test_the_parser_of_a_command_reads_its_line_as_the_full_parser_does(argv: list[str]) -> None:
    """Byte for byte: the namespace, the help, the usage error and its exit status."""
    light = _outcome(cli._parser_of(tuple(argv)), argv)
    assert light == _outcome(cli.parser(), argv)


def test_a_mistyped_command_lists_them_all_and_suggests_the_nearest() -> None:
    """``reprot`` is not a command the light parser knows: the full one answers, with every
    command (not the 14 of the light parser) and the nearest one."""
    done = _ccx("reprot")
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.splitlines()[-1]
    assert last.startswith("ccx-agent: error: argument COMMAND: invalid choice: 'reprot'")
    for command in COMMANDS:
        assert f"'{command}'" in last
    assert last.endswith("; did you mean report?")
    far = _ccx("xyzzy").stderr.splitlines()[-1]
    assert "did you mean" not in far and "'offline'" in far


def test_every_command_but_run_is_dispatched_to_a_function_that_exists() -> None:
    import importlib

    assert set(cli.DISPATCH) == set(cli.COMMANDS) - {"run"}
    for module, name, _ in cli.DISPATCH.values():
        assert callable(getattr(importlib.import_module(module), name)), (module, name)
