"""``source.kind: command``: a program that prints a snapshot in the file format.

The program is run without a shell (its argv exactly as configured), with stdin closed,
in its own process group, at every sample. It must finish within ``timeout`` and print
at most ``max_output_mb``; otherwise it is killed, with every process it started. Once
it has ended, its output is read to the end for at most :data:`EXIT_GRACE`; a process
that still holds it then (a child in a session of its own) is killed, and the sample
goes on with what the program printed. A stop of the daemon kills it at once. A
non-zero exit, a timeout, too much output or output that is not a valid snapshot is a
:class:`SourceError` (the sample fails with LICENSE_COMPUTATION_FAILED), never a
snapshot of zero agents. The last line the program wrote on stderr is quoted in the
error, cut short, as the likeliest explanation.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ccx_agent.config.schema import CommandSource as CommandSourceConfig
from ccx_agent.licensing.snapshot import Snapshot
from ccx_agent.sources import SourceError
from ccx_agent.sources.file import read_snapshot

#: How much of the program's stderr is kept (its end), to explain a failure.
STDERR_KEPT = 4096
#: How long after the program ended its output may stay open (a child of its still
#: writing); then whatever holds it is killed and the sample goes on with what was read.
EXIT_GRACE = 1.0
_QUOTED_MAX = 200


def _last_line(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    last = " ".join(lines[-1].split())
    return last if len(last) <= _QUOTED_MAX else f"{last[: _QUOTED_MAX - 3]}..."


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill the program and anything it started (its process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.wait()


def _pipe_holders(pipes: Sequence[int]) -> list[int]:
    """The processes (other than this one) that hold an end of one of ``pipes``, by the
    pipes' inodes in ``/proc/*/fd``: whatever the program left behind on its output,
    even in a session of its own (``setsid``), out of reach of its process group."""
    links = {f"pipe:[{os.fstat(fd).st_ino}]" for fd in pipes}
    me = os.getpid()
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in links:
                    holders.append(int(proc.name))
                    break
            except OSError:
                continue
    return holders


def _kill_holders(pipes: Sequence[int]) -> int:
    """SIGKILL every process still holding one of ``pipes``; how many there were."""
    holders = _pipe_holders(pipes)
    for pid in holders:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(holders)


def _exit_fd(pid: int) -> int | None:
    """A pidfd that becomes readable when ``pid`` ends (Linux 5.3+), else None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class CommandSource:
    def __init__(self, cfg: CommandSourceConfig) -> None:
        self.argv: Sequence[str] = tuple(cfg.command)
        self.timeout = cfg.timeout.total_seconds()
        self.max_output = cfg.max_output_mb * 1024 * 1024
        self.name = f"source.command ({self.argv[0]})"
        #: Set by :meth:`abort` (the daemon is stopping): no program runs any more.
        self._aborted = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def abort(self) -> None:
        """Kill the program running now, at once, and refuse later runs (from any
        thread): a stop never waits for ``source.timeout``."""
        self._aborted = True
        with contextlib.suppress(OSError):  # full or closed: the read is ending anyway
            os.write(self._wake_w, b"\0")

    def run(self) -> bytes:
        """The program's standard output; a :class:`SourceError` unless it succeeded."""
        if self._aborted:
            raise SourceError(f"{self.name}: not run: the daemon is stopping")
        try:
            process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise SourceError(
                f"{self.name}: cannot run the program: {exc.strerror or type(exc).__name__}"
            ) from None
        assert process.stdout is not None and process.stderr is not None
        pipes = (process.stdout.fileno(), process.stderr.fileno())
        exit_fd = _exit_fd(process.pid)
        try:
            out, err, problem, held = self._collect(process, exit_fd)
            if problem:
                _kill(process)
            else:
                process.wait()  # it has ended (or closed its output and is ending)
            if held:
                # Whatever still holds the output (a child in a session of its own, out
                # of the group's reach) would be left behind at every sample: killed.
                _kill_holders(pipes)
        finally:
            if exit_fd is not None:
                os.close(exit_fd)
            process.stdout.close()
            process.stderr.close()
        said = _last_line(err)
        said = f"; its last error line: {said}" if said else ""
        if problem:
            raise SourceError(f"{self.name}: {problem}{said}")
        code = process.returncode
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise SourceError(f"{self.name}: {how}{said}")
        return b"".join(out)

    def _collect(
        self, process: subprocess.Popen[bytes], exit_fd: int | None
    ) -> tuple[list[bytes], bytes, str, bool]:
        """Read the output until the program has ended and its pipes are closed, or
        :data:`EXIT_GRACE` after it ended (a child may hold them for ever); the output,
        the end of stderr, the problem that stopped it early ("" if none), and whether
        its output was still open then."""
        assert process.stdout is not None and process.stderr is not None
        out: list[bytes] = []
        size = 0
        err = b""
        deadline = time.monotonic() + self.timeout
        ended_at: float | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, "out")
            selector.register(process.stderr, selectors.EVENT_READ, "err")
            selector.register(self._wake_r, selectors.EVENT_READ, "abort")
            if exit_fd is not None:
                selector.register(exit_fd, selectors.EVENT_READ, "exit")
            while True:
                now = time.monotonic()
                still_open = _open_pipes(selector)
                if (
                    ended_at is None
                    and (exit_fd is None or not still_open)
                    and process.poll() is not None
                ):
                    ended_at = now
                if ended_at is not None and not still_open:
                    return out, err, "", False
                if self._aborted:
                    return out, err, "stopped: the daemon is stopping: killed", still_open
                if now >= deadline:
                    problem = f"did not finish within {self.timeout:g}s: killed"
                    return out, err, problem, still_open
                wait = deadline - now
                if ended_at is not None:
                    if now - ended_at >= EXIT_GRACE:
                        return out, err, "", True  # ended; what holds its output is killed
                    wait = min(wait, ended_at + EXIT_GRACE - now)
                elif exit_fd is None:
                    wait = min(wait, 0.1)  # no pidfd: look at the program now and then
                for key, _ in selector.select(wait):
                    if key.data == "exit":
                        selector.unregister(key.fileobj)
                        ended_at = time.monotonic()
                        continue
                    if key.data == "abort":
                        continue  # the flag is looked at above
                    chunk = os.read(key.fd, 1024 * 1024)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    elif key.data == "out":
                        out.append(chunk)
                        size += len(chunk)
                    else:
                        err = (err + chunk)[-STDERR_KEPT:]
                if size > self.max_output:
                    return out, err, f"printed more than {self.max_output} bytes: killed", True

    def read(self) -> Snapshot:
        return read_snapshot(self.run(), f"{self.name} output")

    def close(self) -> None:
        """Nothing else is held between reads (each read waits for its program to end)."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1


def _open_pipes(selector: selectors.BaseSelector) -> bool:
    """Whether the program's stdout or stderr is still open (not read to its end)."""
    return any(key.data in ("out", "err") for key in selector.get_map().values())
