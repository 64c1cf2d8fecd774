"""The daemon's side of monitoring: the metrics registry and the endpoint, as the config
says, started, reloaded and stopped with the daemon.

Cheap to import: :mod:`prometheus_client` (in :mod:`ccx_agent.daemon.metrics`) is loaded only
when ``metrics.listen`` is set, so a daemon with metrics off never pays for it. Every
method is a no-op while metrics are off, so the daemon calls them unconditionally.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from ccx_agent import status
from ccx_agent.config.schema import Config, MetricsConfig
from ccx_agent.ssm.port import SsmPort
from ccx_agent.store.db import AlertRow, Store

if TYPE_CHECKING:
    from ccx_agent.daemon.metrics import Metrics
    from ccx_agent.daemon.metrics_http import Endpoint, Health
    from ccx_agent.daemon.syslog import SyslogSink

log = structlog.get_logger("ccx_agent.metrics")


class Monitor:
    def __init__(self, health: Health) -> None:
        self.health = health
        self.metrics: Metrics | None = None
        self.endpoint: Endpoint | None = None
        self._dropped_before = 0
        self._sink: SyslogSink | None = None

    def prepare(self, cfg: MetricsConfig) -> None:
        """Make the registry if ``cfg`` turns metrics on (before the agent is built, so
        that its SSM client is counted). Once made, it lives as long as the process."""
        if cfg.listen is not None and self.metrics is None:
            from ccx_agent.daemon.metrics import Metrics  # noqa: PLC0415 - only with metrics on

            self.metrics = Metrics()
            self.metrics.syslog_dropped(self._dropped)

    def start(self, cfg: MetricsConfig) -> None:
        """Listen as ``cfg`` says (raises :class:`~ccx_agent.daemon.metrics_http.MetricsError`)."""
        self.prepare(cfg)
        if cfg.listen is None or self.metrics is None:
            return
        from ccx_agent.daemon import metrics_http  # noqa: PLC0415 - only with metrics on

        endpoint = metrics_http.Endpoint(
            cfg.listen, metrics_http.settings(cfg), self.metrics.registry, self.health
        )
        endpoint.start()
        self.endpoint = endpoint
        log.info("metrics listening", url=endpoint.url, auth=cfg.basic_auth_file is not None)

    def reload(self, new: MetricsConfig, old: MetricsConfig) -> None:
        """Apply ``metrics.*`` of a reloaded config; on any problem the old listener stays
        as it was, and the problem is logged (a reload never kills the daemon)."""
        if new == old:
            return
        from ccx_agent.daemon import metrics_http  # noqa: PLC0415

        if new.listen is None:
            self.stop()
            log.info("metrics endpoint closed (metrics.listen is null)")
            return
        try:
            self.prepare(new)
            fresh = metrics_http.settings(new)
            if self.endpoint is not None and new.listen == self.endpoint.listen:
                # Same socket: new certificate or users from the next connection on.
                self.endpoint.settings = fresh
                log.info("metrics settings reloaded", url=self.endpoint.url)
                return
            assert self.metrics is not None
            endpoint = metrics_http.Endpoint(new.listen, fresh, self.metrics.registry, self.health)
            endpoint.start()  # the new address first: on failure the old one stays
        except metrics_http.MetricsError as exc:
            kept = self.endpoint.url if self.endpoint is not None else "none"
            log.error("metrics reload refused, keeping the old listener", error=str(exc), kept=kept)
            return
        self.stop()
        self.endpoint = endpoint
        log.info("metrics listening", url=endpoint.url, auth=new.basic_auth_file is not None)

    def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None

    # --- what the jobs tell it ---------------------------------------------------------

    def refresh(self, cfg: Config, store: Store, now: datetime) -> None:
        """Read what the jobs committed (a read snapshot, as ``status`` does) into the
        licensing-state metrics. Best effort: a scrape then serves the last good read."""
        if self.metrics is None:
            return
        try:
            doc = status.collect(cfg, store, now)
        except Exception as exc:
            log.warning("metrics not refreshed: the database could not be read", error=str(exc))
            return
        try:
            self.metrics.refresh(doc)
        except Exception as exc:  # one log line, never a traceback after every job
            log.error("metrics not refreshed", error=f"{type(exc).__name__}: {exc}")

    def counted(self, client: SsmPort | None) -> SsmPort | None:
        if self.metrics is None or client is None:
            return client
        return self.metrics.ssm(client)

    def sampled(self, seconds: float, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.sampled(seconds, ok)

    def emitted(self, rows: Sequence[AlertRow]) -> None:
        if self.metrics is not None:
            self.metrics.emitted([(r.mnemonic, r.severity) for r in rows])

    def job_failed(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.job_failures.labels(name).inc()

    def sink(self, sink: SyslogSink) -> None:
        """The syslog sink whose drops are counted from now on (a reload may replace it;
        the old one's drops stay in the total)."""
        if self._sink is not None and sink is not self._sink:
            self._dropped_before += self._sink_dropped(self._sink)
        self._sink = sink

    def _dropped(self) -> int:
        current = self._sink_dropped(self._sink) if self._sink is not None else 0
        return self._dropped_before + current

    @staticmethod
    def _sink_dropped(sink: SyslogSink) -> int:
        value = sink.stats().get("dropped", 0)
        return value if isinstance(value, int) else 0
