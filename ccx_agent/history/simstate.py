"""``simulate --state-dir DIR``: a simulated history kept where ``report``, ``alerts`` and
``status`` can read it (a config whose ``state_dir`` is DIR).

DIR is created if absent (mode 0700, like a real state directory) and refused if it
already holds an instance, simulated or not: a simulation must never write into, or
mistake itself for, a real instance's database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ccx_agent.store import statedir
from ccx_agent.store.statedir import Kind


def prepare(path: Path) -> str | None:
    """Make ``path`` ready for a simulated instance; the reason it cannot be, or None."""
    found = statedir.inspect(path)
    if found.kind in (Kind.LIVE, Kind.LOST):
        return (
            f"{path}: already holds an instance ({statedir.db_path(path).name} or its traces); "
            "simulate --state-dir needs an absent or empty directory"
        )
    if path.exists() and not path.is_dir():
        return f"{path}: not a directory"
    if path.exists() and any(path.iterdir()):
        return f"{path}: not empty; simulate --state-dir needs an absent or empty directory"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        return f"{path}: cannot create the state directory: {exc.strerror or exc}"
    return None


def finish(path: Path) -> None:
    """Mark the directory as an instance's, once its database is whole (as the daemon does)."""
    statedir.write_marker(path, datetime.now(UTC).isoformat() + " (ccx-agent simulate)")
