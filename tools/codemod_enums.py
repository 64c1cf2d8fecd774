"""Replace literal alert mnemonics and interval statuses in ``ccx_agent/`` by enum members.

Issue 17: an alert name is ``Mnemonic.AGENT_READY`` (``ccx_agent/licensing/alerts.py``), an
interval status ``IntervalStatus.REPORTED`` (``ccx_agent/licensing/interval.py``), never a
string literal that a typo turns into a ``KeyError`` at 3 a.m. Both are ``StrEnum``s whose
values are today's spellings, so nothing on disk, on the wire or in syslog changes.

Several branches touched the daemon, the CLI and the store while this was done, so the
conversion is a script, not a hand edit: it is idempotent, and after a merge the lead runs

    .venv/bin/python tools/codemod_enums.py          # convert what is left, add the imports
    .venv/bin/python tools/codemod_enums.py --check  # exit 1 if anything is left (what CI runs)

What it converts: every string constant in an expression of a ``.py`` file under
``ccx_agent/`` whose value is a member's value. A ``CATALOGUE`` key of
``licensing/alerts.py`` still written as a string (an alert a merged branch added) first
becomes a new ``Mnemonic`` member, placed in the catalogue's order; its row in
docs/licensing.md §9 is still to be written by hand (tests/licensing/test_alerts.py says
so). What it leaves alone, on purpose:

* the enum definitions themselves, and any ``Enum`` class body (``Registration`` has a
  member ``REGISTRATION_EXPIRED`` spelt like the alert: that is a state, not an alert);
* docstrings, f-string text and type annotations (``Literal["..."]``);
* a line that ends with the comment ``# codemod: keep`` (a string that only looks like a
  mnemonic, e.g. a value of someone else's protocol);
* ``tests/``: a test may compare with the plain string, since a ``StrEnum`` equals its value.

The import is added where the module already imports from the enum's module (at the top,
or inside the function whose literal it replaced, so a lazily imported module stays lazy),
else at the top; ``ruff check --select I --fix`` then merges and sorts the import lines.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ccx_agent"
KEEP = "# codemod: keep"


@dataclass(frozen=True)
class EnumSpec:
    """One enum to convert to: its class name, the module that defines it and its file."""

    name: str
    module: str
    path: str


ENUMS: tuple[EnumSpec, ...] = (
    EnumSpec("Mnemonic", "ccx_agent.licensing.alerts", "ccx_agent/licensing/alerts.py"),
    EnumSpec("IntervalStatus", "ccx_agent.licensing.interval", "ccx_agent/licensing/interval.py"),
)


class CodemodError(Exception):
    """The tree is not in a state the script can convert safely (says which file and why)."""


def _enum_class(tree: ast.Module, spec: EnumSpec) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == spec.name:
            return node
    raise CodemodError(f"{spec.path}: no class {spec.name}")


def _member_assigns(cls: ast.ClassDef) -> list[tuple[ast.Assign, str, str]]:
    """``(statement, member, value)`` of each string member of an enum class, in order."""
    out = []
    for stmt in cls.body:
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        ):
            out.append((stmt, stmt.targets[0].id, stmt.value.value))
    return out


def enum_members(text: str, spec: EnumSpec) -> dict[str, str]:
    """``{value: member}`` of ``spec``'s class, read from its source (nothing is imported)."""
    cls = _enum_class(ast.parse(text, spec.path), spec)
    out = {value: member for _, member, value in _member_assigns(cls)}
    if not out:
        raise CodemodError(f"{spec.path}: class {spec.name} has no string members")
    return out


