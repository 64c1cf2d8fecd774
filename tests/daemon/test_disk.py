"""The disk-full and read-only drills: the state directory on a small tmpfs that the test
mounts (root only; CI runs as root), filled or made read-only under a real daemon and
real commands."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import (
    Daemon,
    DatagramListener,
    Instance,
    Sim,
    make_instance,
    run_cli,
    syslog_messages,
    wait_until,
)


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = Path(tempfile.mkdtemp(prefix="ccx-mount-probe-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return f"cannot mount a tmpfs here: {done.stderr.strip()}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    except OSError as exc:
        return f"cannot mount a tmpfs here: {exc}"
    finally:
        probe.rmdir()


_WHY = _can_mount()
if _WHY is not None and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the disk drills: {_WHY}")
pytestmark = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(fs: Path) -> Path:
    """Fill the file system to the last byte."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def _instance(small_fs: Path, sim: Sim, tmp_path: Path, target: str) -> Instance:
    def on_small_fs(cfg: dict) -> None:  # type: ignore[type-arg]
        cfg["state_dir"] = str(small_fs / "state")

    return make_instance(tmp_path / "inst", sim, target, tweak=on_small_fs)


def test_a_full_disk_is_an_alert_loses_nothing_and_heals_by_itself(
    sim: Sim, tmp_path: Path, small_fs: Path, udp_syslog: DatagramListener
) -> None:
    inst = _instance(small_fs, sim, tmp_path, f"udp://127.0.0.1:{udp_syslog.port}")
    daemon = Daemon(inst)
    daemon.wait_event("ready")
    wait_until("three delivered reports", lambda: len(sim.reports(inst.piid)) >= 3, 30)
    filler = _fill(small_fs)
    alerts = udp_syslog.wait(
        "AGENT_JOB_FAILED",
        lambda got: [m for m in syslog_messages(got) if "-AGENT_JOB_FAILED: " in m],
        30,
    )
    assert any("disk is full" in m for m in alerts), alerts
    daemon.assert_alive()
    # The alert comes after two failures of any job (a report's, a heartbeat's): the disk
    # stays full until three samples in a row failed, so that at least one whole 1 s
    # interval had none (a loop of make test once freed it within one interval).
    failed = len([e for e in daemon.events("job failed") if e.get("job") == "sample"])
    wait_until(
        "three failed samples",
        lambda: (
            len([e for e in daemon.events("job failed") if e.get("job") == "sample"]) >= failed + 3
        ),
        30,
    )
    filler.unlink()
    udp_syslog.wait(
        "AGENT_JOB_RECOVERED",
        lambda got: any("-AGENT_JOB_RECOVERED: " in m for m in syslog_messages(got)),
        30,
    )
    store = inst.store()
    try:
        with store.read() as tx:
            before = len(tx.intervals())
    finally:
        store.close()
    # Reports flow again, and every interval the agent closed reaches SSM exactly once.
    wait_until(
        "the outbox drained after the fill",
        lambda: (
            inst.status(in_process=True)["outbox"] == 0 and len(sim.reports(inst.piid)) > before - 2
        ),
        30,
    )
    assert daemon.stop()[0] == 0
    store = inst.store()
    try:
        with store.read() as tx:
            intervals = tx.intervals()
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    starts = [r.start for r in intervals]
    step = starts[1] - starts[0]
    assert all(b - a == step for a, b in itertools.pairwise(starts)), "a gap"
    assert any(r.status == "NO_DATA" for r in intervals), "the full disk left no trace"
    received = sorted(r["id"] for r in sim.reports(inst.piid))
    assert len(received) == len(set(received))
    assert received == sorted(inst.reported_ids())
    status = inst.status()
    assert status["daemon"]["running"] is False
    sample = status["daemon"]["jobs"].get("sample") or status["daemon"]["jobs"]["report"]
    assert sample["consecutive_failures"] == 0
    assert "disk is full" in sample["last_error"]


def test_commands_on_a_full_or_read_only_disk_say_one_line(
    sim: Sim, tmp_path: Path, small_fs: Path, udp_syslog: DatagramListener
) -> None:
    inst = make_instance(
        tmp_path / "inst",
        sim,
        f"udp://127.0.0.1:{udp_syslog.port}",
        register=False,
        tweak=lambda cfg: cfg.update(state_dir=str(small_fs / "state")),
    )
    filler = _fill(small_fs)
    done = run_cli(inst.config, "register", "--", "token-never-used")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert os.strerror(errno.ENOSPC) in done.stderr or "disk is full" in done.stderr
    filler.unlink()
    inst2 = make_instance(
        tmp_path / "inst2",
        sim,
        f"udp://127.0.0.1:{udp_syslog.port}",
        tweak=lambda cfg: cfg.update(state_dir=str(small_fs / "state2")),
    )
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        for args in (("renew", "auth"), ("renew", "id"), ("deregister",)):
            done = run_cli(inst2.config, *args)
            assert done.returncode != 0, args
            assert "Traceback" not in done.stderr, done.stderr
            lines = [line for line in done.stderr.splitlines() if not line.startswith("alert: ")]
            assert len(lines) == 1, (args, done.stderr)
            assert "read-only" in lines[0] or "readonly" in lines[0], lines
        # Looking still works on a read-only mount.
        assert inst2.status()["registration"]["state"] == "REGISTERED"
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert inst2.status()["registration"]["state"] == "REGISTERED"


def _dir_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except FileNotFoundError:
            continue
    return total


def test_the_state_dir_stays_small_on_a_small_file_system(
    sim: Sim, tmp_path: Path, small_fs: Path, udp_syslog: DatagramListener
) -> None:
    """The write-ahead log is cut back after each report: on a 2 MiB file system the
    daemon runs for many intervals and the state directory's size stays bounded."""
    inst = _instance(small_fs, sim, tmp_path, f"udp://127.0.0.1:{udp_syslog.port}")
    daemon = Daemon(inst)
    daemon.wait_event("ready")
    sizes: list[int] = []
    wals: list[int] = []
    wal = inst.state_dir / "ccx-agent.db-wal"

    def twenty_reports() -> bool:
        sizes.append(_dir_size(inst.state_dir))
        with contextlib.suppress(FileNotFoundError):
            wals.append(wal.stat().st_size)
        return len(daemon.events("report")) >= 20

    wait_until("twenty reports", twenty_reports, 60, step=0.1)
    assert daemon.stop()[0] == 0
    assert not [d for d in daemon.logs() if d.get("event") == "job failed"]
    print(f"state dir: max {max(sizes)} bytes, WAL max {max(wals)} over {len(sizes)} looks")
    # Measured: about 150 KiB in all; the log never holds more than one report's changes.
    assert max(sizes) < 1 << 20, max(sizes)
    assert max(wals) < 128 << 10, max(wals)
