"""The parts ``ccx-agent run`` runs on, owned in one place.

The daemon's parts are the state database, the syslog sink (a thread), the source (UCCX:
HTTP sessions and a thread pool), the SSM client (kept-alive TLS connections), the metrics
endpoint (a listening socket and its thread) and the agent that ties them together. Each
is made here, in an order that lets a failure close what was made before it, and each is
closed here, once, by whoever replaced it or by :meth:`Runtime.close` (fail2ban's
symmetric start and stop): a reload keeps what it leaves unchanged and retires the rest,
a failed start closes everything it opened, and nothing is ever opened twice (the
``AGENT_INIT_FAILED`` of a failed start goes through the same store and sink).

The scheduler and its executors are the daemon's (:mod:`ccx_agent.daemon.scheduler`): this module
knows nothing of when jobs run, only of what they run on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from ccx_agent import instance
from ccx_agent.agent import Agent, Emit
from ccx_agent.config.schema import Config
from ccx_agent.daemon.monitoring import Monitor
from ccx_agent.daemon.syslog import SyslogSink
from ccx_agent.instance import Open
from ccx_agent.sources import Source
from ccx_agent.sources.factory import build as build_source
from ccx_agent.ssm.port import SsmPort, Udi
from ccx_agent.store.db import Store

log = structlog.get_logger("ccx_agent.daemon")

#: How long a retired syslog sink may take to deliver what it still holds.
RETIRED_SINK_DRAIN_S = 5.0


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class Running:
    """What the jobs run on: replaced as a whole by a successful reload."""

    cfg: Config
    agent: Agent
    source: Source
    sink: SyslogSink
    #: The agent's SSM port (None in ``transport.mode: offline``), closed with it.
    client: SsmPort | None


def close_quietly(part: Closeable, what: str) -> None:
    """Close ``part``; a failure to close is logged, never raised (a stop or a reload
    must close the other parts too)."""
    try:
        part.close()
    except Exception as exc:
        log.warning("part not closed cleanly", part=what, error=f"{type(exc).__name__}: {exc}")


class _SinkCloser:
    """A sink's ``close`` with the drain time a retired one is given."""

    def __init__(self, sink: SyslogSink, timeout: float) -> None:
        self.sink = sink
        self.timeout = timeout

    def close(self) -> None:
        self.sink.close(self.timeout)


