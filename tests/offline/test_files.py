"""The exchange file's layout: one JSON document, one envelope per line, sealed."""

from __future__ import annotations

import gzip
import json
import os
import stat
import time
from pathlib import Path

import pytest

from ccx_agent.offline import files
from ccx_agent.userfiles import UserFileError

HEAD = {"format": files.FORMAT, "kind": files.REQUEST, "export": "e1"}


def write(path: Path, envelopes: list[dict[str, object]]) -> None:
    writer = files.Writer(path, HEAD)
    for env in envelopes:
        writer.add(env)
    writer.finish()
    writer.commit()


@pytest.mark.parametrize("name", ["plain.json", "packed.json.gz"])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_written_files_read_back_and_are_json_documents(
    tmp_path: Path, name: str, count: int
) -> None:
    path = tmp_path / name
    envelopes = [{"n": i, "text": "é\n\u2028"} for i in range(count)]
    write(path, envelopes)
    raw = path.read_bytes()
    if name.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    doc = json.loads(raw)  # any JSON tool can read it
    assert doc["head"] == HEAD and doc["envelopes"] == envelopes
    assert raw.count(b"\n") == count + 2  # the head, one line per envelope, the seal
    sealed = files.check(path, files.REQUEST)
    assert sealed.count == count and sealed.seal["count"] == count
    assert [json.loads(e) for e in files.envelopes(sealed)] == envelopes
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_a_reformatted_or_extended_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write(path, [{"a": 1}, {"b": 2}])
    doc = json.loads(path.read_text())
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(doc, indent=2))
    with pytest.raises(files.FileError, match="not a ccx-agent exchange file"):
        files.check(pretty, files.REQUEST)
    extended = tmp_path / "extended.json"
    extended.write_bytes(path.read_bytes() + b'{"more": 1}\n')
    with pytest.raises(files.FileError, match="data after the seal"):
        files.check(extended, files.REQUEST)
    lines = path.read_bytes().split(b"\n")
    swapped = tmp_path / "swapped.json"
    swapped.write_bytes(b"\n".join([lines[0], lines[2] + b",", lines[1][:-1], *lines[3:]]))
    with pytest.raises(files.FileError, match="does not match its seal"):
        files.check(swapped, files.REQUEST)
    with pytest.raises(files.FileError, match="this is a request file, not a response file"):
        files.check(path, files.RESPONSE)


def test_an_aborted_writer_leaves_nothing(tmp_path: Path) -> None:
    writer = files.Writer(tmp_path / "x.json", HEAD)
    writer.add({"a": 1})
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["plain.json", "packed.json.gz"])
def test_the_size_said_is_the_files_size(tmp_path: Path, name: str) -> None:
    """``offline export`` prints the writer's size: it was the uncompressed bytes without
    the seal (1,042 said for a 1,140-byte file)."""
    writer = files.Writer(tmp_path / name, HEAD)
    for i in range(5):
        writer.add({"n": i, "pad": "x" * 100})
    writer.finish()
    writer.commit()
    assert writer.size == (tmp_path / name).stat().st_size


def test_a_symlinked_output_is_followed_and_a_fifo_nobody_reads_is_refused(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real.json"
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write(link, [{"a": 1}])
    assert link.is_symlink() and files.check(real, files.REQUEST).count == 1
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(UserFileError, match="that nothing reads: refused"):
        files.Writer(fifo, HEAD)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_fifo_to_import_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "answer.json"
    os.mkfifo(fifo)  # nothing writes it: reading it would hang the import
    with pytest.raises(files.FileError, match=r"is a FIFO \(named pipe\), not a regular file"):
        files.check(fifo, files.RESPONSE)


def test_a_gzip_bomb_is_refused_in_moments(tmp_path: Path) -> None:
    """60 MB of short lines that pass for envelopes, in 60 kB: each line was scanned and
    hashed (minutes of CPU for a larger one); the count of lines is bounded."""
    head = b'{"head":' + json.dumps(HEAD, separators=(",", ":")).encode() + b',"envelopes":[\n'
    bomb = tmp_path / "bomb.json.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as gz:
        gz.write(head)
        chunk = b"{},\n" * 250_000
        for _ in range(15):
            gz.write(chunk)
    assert bomb.stat().st_size < 200_000
    started = time.process_time()
    with pytest.raises(files.FileError, match="more than 100,000 envelopes: not an exchange file"):
        files.check(bomb, files.REQUEST)
    assert time.process_time() - started < 5


def test_a_file_larger_than_any_exchange_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound on bytes (checked with a small bound: a real 256 MiB file is slow to make)."""
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 4096)
    path = tmp_path / "big.json.gz"
    write(path, [{"pad": "x" * 1000} for _ in range(8)])
    with pytest.raises(files.FileError, match=r"more than 4,096 bytes \(uncompressed\)"):
        files.check(path, files.REQUEST)
