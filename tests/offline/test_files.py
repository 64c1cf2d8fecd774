"""The exchange file's layout: one JSON document, one envelope per line, sealed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ccx_agent.offline import files

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
