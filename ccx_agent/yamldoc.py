"""YAML documents validated by a pydantic model, with every problem named by file and line.

One mechanism serves the config file and scenario files, so both report errors the same
way: ``PATH:LINE: dotted.key: message``, every problem at once, never a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]

#: Exit status for a bad configuration (sysexits.h EX_CONFIG); systemd does not restart on it.
EX_CONFIG = 78


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class DocumentError(Exception):
    """Every problem found in a document; ``str()`` is one line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = list(problems)


@dataclass
class Document:
    """Decoded YAML plus the line on which each key path starts."""

    name: str
    data: Any
    lines: dict[Loc, int]

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest part of ``loc`` that exists in the document."""
        for cut in range(len(loc), -1, -1):
            found = self.lines.get(loc[:cut])
            if found is not None:
                return found
        return 1


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _walk(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], name: str
) -> None:
    """Record the line of every key path and flag duplicate keys (PyYAML keeps the last)."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key: str | int = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            if isinstance(key, str) and key.isdigit() and key_node.tag.endswith(":int"):
                key = int(key)
            sub = (*loc, key)
            line = key_node.start_mark.line + 1
            if str(key) in seen:
                problems.append(Problem(name, line, dotted(sub), "duplicate key"))
            seen.add(str(key))
            lines[sub] = line
            _walk(value_node, sub, lines, problems, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), lines, problems, name)


def parse_yaml(text: str, name: str) -> Document:
    """Parse ``text``; a syntax error or a duplicate key is a :class:`DocumentError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise DocumentError(
            [Problem(name, line, "(yaml)", f"{exc.problem or exc.context or 'syntax error'}")]
        ) from None
    except yaml.YAMLError as exc:
        raise DocumentError([Problem(name, 1, "(yaml)", str(exc))]) from None
    if node is None:
        return Document(name, {}, {(): 1})
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []
    _walk(node, (), lines, problems, name)
    if problems:
        raise DocumentError(problems)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DocumentError([Problem(name, 1, "(yaml)", str(exc))]) from None
    return Document(name, data, lines)


def read_yaml(path: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError([Problem(str(path), 0, "(file)", exc.strerror or str(exc))]) from None
    except UnicodeDecodeError as exc:
        raise DocumentError(
            [Problem(str(path), 1, "(file)", f"not UTF-8 text: {exc.reason}")]
        ) from None
    return parse_yaml(text, str(path))


def _model_fields(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the sub-model at ``loc`` (for did-you-mean), best effort."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        current = ann
        for arg in getattr(ann, "__args__", ()) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _clean_loc(loc: Loc, data: Any) -> Loc:
    """Drop the tag that pydantic inserts for a discriminated union (``source.file.path``)."""
    out: list[str | int] = []
    here = data
    for part in loc:
        if isinstance(here, dict) and part not in here and here.get("kind") == part:
            continue
        out.append(part)
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here):
            here = here[part]
        else:
            here = None
    return tuple(out)


def _message(err: Any, model: type[BaseModel], loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        near = difflib.get_close_matches(str(key), _model_fields(model, parent), n=1)
        return "unknown key" + (f" (did you mean '{near[0]}'?)" if near else "")
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def problems_from(
    exc: ValidationError, doc: Document, model: type[BaseModel], prefix: Loc, value: Any
) -> Iterator[Problem]:
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]), value)
        full = (*prefix, *loc)
        yield Problem(doc.name, doc.line_of(full), dotted(full), _message(err, model, loc))


def _at(data: Any, prefix: Loc) -> Any:
    for part in prefix:
        data = data[part]
    return data


def validate(model: type[M], doc: Document, prefix: Loc = (), data: Any = None) -> M:
    """Validate ``doc`` (or ``data`` found at ``prefix`` inside it) against ``model``."""
    value = _at(doc.data, prefix) if data is None else data
    if not isinstance(value, dict):
        raise DocumentError(
            [Problem(doc.name, doc.line_of(prefix), dotted(prefix), "must be a mapping of keys")]
        )
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise DocumentError(list(problems_from(exc, doc, model, prefix, value))) from None
