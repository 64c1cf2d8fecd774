"""Where the config file is: kept apart from :mod:`ccx_agent.config.schema` (pydantic and its
schema) so that a command finds its config without importing the schema it may never
need (``--help``, or ``status --check`` answered from the daemon's record of it)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PATH = Path("/etc/ccx-agent/ccx-agent.yaml")
ENV_PATH = "CCX_AGENT_CONFIG"
#: ``state_dir``'s default (the schema's, :class:`ccx_agent.config.schema.CommonConfig`).
DEFAULT_STATE_DIR = Path("/var/lib/ccx-agent")


def default_path() -> Path:
    """``$CCX_AGENT_CONFIG`` if set and not empty, else ``/etc/ccx-agent/ccx-agent.yaml``."""
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH)


def serial_number(serial: str) -> str:
    """The UDI's serial number: ``identity.serial``, or this host's name when it is empty
    (the schema's and the daemon's record's, :mod:`ccx_agent.checkconfig`)."""
    if serial:
        return serial
    import socket  # noqa: PLC0415 - only when the config leaves it to the host

    return socket.gethostname()
