"""The exchange file: signed envelopes, written and read one at a time (docs/protocol.md §8).

A file is one JSON document laid out one envelope per line, so that a year of reports is
written and read with one envelope in memory at a time::

    {"head":{...},"envelopes":[
    {envelope},
    {envelope}
    ],"seal":{"count":2,"sha256":"..."}}

Every line but the last is covered by the seal's SHA-256 (of the uncompressed bytes), and
``count`` says how many envelopes there are: a truncated, reordered or edited file is
refused before anything in it is used. A response's seal is also signed by the server
(:func:`ccx_agent.ssm.protocol.sign`), so one byte changed anywhere is caught. The layout
is fixed: a file reformatted by a JSON tool is not the file that was sealed. A name ending
in ``.gz`` is written gzip-compressed; a compressed file is recognised by its first bytes.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from ccx_agent.ssm import protocol
from ccx_agent.ssm.protocol import ProtocolError, canonical
from ccx_agent.userfiles import Output, UserFileError, open_regular, reason

FORMAT = "ccx-sl-file/1"
REQUEST = "request"
RESPONSE = "response"
_HEAD_START = b'{"head":'
_HEAD_END = b',"envelopes":[\n'
_SEAL_START = b'],"seal":'
_SEAL_END = b"}\n"
#: The longest line: one envelope (at most the protocol's 1 MiB), a comma and a newline.
MAX_LINE = protocol.MAX_MESSAGE_BYTES + 2
#: The head and the seal are small; a larger one is not a file of ours.
MAX_SMALL = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
#: The most bytes a file may hold, uncompressed: decades of reports. A larger one (a gzip
#: bomb: a few kB that inflate to gigabytes) is refused before it costs minutes of CPU.
MAX_FILE_BYTES = 256 * 2**20
#: The most envelopes a file may hold: a year of 15-minute reports is 36 (1,000 reports
#: each). Short lines that pass for envelopes cost CPU each; their number is bounded.
MAX_ENVELOPES = 100_000


class FileError(Exception):
    """A file that is not a sealed exchange file of the expected kind: one line why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Writer:
    """Writes an exchange file to a temporary name beside ``path``; :meth:`commit` puts
    it in place (:class:`~ccx_agent.userfiles.Output`: a device or a FIFO is written
    through, a link's target is written). A new file is 0600 (a REGISTER carries the ID
    token, as online)."""

    def __init__(self, path: Path, head: Mapping[str, Any]) -> None:
        self.path = path
        self._output = Output(path, 0o600)
        self._raw = self._output.stream
        self._out: IO[bytes] = self._raw
        if path.name.endswith(".gz"):
            self._out = cast(IO[bytes], gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0))
        self._digest = hashlib.sha256()
        self._pending: bytes | None = None
        self.count = 0
        #: The file's size in bytes, once :meth:`finish` wrote it all.
        self.size = 0
        self._write(_HEAD_START + canonical(head) + _HEAD_END)

    def _write(self, data: bytes) -> None:
        self._digest.update(data)
        self._out.write(data)

    def add(self, envelope: Mapping[str, Any]) -> None:
        """One envelope; only the previous one is held (it needs its comma)."""
        if self._pending is not None:
            self._write(self._pending + b",\n")
        self._pending = canonical(envelope)
        self.count += 1

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    def finish(self, seal: Mapping[str, Any] | None = None) -> None:
        """Write the last envelope and the seal (``seal``: the signed one of a response,
        else count and digest alone)."""
        if self._pending is not None:
            self._write(self._pending + b"\n")
            self._pending = None
        final = seal if seal is not None else self.seal()
        self._out.write(_SEAL_START + canonical(final) + _SEAL_END)
        if self._out is not self._raw:
            self._out.close()
        self.size = self._output.flushed()

    def seal(self) -> dict[str, Any]:
        """The unsigned seal of what was written so far."""
        if self._pending is not None:
            self._write(self._pending + b"\n")
            self._pending = None
        return {"count": self.count, "sha256": self.digest}

    def commit(self) -> None:
        """Make the bytes durable and put the file in place."""
        self._output.commit()

    def abort(self) -> None:
        self._output.abort()


@dataclass(frozen=True, slots=True)
class Sealed:
    """A file whose structure, count and digest were checked (its seal's signature, for a
    response, is the reader's to check: it needs the trust anchors)."""

    path: Path
    head: dict[str, Any]
    seal: dict[str, Any]
    count: int
    digest: str


