"""``ccx-agent run``: the scheduler, the signals and the systemd notify protocol.

Everything licensing is decided by the jobs of :class:`~ccx_agent.agent.Agent`, which read
their state from the database; this module only says *when* they run. So a restart, a
crash or a long suspend never skips a renewal or an expiry: the next housekeeping run
reads what is due, and the first report after a stop records the intervals missed while
the daemon was down (as NO_DATA: nothing is invented).

Jobs run on three single-thread executors: ``sample`` (reading the source must not wait
behind a slow SSM), ``ssm`` (report, housekeeping and renewals, in order, never two
conversations at once) and ``heartbeat`` (the watchdog pings, which stop when the
scheduler or a job is stuck, so that systemd restarts the service). A fourth,
``default``, runs no job: APScheduler makes one of its own when none is given, and the
daemon owns (and shuts down) every executor it runs with.

The parts the jobs run on (database, sink, source, SSM client, metrics endpoint) are
made, swapped and closed by :class:`~ccx_agent.daemon.runtime.Runtime`. The signal handlers only
set flags; a thread of the daemon's own acts on them (supervisor's way: nothing runs
inside a handler that could deadlock the interrupted code).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ccx_agent import checkconfig, instance, logs
from ccx_agent.agent import Agent
from ccx_agent.config import schema as config_mod
from ccx_agent.config.schema import Config
from ccx_agent.config.yamldoc import EX_CONFIG, DocumentError
from ccx_agent.daemon import earlysignals, jobhealth
from ccx_agent.daemon.jobhealth import JobHealth
from ccx_agent.daemon.monitoring import Monitor
from ccx_agent.daemon.runtime import Running, Runtime
from ccx_agent.daemon.sdnotify import Notifier, watchdog_interval
from ccx_agent.daemon.syslog import SyslogSink
from ccx_agent.errors import AgentError, LocalError
from ccx_agent.instance import Open
from ccx_agent.licensing.alerts import Alert, AlertFormat, Mnemonic, lines
from ccx_agent.licensing.consumption import compute
from ccx_agent.licensing.timeutil import EPOCH, iso
from ccx_agent.sources import SourceError
from ccx_agent.store import statedir
from ccx_agent.store.db import JOBS_META_KEY, AlertRow, Store

EX_FAILED = 1
#: The heartbeat runs this often when systemd sets no watchdog: as often as under the
#: shipped unit (WatchdogSec=120s, a ping every 60 s). Its only other duty is the stuck
#: check, whose bound is 10 minutes; each run wakes the scheduler and a worker thread.
HEARTBEAT = 60.0
#: A job running longer than this (or the report/sample interval times three, if longer)
#: is stuck: the watchdog pings stop and systemd restarts the service.
STUCK_AFTER = timedelta(minutes=10)
#: How long a stopping daemon waits for the syslog queue to drain.
SYSLOG_DRAIN_S = 5.0
#: Keys that a reload cannot change while the daemon runs (the database and the interval
#: grid depend on them).
RESTART_KEYS = (("state_dir",), ("report", "interval"))

log = structlog.get_logger("ccx_agent.daemon")


def utcnow() -> datetime:
    return datetime.now(UTC)


def boottime() -> float:
    """Seconds by a clock that never jumps and keeps counting through a suspend."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


@dataclass
class JobStats:
    runs: int = 0
    failures: int = 0
    running_since: float | None = None
    #: ``boottime()`` of the first of the current run of failures (None: not failing).
    failing_since: float | None = None
    #: ``boottime()`` of the last run that succeeded (``/healthz``).
    last_ok: float | None = None


