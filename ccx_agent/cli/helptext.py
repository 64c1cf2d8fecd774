"""What ``--help`` says of each command (what it does, and its exit statuses), and the
options every command takes (``-c/--config``, ``-v/--verbose``, ``--log-level``).

Kept apart from :mod:`ccx_agent.cli.main`, which only builds the parser and dispatches, so
that the man page and the shell completions (generated from the parser:
``tools/gen_docs.py``) and ``--help`` say the same thing.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ccx_agent.errors import EX_CONFIG, EX_FAILED, EX_INTERRUPTED, EX_USAGE

#: shtab's ``FILE`` completion: what the generated completions offer for a path.
_FILES = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

#: Said by every command's ``--help`` after its own exit statuses.
_ALWAYS = (
    (EX_USAGE, "bad command-line arguments"),
    (EX_INTERRUPTED, "interrupted (Ctrl-C); nothing was left half-done"),
)
_CONFIG = (EX_CONFIG, "the config file is missing or invalid (one line per problem)")

#: command -> (description, [(exit status, meaning)]).
COMMANDS: dict[str, tuple[str, list[tuple[int, str]]]] = {
    "run": (
        "Run the licensing daemon in the foreground (systemd Type=notify): sample, report, "
        "renew, send alerts. SIGTERM stops it cleanly, SIGHUP re-reads the config.",
        [
            (0, "stopped cleanly (SIGTERM, SIGINT)"),
            (
                EX_FAILED,
                "could not start (another daemon runs on the state directory, an I/O error)",
            ),
            (EX_CONFIG, "a bad config or an unusable state directory: systemd does not restart it"),
        ],
    ),
    "demo": (
        "The whole licensing life of an instance in under a minute, against the simulator, "
        "with the real daemon. Needs no setup.",
        [(0, "the demo ran"), (EX_FAILED, "a step failed")],
    ),
    "check-config": (
        "Validate the config file and what running it needs (the files it names, the state "
        "directory). Prints OK, or one PATH:LINE: key: message line per problem.",
        [(0, "OK (warnings on standard error)"), _CONFIG],
    ),
    "usage": (
        "Read the configured source once and print the seats in use per tag. Changes nothing.",
        [(0, "read"), (EX_FAILED, "the source could not be read"), _CONFIG],
    ),
    "register": (
        "Register this instance with SSM using an ID token from the virtual account. Give the "
        "token with --token-file FILE, or - to read it from standard input, so that it stays "
        "out of ps and the shell history (a TOKEN argument works too). Never logged.",
        [
            (0, "registered"),
            (
                EX_FAILED,
                "refused (the reason is said), SSM unreachable, already registered, or the "
                "token missing, unreadable or empty",
            ),
            _CONFIG,
        ],
    ),
    "deregister": (
        "Deregister from SSM and wipe the local identity (certificate and key), even when SSM "
        "cannot be reached: then SSM still counts the licences, and how to release them is "
        "said (an air-gapped instance deregisters by file: 'offline export --deregister'). "
        "Asks for confirmation on a terminal unless --yes.",
        [
            (0, "deregistered"),
            (EX_FAILED, "not registered, or not confirmed"),
            (3, "wiped here, SSM not told: it still counts the licences (said how to free them)"),
            _CONFIG,
        ],
    ),
    "renew": (
        "Renew the ID certificate (id) or the authorization (auth) now, instead of waiting "
        "for the timer.",
        [(0, "renewed"), (EX_FAILED, "not registered, refused or SSM unreachable"), _CONFIG],
    ),
    "status": (
        "Registration, authorization, enforcement, evaluation and usage per tag, read from "
        "the database (works whether the daemon runs or not).",
        [
            (0, "shown (with --check: OK)"),
            (EX_FAILED, "no state database (with --check: WARNING)"),
            (2, "with --check: CRITICAL"),
            (3, "with --check: UNKNOWN (the config or the database cannot be read)"),
            _CONFIG,
        ],
    ),
    "sync": (
        "Close the finished report intervals and send every pending report now, then say "
        "how many were delivered (like subscription-manager refresh). Safe beside a running "
        "daemon: nothing is counted or sent twice.",
        [
            (0, "every pending report was delivered (or there was none)"),
            (
                EX_FAILED,
                "reports are still pending (SSM unreachable or refusing: the reason is said)",
            ),
            _CONFIG,
        ],
    ),
    "admit": (
        "License Control: may N more seats of TAG be taken now? From the last sample and the "
        "last known entitlement; with license.allow_overage: true the answer is always yes "
        "(and by how much it would exceed). For provisioning scripts that add agents.",
        [(0, "yes, they fit"), (EX_FAILED, "no: the entitlement would be exceeded"), _CONFIG],
    ),
    "doctor": (
        "Check everything the agent needs, in order, never stopping at the first failure: "
        "config, files, database, dns, tcp, tls, clock, ssm, source, syslog, daemon, timers. "
        "One 'PASS|WARN|FAIL|SKIP  CHECK  FINDING' line each, and a fix for WARN and FAIL.",
        [(0, "nothing FAILed (warnings allowed)"), (EX_FAILED, "a check FAILed")],
    ),
    "support-bundle": (
        "Write a .tar.gz for a support case: the config with every secret redacted, status, "
        "doctor, 7 days of report and alerts, the daemon's journal, versions. Mode 0600.",
        [(0, "written"), (EX_FAILED, "the file could not be written")],
    ),
    "install-files": (
        "Lay out the files the wheel carries (systemd units, sysusers and tmpfiles entries, "
        "the example config, the man page, shell completions) at their FHS paths under "
        "--root; never overwrites an edited config.",
        [(0, "installed (each file said)"), (EX_FAILED, "a file could not be written")],
    ),
    "ssm": (
        "The SSM simulator: a lab SSM on loopback speaking the agent's protocol "
        "(serve, tokens, licenses, show).",
        [(0, "done"), (EX_FAILED, "failed (the reason is said)")],
    ),
    "offline": (
        "Air-gapped sites (transport.mode: offline): 'export' writes the signed requests "
        "the agent would have sent (registration, pending reports, due renewals; with "
        "--deregister, the deregistration) to one file; 'import' checks SSM's answer file "
        "exactly as online and applies it.",
        [
            (0, "written, or applied (each answer said)"),
            (EX_FAILED, "a file refused (tampered, stale, for another instance) or unwritable"),
            _CONFIG,
        ],
    ),
    "report": (
        "The license consumption report from the database: usage per period and tag, with "
        "the compliance state; text, CSV, JSON or HTML.",
        [
            (0, "written"),
            (EX_FAILED, "no state database, or the output cannot be written"),
            _CONFIG,
        ],
    ),
    "alerts": (
        "The alert log: every alert raised since --since (7 days), oldest first, and "
        "whether it was delivered.",
        [(0, "shown"), (EX_FAILED, "no state database"), _CONFIG],
    ),
    "features": (
        "The license feature list: each license type's tags and premium features.",
        [(0, "shown")],
    ),
    "simulate": (
        "Run a what-if scenario on a simulated clock with the real licensing code.",
        [
            (0, "simulated"),
            (EX_FAILED, "the state directory cannot be used"),
            (EX_CONFIG, "a bad scenario file"),
        ],
    ),
}


#: The one line ``--help`` lists for each command whose parser its own module builds
#: (:data:`ccx_agent.cli.main.HEAVY_COMMANDS`), in the order they are registered: those
#: modules use these, and ``ccx-agent --help`` lists them without importing those modules.
LISTED = {
    "ssm": "run or administer the SSM simulator (a lab SSM on loopback)",
    "report": "the license consumption report: usage per period and tag, from the database",
    "alerts": "the alert log: every alert raised, oldest first",
    "features": "the license feature list: each type's tags and features",
    "offline": "air-gapped sites: export requests to a file, import SSM's answers",
}


def epilog(codes: list[tuple[int, str]]) -> str:
    lines = ["exit status:"]
    every = sorted({code: meaning for code, meaning in [*codes, *_ALWAYS]}.items())
    lines += [f"  {code:<3} {meaning}" for code, meaning in every]
    return "\n".join(lines)


def add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-c/--config``, ``-v/--verbose`` and ``--log-level``. On the top parser they have
    their defaults; on a command's they are SUPPRESSed unless given, so that an option
    given before the command is not undone by the command's own default."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    config = parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default(None),
        metavar="PATH",
        help="the YAML config file (default: $CCX_AGENT_CONFIG or /etc/ccx-agent/ccx-agent.yaml)",
    )
    # The shells complete a file name here (shtab's FILE, without importing shtab).
    config.complete = _FILES  # type: ignore[attr-defined]
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="log more (the daemon: debug lines; a command: its log lines on standard error)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default(None),
        help="the log level (default: info for run; warnings only for a command)",
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases appear twice
                found.append(sub)
                found.extend(_subparsers(sub))
    return found


def finish(parser: argparse.ArgumentParser) -> None:
    """Give every command (nested ones too) the common options, and its description and
    exit statuses in ``--help``."""
    add_common(parser, top=True)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        epilog([(0, "success"), (EX_FAILED, "the action failed (the reason is said)"), _CONFIG])
        + "\n\nRun 'ccx-agent COMMAND --help' for what each command does and its exit statuses."
    )
    for sub in _subparsers(parser):
        add_common(sub, top=False)
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        name = sub.prog.split()[1] if len(sub.prog.split()) > 1 else sub.prog
        described = COMMANDS.get(name)
        if described is None:
            continue
        text, codes = described
        if sub.prog.split()[-1] == name:  # the command itself, not a nested one
            sub.description = textwrap.fill(text, 79)
        sub.epilog = epilog(codes)