class Runtime:
    """Builds, swaps and closes the daemon's parts.

    ``emitter`` turns a :class:`Running` into the function its agent hands alert rows to
    (the daemon's, which tracks what is in flight); ``app`` is the syslog app name.
    """

    def __init__(
        self, monitor: Monitor, emitter: Callable[[Running], Emit], *, app: str = "ccx-agent"
    ) -> None:
        self.monitor = monitor
        self.emitter = emitter
        self.app = app
        self.store: Store | None = None
        self.udi: Udi | None = None
        #: The sink of a start that got that far (also what AGENT_INIT_FAILED goes to).
        self.sink: SyslogSink | None = None
        self.running: Running | None = None
        #: Parts a reload replaced, closed by :meth:`close_retired` once no job uses them.
        self._retired: list[tuple[str, Closeable]] = []
        self._lock = threading.Lock()
        self._closed = False

    # --- start ----------------------------------------------------------------------

    def open(self, cfg: Config) -> Running:
        """The database, the UDI, the metrics endpoint, the syslog sink, then the source,
        the SSM client and the agent. Raises on the first failure; what was opened stays
        owned here and :meth:`close` closes it (a failed start first records
        AGENT_INIT_FAILED through the same store and sink)."""
        self.store = instance.open_store(cfg, Open.CREATE)
        self.udi = instance.instance_udi(self.store, cfg)
        # Before anything that would need closing: a port in use is one line and exit 78.
        self.monitor.start(cfg.metrics)
        self.sink = self._new_sink(cfg)
        self.running = self._build(cfg, self.sink, None)
        return self.running

    def _new_sink(self, cfg: Config) -> SyslogSink:
        sink = SyslogSink(cfg.alerts.syslog, app=self.app)
        sink.start()
        self.monitor.sink(sink)
        return sink

    def _build(self, cfg: Config, sink: SyslogSink, source: Source | None) -> Running:
        """The SSM client, the source (unless ``source`` is kept) and the agent for
        ``cfg``. On a failure, the client and source made here are closed before the
        error goes on; ``sink`` and a kept ``source`` are the caller's."""
        assert self.store is not None and self.udi is not None
        with contextlib.ExitStack() as undo:
            client = self.monitor.counted(instance.client_for(cfg))
            if client is not None:
                undo.callback(close_quietly, client, "ssm client")
            if source is None:
                source = build_source(cfg.source)
                undo.callback(close_quietly, source, "source")
            # The agent does not mark its alerts emitted: the emitter does, once written.
            agent = Agent(
                cfg,
                self.store,
                client,
                udi=self.udi,
                delivers_alerts=False,
                offline=cfg.transport.mode == "offline",
            )
            run = Running(cfg, agent, source, sink, client)
            run.agent.emit = self.emitter(run)
            # A license type that differs from the registered instance's is refused here,
            # once, rather than failing every job.
            run.agent.state()
            undo.pop_all()
        return run

    # --- reload ---------------------------------------------------------------------

    def reload(self, cfg: Config) -> Running:
        """Build the parts of ``cfg``, keeping the sink and the source where their keys
        did not change. On a failure every part made for ``cfg`` is closed, the old ones
        stay in use, and the error goes on. On success the old SSM client is closed at
        once (the caller runs this where no SSM exchange can run), and the replaced
        source and sink are retired: :meth:`close_retired` closes them."""
        old = self.running
        assert old is not None
        with contextlib.ExitStack() as undo:
            if cfg.alerts.syslog == old.cfg.alerts.syslog:
                sink = old.sink
            else:
                sink = self._new_sink(cfg)
                undo.callback(self.monitor.sink, old.sink)  # LIFO: after the close below
                undo.callback(sink.close, 1.0)
            source = old.source if cfg.source == old.cfg.source else None
            new = self._build(cfg, sink, source)
            undo.pop_all()
        self.running = new
        if old.client is not None:
            close_quietly(old.client, "ssm client")
        with self._lock:
            if new.source is not old.source:
                self._retired.append(("source", old.source))
            if new.sink is not old.sink:
                self.sink = new.sink
                self._retired.append(("syslog sink", _SinkCloser(old.sink, RETIRED_SINK_DRAIN_S)))
        return new

    def retired(self) -> int:
        """How many replaced parts wait for :meth:`close_retired`."""
        with self._lock:
            return len(self._retired)

    def close_retired(self) -> None:
        """Close the parts a reload replaced. The daemon calls it on the sample
        executor, after any sample that was reading the old source has returned."""
        with self._lock:
            parts, self._retired = self._retired, []
        for what, part in parts:
            close_quietly(part, what)

    # --- stop -----------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Let the sink deliver what it holds (a stop's last alerts)."""
        sink = self.sink
        return sink.flush(timeout) if sink is not None else True

    def close(self, sink_timeout: float = 1.0) -> None:
        """Close every part, in the reverse order of :meth:`open`; idempotent. The
        database goes last: a sink callback may still mark an alert emitted."""
        if self._closed:
            return
        self._closed = True
        self.close_retired()
        run, self.running = self.running, None
        if run is not None:
            if run.client is not None:
                close_quietly(run.client, "ssm client")
            close_quietly(run.source, "source")
        if self.sink is not None:
            close_quietly(_SinkCloser(self.sink, sink_timeout), "syslog sink")
            self.sink = None
        self.monitor.stop()
        if self.store is not None:
            close_quietly(self.store, "state database")
            self.store = None
