"""The layer rule (docs/architecture.md, "Layers"): no module imports from a layer above
its own. Every module under ``ccx_agent/`` is parsed with :mod:`ast` (nothing is
imported), placed in its layer, and each of its imports checked; an import inside a
function counts like any other unless :data:`LAZY_UP` lists it with the reason.

Also: no two modules import each other (directly or round a longer circle), counting
the imports under ``if TYPE_CHECKING:`` too, since a circle of types is a circle of
knowledge all the same (``sources/cluster.py`` and ``sources/uccx.py`` were one)."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ccx_agent"

#: Lowest first. A key is a module (``ssm.port``) or a top-level module or package
#: (``sources``); the longest key that names a module wins.
LAYERS: tuple[tuple[str, ...], ...] = (
    # The core: pure, no clock, no I/O.
    ("licensing",),
    # Leaves the whole shell shares: errors, the configuration (the YAML reader, the
    # schema, durations, the files a command line names), the atomic write, the help text
    # of every parser; and the SSM port and the credentials: types the store keeps and the
    # jobs call, no I/O.
    (
        "errors",
        "config",
        "secretvalues",
        "userfiles",
        "atomicfile",
        "logs",
        "cli.helptext",
        "ssm.port",
        "ssm.credentials",
    ),
    # The state directory and its database.
    ("store",),
    ("net",),
    ("sources", "ssm"),
    # The jobs, the instance's pieces, the status document; checkconfig loads a command's
    # config, or the daemon's record of it in the instance's database.
    ("agent", "instance", "status", "checkconfig"),
    ("offline", "history", "simulator", "scenario"),
    # The daemon and what only it runs.
    ("daemon",),
    # The commands; the doctor and the bundle are commands that look at everything.
    (
        "cli.commands",
        "cli.actions",
        "cli.check",
        "cli.doctor",
        "cli.bundle",
        "cli.demo",
        "cli.install_files",
    ),
    # The parser that dispatches to them.
    ("cli", "__main__"),
)

#: ``(importer, imported)`` pairs allowed to reach up from inside a function, and why.
#: Empty today: keep it so, or say here what earns the exception.
LAZY_UP: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    lazy: bool
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The layer of a ``ccx_agent`` module; None for the package itself."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    for key in (".".join(parts[:2]), parts[0]):
        for index, names in enumerate(LAYERS):
            if key in names:
                return index
    raise AssertionError(f"{module}: in no layer; place it in LAYERS (tests/test_layers.py)")


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def edges(name: str, path: Path, known: set[str]) -> Iterator[Edge]:
    """Each ``ccx_agent`` module that ``name`` imports: ``from ccx_agent import x`` is
    the module ``x`` when there is one, else the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> Iterator[Edge]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, True, type_only)
            elif isinstance(child, ast.If) and _type_checking(child):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    yield from one(alias.name, child.lineno, lazy, type_only)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    target = sub if sub in known else source
                    yield from one(target, child.lineno, lazy, type_only)
            else:
                yield from visit(child, lazy, type_only)

    def one(target: str, line: int, lazy: bool, type_only: bool) -> Iterator[Edge]:
        while target not in known and "." in target:
            target = target.rpartition(".")[0]
        if target in known and target != "ccx_agent" and target != name:
            yield Edge(name, target, line, lazy, type_only)

    yield from visit(tree, False, False)


@functools.cache
def all_edges() -> tuple[Edge, ...]:
    found = modules()
    known = set(found)
    return tuple(e for name, path in found.items() for e in edges(name, path, known))


def test_every_module_is_in_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_import_reaches_a_higher_layer() -> None:
    upward = []
    for e in all_edges():
        low, high = layer_of(e.importer), layer_of(e.imported)
        if low is None or high is None or high <= low:
            continue
        if e.lazy and (e.importer, e.imported) in LAZY_UP:
            continue
        how = "inside a function" if e.lazy else "type only" if e.type_only else "at the top"
        upward.append(
            f"{e.importer} (layer {low}) imports {e.imported} (layer {high}), line {e.line}, {how}"
        )
    assert upward == [], "\n".join(upward)


def test_no_import_cycle() -> None:
    """Module-level imports (type-only ones included) form no circle. A package's
    ``__init__`` and its own modules are left out: the package imports run through it."""
    graph: dict[str, set[str]] = {}
    for e in all_edges():
        if (
            e.lazy
            or e.imported.startswith(e.importer + ".")
            or e.importer.startswith(e.imported + ".")
        ):
            continue
        graph.setdefault(e.importer, set()).add(e.imported)
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[str] = []

    def walk(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in seen:
                walk(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            walk(start, [start])
    assert cycles == [], "\n".join(cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ccx_agent.cli.commands import x\n", "ccx_agent.cli.commands"),
        ("def f():\n    from ccx_agent.cli import commands\n", "ccx_agent.cli.commands"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ccx_agent.cli.main\n",
            "ccx_agent.cli.main",
        ),
        ("from ..cli.commands import x\n", "ccx_agent.cli.commands"),
    ],
)
def test_an_upward_import_is_seen_in_every_form(tmp_path: Path, source: str, expected: str) -> None:
    """The checker itself: an upward import is found at the top, in a function, under
    TYPE_CHECKING and relative (a module of ``licensing/``, the lowest layer)."""
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")
    known = set(modules()) | {"ccx_agent.licensing.probe"}
    found = [e.imported for e in edges("ccx_agent.licensing.probe", path, known)]
    assert found == [expected]
    assert layer_of(expected) > layer_of("ccx_agent.licensing.probe")  # type: ignore[operator]