class Daemon:
    def __init__(self, path: Path, notifier: Notifier) -> None:
        """Only what a signal handler needs: the parts are made by :meth:`open`, after
        the handlers are in place (a SIGHUP in the first second must not kill us)."""
        self.path = path
        self.notifier = notifier
        self.stats: dict[str, JobStats] = {}
        self.health: dict[str, JobHealth] = {}
        #: Ours, handed to the scheduler: :meth:`_finish` waits for their running jobs.
        self.executors = {
            "default": ThreadPoolExecutor(1),
            "sample": ThreadPoolExecutor(1),
            "ssm": ThreadPoolExecutor(1),
            "heartbeat": ThreadPoolExecutor(1),
        }
        self.scheduler = BlockingScheduler(
            timezone=UTC,
            executors=self.executors,
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self.scheduler.add_listener(self._missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._last_good_sample: float | None = None
        #: The unknown Finesse states already logged (once per state and run).
        self._states_said: set[str] = set()
        self.watchdog_every = watchdog_interval()
        self.lock: statedir.DaemonLock | None = None
        #: Alert rows handed to the sink and not yet written (see :meth:`_emitter`).
        self._in_flight: set[int] = set()
        self._in_flight_lock = threading.Lock()
        self.started = boottime()
        #: The metrics and their endpoint (docs/monitoring.md); no-ops while off.
        self.monitor = Monitor(self.healthz)
        #: Every part the jobs run on; :meth:`open` builds them, :meth:`_finish` closes.
        self.runtime = Runtime(self.monitor, self._emitter, app=syslog_app())
        #: Set by the signal handlers (and nothing else is done there): the number of
        #: the stop signal, and whether a reload was asked for.
        self._stop_signal = 0
        #: What ``run`` returns: 1 once the lock was taken by another daemon.
        self._exit_code = 0
        self._hup = False
        self._wake_r = self._wake_w = -1

    @property
    def store(self) -> Store | None:
        return self.runtime.store

    def install_signals(self) -> None:
        """Handlers that only set a flag and write a byte to a pipe (no lock, no thread
        started, nothing that could deadlock the interrupted code); the ``signals``
        thread wakes on the byte and does what the flags ask (stop, reload)."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        threading.Thread(target=self._signals, name="signals", daemon=True).start()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        held = earlysignals.take_held_stop()
        if held:  # a stop while the interpreter was still importing: a clean stop now
            self._on_stop(held, None)

    def open(self, cfg: Config) -> None:
        """Every part, in the order that lets a failure close what was opened before
        it (:meth:`Runtime.open <ccx_agent.daemon.runtime.Runtime.open>`)."""
        self.run_on = self.runtime.open(cfg)

    def record_config(self, cfg: Config, before: str | None) -> None:
        """Record what the config file means for ``status --check``, validated from the
        bytes of digest ``before`` (:mod:`ccx_agent.checkconfig`). Best effort: without
        the record the check validates the file itself."""
        if self.store is None:
            return
        try:
            checkconfig.record(self.store, self.path, cfg, before)
        except Exception as exc:
            log.debug("config not recorded for status --check", error=str(exc))

    def _emitter(self, run: Running) -> Callable[[Sequence[AlertRow]], None]:
        """Hand alert rows to the syslog sink. A row is marked emitted in the database
        only once its last line is written to the socket (:meth:`_settled`), so a crash
        with lines still queued sends them again at the next start: syslog delivery is at
        least once. Rows already handed over are not handed over again meanwhile."""

        def emit(rows: Sequence[AlertRow]) -> None:
            with self._in_flight_lock:
                fresh = [r for r in rows if r.id == 0 or r.id not in self._in_flight]
                self._in_flight.update(r.id for r in fresh if r.id)
            self.monitor.emitted(fresh)
            for row in fresh:
                log_alert(row)
                last = len(row.lines) - 1
                for i, line in enumerate(row.lines):
                    done = self._settled(row.id) if row.id and i == last else None
                    run.sink.send(row.severity, line, row.time, on_done=done)

        return emit

    def _settled(self, row_id: int) -> Callable[[bool], None]:
        def done(settled: bool) -> None:
            if settled and self.store is not None:
                try:
                    with self.store.transaction() as tx:
                        tx.mark_emitted([row_id])
                except Exception as exc:  # a full disk: kept in flight; the next start resends
                    log.debug("alert not marked emitted", alert_id=row_id, error=str(exc))
                    return
            with self._in_flight_lock:
                self._in_flight.discard(row_id)

        return done

    # --- jobs -----------------------------------------------------------------------

    def _guard(self, name: str, job: Callable[[Running], None]) -> Callable[[], None]:
        """A job that raises is logged with its context and counted; the scheduler goes on.

        A job that keeps failing is an alert (:mod:`ccx_agent.daemon.jobhealth`), shown by
        ``status`` and in systemd's STATUS= line, and after long enough it stops the
        watchdog pings.
        """

        def guarded() -> None:
            if self._stopping.is_set():
                return
            run = self.run_on
            stats = self.stats.setdefault(name, JobStats())
            stats.running_since = boottime()
            try:
                job(run)
            except Exception as exc:  # a job must never kill the scheduler
                stats.failures += 1
                if stats.failing_since is None:
                    stats.failing_since = boottime()
                log.exception("job failed", job=name, failures=stats.failures)
                self._job_failed(name, run, exc)
            else:
                stats.failing_since = None
                stats.last_ok = boottime()
                self._job_ok(name, run)
            finally:
                stats.runs += 1
                stats.running_since = None
                if name != "heartbeat":  # what the job committed, for the next scrape
                    self.monitor.refresh(run.cfg, run.agent.store, utcnow())

        return guarded

    def _job_failed(self, name: str, run: Running, exc: Exception) -> None:
        # It goes to syslog and the database too: no credential in it, ever.
        self.monitor.job_failed(name)
        error = logs.redact_text(f"{type(exc).__name__}: {exc}".strip())
        before = self.health.get(name, JobHealth())
        health, alert = jobhealth.failed(before, name, utcnow(), error, run.cfg.alerts.repeat)
        self.health[name] = health
        self._save_health(run)
        if alert is not None:
            self._raise_local(run, alert)
        self._status(run)

    def _job_ok(self, name: str, run: Running) -> None:
        before = self.health.get(name, JobHealth())
        health, alert = jobhealth.succeeded(before, name, utcnow())
        self.health[name] = health
        if before.failing:  # status must stop saying so
            self._save_health(run)
            self._status(run)
        if alert is not None:
            self._raise_local(run, alert)

    def _save_health(self, run: Running) -> None:
        """Best effort: the failure may be the database itself (a full disk)."""
        doc = json.dumps({k: v.as_json() for k, v in sorted(self.health.items())})
        try:
            with run.agent.store.transaction() as tx:
                tx.set_meta(JOBS_META_KEY, doc)
        except Exception as exc:
            log.debug("job health not saved", error=str(exc))

    def _raise_local(self, run: Running, alert: Alert) -> None:
        """Record and emit an alert about the daemon itself; when the database is what
        fails, straight to syslog and the journal (it is said, even if not kept)."""
        try:
            run.agent.record(utcnow(), [alert])
        except Exception as exc:
            log.error("alert not recorded: the database failed", error=str(exc))
            self._emitter(run)([unrecorded(alert, run.agent.fmt, utcnow())])

    def sample(self, run: Running) -> None:
        self.check_lock()  # as often as the samples: a second daemon is kept out at once
        now = utcnow()
        mono = boottime()
        try:
            snapshot = run.source.read()
        except SourceError as exc:
            if self._stopping.is_set():
                return  # a read cut by the stop is no failed sample
            self.monitor.sampled(boottime() - mono, ok=False)
            log.error("sample failed", error=str(exc))
            run.agent.sample([now], None, error=str(exc))
            return
        except Exception as exc:
            self.monitor.sampled(boottime() - mono, ok=False)
            # A bug in a source is still a failed sample, never a sample of zero agents.
            run.agent.sample([now], None, error=f"{type(exc).__name__}: {exc}")
            raise
        self.monitor.sampled(boottime() - mono, ok=True)
        result = compute(snapshot, run.cfg.license.type, run.cfg.license.premium_features)
        # A state Finesse does not document is said once per state and run, not at every
        # sample (the snapshot says which notes are about one).
        about = {note: state for state, note in snapshot.state_notes}
        for note in snapshot.notes:
            state = about.get(note)
            if state is not None:
                if state in self._states_said:
                    continue
                self._states_said.add(state)
            log.info("source note", note=note)
        last = self._last_good_sample
        run.agent.sample(
            [now],
            dict(result.tags),
            unlicensed=result.unlicensed_agents,
            resumed=last is None,
            elapsed=None if last is None else timedelta(seconds=mono - last),
        )
        self._last_good_sample = mono
        log.debug("sampled", usage=dict(result.tags), agents=len(result.agents))
        for alert in run.agent.note_source_origin(getattr(run.source, "origin", None), now):
            self._raise_local(run, alert)

    def report(self, run: Running) -> None:
        now = utcnow()
        closed = run.agent.close_intervals(now)
        sent = run.agent.flush(now)
        if closed or sent:
            log.info(
                "report",
                closed=[f"{iso(r.start)} {r.status}" for r in closed],
                sent=sent,
            )
        # Once per report: the write-ahead log goes back to zero bytes, so the state
        # directory's size is the database's plus at most a report interval of changes.
        if not run.agent.store.checkpoint():
            log.debug("checkpoint partial: a reader holds an old snapshot")
        self._status(run)

    def housekeeping(self, run: Running) -> None:
        run.agent.housekeeping(utcnow())

    def check_lock(self) -> None:
        """The lock file must still be the one locked (docs/daemon.md, "One daemon per
        state directory"): deleted or replaced, it is locked again at once; taken by
        another daemon meanwhile, this one says so loudly and stops (exit 1)."""
        if self.lock is None or self._stopping.is_set():
            return
        try:
            again = self.lock.verify()
        except statedir.AlreadyRunning as exc:
            log.error(
                "lock lost: another daemon runs on this state directory; stopping",
                path=str(self.lock.path),
                holder=exc.pid,
            )
            self._exit_code = EX_FAILED
            self._stop_signal = self._stop_signal or signal.SIGTERM
            self._wake()
            return
        except OSError as exc:  # a full or read-only file system: said, retried next time
            log.error("lock file cannot be re-created", path=str(self.lock.path), error=str(exc))
            return
        if again:
            log.warning(
                "lock file was deleted or replaced: re-created and locked again",
                path=str(self.lock.path),
            )

    def heartbeat(self, run: Running) -> None:
        """The watchdog ping. It comes from a scheduled job, so it stops when the scheduler
        stops running jobs; and it is withheld while another job is stuck."""
        self.check_lock()
        stuck = self._stuck(run)
        if stuck:
            log.error("job stuck: withholding the watchdog ping", job=stuck)
            return
        if self.watchdog_every is not None:
            self.notifier.watchdog()

    def _stuck(self, run: Running) -> str | None:
        """A job running, or failing every time, for longer than max(10 min, 3 × report
        interval): systemd should restart us (a fresh start reopens everything)."""
        limit = max(STUCK_AFTER, 3 * run.cfg.report.interval).total_seconds()
        now = boottime()
        for name, stats in list(self.stats.items()):  # also read by /healthz's thread
            if stats.running_since is not None and now - stats.running_since > limit:
                return name
            if stats.failing_since is not None and now - stats.failing_since > limit:
                return f"{name} (failing)"
        return None

    def _status(self, run: Running) -> None:
        if not self.notifier.enabled:
            return
        failing = sorted((k, h) for k, h in self.health.items() if h.failing)
        text = ""
        if failing:
            name, h = failing[0]
            since = iso(h.failing_since) if h.failing_since else "?"
            text = f"degraded: {name} failing since {since}: {h.last_error}"
            text += f" (+{len(failing) - 1} more); " if len(failing) > 1 else "; "
        try:
            state = run.agent.state()
        except Exception as exc:
            self.notifier.status(text + f"state unreadable: {type(exc).__name__}")
            return
        job = self.scheduler.get_job("report")
        nxt = getattr(job, "next_run_time", None)
        text += f"{state.registration.value}, {state.authorization.value}"
        if state.enforcement:
            text += f", enforcement: {state.enforcement.value}"
        if nxt is not None:
            text += f"; next report {iso(nxt)}"
        self.notifier.status(text)

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        """``GET /healthz``: healthy while the scheduler runs, no job is stuck (what
        withholds the watchdog ping) and the sample and report jobs have each completed
        within twice their interval (since the start, before their first run)."""
        run = self.run_on if hasattr(self, "run_on") else None
        if run is None or self._stopping.is_set() or not self.scheduler.running:
            return False, {"status": "unhealthy", "reason": "the scheduler is not running"}
        stuck = self._stuck(run)
        if stuck:
            reason = f"job {stuck} for too long: the watchdog pings are withheld"
            return False, {"status": "unhealthy", "reason": reason}
        now = boottime()
        doc: dict[str, Any] = {"status": "ok"}
        for job, every in (
            ("sample", run.cfg.sample.interval),
            ("report", run.cfg.report.interval),
        ):
            stats = self.stats.get(job)
            last = stats.last_ok if stats is not None else None
            age = now - (self.started if last is None else last)
            limit = 2 * every.total_seconds()
            if age > limit:
                reason = (
                    f"the {job} job has not completed for {age:.1f}s "
                    f"(more than 2 x its interval, {limit:g}s)"
                )
                return False, {"status": "unhealthy", "reason": reason}
            doc[f"{job}_age_seconds"] = None if last is None else round(age, 3)
        return True, doc

    def _missed(self, event: JobExecutionEvent) -> None:
        # Coalesced runs are normal after a suspend; say so rather than stay silent.
        log.warning("job run skipped", job=event.job_id, code=event.code)

    # --- scheduling -----------------------------------------------------------------

    def _schedule(self, run: Running) -> None:
        cfg = run.cfg
        sample_s = cfg.sample.interval.total_seconds()
        report_s = cfg.report.interval.total_seconds()
        jitter = int(cfg.report.jitter.total_seconds()) or None
        every = self.watchdog_every or HEARTBEAT
        # Boundaries aligned to the wall clock (multiples of the interval since the epoch).
        self.scheduler.add_job(
            self._guard("sample", self.sample),
            IntervalTrigger(seconds=sample_s, start_date=EPOCH, timezone=UTC),
            id="sample",
            executor="sample",
            misfire_grace_time=max(1, int(sample_s)),
            replace_existing=True,
        )
        self.scheduler.add_job(
            self._guard("report", self.report),
            IntervalTrigger(seconds=report_s, start_date=EPOCH, timezone=UTC, jitter=jitter),
            id="report",
            executor="ssm",
            # No report boundary is ever dropped: a late run still closes every interval.
            misfire_grace_time=None,
            replace_existing=True,
        )
        self.scheduler.add_job(
            self._guard("housekeeping", self.housekeeping),
            IntervalTrigger(
                seconds=sample_s, start_date=EPOCH + timedelta(seconds=sample_s / 2), timezone=UTC
            ),
            id="housekeeping",
            executor="ssm",
            misfire_grace_time=None,
            replace_existing=True,
        )
        self.scheduler.add_job(
            self._guard("heartbeat", self.heartbeat),
            # On the housekeeping's grid (half-way between samples): one wake-up of the
            # scheduler for both when the intervals agree (an idle daemon wakes less).
            IntervalTrigger(
                seconds=every, start_date=EPOCH + timedelta(seconds=sample_s / 2), timezone=UTC
            ),
            id="heartbeat",
            executor="heartbeat",
            misfire_grace_time=max(1, int(every)),
            replace_existing=True,
        )

    # --- signals ----------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        # A flag and a byte, no more: the signals thread acts on it (see _signals).
        self._stop_signal = self._stop_signal or signum
        self._wake()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._hup = True
        self._wake()

    def request_reload(self) -> None:
        """A reload asked for outside a handler (a hang-up held while importing)."""
        self._hup = True
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):  # full: the thread is awake already
                os.write(self._wake_w, b"\0")

    def _signals(self) -> None:
        """Act on the flags the handlers set, each time the wake-up fd says a signal
        came. The scheduler is never touched from inside a handler (the interrupted main
        thread may hold its locks)."""
        read_end = self._wake_r
        try:
            while os.read(read_end, 64):
                if self._stop_signal and not self._stopping.is_set():
                    self._stopping.set()
                    threading.Thread(
                        target=self._stop, args=(self._stop_signal,), name="stop", daemon=True
                    ).start()
                if self._hup:
                    self._hup = False
                    threading.Thread(target=self._queue_reload, name="reload", daemon=True).start()
        finally:
            os.close(read_end)

    def _stop(self, signum: int) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        self.notifier.stopping("stopping: finishing the running job")
        # The running job may be waiting on SSM or UCCX: its exchange is cut now, its
        # report stays in the outbox (docs/daemon.md, "Stopping").
        run = getattr(self, "run_on", None)  # None: a stop before the parts were made
        if run is not None:
            _abort_network(run)
        # A signal during start-up: run() does not start the scheduler once it sees the
        # flag, and if it is starting it right now, it is stopped as soon as it runs.
        deadline = time.monotonic() + 60
        while not self.scheduler.running and not self._done.is_set():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        # Returns at once; run() then waits for the running jobs to finish.
        with contextlib.suppress(SchedulerNotRunningError):
            self.scheduler.shutdown(wait=False)

    def _queue_reload(self) -> None:
        # A SIGHUP during start-up waits for the scheduler (the handlers are installed
        # before anything else, so it never kills the daemon), and logs once the log is set.
        deadline = time.monotonic() + 60
        while not self.scheduler.running:
            if self._done.is_set() or self._stopping.is_set() or time.monotonic() > deadline:
                return
            time.sleep(0.02)
        log.info("reload requested (SIGHUP)")
        # On the ssm executor: a reload never swaps the agent under a running report.
        self.scheduler.add_job(self._reload, id="reload", executor="ssm", replace_existing=True)

    def _reload(self) -> None:
        """Re-read the config; apply it only if it is valid, else keep the old one."""
        old = self.run_on
        before = checkconfig.digest(self.path)
        try:
            cfg = config_mod.load(self.path)
        except DocumentError as exc:
            for problem in exc.problems:
                log.error("reload refused: bad config, keeping the old one", problem=str(problem))
            return
        for key in RESTART_KEYS:
            if _get(cfg, key) != _get(old.cfg, key):
                log.error(
                    "reload refused: this key needs a restart, keeping the old config",
                    key=".".join(key),
                )
                return
        try:
            self.monitor.prepare(cfg.metrics)  # before the build: its SSM client is counted
            # No SSM job runs meanwhile (they share this executor): the old client is
            # closed at once; every part made for the new config is closed on a failure.
            new = self.runtime.reload(cfg)
        except (AgentError, OSError) as exc:
            log.error("reload refused, keeping the old config", error=str(exc))
            return
        except Exception as exc:  # a bug: said as one, never as "fix your config"
            log.exception("reload failed (internal error), keeping the old config", error=str(exc))
            return
        self.monitor.reload(cfg.metrics, old.cfg.metrics)
        self.run_on = new
        if self.runtime.retired():
            # The replaced source and sink go once a sample still using them is done:
            # on the sample executor, after it.
            self.scheduler.add_job(
                self.runtime.close_retired,
                id="close-retired",
                executor="sample",
                replace_existing=True,  # one pending run closes all that were retired
            )
        self._schedule(new)
        self.record_config(cfg, before)
        log.info("config reloaded", path=str(self.path))

    # --- the life ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; whatever ends it (a stop, or a fault before the
        scheduler ran), every part is closed and the lock released (:meth:`_finish`)."""
        try:
            self._serve()
        finally:
            code = self._finish()
        return code

    def _serve(self) -> None:
        run = self.run_on
        self._save_health(run)  # a new life: the last one's failures are history
        self._guard("sample", self.sample)()
        if self._stopping.is_set():
            return
        self._raise_local(run, Alert(Mnemonic.AGENT_READY, _ready_detail(run)))
        self.notifier.ready(f"started; {run.agent.state().registration.value}")
        log.info(
            "ready",
            config=str(self.path),
            state_dir=str(run.cfg.state_dir),
            user=statedir.user_name(os.geteuid()),
        )
        self._schedule(run)
        # Catch up at once: intervals missed while down, unsent reports, due renewals.
        self.scheduler.add_job(self._guard("report", self.report), id="catch-up", executor="ssm")
        self.scheduler.add_job(
            self._guard("housekeeping", self.housekeeping), id="catch-up-hk", executor="ssm"
        )
        if not self._stopping.is_set():
            try:
                self.scheduler.start()
            except JobLookupError:
                # A stop that lands while the main loop hands out a one-off job (catch-up,
                # reload): APScheduler then cannot find the job it meant to remove.
                if not self._stopping.is_set():
                    raise

    def _finish(self) -> int:
        self._done.set()
        for executor in self.executors.values():
            executor.shutdown(wait=True)
        run = self.run_on
        # Waiting for a target that is down helps nobody: every alert is in the journal too.
        up = bool(run.sink.stats().get("connected"))
        drained = self.runtime.flush(SYSLOG_DRAIN_S if up else 0.5)
        self.runtime.close()
        if self.lock is not None:
            self.lock.release()
        log.info(
            "stopped",
            syslog_drained=drained,
            runs={k: v.runs for k, v in self.stats.items()},
            failures={k: v.failures for k, v in self.stats.items() if v.failures},
        )
        self.notifier.close()
        self._close_wake()
        return self._exit_code

    def _close_wake(self) -> None:
        """The signals thread ends when its pipe closes (it is a daemon thread)."""
        fd, self._wake_w = self._wake_w, -1  # first: a late handler then writes nothing
        if fd >= 0:
            os.close(fd)


#: The structured log's level for an alert of each syslog severity (0 emergency … 7 debug).
_LOG_LEVEL = (
    logging.CRITICAL,
    logging.CRITICAL,
    logging.CRITICAL,
    logging.ERROR,
    logging.WARNING,
    logging.INFO,
    logging.INFO,
    logging.DEBUG,
)


def _abort_network(run: Running) -> None:
    """Cut the SSM exchange and the source read in flight, and refuse later ones."""
    for part in (run.agent.ssm, run.source):
        abort = getattr(part, "abort", None)
        if callable(abort):
            abort()


def _get(cfg: Config, key: tuple[str, ...]) -> Any:
    value: Any = cfg
    for part in key:
        value = getattr(value, part)
    return value


def _ready_detail(run: Running) -> str:
    cfg = run.cfg
    return (
        f"license type {cfg.license.type.value}, source {cfg.source.kind}, "
        f"report every {int(cfg.report.interval.total_seconds())}s"
    )


def main(path: Path, err: TextIO | None = None, *, log_level: str = "info") -> int:
    """Start the daemon; a bad config is one line per problem and exit 78."""
    err = err or sys.stderr
    notifier = Notifier.from_env()
    daemon = Daemon(path, notifier)
    # First of all: a SIGHUP or SIGTERM in the first second is handled, never fatal.
    daemon.install_signals()
    try:
        return _start(daemon, path, err, log_level)
    finally:
        daemon._close_wake()  # the signals thread ends, whichever way the start went


def _start(daemon: Daemon, path: Path, err: TextIO, log_level: str) -> int:
    """Everything after the signal handlers: the config, the checks, the parts, the run."""
    faulthandler.enable()
    # `kill -USR1 PID` prints every thread's stack to stderr (the journal): a stuck job's
    # whereabouts, without stopping the daemon.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logs.configure(level=log_level)
    if earlysignals.take_held_hangup():
        # One came while the interpreter was still importing: a reload, once running.
        daemon.request_reload()
    before = checkconfig.digest(path)
    cfg = config_mod.load_or_status(path, err)
    if isinstance(cfg, int):
        return cfg
    # The files the config names, checked as check-config checks them: a missing one is
    # named by its key and line, not by a later error that names only the file.
    problems = config_mod.runtime_problems(cfg, path)
    if problems:
        for problem in problems:
            print(problem, file=err)
        log.error("cannot start", error=str(problems[0]), problems=len(problems))
        _init_failed(cfg, str(problems[0]))
        return EX_CONFIG
    for warning in cfg.source.warnings():
        log.warning("config warning", warning=warning)
    try:
        _claim_state_dir(daemon, cfg)
    except statedir.AlreadyRunning as exc:
        # Not an init failure: the other daemon is fine. systemd's restart will retry.
        print(f"error: {exc}", file=err)
        log.error("cannot start", error=str(exc))
        return EX_FAILED
    except (LocalError, OSError) as exc:
        return _cannot_start(
            cfg, daemon, exc, EX_CONFIG if isinstance(exc, LocalError) else EX_FAILED, err
        )
    try:
        daemon.open(cfg)
    except AgentError as exc:
        # What only a change by the operator can fix (the config, the files, a damaged
        # database, a source or an SSM trust anchor that cannot be used) must not make
        # systemd restart it in a loop: 78.
        return _cannot_start(cfg, daemon, exc, EX_CONFIG, err)
    except OSError as exc:  # a transient I/O error is worth a restart: 1
        return _cannot_start(cfg, daemon, exc, EX_FAILED, err)
    except Exception as exc:
        # A bug is not the operator's to fix: never 78 ("fix your config"). Its traceback
        # goes to the journal, AGENT_INIT_FAILED says so, and systemd may restart us.
        log.exception("cannot start: internal error")
        return _cannot_start(cfg, daemon, exc, EX_FAILED, err, bug=True)
    daemon.record_config(cfg, before)
    return daemon.run()


def _claim_state_dir(daemon: Daemon, cfg: Config) -> None:
    """Refuse a lost instance or files this user cannot use, then take the one-daemon
    lock (raises, with one line to say). Root in another user's directory was made that
    user by the CLI's entry point already."""
    found = statedir.inspect(cfg.state_dir)
    if found.kind is statedir.Kind.LOST:
        raise statedir.LostInstance(statedir.lost_message(cfg.state_dir, found.evidence))
    if found.kind is statedir.Kind.ABSENT:
        cfg.state_dir.mkdir(mode=0o700, parents=True)
    problems = statedir.access_problems(cfg.state_dir)
    if problems:
        raise LocalError("; ".join(problems))
    daemon.lock = statedir.DaemonLock(cfg.state_dir)
    daemon.lock.acquire()


def _cannot_start(
    cfg: Config, daemon: Daemon, exc: BaseException, code: int, err: TextIO, *, bug: bool = False
) -> int:
    """Say why, record AGENT_INIT_FAILED through the store and sink the start opened
    (never a second of either), then close every part and the lock."""
    reason = f"internal error: {type(exc).__name__}: {exc}" if bug else str(exc)
    print(f"error: cannot start: {reason}", file=err)
    if not bug:
        log.error("cannot start", error=reason)
    runtime = daemon.runtime
    try:
        _init_failed(cfg, reason, store=runtime.store, sink=runtime.sink)
    finally:
        runtime.close()
        if daemon.lock is not None:
            daemon.lock.release()
        daemon.notifier.close()
    return code


def log_alert(row: AlertRow) -> None:
    """Every alert into the structured log too: journald keeps it when syslog is down."""
    log.log(
        _LOG_LEVEL[min(max(row.severity, 0), 7)],
        "alert",
        mnemonic=row.mnemonic,
        severity=row.severity,
        # The license tags the alert is about: the countdown's syslog lines are the
        # seed's, byte for byte, with no room to name them.
        tags=list(row.tags),
        alert_id=row.id,
        time=iso(row.time),
        detail=row.detail,
    )


def unrecorded(alert: Alert, fmt: AlertFormat, now: datetime) -> AlertRow:
    """An alert as a row that no database holds (id 0), for when the database is the fault."""
    return AlertRow(
        0, now, alert.mnemonic, alert.severity, alert.tags, alert.detail, tuple(lines(alert, fmt))
    )


#: Set by the template unit ccx-agent@.service to the instance's name.
INSTANCE_ENV = "CCX_AGENT_INSTANCE"


def syslog_app() -> str:
    """The app name of the alert lines: ``ccx-agent``, or ``ccx-agent-NAME`` for the
    instance NAME of the template unit, so that a collector tells the clusters apart."""
    name = os.environ.get(INSTANCE_ENV, "")
    safe = "".join(c for c in name if c.isalnum() or c in "-_.")[:38]
    return f"ccx-agent-{safe}" if safe else "ccx-agent"


def _init_failed(
    cfg: Config, reason: str, *, store: Store | None = None, sink: SyslogSink | None = None
) -> None:
    """AGENT_INIT_FAILED: recorded and sent when the database can be opened (marked
    emitted once written, like every alert), else sent straight to syslog (the fault may
    be the database itself). A failed start never creates a state directory or database.

    ``store`` and ``sink`` are the ones the start opened, if it got that far: they are
    used, not opened again, and left to their owner to close; what this opens, it closes.
    """
    own_sink = sink is None
    if sink is None:
        sink = SyslogSink(cfg.alerts.syslog, app=syslog_app())
        sink.start()
    own_store = store is None
    if store is None:
        try:
            store = instance.open_store(cfg, Open.WRITE)
        except (LocalError, statedir.NoDatabase, OSError):
            store = None

    def mark(row_id: int) -> Callable[[bool], None]:
        def done(settled: bool) -> None:
            if settled and store is not None:
                with contextlib.suppress(Exception), store.transaction() as tx:
                    tx.mark_emitted([row_id])

        return done

    def emit(rows: Sequence[AlertRow]) -> None:
        for row in rows:
            log_alert(row)
            for i, line in enumerate(row.lines):
                last = row.id and i == len(row.lines) - 1
                sink.send(row.severity, line, row.time, on_done=mark(row.id) if last else None)

    alert = Alert(Mnemonic.AGENT_INIT_FAILED, reason)
    try:
        if store is not None:
            Agent(cfg, store, None, emit=emit, delivers_alerts=False).record(utcnow(), [alert])
        else:
            emit([unrecorded(alert, cfg.alerts.format(), utcnow())])
    except Exception as exc:
        log.error("AGENT_INIT_FAILED not recorded", error=str(exc))
        emit([unrecorded(alert, cfg.alerts.format(), utcnow())])
    finally:
        sink.flush(2.0)
        if own_sink:
            sink.close(1.0)
        if own_store and store is not None:
            store.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(Path(os.environ.get(config_mod.ENV_PATH, config_mod.DEFAULT_PATH))))
