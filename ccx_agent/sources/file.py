"""``source.kind: file``: a JSON or YAML snapshot, re-read at every sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ccx_agent.licensing.snapshot import Snapshot, SnapshotError, parse_snapshot
from ccx_agent.sources import SourceError

#: A snapshot larger than this is refused rather than read into memory.
MAX_BYTES = 256 * 1024 * 1024


def decode(raw: bytes, name: str) -> Any:
    """JSON when the file says so by its name or its first byte, else YAML."""
    text = raw.decode("utf-8")
    if name.endswith(".json") or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{name}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SourceError(f"{name}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Snapshot:
        try:
            with self.path.open("rb") as fh:
                raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise SourceError(
                f"{self.path}: cannot read the snapshot: {exc.strerror or exc}"
            ) from None
        if len(raw) > MAX_BYTES:
            raise SourceError(f"{self.path}: snapshot larger than {MAX_BYTES} bytes")
        try:
            doc = decode(raw, str(self.path))
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self.path}: not UTF-8 text: {exc.reason}") from None
        try:
            return parse_snapshot(doc)
        except SnapshotError as exc:
            raise SourceError(f"{self.path}: {exc}") from None