def add_catalogued_members(text: str, spec: EnumSpec) -> tuple[str, list[str]]:
    """``text`` with a member for each ``CATALOGUE`` key still written as a string (an alert
    another branch added), placed after the member of the key before it, so that the
    enum, the catalogue and docs/licensing.md §9 keep one order; and the names added."""
    tree = ast.parse(text, spec.path)
    cls = _enum_class(tree, spec)
    assigns = _member_assigns(cls)
    if not assigns:
        raise CodemodError(f"{spec.path}: class {spec.name} has no string members")
    by_name = {member: stmt for stmt, member, _ in assigns}
    catalogue = None
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "CATALOGUE":
            catalogue = getattr(node, "value", None)
    if not isinstance(catalogue, ast.Dict):
        return text, []
    lines = text.split("\n")
    indent = _indent_of(lines, assigns[0][0].lineno)
    member_of = {value: member for _, member, value in assigns}
    inserts: dict[int, list[str]] = {}
    added: list[str] = []
    # New members go after the member of the key before them (before the first member
    # when they lead the catalogue); consecutive new ones keep their order.
    after = assigns[0][0].lineno - 1
    for key in catalogue.keys:
        if isinstance(key, ast.Attribute):
            member: str | None = key.attr
        elif isinstance(key, ast.Constant) and isinstance(key.value, str):
            member = member_of.get(key.value)
            if member is None:
                name = key.value
                if not (name.isidentifier() and name.isupper()):
                    raise CodemodError(f"{spec.path}:{key.lineno}: {name!r} cannot be a member")
                inserts.setdefault(after, []).append(f'{indent}{name} = "{name}"')
                added.append(name)
                member_of[name] = name
                continue
        else:
            continue
        stmt = by_name.get(member) if member is not None else None
        if stmt is not None:
            after = stmt.end_lineno or stmt.lineno
    for line_no in sorted(inserts, reverse=True):
        lines[line_no:line_no] = inserts[line_no]
    return "\n".join(lines), added


def value_table(texts: dict[str, str]) -> dict[str, tuple[EnumSpec, str]]:
    """``{value: (enum, member)}`` over every enum; a value in two enums is ambiguous."""
    table: dict[str, tuple[EnumSpec, str]] = {}
    for spec in ENUMS:
        if spec.path not in texts:
            raise CodemodError(f"{spec.path}: not found")
        for value, member in enum_members(texts[spec.path], spec).items():
            if value in table:
                other = table[value][0].name
                raise CodemodError(f"{value!r} is a member of both {other} and {spec.name}")
            table[value] = (spec, member)
    return table


def _is_enum_class(node: ast.ClassDef) -> bool:
    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if name.endswith(("Enum", "Flag")):
            return True
    return False


@dataclass
class Hit:
    """One literal to replace: its byte span, its enum and member, the enclosing functions."""

    line: int
    col: int
    end_line: int
    end_col: int
    value: str
    spec: EnumSpec
    member: str
    #: Innermost last: the function definitions the literal sits in (empty: module level).
    scopes: tuple[ast.FunctionDef | ast.AsyncFunctionDef, ...] = field(default=())


