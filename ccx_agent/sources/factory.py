"""Build the source a config section describes: the one place that knows every kind."""

from __future__ import annotations

from ccx_agent.config import SourceConfig
from ccx_agent.sources import Source
from ccx_agent.sources.file import FileSource


def build(cfg: SourceConfig) -> Source:
    return FileSource(cfg.path)
