"""``source.kind: command``: a program that prints a snapshot in the file format.

The program is run without a shell (its argv exactly as configured), with stdin closed,
in its own process group, at every sample. It must finish within ``timeout`` and print
at most ``max_output_mb``; otherwise it is killed, with every process it started. A
non-zero exit, a timeout, too much output or output that is not a valid snapshot is a
:class:`SourceError` (the sample fails with LICENSE_COMPUTATION_FAILED), never a
snapshot of zero agents. The last line the program wrote on stderr is quoted in the
error, cut short, as the likeliest explanation.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence

from ccx_agent.config import CommandSource as CommandSourceConfig
from ccx_agent.licensing.snapshot import Snapshot
from ccx_agent.sources import SourceError
from ccx_agent.sources.file import read_snapshot

#: How much of the program's stderr is kept (its end), to explain a failure.
STDERR_KEPT = 4096
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


class CommandSource:
    def __init__(self, cfg: CommandSourceConfig) -> None:
        self.argv: Sequence[str] = tuple(cfg.command)
        self.timeout = cfg.timeout.total_seconds()
        self.max_output = cfg.max_output_mb * 1024 * 1024
        self.name = f"source.command ({self.argv[0]})"

    def run(self) -> bytes:
        """The program's standard output; a :class:`SourceError` unless it succeeded."""
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
        out: list[bytes] = []
        size = 0
        err = b""
        deadline = time.monotonic() + self.timeout
        problem = ""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, "out")
            selector.register(process.stderr, selectors.EVENT_READ, "err")
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    problem = f"did not finish within {self.timeout:g}s: killed"
                    break
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 1024 * 1024)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    elif key.data == "out":
                        out.append(chunk)
                        size += len(chunk)
                    else:
                        err = (err + chunk)[-STDERR_KEPT:]
                if size > self.max_output:
                    problem = f"printed more than {self.max_output} bytes: killed"
                    break
        if problem:
            _kill(process)
        else:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                problem = f"did not finish within {self.timeout:g}s: killed"
                _kill(process)
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

    def read(self) -> Snapshot:
        return read_snapshot(self.run(), f"{self.name} output")

    def close(self) -> None:
        """Nothing is held between reads (each read waits for its program to end)."""