class _Finder(ast.NodeVisitor):
    """Collects the string constants to convert, skipping what the module docstring lists."""

    def __init__(self, table: dict[str, tuple[EnumSpec, str]], lines: Sequence[str]) -> None:
        self.table = table
        self.lines = lines
        self.hits: list[Hit] = []
        self.scopes: list[ast.FunctionDef | ast.AsyncFunctionDef] = []

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, str) or node.value not in self.table:
            return
        end_line = node.end_lineno or node.lineno
        if self.lines[end_line - 1].rstrip().endswith(KEEP):
            return
        spec, member = self.table[node.value]
        self.hits.append(
            Hit(
                node.lineno,
                node.col_offset,
                end_line,
                node.end_col_offset if node.end_col_offset is not None else node.col_offset,
                node.value,
                spec,
                member,
                tuple(self.scopes),
            )
        )

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        # The text of an f-string is never a whole mnemonic; what it formats is visited.
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value.value)

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring (or a bare string statement)
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        return  # only its annotation could hold a string

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for deco in node.decorator_list:
            self.visit(deco)
        self.visit(node.args)
        self.scopes.append(node)
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_function(node)

    def visit_arguments(self, node: ast.arguments) -> None:
        for default in [*node.defaults, *(d for d in node.kw_defaults if d is not None)]:
            self.visit(default)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        enum_body = _is_enum_class(node)
        for item in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(item)
        for stmt in node.body:
            if (
                enum_body
                and isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                continue  # a member of some enum, whatever it is spelt like
            self.visit(stmt)


def _imports_name(body: Sequence[ast.stmt], spec: EnumSpec) -> bool:
    """Whether ``body`` (directly) imports ``spec.name`` from its module, unaliased."""
    return any(
        isinstance(s, ast.ImportFrom)
        and s.module == spec.module
        and any(a.name == spec.name and a.asname is None for a in s.names)
        for s in body
    )


def _import_from(body: Sequence[ast.stmt], module: str) -> ast.ImportFrom | None:
    for s in body:
        if isinstance(s, ast.ImportFrom) and s.module == module and s.level == 0:
            return s
    return None


def _binds(body: Sequence[ast.stmt], name: str) -> bool:
    """Whether ``body`` binds ``name`` by something other than an import of our enum."""
    for s in body:
        if isinstance(s, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and s.name == name:
            return True
        if isinstance(s, ast.Import | ast.ImportFrom):
            for a in s.names:
                if (a.asname or a.name) == name and not (
                    isinstance(s, ast.ImportFrom) and a.asname is None and a.name == name
                ):
                    return True
        if isinstance(s, ast.Assign | ast.AnnAssign):
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


def _top_insert_line(tree: ast.Module) -> int:
    """The line after which a new top-level import goes: after the first import block."""
    after = 0
    for i, s in enumerate(tree.body):
        if i == 0 and isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant):
            after = s.end_lineno or s.lineno
            continue
        if isinstance(s, ast.Import | ast.ImportFrom):
            after = s.end_lineno or s.lineno
            continue
        break
    return after


def _indent_of(lines: Sequence[str], lineno: int) -> str:
    text = lines[lineno - 1]
    return text[: len(text) - len(text.lstrip())]


def _lazy_imports(hits: Sequence[Hit], spec: EnumSpec) -> list[ast.ImportFrom] | None:
    """The function-local imports from ``spec.module`` that need the name added, or None
    when some literal is in no function that imports from that module."""
    need: dict[int, ast.ImportFrom] = {}
    for h in hits:
        for fn in reversed(h.scopes):
            if _imports_name(fn.body, spec):
                break
            imp = _import_from(fn.body, spec.module)
            if imp is not None:
                need[id(imp)] = imp
                break
        else:
            return None
    return list(need.values())


def _import_insertions(
    tree: ast.Module, lines: Sequence[str], rel: str, hits: Sequence[Hit]
) -> dict[int, list[str]]:
    """``{after_line: [import line, …]}`` so every replaced name is bound where it is used."""
    inserts: dict[int, list[str]] = {}

    def add(after: int, text: str) -> None:
        if text not in inserts.setdefault(after, []):
            inserts[after].append(text)

    for spec in {h.spec.name: h.spec for h in hits}.values():
        if rel == spec.path:
            continue  # the defining module names its own class
        line = f"from {spec.module} import {spec.name}"
        if _binds(tree.body, spec.name):
            raise CodemodError(f"{rel}: the name {spec.name} is already bound to something else")
        if _imports_name(tree.body, spec):
            continue
        top = _import_from(tree.body, spec.module)
        if top is not None:
            add(top.end_lineno or top.lineno, line)
            continue
        lazy = _lazy_imports([h for h in hits if h.spec is spec], spec)
        if lazy is not None:
            # Every literal sits in a function that imports from the enum's module itself
            # (a lazy import): keep it lazy and bind the name next to that import.
            for imp in lazy:
                add(imp.end_lineno or imp.lineno, _indent_of(lines, imp.lineno) + line)
            continue
        add(_top_insert_line(tree), line)
    return inserts


def _offsets(data: bytes) -> list[int]:
    """Byte offset of the start of each line (1-based line numbers index it with -1)."""
    starts = [0]
    for i, b in enumerate(data):
        if b == 0x0A:
            starts.append(i + 1)
    return starts


def convert(text: str, rel: str, table: dict[str, tuple[EnumSpec, str]]) -> tuple[str, list[Hit]]:
    """The converted ``text`` of ``rel`` and what was replaced (no hits: ``text`` itself)."""
    try:
        tree = ast.parse(text, rel)
    except SyntaxError as exc:
        raise CodemodError(f"{rel}:{exc.lineno}: cannot parse: {exc.msg}") from None
    lines = text.split("\n")  # as ast numbers them (not splitlines: \f, \u2028)
    finder = _Finder(table, lines)
    finder.visit(tree)
    hits = finder.hits
    if not hits:
        return text, []
    inserts = _import_insertions(tree, lines, rel, hits)
    data = text.encode("utf-8")
    starts = _offsets(data)
    # ast columns are UTF-8 byte offsets: every edit is a byte span, applied from the end
    # backwards so that the earlier offsets stay valid.
    edits: list[tuple[int, int, bytes]] = []
    for h in hits:
        a = starts[h.line - 1] + h.col
        b = starts[h.end_line - 1] + h.end_col
        edits.append((a, b, f"{h.spec.name}.{h.member}".encode()))
    for after, added in inserts.items():
        block = "".join(f"{t}\n" for t in added).encode()
        if after < len(starts):
            edits.append((starts[after], starts[after], block))
        else:  # after the last line of a file without a final newline
            edits.append((len(data), len(data), b"\n" + block.rstrip(b"\n")))
    for a, b, repl in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        data = data[:a] + repl + data[b:]
    new = data.decode("utf-8")
    try:
        ast.parse(new, rel)
    except SyntaxError as exc:  # a bug of this script: never write a broken file
        raise CodemodError(f"{rel}:{exc.lineno}: conversion would not parse: {exc.msg}") from None
    return new, hits


def sources(root: Path) -> Iterator[Path]:
    for path in sorted((root / PACKAGE).rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


@dataclass
class Plan:
    """What a run changes: the new text and the replaced literals of each file, and the
    members added to the enum for alerts a merged branch put in the catalogue."""

    files: dict[str, tuple[str, list[Hit]]]
    added: list[str]


def scan(root: Path) -> Plan:
    texts = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in sources(root)}
    originals = dict(texts)
    mnemonic = ENUMS[0]
    added: list[str] = []
    if mnemonic.path in texts:
        texts[mnemonic.path], added = add_catalogued_members(texts[mnemonic.path], mnemonic)
    table = value_table(texts)
    files: dict[str, tuple[str, list[Hit]]] = {}
    for rel, text in texts.items():
        new, hits = convert(text, rel, table)
        if new != originals[rel]:
            files[rel] = (new, hits)
    return Plan(files, added)


def _ruff() -> str | None:
    here = Path(sys.executable).parent / "ruff"
    return str(here) if here.exists() else shutil.which("ruff")


def _is_formatted(ruff: str, root: Path, rel: str) -> bool:
    done = subprocess.run(
        [ruff, "format", "--check", "--quiet", rel], cwd=root, capture_output=True, check=False
    )
    return done.returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a literal is left"
    )
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="the repository")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    try:
        plan = scan(root)
    except CodemodError as exc:
        print(f"codemod_enums: {exc}", file=sys.stderr)
        return 2
    found = plan.files
    for name in plan.added:
        print(f"{ENUMS[0].path}: new member {ENUMS[0].name}.{name} (a key of CATALOGUE)")
    for rel, (_, hits) in found.items():
        for h in hits:
            print(f"{rel}:{h.line}: {h.value!r} -> {h.spec.name}.{h.member}")
    if args.check:
        if found:
            print(
                f"codemod_enums: {sum(len(h) for _, h in found.values())} literal(s) and "
                f"{len(plan.added)} member(s) left to convert; run tools/codemod_enums.py",
                file=sys.stderr,
            )
            return 1
        return 0
    ruff = _ruff()
    # The tree is kept in `ruff format` style; a file that was not in it stays as it was,
    # so that the conversion touches no line it does not have to.
    formatted = [rel for rel in found if ruff is not None and _is_formatted(ruff, root, rel)]
    for rel, (new, _) in found.items():
        (root / rel).write_text(new, encoding="utf-8")
    if found and ruff is not None:
        # Merge the added import lines into the module's import block, in isort order.
        subprocess.run(
            [ruff, "check", "--quiet", "--select", "I", "--fix", *found], cwd=root, check=False
        )
        if formatted:
            subprocess.run([ruff, "format", "--quiet", *formatted], cwd=root, check=False)
    elif found:
        print(
            "codemod_enums: ruff not found; run 'ruff check --select I --fix' and 'ruff format'",
            file=sys.stderr,
        )
    print(f"codemod_enums: {len(found)} file(s) converted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
