"""Build the source a config section describes: the one place that knows every kind."""

from __future__ import annotations

from ccx_agent.config.schema import CommandSource as CommandSourceConfig
from ccx_agent.config.schema import FileSource as FileSourceConfig
from ccx_agent.config.schema import ScriptedSource as ScriptedSourceConfig
from ccx_agent.config.schema import SourceConfig
from ccx_agent.sources import Source
from ccx_agent.sources.command import CommandSource
from ccx_agent.sources.file import FileSource


def build(cfg: SourceConfig) -> Source:
    """A source for ``cfg``; the UCCX one keeps its cached configuration between reads,
    so the daemon builds it once and reads it at every sample."""
    if isinstance(cfg, FileSourceConfig):
        return FileSource(cfg.path)
    if isinstance(cfg, CommandSourceConfig):
        return CommandSource(cfg)
    if isinstance(cfg, ScriptedSourceConfig):
        from ccx_agent.sources.scripted import ScriptedSource  # noqa: PLC0415

        return ScriptedSource(cfg)
    from ccx_agent.sources.uccx import UccxSource  # noqa: PLC0415 - requests only if used

    return UccxSource(cfg)
