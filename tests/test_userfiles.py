"""Files named on the command line: read only when regular, written without ever renaming
over a device, a FIFO or a link (every node here is made in a temporary directory)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from ccx_agent.userfiles import Output, UserFileError, open_regular

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod of a device needs root")


def _drain(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    """A reader of ``fifo`` in a thread (the writer's open waits for one)."""
    got: list[bytes] = []

    def read() -> None:
        with fifo.open("rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, got


def _write(path: Path, data: bytes, mode: int = 0o600) -> Output:
    with Output(path, mode) as out:
        out.stream.write(data)
    return out


def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader, got = _drain(fifo)
    # The reader may not have opened yet: a non-blocking open would then be refused.
    for _ in range(200):
        try:
            out = _write(fifo, b"report\n")
            break
        except UserFileError:
            threading.Event().wait(0.01)
    reader.join(5)
    assert got == [b"report\n"] and out.size == 7 and out.mode() is None
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_fifo_nothing_reads_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(
        UserFileError, match=r"is a FIFO \(named pipe\) that nothing reads: refused"
    ):
        Output(fifo)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@as_root
def test_a_character_device_is_written_through_and_stays_a_device(tmp_path: Path) -> None:
    null = tmp_path / "null"  # the null device's numbers, in a directory of the test's own
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    out = _write(null, b"x" * 1000)
    assert out.size == 1000 and out.mode() is None
    st = null.lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


@as_root
def test_a_block_device_is_refused_and_left_alone(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    os.mknod(disk, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    with pytest.raises(UserFileError, match="is a block device: refused"):
        Output(disk)
    assert stat.S_ISBLK(disk.lstat().st_mode)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserFileError, match="is a directory: refused"):
        Output(tmp_path)


def test_a_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    _write(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


def test_an_existing_file_keeps_its_mode_and_a_new_one_gets_the_given_mode(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old"
    old.write_text("x")
    old.chmod(0o600)
    assert _write(old, b"y", mode=0o644).mode() == 0o600
    assert _write(tmp_path / "new", b"y", mode=0o644).mode() == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.write_text("kept")
    with pytest.raises(RuntimeError), Output(old) as out:
        out.stream.write(b"half")
        raise RuntimeError("cut short")
    assert old.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


def test_reading_refuses_a_fifo_at_once_and_names_what_it_is(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # no writer: a blocking open would wait for ever
    with pytest.raises(UserFileError, match=r"pipe: is a FIFO \(named pipe\), not a regular file"):
        open_regular(fifo)
    with pytest.raises(IsADirectoryError):
        open_regular(tmp_path)
