"""Where agents come from: each source turns its input into a :class:`Snapshot`.

A source that cannot answer raises :class:`SourceError`; the sample then fails with
LICENSE_COMPUTATION_FAILED. A broken source never yields a snapshot of zero agents.
"""

from __future__ import annotations

from typing import Protocol

from ccx_agent.errors import AgentError
from ccx_agent.licensing.snapshot import Snapshot


class SourceError(AgentError):
    """The source could not produce a trustworthy snapshot; the message says why."""


class Source(Protocol):
    def read(self) -> Snapshot: ...

    def close(self) -> None:
        """Release what the source holds (sessions, threads); the daemon calls it once,
        when a reload replaces the source or the daemon stops. No read follows."""
        ...
