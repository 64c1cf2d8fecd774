"""The one atomic write: whole or not at all, the mode exact, nothing left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ccx_agent import atomicfile


@pytest.mark.parametrize("durable", [True, False])
def test_a_file_is_replaced_whole_with_its_mode(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "ca.pem"
    target.write_bytes(b"old")
    old = os.umask(0o077)  # the umask does not narrow the mode asked for
    try:
        atomicfile.write_file(target, b"new" * 100_000, mode=0o644, durable=durable)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new" * 100_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["ca.pem"]


def test_a_secret_is_never_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    atomicfile.write_file(target, b"secret", mode=0o600, durable=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "unit"
    target.mkdir()  # a file cannot replace a directory: the rename fails
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        atomicfile.write_file(target, b"new", mode=0o644, durable=True)
    assert (target / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit"]


def test_a_temporary_file_is_named_as_the_key_store_wipes_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the write and the rename leaves ``.new-NAME.XXXX.tmp``: the key
    store's wipe (deregistration) removes exactly those."""
    target = tmp_path / "ab12.pem"
    made: list[str] = []
    real_replace = os.replace

    def watch(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        made.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watch)  # observes the name only; the rename is real
    atomicfile.write_file(target, b"k", mode=0o600, durable=False)
    [name] = made
    assert name.startswith(f"{atomicfile.TMP_PREFIX}ab12.pem.")
    assert name.endswith(atomicfile.TMP_SUFFIX)
    assert list(tmp_path.glob(f"{atomicfile.TMP_PREFIX}*{atomicfile.TMP_SUFFIX}")) == []
