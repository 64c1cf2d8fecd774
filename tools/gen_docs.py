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

from ccx_agent import __version__, cli

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


def man_page() -> str:
    parser = cli.parser()
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
    return str(page)


def completion(shell: str) -> str:
    return shtab.complete(cli.parser(), shell=shell)


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
