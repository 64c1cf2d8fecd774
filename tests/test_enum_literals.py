"""No alert mnemonic and no interval status is written as a string literal in ccx_agent/:
they are members of ``Mnemonic`` and ``IntervalStatus`` (docs/licensing.md §9), so a
renamed member cannot leave a stale spelling behind.

Read by tokens, not by the AST, so that a string anywhere (a default, a dict key, a
comparison) is seen; the bodies of enums are skipped (``Registration.REGISTRATION_EXPIRED``
is a state, not an alert), and so is a line ending in ``# codemod: keep``.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from ccx_agent.licensing.alerts import Mnemonic
from ccx_agent.licensing.interval import IntervalStatus

ROOT = Path(__file__).resolve().parent.parent
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
