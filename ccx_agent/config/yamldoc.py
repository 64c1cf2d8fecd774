"""YAML documents validated by a pydantic model, with every problem named by file and line.

One mechanism serves the config file and scenario files, so both report errors the same
way: ``PATH:LINE: dotted.key: message``, every problem at once, never a traceback.
Messages are written for an operator, not a Python programmer: they say what was expected
and what was found (``must be true or false, got 'yes please'``), never pydantic's words.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import yaml
from yaml.constructor import SafeConstructor

from ccx_agent.userfiles import UserFileError, open_regular, reason

if TYPE_CHECKING:
    # pydantic only where a model is validated: reading a document, and its problems,
    # need none of it (``status --check``).
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")
Loc = tuple[Any, ...]

#: Exit status for a bad configuration (sysexits.h EX_CONFIG); systemd does not restart on it.
EX_CONFIG = 78

_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
#: The tag of a bool (public: the snapshot reader refuses an unknown one the same way).
BOOL_TAG = "tag:yaml.org,2002:bool"

#: Values that aliases (``*name``) may add to a document once expanded. A config or a
#: scenario uses a few anchors at most; nested aliases ("billion laughs") would expand a
#: few hundred bytes of text into billions of values that validation then walks.
MAX_ALIAS_VALUES = 10_000
#: A YAML file larger than this is refused unread: configs and scenarios are kilobytes.
MAX_FILE_BYTES = 16 * 1024 * 1024


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
    """Decoded YAML plus the line on which each key path starts.

    ``problems`` holds what was wrong with the text but did not stop it from being read
    (a duplicate key: the last one wins), when :func:`parse_yaml` was asked to keep going.
    """

    name: str
    data: Any
    lines: dict[Loc, int]
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest part of ``loc`` that exists in the document."""
        for cut in range(len(loc), -1, -1):
            try:
                found = self.lines.get(loc[:cut])
            except TypeError:  # an unhashable part: no such path in the document
                found = None
            if found is not None:
                return found
        return 1


_PLAIN_KEY = re.compile(r"[\w-]+")


def dotted(loc: Loc) -> str:
    """``("license", "premium_features", 1)`` -> ``license.premium_features[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            text = key_text(part)
            if not _PLAIN_KEY.fullmatch(text):
                text = repr(text)  # a key with spaces, dots or colons: show where it ends
            out += f".{text}" if out else text
    return out or "(root)"


def key_text(key: object) -> str:
    """A mapping key as it is spelled in YAML (``true``, ``null``, ``1``, ``name``)."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, date):
        return key.isoformat()
    return str(key)


