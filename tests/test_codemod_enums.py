"""tools/codemod_enums.py and what it guarantees (issue 17): no alert mnemonic and no interval
status is written as a string literal in ccx_agent/, and the script that converts them can
be re-run on a merged tree to finish the job.

The scripts run as real processes on real copies of the package in a temporary directory.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import sys
import tokenize
from collections import Counter
from pathlib import Path

import pytest

from ccx_agent.licensing.alerts import Mnemonic
from ccx_agent.licensing.interval import IntervalStatus

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "codemod_enums.py"
RUFF = Path(sys.executable).parent / "ruff"
VALUES = {m.value: f"Mnemonic.{m.name}" for m in Mnemonic} | {
    s.value: f"IntervalStatus.{s.name}" for s in IntervalStatus
}


def _enum_bodies(tree: ast.AST) -> list[range]:
    """Line ranges of classes derived from an ``*Enum``: their members may share a spelling
    with an alert (``Registration.REGISTRATION_EXPIRED`` is a state, not an alert)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            ast.unparse(b).endswith("Enum") for b in node.bases
        ):
            out.append(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


def literals_left(package: Path) -> list[str]:
    """Every string token in ``package`` spelt exactly like a member: grep, by tokens, so
    that it does not share the codemod's way of reading the source."""
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        skip = _enum_bodies(ast.parse(text))
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type != tokenize.STRING or any(tok.start[0] in r for r in skip):
                continue
            try:
                value = ast.literal_eval(tok.string)
            except ValueError:
                continue  # an f-string: its text is never a whole name
            line = text.splitlines()[tok.start[0] - 1]
            if value in VALUES and not line.rstrip().endswith("# codemod: keep"):
                found.append(f"{path.relative_to(package.parent)}:{tok.start[0]}: {tok.string}")
    return found


def codemod(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_mnemonic_or_interval_status_is_a_string_literal_in_the_package() -> None:
    assert literals_left(ROOT / "ccx_agent") == []


def test_the_grep_sees_a_literal_and_ignores_enum_members_and_f_strings(tmp_path: Path) -> None:
    pkg = tmp_path / "ccx_agent"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "from enum import StrEnum\n"
        "class Registration(StrEnum):\n"
        '    REGISTRATION_EXPIRED = "REGISTRATION_EXPIRED"\n'
        'A = f"REGISTRATION_EXPIRED{1}"\n'
        'B = "LOCAL"  # codemod: keep\n'
        "C = ('AGENT_READY')\n"
        'D = {"x": "NO_DATA"}\n'
    )
    assert literals_left(pkg) == ["ccx_agent/m.py:6: 'AGENT_READY'", 'ccx_agent/m.py:7: "NO_DATA"']


def test_the_committed_tree_needs_no_conversion() -> None:
    done = codemod(ROOT, "--check")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def _package_copy(tmp_path: Path) -> Path:
    """A copy of the package (and the ruff settings) to convert."""
    root = tmp_path / "repo"
    shutil.copytree(
        ROOT / "ccx_agent", root / "ccx_agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


SAMPLE = '''"""A module written before the enums: AGENT_READY in a docstring stays."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

X: Literal["COMM_FAILED"] = "COMM_FAILED"
KEPT = "LOCAL"  # codemod: keep
TEXT = f"NO_DATA{X}"
NAMES = {"é": "AGENT_READY", "ü": ("SYSTEM_IN_OOC_STATE")}


class Registration(StrEnum):
    REGISTRATION_EXPIRED = "REGISTRATION_EXPIRED"


def status(reported: bool) -> str:
    return "REPORTED" if reported else "NO_DATA"
'''

LAZY = '''"""Imports the alerts only when asked to: it must stay lazy."""

from __future__ import annotations


def ready() -> object:
    from ccx_agent.licensing.alerts import Alert

    return Alert("AGENT_READY", "up")
'''


def test_the_codemod_converts_adds_the_imports_and_is_idempotent(tmp_path: Path) -> None:
    root = _package_copy(tmp_path)
    (root / "ccx_agent" / "sample.py").write_text(SAMPLE, encoding="utf-8")
    (root / "ccx_agent" / "lazy.py").write_text(LAZY, encoding="utf-8")

    check = codemod(root, "--check")
    assert check.returncode == 1
    assert check.stdout.splitlines() == [
        "ccx_agent/lazy.py:9: 'AGENT_READY' -> Mnemonic.AGENT_READY",
        "ccx_agent/sample.py:8: 'COMM_FAILED' -> Mnemonic.COMM_FAILED",
        "ccx_agent/sample.py:11: 'AGENT_READY' -> Mnemonic.AGENT_READY",
        "ccx_agent/sample.py:11: 'SYSTEM_IN_OOC_STATE' -> Mnemonic.SYSTEM_IN_OOC_STATE",
        "ccx_agent/sample.py:19: 'REPORTED' -> IntervalStatus.REPORTED",
        "ccx_agent/sample.py:19: 'NO_DATA' -> IntervalStatus.NO_DATA",
    ]
    assert (root / "ccx_agent" / "sample.py").read_text(encoding="utf-8") == SAMPLE

    done = codemod(root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("codemod_enums: 2 file(s) converted\n")
    sample = (root / "ccx_agent" / "sample.py").read_text(encoding="utf-8")
    lazy = (root / "ccx_agent" / "lazy.py").read_text(encoding="utf-8")
    assert sample == SAMPLE.replace(
        "from typing import Literal\n",
        "from typing import Literal\n\n"
        "from ccx_agent.licensing.alerts import Mnemonic\n"
        "from ccx_agent.licensing.interval import IntervalStatus\n",
    ).replace('= "COMM_FAILED"', "= Mnemonic.COMM_FAILED").replace(
        '{"é": "AGENT_READY", "ü": ("SYSTEM_IN_OOC_STATE")}',
        '{"é": Mnemonic.AGENT_READY, "ü": (Mnemonic.SYSTEM_IN_OOC_STATE)}',
    ).replace(
        '"REPORTED" if reported else "NO_DATA"',
        "IntervalStatus.REPORTED if reported else IntervalStatus.NO_DATA",
    )
    assert lazy == LAZY.replace("import Alert\n", "import Alert, Mnemonic\n").replace(
        'Alert("AGENT_READY"', "Alert(Mnemonic.AGENT_READY"
    )

    # What it wrote runs, and means what the strings meant.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ccx_agent import sample, lazy; "
            "from ccx_agent.licensing.alerts import Mnemonic; "
            "print(repr(sample.NAMES['é']), sample.status(False) == 'NO_DATA', "
            "lazy.ready().mnemonic is Mnemonic.AGENT_READY, sample.KEPT, sample.TEXT)",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (
        probe.stdout == "<Mnemonic.AGENT_READY: 'AGENT_READY'> True True LOCAL NO_DATACOMM_FAILED\n"
    )
    again = codemod(root)
    assert (again.returncode, again.stdout) == (0, "codemod_enums: 0 file(s) converted\n")
    assert (root / "ccx_agent" / "sample.py").read_text(encoding="utf-8") == sample
    assert codemod(root, "--check").returncode == 0


def _unconvert(text: str) -> str:
    """The module as a branch written before the enums has it: literals, no import."""
    text = re.sub(r"\b(?:Mnemonic|IntervalStatus)\.([A-Z_]+)\b", r'"\1"', text)
    body = [ln for ln in text.splitlines() if "import" not in ln and ln.strip() != "Mnemonic,"]
    if any(re.search(r"\bMnemonic\b", ln) for ln in body):
        return text  # still names the class (an annotation): keeps its import
    alerts = r"^(from ccx_agent\.licensing\.alerts import .*)"
    text = re.sub(r"^from ccx_agent\.licensing\.alerts import Mnemonic\n", "", text, flags=re.M)
    text = re.sub(r"^    Mnemonic,\n", "", text, flags=re.M)
    text = re.sub(alerts + r"\bMnemonic, ", r"\1", text, flags=re.M)
    return re.sub(alerts + r", Mnemonic$", r"\1", text, flags=re.M)


@pytest.mark.skipif(not RUFF.exists(), reason="needs ruff next to the interpreter (the test extra)")
def test_the_codemod_finishes_a_tree_merged_from_branches_without_the_enums(tmp_path: Path) -> None:
    """The lead's case: every use of the enums in the package turned back into strings (and
    the imports gone), as a branch started before them has it. One run must bring back the
    very files of the committed tree, imports included."""
    root = _package_copy(tmp_path)
    committed = {}
    for path in sorted((root / "ccx_agent").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in ("ccx_agent/licensing/alerts.py",):
            continue  # the definition, and its catalogue keyed by members
        text = path.read_text(encoding="utf-8")
        if "Mnemonic." in text or "IntervalStatus." in text:
            committed[rel] = text
            path.write_text(_unconvert(text), encoding="utf-8")
    assert len(committed) >= 8, sorted(committed)
    assert len(literals_left(root / "ccx_agent")) > 60

    done = codemod(root)
    assert done.returncode == 0, done.stderr
    assert literals_left(root / "ccx_agent") == []
    for rel, text in committed.items():
        got = (root / rel).read_text(encoding="utf-8")
        assert Counter(re.findall(r"\w+\.\w+", got)) == Counter(re.findall(r"\w+\.\w+", text)), rel
        assert got == text, rel
    lint = subprocess.run(
        [str(RUFF), "check", "--quiet", "ccx_agent"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_an_alert_a_merged_branch_put_in_the_catalogue_becomes_a_member(tmp_path: Path) -> None:
    """A branch that added an alert wrote its key as a string: the codemod makes it a member
    in the catalogue's order (the enum, the catalogue and the docs keep one order)."""
    root = _package_copy(tmp_path)
    alerts = root / "ccx_agent" / "licensing" / "alerts.py"
    text = alerts.read_text(encoding="utf-8")
    text = text.replace(
        "CATALOGUE: dict[Mnemonic, AlertSpec] = {\n",
        'CATALOGUE: dict[Mnemonic, AlertSpec] = {\n    "AGENT_ZERO": AlertSpec(6, "AGENT", "Z."),\n',
    ).replace(
        "    Mnemonic.AGENT_INIT_FAILED: AlertSpec(\n",
        '    "AGENT_RELOADED": AlertSpec(6, "AGENT", "R."),\n'
        '    "AGENT_RELOAD_FAILED": AlertSpec(3, "AGENT", "F."),\n'
        "    Mnemonic.AGENT_INIT_FAILED: AlertSpec(\n",
    )
    alerts.write_text(text, encoding="utf-8")
    check = codemod(root, "--check")
    assert check.returncode == 1
    assert check.stdout.splitlines()[:3] == [
        f"ccx_agent/licensing/alerts.py: new member Mnemonic.{name} (a key of CATALOGUE)"
        for name in ("AGENT_ZERO", "AGENT_RELOADED", "AGENT_RELOAD_FAILED")
    ]
    assert codemod(root).returncode == 0
    assert codemod(root, "--check").returncode == 0
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ccx_agent.licensing.alerts import CATALOGUE, Mnemonic; "
            "assert list(CATALOGUE) == list(Mnemonic); "
            "assert all(type(k) is Mnemonic for k in CATALOGUE); "
            "print(' '.join(m.value for m in list(Mnemonic)[:5]))",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (probe.stdout, probe.stderr) == (
        "AGENT_ZERO AGENT_READY AGENT_RELOADED AGENT_RELOAD_FAILED AGENT_INIT_FAILED\n",
        "",
    )
