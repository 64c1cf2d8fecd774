"""Generate the man page ``ccx-agent(8)`` and the bash and zsh completions from the CLI's
own parser, so they can never say something ``--help`` does not; and, through
``tools/gen_config.py``, the example config and the key tables of ``docs/config.md`` from
the config schema.

    python tools/gen_docs.py          # write share/man/ccx-agent.8, share/completion/*,
                                      # config/ccx-agent.yaml, docs/config.md
    python tools/gen_docs.py --check  # exit 1 if a committed file is out of date

argparse-manpage and shtab are build-time tools (the ``test`` extra): the generated files
are committed, shipped in the wheel as package data, and laid out by
``ccx-agent install-files``. ``tests/test_gen_docs.py`` fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import shtab
from argparse_manpage.manpage import Manpage

from ccx_agent import __version__
from ccx_agent.cli import helptext as cli_help
from ccx_agent.cli import main as cli
from ccx_agent.errors import EX_FAILED

# tools/ is not a package: the sibling script is imported from its directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_config

ROOT = Path(__file__).resolve().parent.parent
#: The date the man page carries: fixed, so that the file only changes with the parser
#: (argparse-manpage would put today's date in it).
DATE = "2026-11-30"

DESCRIPTION = (
    "ccx-agent is the Smart Licensing agent of a Cisco Unified Contact Center Express "
    "product instance: it counts the licenses in use, keeps the compliance, evaluation, "
    "registration and authorization state in one SQLite database, reports to SSM over a "
    "signed HTTPS protocol, and raises the UCCX alert lines on syslog. 'ccx-agent run' "
    "is the daemon (the systemd service ccx-agent.service, or ccx-agent@NAME.service for "
    "/etc/ccx-agent/NAME.yaml); the other commands register, inspect, troubleshoot "
    "('doctor', 'support-bundle') and report. The documentation is in docs/ of the source "
    "(install.md, config.md, doctor.md, daemon.md)."
)


def _roff(text: str) -> str:
    """Plain text as roff: a backslash and a minus are escaped, a leading dot guarded."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _tp(tag: str, text: str) -> str:
    return f".TP\n{tag}\n{_roff(text)}\n"


def _exit_status() -> str:
    """Every command's exit statuses (what ``COMMAND --help`` says), as a section: the
    statuses every command shares, then what each command adds."""
    always = dict(cli_help._ALWAYS)
    common = {
        0: "success",
        EX_FAILED: "the action failed (the reason is said on standard error)",
        **dict([cli_help._CONFIG]),
        **always,
    }
    out = "".join(_tp(f"\\fB{code}\\fR", meaning) for code, meaning in sorted(common.items()))
    out += ".PP\nEach command's own meanings (also in 'ccx\\-agent COMMAND \\-\\-help'):\n"
    for name, (_, codes) in cli_help.COMMANDS.items():
        said = "; ".join(f"{code} {meaning}" for code, meaning in codes if code not in always)
        out += _tp(f"\\fB{_roff(name)}\\fR", said)
    return out


_FILES = (
    ("/etc/ccx-agent/ccx-agent.yaml", "the config (another with -c PATH or $CCX_AGENT_CONFIG)"),
    (
        "/etc/ccx-agent/NAME.yaml",
        "the config of the instance ccx-agent@NAME.service, when one host runs several",
    ),
    (
        "/var/lib/ccx-agent/",
        "the state directory (state_dir): owned by the service user, mode 0700; every command "
        "run as root works as its owner",
    ),
    ("/var/lib/ccx-agent/ccx-agent.db", "the SQLite database: the whole licensing state"),
    (
        "/var/lib/ccx-agent/keys/",
        "the instance's private keys (0600); copy them with the database in a backup",
    ),
    ("/var/lib/ccx-agent/ccx-agent.lock", "held by the running daemon: one per state directory"),
    (
        "/lib/systemd/system/ccx-agent.service, ccx-agent@.service",
        "the units ('ccx-agent install-files' lays them out with this page)",
    ),
)