def show(value: object) -> str:
    """A value as an operator wrote it, for the ``got ...`` part of a message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        try:
            return repr(value)
        except ValueError:  # more digits than int -> str converts (sys.get_int_max_str_digits)
            return f"a number of more than {sys.get_int_max_str_digits()} digits"
    if isinstance(value, str):
        if not value:
            return "an empty string ('')"
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, datetime):
        return f"the time {value.isoformat()}"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


# ---------------------------------------------------------------------------------------
# Reading YAML
# ---------------------------------------------------------------------------------------

_CONTEXTS = {
    "while parsing a flow sequence": "in the [...] list opened on line {}",
    "while parsing a flow mapping": "in the {{...}} mapping opened on line {}",
    "while scanning a quoted scalar": "in the quoted text opened on line {}",
    "while parsing a block mapping": "in the mapping that starts on line {}",
    "while parsing a block collection": "in the list that starts on line {}",
}


_OPENERS = {
    "while parsing a flow sequence": "[...] list",
    "while parsing a flow mapping": "{...} mapping",
    "while scanning a quoted scalar": "quoted text",
}


def _at_end(problem: str) -> bool:
    return problem == "found unexpected end of stream" or "'<stream end>'" in problem


def _yaml_problem(exc: yaml.MarkedYAMLError, name: str) -> Problem:
    """One readable line for a YAML syntax error, at the line where it was found."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    problem = (exc.problem or exc.context or "syntax error").strip()
    context = (exc.context or "").strip()
    if "'\\t'" in problem:
        return Problem(name, line, "(yaml)", "a tab cannot indent YAML: indent with spaces")
    if context == "expected a single document in the stream":
        return Problem(
            name, line, "(yaml)", "a second YAML document ('---') is not allowed in this file"
        )
    if problem == "mapping values are not allowed here":
        problem = "unexpected ':' (is this line indented wrongly, or does a value need quotes?)"
    elif problem.startswith("expected <block end>"):
        problem = "this line is not indented like the lines around it"
    elif _at_end(problem) and context in _OPENERS and exc.context_mark is not None:
        # Report where the unclosed thing opens, not past the last line of the file.
        what = _OPENERS[context]
        return Problem(
            name,
            exc.context_mark.line + 1,
            "(yaml)",
            f"the {what} opened on this line is never closed (check the lines above too)",
        )
    elif problem.startswith("could not determine a constructor for the tag"):
        problem = "unsupported YAML tag " + problem.rsplit(" ", 1)[-1]
    cmark = exc.context_mark
    if context and cmark is not None and cmark.line + 1 != line:
        where = _CONTEXTS.get(context, context + " on line {}").format(cmark.line + 1)
        problem = f"{problem} ({where})"
    return Problem(name, line, "(yaml)", problem)


def _key(node: yaml.Node) -> object:
    """The Python value of a scalar mapping key (``1`` is an int, ``yes`` is True ...)."""
    if node.tag == _STR_TAG:
        return node.value
    try:
        return SafeConstructor().construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, IndexError, OverflowError, KeyError):
        return node.value


@dataclass
class _Walk:
    name: str
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: Problems that leave nothing to validate (a list used as a key).
    fatal: list[Problem] = field(default_factory=list)
    seen_nodes: set[int] = field(default_factory=set)
    #: The first key path (as written) of each node, to name the key of a value that
    #: cannot be constructed.
    shown_at: dict[int, Loc] = field(default_factory=dict)
    #: Lines of list items that are aliases (see :class:`_Loader`).
    alias_lines: dict[tuple[int, int], int] = field(default_factory=dict)


def _walk(node: yaml.Node, loc: Loc, shown: Loc, w: _Walk) -> None:
    """Record the line of every key path and flag duplicate keys (PyYAML keeps the last).

    ``loc`` holds the keys as Python values (``1``, ``True``); ``shown`` holds them as
    written, for messages (so a key ``1`` is not mistaken for a list index).
    """
    lines, name = w.lines, w.name
    lines.setdefault(loc, node.start_mark.line + 1)
    w.shown_at.setdefault(id(node), shown)
    if id(node) in w.seen_nodes:  # an alias: walked once already, and aliases can nest
        return
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        w.seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                msg = "a key must be a name, not a list or a mapping"
                w.fatal.append(Problem(name, line, dotted(shown), msg))
                continue
            key = _key(key_node)
            sub = (*loc, key)
            shown_sub = (*shown, str(key_node.value))
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                duplicate = False
            if duplicate:
                msg = "duplicate key (the last one would win)"
                w.problems.append(Problem(name, line, dotted(shown_sub), msg))
            lines[sub] = line
            _walk(value_node, sub, shown_sub, w)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if (id(node), i) in w.alias_lines:
                lines[(*loc, i)] = w.alias_lines[(id(node), i)]
            _walk(item, (*loc, i), (*shown, i), w)


class _Stop(Exception):
    def __init__(self, loc: Loc, shown: Loc, message: str) -> None:
        super().__init__(message)
        self.loc, self.shown, self.message = loc, shown, message


