"""Argument parsing only: each command is one function, found by :data:`DISPATCH`.

Each command's module is imported when that command runs, never here: ``ccx-agent run``
(the daemon, resident for months) must not hold the simulators, ``commands`` or the
report renderers it never uses. The parser of a command builds that command's
sub-parser alone (:func:`parser`): never the others, whose registration may import
their modules (``ssm``, the history and offline commands).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ccx_agent import __version__
from ccx_agent.cli import helptext as cli_help
from ccx_agent.config.configpath import default_path
from ccx_agent.daemon import earlysignals
from ccx_agent.errors import EX_FAILED, EX_INTERRUPTED, AgentError

if TYPE_CHECKING:
    import sqlite3

#: The commands whose sub-parsers are registered by their own modules, which import the
#: simulator, the history renderers and the offline exchange (tens of milliseconds of
#: every start: the suite starts hundreds of interpreters, a host's timers many more).
#: The parser of any other command leaves them out.
HEAVY_COMMANDS = frozenset({"ssm", "offline", "report", "alerts", "features"})

#: Every command, in the order ``--help`` lists them.
COMMANDS = (
    "run",
    "demo",
    "check-config",
    "usage",
    "register",
    "deregister",
    "renew",
    "status",
    "sync",
    "admit",
    "doctor",
    "support-bundle",
    "install-files",
    "ssm",
    "report",
    "alerts",
    "features",
    "offline",
    "simulate",
)


class _Unparsed(Exception):
    pass


class _QuietParser(argparse.ArgumentParser):
    """Raises instead of printing: what is wrong is said once, by the full parser."""

    def error(self, message: str) -> NoReturn:
        raise _Unparsed(message)


class _Parser(argparse.ArgumentParser):
    """The top-level parser: a mistyped command gets the nearest one suggested."""

    commands: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        word = re.match(r"argument COMMAND: invalid choice: '(.*?)'", message)
        if word is not None:
            import difflib  # noqa: PLC0415 - only on a mistyped command

            near = difflib.get_close_matches(word[1], self.commands, n=1, cutoff=0.6)
            if near:
                message += f"; did you mean {near[0]}?"
        super().error(message)


def command_of(argv: Sequence[str] | None) -> str | None:
    """The command word of ``argv`` (None for ``--help``, ``--version``, nothing, or
    options the full parser will refuse), as the full parser would read it: the first
    word after the common options."""
    pre = _QuietParser(add_help=False)
    cli_help.add_common(pre, top=True)
    try:
        _, rest = pre.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    except _Unparsed:
        return None
    return rest[0] if rest and not rest[0].startswith("-") else None


def parser(command: str | None = None, *, listed: bool = False) -> argparse.ArgumentParser:
    """The CLI's parser. For a ``command`` that is one of :data:`COMMANDS`, only that
    command's sub-parser is built (argparse hands the rest of the line to it alone, and
    its help is the same in the full parser); ``status --check``, run every minute, pays
    for one sub-parser, not nineteen. No command (help, ``--version``, the man page) or a
    mistyped one gets every command, so that the help and the "invalid choice" error list
    them all; ``listed``, the :data:`HEAVY_COMMANDS` only as the help lists them
    (:func:`_parser_for`)."""
    only = command if command in COMMANDS else None
    top = _Parser(
        prog="ccx-agent",
        description="Smart Licensing agent of a Cisco Unified Contact Center Express instance.",
    )
    p: argparse.ArgumentParser = top
    p.add_argument("--version", action="version", version=f"ccx-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def wanted(name: str) -> bool:
        return only is None or only == name

    if wanted("run"):
        sub.add_parser(
            "run", help="run the licensing daemon in the foreground (systemd Type=notify)"
        )
    if wanted("demo"):
        dm = sub.add_parser(
            "demo", help="the whole licensing life of an instance in under a minute (no setup)"
        )
        dm.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")
    if wanted("check-config"):
        sub.add_parser("check-config", help="validate the config file: OK, or one line per problem")
    if wanted("usage"):
        u = sub.add_parser(
            "usage", help="compute license consumption now, from the configured source"
        )
        u.add_argument("--json", action="store_true", help="machine-readable output")
        u.add_argument("--explain", action="store_true", help="each agent's seat and why")
    if wanted("register"):
        r = sub.add_parser("register", help="register this instance with SSM using an ID token")
        r.add_argument(
            "token",
            nargs="?",
            metavar="TOKEN",
            help="the ID token (- reads it from standard input); better: --token-file",
        )
        r.add_argument(
            "--token-file",
            metavar="FILE",
            help="read the ID token from FILE (- for standard input): it stays out of ps and "
            "history",
        )
        r.add_argument(
            "--force", action="store_true", help="register again even if already registered"
        )
    if wanted("deregister"):
        d = sub.add_parser(
            "deregister", help="deregister from SSM and wipe the local identity (even if offline)"
        )
        d.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    if wanted("renew"):
        n = sub.add_parser("renew", help="renew the ID certificate or the authorization now")
        n.add_argument("what", choices=["id", "auth"])
    if wanted("status"):
        st = sub.add_parser(
            "status", help="registration, authorization and usage, from the database"
        )
        how = st.add_mutually_exclusive_group()
        how.add_argument("--json", action="store_true", help="machine-readable output")
        how.add_argument(
            "--check",
            action="store_true",
            help="one monitoring-plugins line; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
        )
    if wanted("sync"):
        sub.add_parser(
            "sync", help="close the finished intervals and send every pending report now"
        )
    if wanted("admit"):
        ad = sub.add_parser(
            "admit", help="License Control: may N more seats of a tag be taken now?"
        )
        ad.add_argument(
            "--tag", metavar="TAG", help="the tag (default: the license type's standard seat)"
        )
        ad.add_argument(
            "--count", type=int, default=1, metavar="N", help="how many seats (default: 1)"
        )
        ad.add_argument("--json", action="store_true", help="machine-readable output")
    if wanted("doctor"):
        dr = sub.add_parser(
            "doctor", help="check everything the agent needs, one line per check, with the fix"
        )
        dr.add_argument("--json", action="store_true", help="machine-readable output")
        dr.add_argument(
            "--send-test-alert",
            action="store_true",
            help="also send one test line to the syslog target",
        )
    if wanted("support-bundle"):
        sb = sub.add_parser(
            "support-bundle",
            help="a .tar.gz for a support case: config (redacted), status, doctor, history, "
            "journal",
        )
        sb.add_argument(
            "--output",
            type=Path,
            metavar="FILE",
            help="where to write it (default: ccx-agent-support-HOST-TIME.tar.gz here)",
        )
    if wanted("install-files"):
        inst = sub.add_parser(
            "install-files", help="lay out the units, config example, man page and completions"
        )
        inst.add_argument(
            "--root",
            type=Path,
            default=Path("/"),
            metavar="DIR",
            help="install under DIR instead of / (a package build, a test)",
        )
    for names in _HEAVY_GROUPS:
        if only is None or only in names:
            # Help, or a mistyped command: their names only, their modules not imported.
            _add_heavy(sub, names, listed=only is None and (listed or command is not None))
    if wanted("simulate"):
        s = sub.add_parser("simulate", help="run a what-if scenario on a simulated clock")
        s.add_argument("scenario", type=Path, help="the scenario YAML file")
        s.add_argument("--json", action="store_true", help="machine-readable output")
        s.add_argument(
            "--state-dir",
            type=Path,
            metavar="DIR",
            help="keep the simulated database in DIR (created; refused if it holds one)",
        )
    top.commands = sorted(sub.choices)
    cli_help.finish(p)
    return p


#: The commands of :data:`HEAVY_COMMANDS` by the module that builds their parsers, in the
#: order they are registered.
_HEAVY_GROUPS = (("ssm",), ("report", "alerts", "features"), ("offline",))


def _add_heavy(sub: Any, names: tuple[str, ...], *, listed: bool) -> None:
    """Register the :data:`HEAVY_COMMANDS` of one module: its parsers, or (``listed``)
    only the names and help lines ``--help`` lists, without importing the module."""
    if listed:
        for name in names:
            sub.add_parser(name, help=cli_help.LISTED[name])
    elif names[0] == "ssm":
        from ccx_agent.simulator import cli as simulator_cli  # noqa: PLC0415

        simulator_cli.add_parser(sub)
    elif names[0] == "report":
        from ccx_agent.history import cli as history_cli  # noqa: PLC0415

        history_cli.add_parsers(sub)
    else:
        from ccx_agent.offline import cli as offline_cli  # noqa: PLC0415

        offline_cli.add_parser(sub)


def _parser_for(argv: Sequence[str] | None) -> argparse.ArgumentParser:
    """The parser for ``argv``. Without a command (``--help``, ``--version``) and with no
    word that names one of :data:`HEAVY_COMMANDS` (whose parsers alone would read the
    rest), their modules are not imported: the help and errors are the same."""
    words = tuple(sys.argv[1:] if argv is None else argv)
    return _parser_of(words)


@functools.lru_cache(maxsize=2)
def _parser_of(words: tuple[str, ...]) -> argparse.ArgumentParser:
    """Built once per command line: root's entry parses it before :func:`main` does
    (:func:`_as_state_dir_owner`), and building every sub-parser is most of a parse."""
    command = command_of(words)
    return parser(command, listed=command is None and not HEAVY_COMMANDS & set(words))


def _log_level(args: argparse.Namespace) -> str | None:
    """``--log-level``, else ``-v`` (debug), else None (the command's default)."""
    level: str | None = args.log_level
    if level is None and args.verbose:
        level = "debug"
    return level


#: How a command's function is called: with that function, the parsed line and the
#: config path.
Call = Callable[[Callable[..., int], argparse.Namespace, Path], int]

#: Every command but ``run`` and ``status --check`` (:func:`main` runs those first): the
#: module that runs it, its function there, and how it is called. The module is imported
#: when the command runs, never here: ``status`` must not load the schema that
#: ``register`` needs, nor any command the simulator.
DISPATCH: dict[str, tuple[str, str, Call]] = {
    "status": ("ccx_agent.cli.commands", "status", lambda f, a, p: f(p, a.json)),
    "demo": ("ccx_agent.cli.demo", "main", lambda f, a, p: f(keep=a.keep)),
    "check-config": ("ccx_agent.cli.commands", "check_config", lambda f, a, p: f(p)),
    "usage": (
        "ccx_agent.cli.commands",
        "usage",
        lambda f, a, p: f(p, a.json, explain=a.explain),
    ),
    "register": (
        "ccx_agent.cli.actions",
        "register",
        lambda f, a, p: f(p, a.token, a.token_file, a.force),
    ),
    "deregister": ("ccx_agent.cli.actions", "deregister", lambda f, a, p: f(p, a.yes)),
    "sync": ("ccx_agent.cli.actions", "sync", lambda f, a, p: f(p)),
    "admit": (
        "ccx_agent.cli.actions",
        "admit",
        lambda f, a, p: f(p, a.tag, a.count, a.json),
    ),
    "renew": ("ccx_agent.cli.commands", "renew", lambda f, a, p: f(p, a.what)),
    "doctor": (
        "ccx_agent.cli.doctor",
        "main",
        lambda f, a, p: f(p, as_json=a.json, send_test_alert=a.send_test_alert),
    ),
    "support-bundle": ("ccx_agent.cli.bundle", "main", lambda f, a, p: f(p, a.output)),
    "install-files": ("ccx_agent.cli.install_files", "main", lambda f, a, p: f(a.root)),
    "simulate": (
        "ccx_agent.cli.commands",
        "simulate",
        lambda f, a, p: f(a.scenario, a.json, state_dir=a.state_dir),
    ),
    # The HEAVY_COMMANDS, run by the modules that registered their parsers.
    "ssm": ("ccx_agent.simulator.cli", "run", lambda f, a, p: f(a)),
    "offline": ("ccx_agent.offline.cli", "run", lambda f, a, p: f(a, p)),
    "report": (
        "ccx_agent.history.cli",
        "report",
        lambda f, a, p: f(
            p, start=a.start, end=a.end, by=a.by, tags=a.tag, fmt=a.format, output=a.output
        ),
    ),
    "alerts": (
        "ccx_agent.history.cli",
        "alerts",
        lambda f, a, p: f(p, since=a.since, as_json=a.json),
    ),
    "features": (
        "ccx_agent.history.cli",
        "features_command",
        lambda f, a, p: f(a.license_type, a.json),
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser_for(argv).parse_args(argv)
    path: Path = args.config or default_path()
    level = _log_level(args)
    if args.command == "run":
        from ccx_agent.daemon import scheduler as daemon  # noqa: PLC0415 - the scheduler only for the daemon

        return daemon.main(path, log_level=level or "info")
    if args.command == "status" and args.check:
        # Run every minute: the least it can. It logs nothing, so no logging set-up either.
        from ccx_agent.cli import check  # noqa: PLC0415

        earlysignals.release_hangups()  # after the imports, as below
        return check.main(path, datetime.now(UTC))
    # A command's log lines go to stderr, redacted, so that its output (a --json document)
    # stays clean: without this, structlog's default printer would put its warnings on
    # stdout, secrets and all. Warnings and worse unless -v/--log-level.
    from ccx_agent import logs  # noqa: PLC0415

    module, name, call = DISPATCH[args.command]  # argparse enforces the choices
    # The command's module now (the daemon above never imports these).
    function: Callable[..., int] = getattr(importlib.import_module(module), name)
    if args.command not in NO_SCHEMA_COMMANDS:
        # Its function would import the schema (pydantic builds every model) after the
        # release below: import it while the signals are still held.
        importlib.import_module("ccx_agent.config.schema")
    # Only the daemon makes a hang-up a reload: the signals get their default meaning back,
    # and one that came meanwhile is delivered now. Not before the imports: a Ctrl-C
    # raised in the middle of them can be swallowed where a C extension calls back into
    # Python (pydantic-core building a model prints "Exception ignored" and goes on), and
    # the command then did all its work after the operator's Ctrl-C.
    earlysignals.release_hangups()
    logs.configure(stream=logs.STDERR, level=level or "warning")
    return call(function, args, path)


#: Commands that do not validate the config with the schema: those that read the daemon's
#: record of it (and validate only without one, read-only), and those that need no config.
NO_SCHEMA_COMMANDS = frozenset(
    {"status", "report", "alerts", "features", "install-files", "ssm", "simulate"}
)
#: Commands that open the state directory; run as root in another user's directory they
#: become that user first (:func:`ccx_agent.store.statedir.become_owner`).
STATE_COMMANDS = frozenset(
    {
        "run",
        "register",
        "deregister",
        "renew",
        "status",
        "report",
        "alerts",
        "doctor",
        "sync",
        "admit",
        "offline",
    }
)
#: ... and of those, the ones that say nothing of it on stderr (``status`` only looks; the
#: daemon's log names its user). ``report`` says it: it may write a file.
QUIET_COMMANDS = frozenset({"status", "alerts", "run", "admit"})
#: ... and of those, the ones that read the config from the daemon's record of it when
#: the file is the one the daemon validated (:mod:`ccx_agent.checkconfig`): they only
#: look, and read few keys.
RECORD_COMMANDS = frozenset({"status", "report", "alerts"})


def _as_state_dir_owner(argv: Sequence[str] | None) -> None:
    """Root working in the service user's state directory works as that user, so that no
    file it makes (database, -wal/-shm, keys) is root's: a root-owned key would let the
    daemon start, say READY and fail every report. Done here, at the process's entry, not
    in the commands, which tests also call in process."""
    if os.geteuid() != 0:
        return
    try:
        # Quietly: main() parses again and prints the help, or what is wrong, once.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = _parser_for(argv).parse_args(argv)
    except SystemExit:
        return
    if args.command not in STATE_COMMANDS:
        return
    from ccx_agent.store.statedir import (  # noqa: PLC0415 - root only
        REACH_FIX,
        become_owner,
        owner_cannot_run,
        will_become_owner,
    )

    path = args.config or default_path()
    state_dir: Path | None = None
    if args.command in RECORD_COMMANDS:
        from ccx_agent.checkconfig import recorded_state_dir  # noqa: PLC0415

        # The state directory the daemon recorded for this very file, without the schema.
        state_dir = recorded_state_dir(path)
        if state_dir is not None and args.command == "status" and args.check:
            become_owner(state_dir)
            return
    if state_dir is None:
        from ccx_agent.config.schema import load as load_config  # noqa: PLC0415
        from ccx_agent.config.yamldoc import DocumentError  # noqa: PLC0415

        try:
            state_dir = load_config(path).state_dir
        except DocumentError:
            return  # the command says what is wrong with it
    unable = owner_cannot_run(state_dir)
    if unable is not None:
        # Dropping now would fail at the next import with a traceback. The doctor stays
        # root and reports it (its daemon check); every other command stops here.
        if args.command == "doctor":
            return
        raise AgentError(
            f"{unable[1]}: the daemon cannot run as {unable[0]}, and root works in "
            f"{state_dir} as its owner; {REACH_FIX}"
        )
    if will_become_owner(state_dir):
        from ccx_agent import userfiles  # noqa: PLC0415 - root only

        # The files the command line names, opened with the rights of whoever typed it
        # (/root/token, a root-only /media/usb), before those rights are given up.
        inputs, outputs = named_files(args)
        userfiles.prepare(inputs, outputs)
        userfiles.fork_for_outputs()
    owner = become_owner(state_dir)
    if owner is not None and args.command not in QUIET_COMMANDS:
        print(
            f"note: working as {owner}, the owner of {state_dir}, so that every file "
            "made there stays usable by the daemon",
            file=sys.stderr,
        )


def named_files(args: argparse.Namespace) -> tuple[list[Path | str], list[tuple[Path | str, int]]]:
    """The files a command reads (token, answer file) and writes (``--output``, with a
    new file's mode) as its command line names them; standard input (``-``) is none."""
    inputs: list[Path | str] = []
    outputs: list[tuple[Path | str, int]] = []
    token_file = getattr(args, "token_file", None)
    if token_file is not None and str(token_file) != "-":
        inputs.append(token_file)
    if args.command == "offline" and args.offline_command == "import":
        inputs.append(args.response)
    output = getattr(args, "output", None)
    if output is not None:
        outputs.append((output, 0o644 if args.command == "report" else 0o600))
    return inputs, outputs


def _database_error() -> type[sqlite3.Error]:
    """``sqlite3.Error``, looked up only when an exception is being matched: ``--help``
    and ``--version`` do not import sqlite3."""
    import sqlite3  # noqa: PLC0415

    return sqlite3.Error


def entry() -> None:
    """The console script: never a traceback for what an operator can meet.

    A closed pipe (``ccx-agent usage --json | head``) is not an error; Ctrl-C is one line
    and 130; a fault of the host (a full disk, a read-only file system, a permission) is
    one line and 1. Database transactions cut short by either were rolled back.
    """
    try:
        _as_state_dir_owner(None)
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except KeyboardInterrupt:
        print("\nccx-agent: interrupted; nothing was left half-done", file=sys.stderr)
        code = EX_INTERRUPTED
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_status
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        from ccx_agent.userfiles import reason  # noqa: PLC0415 - only on an error

        print(f"error: {where}{reason(exc)}", file=sys.stderr)
        code = EX_FAILED
    except _database_error() as exc:
        from ccx_agent.store.db import damaged, is_damage  # noqa: PLC0415 - only on an error

        if is_damage(exc):  # garbled pages found by a read: the one line for damage
            print(f"error: {damaged(exc)}", file=sys.stderr)
        else:
            print(f"error: the state database: {exc}", file=sys.stderr)
        code = EX_FAILED
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