_ENVIRONMENT = (
    ("CCX_AGENT_CONFIG", "the config file, when -c PATH is not given"),
    (
        "CREDENTIALS_DIRECTORY",
        "set by systemd's LoadCredential=: the UCCX and Finesse passwords (uccx-password, "
        "finesse-password)",
    ),
)

_EXAMPLES = (
    (
        "Check the config, then everything the agent needs:",
        "ccx-agent check-config\nccx-agent doctor",
    ),
    (
        "Register with an ID token kept in a file (never on the command line):",
        "ccx-agent register --token-file /root/id-token",
    ),
    ("The state, for a person and for a script:", "ccx-agent status\nccx-agent status --json"),
    ("Last month's usage, by day:", "ccx-agent report --by day --from 2026-10-01 --to 2026-11-01"),
    (
        "An air-gapped instance: a request file out, SSM's answer in:",
        "ccx-agent offline export --output /media/usb/request.json\n"
        "ccx-agent offline import /media/usb/response.json",
    ),
    ("Everything a support case needs, secrets redacted:", "ccx-agent support-bundle"),
)


def _sections() -> list[tuple[str, str]]:
    env = "".join(_tp(f"\\fB{name}\\fR", text) for name, text in _ENVIRONMENT)
    files = "".join(_tp(f"\\fI{_roff(path)}\\fR", text) for path, text in _FILES)
    examples = "".join(
        f".PP\n{_roff(what)}\n.PP\n.nf\n.RS\n"
        + "\n".join(_roff(line) for line in lines.split("\n"))
        + "\n.RE\n.fi\n"
        for what, lines in _EXAMPLES
    )
    see_also = (
        "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsystemd.exec\\fR(5); the "
        "documentation in docs/ of the source: install.md, config.md, doctor.md, daemon.md, "
        "offline.md\n"
    )
    return [
        ("exit status", _exit_status()),
        ("environment", env),
        ("files", files),
        ("examples", examples),
        ("see also", see_also),
    ]


def man_page() -> str:
    parser = cli.parser()
    # The exit statuses are a section of their own (EXIT STATUS), not a COMMENTS dump of
    # the --help epilog.
    parser.epilog = None
    page = Manpage(
        parser,
        {
            "date": DATE,
            "project_name": "ccx-agent",
            "version": __version__,
            "manual_title": "System Administration",
            "manual_section": 8,
            "description": "Smart Licensing agent for Cisco UCCX",
            "long_description": DESCRIPTION,
        },
    )
    for heading, content in _sections():
        page.add_section(heading, ">", content.rstrip("\n"))
    return str(page)


#: Options whose value is a file or a directory, whatever their type says.
FILE_OPTIONS = frozenset({"--config", "--output", "--token-file"})
DIRECTORY_OPTIONS = frozenset({"--root", "--state-dir"})


def _complete_paths(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every option or argument that names a file completes file names (a directory:
    directory names), not only ``-c PATH``: ``--output``, ``--token-file``, a scenario, a
    response file."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _complete_paths(sub)
            continue
        if getattr(action, "complete", None) is not None:
            continue
        options = set(action.option_strings)
        if options & DIRECTORY_OPTIONS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif options & FILE_OPTIONS or action.type is Path:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return parser


def completion(shell: str) -> str:
    return shtab.complete(_complete_paths(cli.parser()), shell=shell)


def outputs() -> dict[Path, str]:
    return {
        ROOT / "share" / "man" / "ccx-agent.8": man_page(),
        ROOT / "share" / "completion" / "ccx-agent.bash": completion("bash"),
        ROOT / "share" / "completion" / "_ccx-agent": completion("zsh"),
        # The example config and the key tables of docs/config.md, from the schema.
        **gen_config.outputs(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only say whether the files are current")
    args = p.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        for path in stale:
            print(
                f"{path.relative_to(ROOT)} is out of date: run python tools/gen_docs.py",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
