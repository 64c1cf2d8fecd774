"""The man page and the shell completions are generated from the parser
(tools/gen_docs.py) and committed: they must be current, and say every command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "share" / "man" / "ccx-agent.8"


def test_the_committed_files_are_what_the_parser_generates() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_command_is_in_the_man_page_and_the_completions() -> None:
    man = MAN.read_text()
    bash = (ROOT / "share" / "completion" / "ccx-agent.bash").read_text()
    zsh = (ROOT / "share" / "completion" / "_ccx-agent").read_text()
    assert man.startswith('.TH CCX\\-AGENT "8"')
    for command in COMMANDS:
        assert f"'ccx\\-agent {command.replace('-', chr(92) + '-')}'" in man, command
        assert command in bash and command in zsh
    assert "--token-file" in bash and "--send-test-alert" in zsh
    assert "_shtab_compgen_files" in bash  # -c PATH completes file names


def test_the_man_page_renders_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed")
    done = subprocess.run(
        [groff, "-man", "-ww", "-z", str(MAN)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
