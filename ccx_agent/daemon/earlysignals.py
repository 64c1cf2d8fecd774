"""Signals that arrive before the daemon has installed its own handlers.

SIGHUP's and SIGTERM's default action ends the process. ``systemctl reload`` right after
a start (or a config-management run that reloads every service it touched), or a stop
right after a start, can land while the interpreter is still importing, long before
``ccx-agent run`` could install its handlers, and would kill the daemon (for a SIGTERM,
in the middle of whatever it was doing). So the console entry point holds hang-ups and
stop signals first of all; the daemon then takes a held hang-up as a reload and a held
stop as a clean stop, and every other command gives the signals their default meaning
back once its imports are done (and is ended by one that came meanwhile, as it would have
been; a Ctrl-C raised in the middle of an import can be swallowed by a C extension that
calls back into Python, and the command would then go on).

Only the interpreter's own start (before any code of the agent runs, some 10-20 ms) is
out of reach; under systemd a reload waits for ``READY=1`` anyway.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

#: The signals held while importing: their default action would end the process.
HELD = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

_held: list[int] = []


def _hold(signum: int, frame: FrameType | None) -> None:
    _held.append(signum)


def hold_hangups() -> None:
    """Hold SIGHUP, SIGTERM and SIGINT (the name is kept for the callers).

    The three are blocked while their handlers go in, so that they are held together:
    a signal that lands between two ``signal.signal`` calls stays pending and reaches
    ``_hold`` when they are unblocked, instead of the default action of one whose handler
    is not in yet."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        for signum in HELD:
            signal.signal(signum, _hold)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def take_held_hangup() -> bool:
    """Whether a hang-up was held (for the daemon, which handles SIGHUP itself now)."""
    held = signal.SIGHUP in _held
    _held[:] = [s for s in _held if s != signal.SIGHUP]
    return held


def take_held_stop() -> int:
    """The first stop signal held (SIGTERM or SIGINT), 0 if none: for the daemon, which
    handles them itself now."""
    stops = [s for s in _held if s != signal.SIGHUP]
    _held[:] = [s for s in _held if s == signal.SIGHUP]
    return stops[0] if stops else 0


def release_hangups() -> None:
    """For the commands that are not the daemon: the signals get their default meaning
    again, and each one that was held is delivered now."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    held = list(dict.fromkeys(_held))
    _held.clear()
    for signum in held:
        os.kill(os.getpid(), signum)