def _open(path: Path) -> IO[bytes]:
    """``path``, decompressed if it is gzip; a regular file only (a FIFO would hang)."""
    try:
        raw = open_regular(path)
    except UserFileError as exc:
        raise FileError(path, str(exc).removeprefix(f"{path}: ")) from None
    except OSError as exc:
        raise FileError(path, f"cannot read it: {reason(exc)}") from None
    magic = raw.read(2)
    raw.seek(0)
    if magic == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw


def _lines(path: Path) -> Iterator[bytes]:
    with _open(path) as stream:
        n = total = 0
        while True:
            try:
                line = stream.readline(MAX_LINE + 1)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise FileError(path, f"the compressed file is damaged ({exc})") from None
            if not line:
                return
            n += 1
            total += len(line)
            if len(line) > MAX_LINE:
                raise FileError(path, f"line {n} is longer than any envelope may be")
            if total > MAX_FILE_BYTES:
                raise FileError(
                    path,
                    f"more than {MAX_FILE_BYTES:,} bytes (uncompressed): not an exchange "
                    "file (a year of reports is about 7 MB)",
                )
            if n > MAX_ENVELOPES + 2:  # the head and the seal
                raise FileError(
                    path, f"more than {MAX_ENVELOPES:,} envelopes: not an exchange file"
                )
            yield line


def _small(data: bytes, path: Path, what: str) -> dict[str, Any]:
    try:
        return protocol.decode(data, MAX_SMALL)
    except ProtocolError as exc:
        raise FileError(path, f"the {what} is not valid: {exc.message}") from None


def check(path: Path, kind: str) -> Sealed:
    """Read the whole file once: its layout, its head, the count and the digest.

    Nothing in an envelope is believed here; the envelopes are opened one by one later
    (:func:`envelopes`), by the same checks as online.
    """
    lines = _lines(path)
    first = next(lines, b"")
    if not (first.startswith(_HEAD_START) and first.endswith(_HEAD_END)):
        raise FileError(path, f"not a ccx-agent exchange file (no {FORMAT} head)")
    head = _small(first[len(_HEAD_START) : -len(_HEAD_END)], path, "head")
    if head.get("format") != FORMAT:
        raise FileError(path, f"format {str(head.get('format'))[:40]!r} is not {FORMAT!r}")
    if head.get("kind") != kind:
        raise FileError(
            path,
            f"this is a {str(head.get('kind'))[:20]} file, not a {kind} file"
            + (" (import the answer, not the export)" if kind == RESPONSE else ""),
        )
    digest = hashlib.sha256(first)
    count = 0
    seal: dict[str, Any] | None = None
    last_had_comma = False
    for line in lines:
        if seal is not None:
            raise FileError(path, "data after the seal")
        if line.startswith(_SEAL_START):
            if not line.endswith(_SEAL_END):
                raise FileError(path, "the seal is cut short (an incomplete copy?)")
            if last_had_comma:
                raise FileError(path, "envelopes are missing before the seal")
            seal = _small(line[len(_SEAL_START) : -len(_SEAL_END)], path, "seal")
            continue
        if not line.endswith(b"\n") or line.strip() in (b"", b","):
            raise FileError(path, f"line {count + 2} is not an envelope (an incomplete copy?)")
        if count and not last_had_comma:
            raise FileError(path, f"line {count + 2}: envelopes must be separated by commas")
        last_had_comma = line.endswith(b",\n")
        digest.update(line)
        count += 1
    if seal is None:
        raise FileError(path, "the file ends before its seal (an incomplete copy?)")
    if seal.get("count") != count:
        raise FileError(
            path,
            f"the seal counts {str(seal.get('count'))[:12]} envelope(s), the file holds {count}",
        )
    if seal.get("sha256") != digest.hexdigest():
        raise FileError(path, "the content does not match its seal (the file was changed)")
    return Sealed(path, head, seal, count, digest.hexdigest())


def envelopes(sealed: Sealed) -> Iterator[bytes]:
    """Each envelope's bytes, in order, one in memory at a time; the digest is checked
    again at the end, so a file changed since :func:`check` is noticed."""
    digest = hashlib.sha256()
    lines = _lines(sealed.path)
    digest.update(next(lines, b""))
    for line in lines:
        if line.startswith(_SEAL_START):
            break
        digest.update(line)
        yield line[:-2] if line.endswith(b",\n") else line[:-1]
    if digest.hexdigest() != sealed.digest:
        raise FileError(sealed.path, "the file changed while it was being read")
