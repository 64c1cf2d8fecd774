"""A private, real systemd-journald for ``tests/test_logs.py``; not a test itself.

    unshare -m --propagation private python -m tests.journal_run IDENT -- CMD [ARG...]

In its own mount namespace (hence ``unshare``, as root) it mounts an empty tmpfs over
``/run`` (and ``/var/log/journal``), so nothing of the host is read or written, starts
``systemd-journald`` there, and connects CMD's stdout to the journal the way systemd does
for a service with ``StandardOutput=journal``: a stream socket to
``/run/systemd/journal/stdout`` with the stream header (identifier IDENT, default priority
6, ``SyslogLevelPrefix=`` on) and ``JOURNAL_STREAM`` set to that socket's device and inode.

When CMD has exited, it waits (polling, with a deadline) for a last line of its own to be
in the journal, then prints one JSON object: ``{"rc": CMD's exit code, "entries": every
entry of IDENT, "err": the entries of `journalctl -p err -t IDENT`}``, entries as
``journalctl -o json`` gives them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

JOURNALD = "/lib/systemd/systemd-journald"
STDOUT_SOCKET = Path("/run/systemd/journal/stdout")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """journald must not outlive this process, however it ends."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait(what: str, predicate: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"journal_run: timed out waiting for {what}")
        time.sleep(0.05)
    return value


def _entries(ident: str, *extra: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["journalctl", "--no-pager", "-o", "json", "-t", ident, *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(argv: list[str]) -> int:
    ident, sep, *cmd = argv
    if sep != "--" or not cmd:
        raise SystemExit(__doc__)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    if Path("/var/log/journal").is_dir():
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/var/log/journal"], check=True)
    STDOUT_SOCKET.parent.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    journald = subprocess.Popen(
        [JOURNALD],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, before exec
    )
    try:
        _wait("journald's stdout socket", STDOUT_SOCKET.exists)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(STDOUT_SOCKET))
        sock.shutdown(socket.SHUT_RD)
        # identifier, unit, default priority, level prefix, to syslog, to kmsg, to console
        sock.sendall(f"{ident}\n\n6\n1\n0\n0\n0\n".encode())
        st = os.fstat(sock.fileno())
        child_env = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        rc = subprocess.run(
            cmd,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=sock.fileno(),
            env=child_env,
            timeout=60,
        ).returncode
        last = f"journal_run-end-{uuid.uuid4().hex}"
        sock.sendall(f"<7>{last}\n".encode())
        sock.close()
        entries = _wait(
            "the last line in the journal",
            lambda: (found := _entries(ident)) and found[-1].get("MESSAGE") == last and found,
        )
        print(json.dumps({"rc": rc, "entries": entries[:-1], "err": _entries(ident, "-p", "err")}))
    finally:
        journald.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            journald.wait(timeout=10)
        if journald.poll() is None:
            journald.kill()
            journald.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