def alias_problem(
    root: yaml.Node,
    name: str,
    lines: dict[Loc, int] | None = None,
    limit: int = MAX_ALIAS_VALUES,
) -> Problem | None:
    """A problem if aliases expand the document beyond ``limit`` values, or
    if an alias sits inside the value it names (a cycle); else None.

    Walks the document as its constructed data would be walked, aliases expanded, and
    stops as soon as the bound is passed: the cost is bounded by the text's size plus
    the bound, however the aliases nest. The problem names the key where the alias that
    crossed the bound is used.
    """
    seen: set[int] = set()
    active: set[int] = set()
    budget = limit

    def visit(node: yaml.Node, loc: Loc, shown: Loc, alias: tuple[Loc, Loc] | None) -> None:
        nonlocal budget
        ident = id(node)
        if ident in active:
            where = alias or (loc, shown)
            raise _Stop(*where, "an alias refers to the value that holds it (a cycle): refused")
        if ident in seen:  # every node under an alias has been seen before: an expansion
            alias = alias or (loc, shown)
            budget -= 1
            if budget < 0:
                raise _Stop(
                    *alias,
                    f"aliases expand the document by more than {limit} values "
                    "(an alias bomb?): refused",
                )
        seen.add(ident)
        if isinstance(node, yaml.MappingNode):
            active.add(ident)
            for key_node, value_node in node.value:
                key = _key(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                shown_key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                visit(key_node, loc, shown, alias)
                visit(value_node, (*loc, key), (*shown, str(shown_key)), alias)
            active.discard(ident)
        elif isinstance(node, yaml.SequenceNode):
            active.add(ident)
            for i, item in enumerate(node.value):
                visit(item, (*loc, i), (*shown, i), alias)
            active.discard(ident)

    try:
        visit(root, (), (), None)
    except _Stop as stop:
        doc = Document(name, None, lines or {})
        return Problem(name, doc.line_of(stop.loc), dotted(stop.shown), stop.message)
    return None


class _Unconstructable(Exception):
    """A scalar that parses but cannot become a Python value (see :class:`_Loader`)."""

    def __init__(self, node: yaml.Node, error: Exception) -> None:
        super().__init__(str(error))
        self.node, self.error = node, error


def _too_many_digits() -> int:
    """The smallest int that repr() refuses (the limit can change at run time)."""
    limit: int = 10 ** sys.get_int_max_str_digits()
    return limit


class _Loader(yaml.SafeLoader):
    """The safe loader, with the scalar that fails to construct named.

    PyYAML raises a bare ``ValueError`` for a number of more than 4300 digits (Python's
    int conversion limit) or a date that does not exist (2024-02-30), without saying
    where; this keeps the node so that the problem names its key and line.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: The line of each list item that is an alias, by (id of the list node, index):
        #: the composed node is the anchor's, whose mark is the anchor's line.
        self.alias_lines: dict[tuple[int, int], int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # ``index`` is a list index, or (despite the stubs) a mapping's key node or None.
        if isinstance(index, int) and parent is not None and self.check_event(yaml.AliasEvent):
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            if event.start_mark is not None:
                self.alias_lines[(id(parent), index)] = event.start_mark.line + 1
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """An int, refused when it has more digits than Python converts to text: a YAML
        1.1 base-60 number (``59:59:...``) computes one that no message could show."""
        value: int = super().construct_yaml_int(node)
        if abs(value) >= _too_many_digits():
            raise ValueError(f"more than {sys.get_int_max_str_digits()} digits")
        return value

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool:
        """A bool; ``!!bool maybe`` is refused by name (PyYAML raises a bare KeyError)."""
        return yaml_bool(self, node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, IndexError, TypeError, OverflowError, KeyError) as exc:
            # IndexError: PyYAML's float and int constructors index an empty value
            # (``!!float ''``).
            raise _Unconstructable(node, exc) from None


_Loader.add_constructor(_INT_TAG, _Loader.construct_yaml_int)
_Loader.add_constructor(BOOL_TAG, _Loader.construct_yaml_bool)


def yaml_bool(constructor: SafeConstructor, node: yaml.ScalarNode) -> bool:
    """The bool a scalar tagged ``!!bool`` (or resolved as one) stands for; a
    :class:`ValueError` that says what is allowed when it stands for none."""
    value = str(constructor.construct_scalar(node))
    known: bool | None = constructor.bool_values.get(value.lower())
    if known is None:
        raise ValueError(f"{value!r} is not one of true/false, yes/no, on/off")
    return known


def _short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:float`` -> ``!!float``, as it is written in YAML."""
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag


def _unconstructable(exc: _Unconstructable, name: str, w: _Walk) -> Problem:
    node = exc.node
    shown = w.shown_at.get(id(node), ())
    if node.tag == _INT_TAG:
        limit = sys.get_int_max_str_digits()
        written = str(node.value).lstrip("+-").replace("_", "")
        if written.isdigit():
            message = f"a number of {len(written)} digits is too long (at most {limit})"
        else:  # base 60 (1:2:3), 16, 8 or 2: the digits written are not the number's
            message = f"a number too large (more than {limit} digits)"
    elif node.tag == _TIMESTAMP_TAG:
        message = f"not a real date or time ({' '.join(str(exc.error).split())})"
    elif isinstance(exc.error, ValueError) and str(exc.error):
        message = f"not a valid {_short_tag(node.tag)} value ({' '.join(str(exc.error).split())})"
    else:
        message = f"not a valid {_short_tag(node.tag)} value"
    return Problem(name, node.start_mark.line + 1, dotted(shown), message)


def parse_yaml(text: str, name: str, *, keep_going: bool = False) -> Document:
    """Parse ``text``; a syntax error or a duplicate key is a :class:`DocumentError`.

    With ``keep_going``, duplicate keys are returned in :attr:`Document.problems` instead,
    so that a caller can report them together with the problems validation finds.
    """
    try:
        # One pass: compose (for the lines of keys), then construct from the same nodes.
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return Document(name, {}, {(): 1})
            w = _Walk(name, alias_lines=loader.alias_lines)
            _walk(node, (), (), w)
            bomb = alias_problem(node, name, w.lines)
            if bomb is not None:
                w.fatal.append(bomb)
            if w.fatal:
                raise DocumentError(sorted(w.fatal + w.problems, key=lambda p: p.line))
            if w.problems and not keep_going:
                raise DocumentError(w.problems)
            try:
                data = loader.construct_document(node)
            except _Unconstructable as exc:
                raise DocumentError([_unconstructable(exc, name, w)]) from None
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "a character"
        raise DocumentError(
            [Problem(name, line, "(yaml)", f"{char} is a control character YAML does not allow")]
        ) from None
    except yaml.MarkedYAMLError as exc:
        raise DocumentError([_yaml_problem(exc, name)]) from None
    except yaml.YAMLError as exc:
        raise DocumentError([Problem(name, 1, "(yaml)", " ".join(str(exc).split()))]) from None
    except RecursionError:
        raise DocumentError([Problem(name, 1, "(yaml)", "nested too deeply")]) from None
    return Document(name, data, w.lines, w.problems)


def read_yaml(path: Path, *, keep_going: bool = False) -> Document:
    """Read a UTF-8 YAML file; any failure is a :class:`DocumentError`, never a traceback."""
    name = str(path)
    try:
        # By type, without blocking: a FIFO as the config would hang check-config, the
        # daemon's start and its reload (SIGTERM could no longer stop it).
        with open_regular(path) as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except UserFileError as exc:
        message = str(exc).removeprefix(f"{name}: ")
        raise DocumentError([Problem(name, 1, "(file)", message)]) from None
    except OSError as exc:
        raise DocumentError([Problem(name, 1, "(file)", f"cannot read: {reason(exc)}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        message = f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: not a config or scenario"
        raise DocumentError([Problem(name, 1, "(file)", message)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start]
        raise DocumentError(
            [Problem(name, line, "(file)", f"not UTF-8 text (byte 0x{byte:02x}): save as UTF-8")]
        ) from None
    return parse_yaml(text, name, keep_going=keep_going)


# ---------------------------------------------------------------------------------------
# Validation messages
# ---------------------------------------------------------------------------------------


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The sub-model at ``loc`` (list indexes skipped), best effort."""
    from pydantic import BaseModel  # noqa: PLC0415 - see the imports

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        found = current.model_fields.get(str(part))
        if found is None:
            return None
        current = _sub_model(found.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _sub_model(annotation: Any) -> Any:
    from pydantic import BaseModel  # noqa: PLC0415 - see the imports

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        sub = _sub_model(arg)
        if sub is not None:
            return sub
    return None


def field_paths(model: type[BaseModel], loc: Loc = ()) -> Iterator[Loc]:
    """Every key path the model knows, sections and leaves alike."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        yield (*loc, key)
        sub = _sub_model(info.annotation)
        if sub is not None and sub is not model:
            yield from field_paths(sub, (*loc, key))


def _unknown_key(model: type[BaseModel], loc: Loc) -> str:
    parent, key = loc[:-1], key_text(loc[-1])
    here = _model_at(model, parent)
    siblings = [f.alias or n for n, f in here.model_fields.items()] if here else []
    near = difflib.get_close_matches(key, siblings, n=1)
    near = near or [s for s in siblings if key and (s.startswith(key) or key.startswith(s))][:1]
    if near:
        return f"unknown key (did you mean '{near[0]}'?)"
    elsewhere = [dotted(p) for p in field_paths(model) if p[-1] == key and p[:-1] != parent]
    if elsewhere:
        return f"unknown key here (did you mean {' or '.join(elsewhere)}?)"
    if siblings and parent:
        return f"unknown key (known keys here: {', '.join(siblings)})"
    return "unknown key"


_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off"}
_QUOTED = re.compile(r"'([^']*)'")


def one_of(names: Sequence[str], got: object, what: str = "") -> str:
    """``unknown license type 'flexx' (did you mean 'flex'?): must be one of flex, nfr``."""
    near = difflib.get_close_matches(got, names, n=1) if isinstance(got, str) else []
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    if what and isinstance(got, str):
        return f"unknown {what} {got!r}{hint}: must be one of {', '.join(names)}"
    return f"must be one of {', '.join(names)}, got {show(got)}{hint}"


def _message(err: Any, model: type[BaseModel], loc: Loc) -> str:
    kind = err["type"]
    got = err.get("input")
    ctx = err.get("ctx") or {}
    if kind in ("extra_forbidden", "invalid_key"):
        return _unknown_key(model, loc)
    if kind in ("missing", "union_tag_not_found"):
        return "required key is missing"
    if kind in ("bool_type", "bool_parsing"):
        quoted = isinstance(got, str) and got.lower() in _BOOL_WORDS
        return f"must be true or false{' (without quotes)' if quoted else ''}, got {show(got)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        quoted = isinstance(got, str) and got.strip().lstrip("+-").isdigit()
        return f"must be a whole number{' (without quotes)' if quoted else ''}, got {show(got)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {show(got)}"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']}, got {show(got)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, got {show(got)}"
    if kind == "less_than":
        return f"must be less than {ctx['lt']}, got {show(got)}"
    if kind == "string_type":
        hint = f" (put it in quotes: '{show(got)}')" if isinstance(got, int | float) else ""
        return f"must be text, got {show(got)}{hint}"
    if kind in ("list_type", "tuple_type", "set_type"):
        short = isinstance(got, str | int) and not isinstance(got, bool) and len(show(got)) < 40
        like = f"[{got}]" if short else "[a, b]"
        return f"must be a list, like {like}, got {show(got)}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"must be a mapping of keys (key: value lines), got {show(got)}"
    if kind in ("enum", "literal_error"):
        return one_of(_QUOTED.findall(str(ctx.get("expected", ""))), got)
    if kind == "union_tag_invalid":
        what = " ".join(key_text(p) for p in loc[-2:] if not isinstance(p, int))
        tags = _QUOTED.findall(str(ctx.get("expected_tags", "")))
        field_name = str(ctx.get("discriminator", "kind")).strip("'\"")
        tag = got.get(field_name, ctx.get("tag")) if isinstance(got, dict) else ctx.get("tag")
        # A tag that is not text (a list, a mapping) is shown as what it is, not its repr.
        return one_of(tags, tag, what) if isinstance(tag, str) else one_of(tags, tag)
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must have at least {ctx.get('min_length')} items"
    if kind == "path_type":
        return f"must be a path, got {show(got)}"
    msg = str(err["msg"])
    if kind in ("value_error", "assertion_error"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = re.sub(r"^Input should be", "must be", msg)
    msg = msg[:1].lower() + msg[1:]
    if not isinstance(got, dict | list):
        msg += f", got {show(got)}"
    return msg


def _clean_loc(err: Any, data: Any) -> Loc:
    """The key path an operator wrote for one pydantic error.

    Drops the tag pydantic inserts for a discriminated union (``source.file.path``), names
    the discriminator key for a tag error (``source.kind``), and puts back a mapping key
    that is not a string (pydantic's location mangles ``true`` or ``1`` as a key).
    """
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "invalid_key":
        loc = (*loc[:-1], err.get("input"))
    out: list[Any] = []
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
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        out.append(str((err.get("ctx") or {}).get("discriminator", "kind")).strip("'\""))
    return tuple(out)


@dataclass
class Outcome(Generic[M]):
    """The result of :func:`validate_value`: a model, or the problems and their places."""

    value: M | None
    problems: list[Problem]
    #: The key paths (relative to the validated value) that the problems are about.
    locs: list[Loc]


def _shown(loc: Loc, data: Any) -> Loc:
    """``loc`` with every mapping key as text, so that only list indexes render as ``[i]``."""
    out: list[Any] = []
    here = data
    for part in loc:
        if isinstance(here, dict):
            out.append(key_text(part))
            here = here.get(part) if _hashable(part) else None
        else:
            out.append(part)
            ok = isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here)
            here = here[part] if ok else None
    return tuple(out)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def validate_value(model: type[M], doc: Document, prefix: Loc, value: Any) -> Outcome[M]:
    """Validate ``value`` (found at ``prefix`` in ``doc``) without raising."""
    from pydantic import ValidationError  # noqa: PLC0415 - see the imports

    if not isinstance(value, dict):
        what = "the file must" if not prefix else "must"
        msg = f"{what} be a mapping of keys (key: value lines), got {show(value)}"
        return Outcome(None, [Problem(doc.name, doc.line_of(prefix), dotted(prefix), msg)], [()])
    try:
        return Outcome(model.model_validate(value), [], [])
    except ValidationError as exc:
        problems: list[Problem] = []
        locs: list[Loc] = []
        for err in exc.errors():
            loc = _clean_loc(err, value)
            full = (*prefix, *loc)
            shown = dotted((*prefix, *_shown(loc, value)))
            problem = Problem(doc.name, doc.line_of(full), shown, _message(err, model, loc))
            if problem not in problems:
                problems.append(problem)
            locs.append(loc)
        return Outcome(None, sorted(problems, key=lambda p: p.line), locs)


def value_at(data: Any, prefix: Loc) -> Any:
    """The value at ``prefix`` inside ``data``, or None where there is none."""
    for part in prefix:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def validate(model: type[M], doc: Document, prefix: Loc = (), data: Any = None) -> M:
    """Validate ``doc`` (or ``data`` found at ``prefix`` inside it) against ``model``."""
    value = value_at(doc.data, prefix) if data is None else data
    outcome = validate_value(model, doc, prefix, value)
    if outcome.value is None:
        raise DocumentError(outcome.problems)
    return outcome.value
