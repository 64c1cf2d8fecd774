"""``source.kind: file``: a JSON or YAML snapshot, re-read at every sample.

Every way the file can be wrong is a :class:`SourceError` whose message starts with the
path and, where it has one, the line: missing or unreadable, not UTF-8, not valid JSON or
YAML, a key given twice (JSON and YAML parsers would silently keep the last one, so a
repeated ``agents:`` could empty the snapshot), or a document :func:`parse_snapshot`
refuses. None of them is ever a snapshot of zero agents.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from ccx_agent.config.yamldoc import BOOL_TAG, alias_problem, yaml_bool
from ccx_agent.licensing.snapshot import (
    Snapshot,
    SnapshotError,
    parse_snapshot,
    parse_snapshot_json,
)
from ccx_agent.sources import SourceError
from ccx_agent.userfiles import kind_of

#: A snapshot larger than this is refused rather than read into memory.
MAX_BYTES = 256 * 1024 * 1024

#: Values that aliases may add to a YAML snapshot: room for anchors shared by thousands
#: of agents, not for nested aliases that expand to billions.
MAX_ALIAS_VALUES = 1_000_000

_LOOKS_LIKE_JSON = re.compile(r"\s*[\[{]")
_BYTES_LOOK_LIKE_JSON = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*[\[{]")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: refuse a key given twice."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                ident = out.get("id", out.get("name"))
                within = f" in the object with id {ident!r}" if isinstance(ident, str) else ""
                raise _DuplicateKeyError(f"key {key!r} given twice{within}")
            seen.add(key)
    return out


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML loading (libyaml when available) that refuses a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key_node.value!r} given twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    def construct_document(self, node: yaml.Node) -> Any:
        """Refuse an alias bomb before it is built: parse_snapshot would walk every one of
        the billions of agents a few nested aliases make."""
        problem = alias_problem(node, "snapshot", limit=MAX_ALIAS_VALUES)
        if problem is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"{problem.key}: {problem.message}", None
            )
        return super().construct_document(node)

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool:
        """``!!bool maybe`` is one line with its line (PyYAML raises a bare KeyError)."""
        try:
            return yaml_bool(self, node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid !!bool value ({exc})", node.start_mark
            ) from None


_Loader.add_constructor(BOOL_TAG, _Loader.construct_yaml_bool)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _json(text: str, name: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{name}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    except RecursionError:
        raise SourceError(f"{name}: not valid JSON: nested too deeply") from None
    except ValueError as exc:  # a key given twice, a number too long to convert
        raise SourceError(f"{name}: not valid JSON: {_one_line(exc)}") from None


def _yaml(text: str, name: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise SourceError(f"{name}{line}: not valid YAML: {_one_line(problem)}") from None
    except RecursionError:
        raise SourceError(f"{name}: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. a date that does not exist: 2024-02-30
        raise SourceError(f"{name}: not valid YAML: {_one_line(exc)}") from None
    except (IndexError, TypeError, OverflowError):  # PyYAML on an empty ``!!float ''``
        raise SourceError(f"{name}: not valid YAML: a tagged value it cannot read") from None


def decode(raw: bytes, name: str) -> Any:
    """Decode a snapshot file's bytes: JSON by name (``*.json``) or by content, else YAML.

    Content starting with ``{`` or ``[`` is read as JSON; in a file not named ``*.json``
    it may still be YAML flow style, which is tried next, but if that fails too the JSON
    error (the more precise one) is reported. A UTF-8 byte order mark is allowed.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SourceError(f"{name}:{line}: not UTF-8 text: {exc.reason}") from None
    if name.endswith(".json"):
        return _json(text, name)
    if _LOOKS_LIKE_JSON.match(text):
        try:
            return _json(text, name)
        except SourceError as json_error:
            try:
                return _yaml(text, name)
            except SourceError:
                raise json_error from None
    return _yaml(text, name)


def read_snapshot(raw: bytes, name: str) -> Snapshot:
    """The snapshot in a file's (or a program's output's) bytes; ``name`` starts each error.

    JSON goes the fast way first (:func:`parse_snapshot_json`: msgspec structs, and a
    proof that no key is given twice); whenever that is in doubt, and for YAML, the
    reference way decides: :func:`decode` (refusing duplicate keys), then
    :func:`parse_snapshot`, whose messages name the agent and the field. The fast way
    never words an error, so every message is the reference's; both ways build the same
    snapshot (tests/sources/test_file.py proves it on random JSON texts).
    """
    if name.endswith(".json") or _BYTES_LOOK_LIKE_JSON.match(raw):
        snapshot = parse_snapshot_json(raw)
        if snapshot is not None:
            return snapshot
    doc = decode(raw, name)
    try:
        return parse_snapshot(doc)
    except SnapshotError as exc:
        raise SourceError(f"{name}: {exc}") from None


def read_regular(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes.

    Opened without blocking, then checked, before a byte is read: a FIFO with no writer
    would block a sample forever, and ``/dev/zero`` (or a link to it) never ends. A file
    that grows past ``limit`` while being read is refused all the same.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        reason = _one_line(exc.strerror or exc)
        raise SourceError(f"{path}: cannot read the {what}: {reason}") from None
    try:
        mode, size = (st := os.fstat(fd)).st_mode, st.st_size
        if stat.S_ISDIR(mode):
            raise SourceError(f"{path}: cannot read the {what}: Is a directory")
        if not stat.S_ISREG(mode):
            raise SourceError(f"{path}: the {what} is {kind_of(mode)}, not a regular file: refused")
        if size > limit:
            raise SourceError(f"{path}: {what} larger than {limit} bytes, refused")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            # As many bytes as the file has, and one more to see it grow: asking for
            # ``limit + 1`` at once would have a buffer of that size set up at every read.
            raw = fh.read(size + 1)
            if len(raw) > size:
                raw += fh.read(limit + 1 - len(raw))
    except OSError as exc:
        reason = _one_line(exc.strerror or exc)
        raise SourceError(f"{path}: cannot read the {what}: {reason}") from None
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise SourceError(f"{path}: {what} larger than {limit} bytes, refused")
    return raw


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Snapshot:
        return read_snapshot(read_regular(self.path, MAX_BYTES, "snapshot"), str(self.path))

    def close(self) -> None:
        """Nothing is held between reads."""
