"""A SIGHUP that arrives before the daemon has installed its own handlers.

SIGHUP's default action ends the process. ``systemctl reload`` right after a start (or a
config-management run that reloads every service it touched) can land while the
interpreter is still importing, long before ``ccx-agent run`` could install its
handler, and would kill the daemon. So the console entry point holds hang-ups first of
all; the daemon then takes the held one as a reload, and every other command gives the
signal its default meaning back (and is ended by a hang-up that came meanwhile).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

_held: list[int] = []


def _hold(signum: int, frame: FrameType | None) -> None:
    _held.append(signum)


def hold_hangups() -> None:
    signal.signal(signal.SIGHUP, _hold)


def take_held_hangup() -> bool:
    """Whether a hang-up was held (for the daemon, which handles SIGHUP itself now)."""
    held = bool(_held)
    _held.clear()
    return held


def release_hangups() -> None:
    """For the commands that are not the daemon: SIGHUP ends them again, and one that was
    held is delivered now."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if take_held_hangup():
        os.kill(os.getpid(), signal.SIGHUP)
