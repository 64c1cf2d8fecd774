"""The imperative shell: one method per job, each read -> compute -> commit -> effects.

A job reads the state from the database, asks the pure core (``ccx_agent.licensing``) what
follows, commits the new state together with the alerts and outbox rows it implies in one
transaction, and only then performs the effects: emit the alerts, talk to SSM. A crash at
any instant therefore leaves the previous or the next state. An effect cut short by a
crash is redone from the database: a report not yet acknowledged is sent again and the
server de-duplicates it by id (exactly once); an alert not yet marked emitted is emitted
again (at least once: a crash between emitting and marking repeats it).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from ccx_agent.config.schema import CommonConfig
from ccx_agent.errors import AgentError
from ccx_agent.licensing import interval, lifecycle
from ccx_agent.licensing.alerts import Alert, AlertFormat, Mnemonic, lines
from ccx_agent.licensing.catalogue import tags_of
from ccx_agent.licensing.interval import IntervalRecord
from ccx_agent.licensing.lifecycle import Due, Identity, ProductState, Timers
from ccx_agent.licensing.offline import exchange_due
from ccx_agent.licensing.timeutil import EPOCH, floor_to, iso
from ccx_agent.ssm.port import (
    Acknowledged,
    Authorized,
    Credentials,
    IdRenewed,
    SsmAborted,
    SsmError,
    SsmPort,
    SsmUnreachable,
    Udi,
)
from ccx_agent.store.db import (
    LAST_REPORT_KEY,
    SOURCE_META_KEY,
    AlertRow,
    OpenInterval,
    Store,
    Tx,
)

#: How many interval reports go in one REPORT_USAGE message.
REPORT_BATCH = 96
#: After a long stop, at most this many missed intervals are recorded (as NO_DATA).
MAX_BACKFILL = 96 * 31
#: Retention pruning: rows per write transaction, and transactions per housekeeping run.
PRUNE_BATCH = 500
PRUNE_BATCHES = 20
#: Housekeeping prunes delivered alerts at most this often. No index serves that delete
#: (it reads the whole alert table, some 35 µs for a year's 1,200 alerts, the largest
#: statement of a simulated outage), and an hour more on a retention of months is
#: nothing; intervals, which an index serves, are pruned at every run.
ALERT_PRUNE_EVERY = timedelta(hours=1)

Emit = Callable[[Sequence[AlertRow]], None]

log = structlog.get_logger("ccx_agent.agent")


class LicenseTypeChanged(AgentError):
    """``license.type`` differs from the registered instance's: deregister first."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a user-facing action (register, renew …) did, for a one-line CLI answer."""

    ok: bool
    message: str
    #: For a deregistration: whether SSM was told (else it still counts the licences).
    server_told: bool = True


def _discard(_: Sequence[AlertRow]) -> None:
    return None


#: No sample has been taken yet (see ``Agent.note_source_origin``).
_UNSEEN = object()


class Agent:
    def __init__(
        self,
        cfg: CommonConfig,
        store: Store,
        ssm: SsmPort | None,
        *,
        udi: Udi | None = None,
        emit: Emit = _discard,
        fmt: AlertFormat | None = None,
        origin: datetime = EPOCH,
        delivers_alerts: bool = True,
        offline: bool = False,
    ) -> None:
        self.cfg = cfg
        #: ``transport.mode: offline``: SSM is reached by file exchange only
        #: (:mod:`ccx_agent.offline`), so no job talks to it and no renewal is attempted.
        self.offline = offline
        #: Called inside each transaction that applies (or discards) an SSM answer, while
        #: :meth:`answering`: a file import records there that the answer was used,
        #: atomically with its effect.
        self._answer_tx: Callable[[Tx], None] | None = None
        self.store = store
        #: False for a one-shot command: it shows its alerts, but they stay pending for
        #: the process that delivers alerts (the daemon's syslog sink).
        self.delivers_alerts = delivers_alerts
        self.ssm = ssm
        self.udi = udi or Udi("CCX-SL", "UNKNOWN", str(uuid.uuid4()))
        self.emit = emit
        self.fmt = fmt or cfg.alerts.format()
        #: Intervals are aligned to this instant: the epoch (wall-clock quarter hours) in the daemon.
        self.origin = origin
        self.timers: Timers = cfg.timers()
        self.rules = cfg.rules()
        self.step = cfg.report.interval
        #: When housekeeping last pruned alerts completely (``None``: never, or it left
        #: some for the next run).
        self._alerts_pruned_at: datetime | None = None
        #: The source's last origin (UCCX: which nodes), and what ``status`` was told of it
        #: (the ``meta`` row ``SOURCE_META_KEY``), for :meth:`note_source_origin`.
        self._source_origin: object = _UNSEEN
        self._source_origin_saved: dict[str, Any] | None = None

    # --- plumbing -------------------------------------------------------------------

    @contextlib.contextmanager
    def answering(self, port: SsmPort, applied: Callable[[Tx], None]) -> Iterator[None]:
        """The jobs called inside ask ``port`` (an answer carried on a file, not the
        network), and each transaction that applies its answer also calls ``applied``
        and is committed durably: the import records there that the answer was used."""
        saved = self.ssm, self._answer_tx
        self.ssm, self._answer_tx = port, applied
        try:
            yield
        finally:
            self.ssm, self._answer_tx = saved

    def _load(self, tx: Tx) -> ProductState:
        return self._adopt(tx.load_product())

    def _adopt(self, state: ProductState | None) -> ProductState:
        """The stored state (or a new one) under this configuration's license type."""
        if state is None:
            return ProductState(self.cfg.license.type)
        adopted = lifecycle.with_license_type(state, self.cfg.license.type)
        if adopted is None:
            raise LicenseTypeChanged(
                f"license.type is {self.cfg.license.type.value!r} but this instance is "
                f"registered as {state.license_type.value!r}: run 'ccx-agent deregister' "
                "first, then change the license type"
            )
        return adopted

    def _record(self, tx: Tx, now: datetime, alerts: Sequence[Alert]) -> None:
        if self.offline:
            alerts = [exchange_due(a) for a in alerts]
        for alert in alerts:
            tx.add_alert(now, alert, lines(alert, self.fmt))

    def _emit_pending(self) -> None:
        """Emit alerts committed but not yet emitted (also those a crash left behind)."""
        with self.store.read() as tx:
            rows = tx.alerts(pending_only=True)
        if not rows:
            return
        self.emit(rows)
        if self.delivers_alerts:
            with self.store.transaction() as tx:
                tx.mark_emitted([r.id for r in rows])

    def record(self, now: datetime, alerts: Sequence[Alert]) -> None:
        """Commit alerts that no job decides (the daemon's AGENT_READY), then emit them."""
        with self.store.transaction() as tx:
            self._record(tx, now, alerts)
        self._emit_pending()

    def state(self) -> ProductState:
        return self._adopt(self.store.product())

    def interval_start(self, now: datetime) -> datetime:
        return floor_to(now, self.step, self.origin)

    # --- sampling ---------------------------------------------------------------------

    def sample(
        self,
        times: Sequence[datetime],
        usage: Mapping[str, int] | None,
        *,
        error: str | None = None,
        unlicensed: Sequence[str] = (),
        resumed: bool = False,
        elapsed: timedelta | None = None,
    ) -> None:
        """Record good samples (``usage`` per tag) or one failed sample (``usage`` None).

        Several instants may share one transaction when the usage is the same for all of
        them (the what-if simulator); the daemon passes one.
        """
        with self.store.transaction() as tx:
            before = self._load(tx)
            opened = {o.start: o for o in tx.open_intervals()}
            state, alerts, changed = self._sample_in(
                tx,
                before,
                opened,
                times,
                usage,
                error=error,
                unlicensed=unlicensed,
                resumed=resumed,
                elapsed=elapsed,
            )
            for start in changed:
                tx.put_open_interval(opened[start])
            if state is not before:
                tx.save_product(state, times[-1])
        if alerts:
            self._emit_pending()

    def _sample_in(
        self,
        tx: Tx,
        state: ProductState,
        opened: dict[datetime, OpenInterval],
        times: Sequence[datetime],
        usage: Mapping[str, int] | None,
        *,
        error: str | None = None,
        unlicensed: Sequence[str] = (),
        resumed: bool = False,
        elapsed: timedelta | None = None,
    ) -> tuple[ProductState, list[Alert], list[datetime]]:
        """:meth:`sample`'s work inside ``tx`` from ``state`` and the ``opened`` intervals
        (updated in place): the new state, the alerts recorded, and the starts of the
        open intervals changed. The caller saves the state and writes those rows."""
        groups: dict[datetime, list[datetime]] = {}
        start = end = None
        for now in times:
            # Times usually come in order: look the interval up only when it changes.
            if start is None or end is None or not start <= now < end:
                start = self.interval_start(now)
                end = start + self.step
            groups.setdefault(start, []).append(now)
        alerts: list[Alert] = []
        for start, group in groups.items():
            cur = opened.get(start) or OpenInterval(start, {}, 0, 0)
            if usage is None:
                for now in group:
                    state, more = lifecycle.sample_failed(
                        state, now, error or "unknown", self.timers
                    )
                    self._record(tx, now, more)
                    alerts += more
                opened[start] = replace(cur, failures=cur.failures + len(group))
                continue
            state, more = lifecycle.sample(
                state, group, usage, self.timers, unlicensed, resumed=resumed, elapsed=elapsed
            )
            resumed, elapsed = False, None
            self._record(tx, group[-1], more)
            alerts += more
            peaks = dict(cur.peaks)
            for tag, n in usage.items():
                peaks[tag] = max(peaks.get(tag, 0), n)
            opened[start] = OpenInterval(start, peaks, cur.samples + len(group), cur.failures)
        return state, alerts, list(groups)

    def note_source_origin(self, origin: object, now: datetime) -> list[Alert]:
        """Tell ``status`` which UCCX nodes the samples come from (``origin``: the
        source's ``origin``, None for a source without one), when that changes; the
        island-mode alerts of the change (docs/sources.md), for the caller to raise.

        Best effort, like the daemon's jobs' health: a database that fails here fails the
        next transaction too, where it is said; nothing is raised from here."""
        if origin == self._source_origin:
            return []
        first, self._source_origin = self._source_origin is _UNSEEN, origin
        alerts: list[Alert] = []
        try:
            if first:
                with self.store.read() as tx:
                    text = tx.meta(SOURCE_META_KEY)
                saved = json.loads(text) if text else None
                self._source_origin_saved = saved if isinstance(saved, dict) else None
            doc: dict[str, Any] | None = None
            if origin is not None:
                # Only a UCCX source has an origin: its cluster code is loaded with it.
                from ccx_agent.sources.cluster import Origin, origin_change  # noqa: PLC0415

                assert isinstance(origin, Origin)
                doc, alerts = origin_change(self._source_origin_saved, origin, now)
            if doc != self._source_origin_saved:
                with self.store.transaction() as tx:
                    tx.set_meta(SOURCE_META_KEY, json.dumps(doc))
                self._source_origin_saved = doc
        except Exception as exc:
            log.debug("source origin not saved", error=str(exc))
            return []
        return alerts

    # --- reporting --------------------------------------------------------------------

    def close_intervals(self, now: datetime) -> list[IntervalRecord]:
        """Close every interval that ended by ``now``, all in one transaction.

        An interval with no good sample is recorded as NO_DATA: nothing is invented and
        no countdown moves. Each queued report is written to the outbox in the same
        transaction that records its interval, so neither exists without the other.
        """
        with self.store.transaction() as tx:
            before = self._load(tx)
            opened = {o.start: o for o in tx.open_intervals()}
            state, closed, raised = self._close_in(tx, before, now, opened, set(opened))
            if state is not before:
                tx.save_product(state, now)
        if raised:  # no read when nothing was raised (housekeeping emits what a crash left)
            self._emit_pending()
        return closed

    def sample_and_close(
        self, times: Sequence[datetime], usage: Mapping[str, int], now: datetime
    ) -> list[IntervalRecord]:
        """:meth:`sample` of good samples at ``times``, then :meth:`close_intervals` at
        ``now``, in one transaction with one save of the state.

        For a caller that runs both jobs back to back with nothing between them (the
        what-if simulator catching up): the database ends as after the two jobs, the
        alerts are the same, in the same order, and are emitted together after the
        commit. A crash leaves both or neither, as it leaves each job's own.
        """
        with self.store.transaction() as tx:
            before = self._load(tx)
            opened = {o.start: o for o in tx.open_intervals()}
            stored = set(opened)
            sampled, alerts, changed = self._sample_in(tx, before, opened, times, usage)
            state, closed, raised = self._close_in(tx, sampled, now, opened, stored)
            # An interval sampled and closed in this transaction is never written: the
            # rows end as the two jobs would leave them (written, then deleted).
            for start in changed:
                if start in opened:
                    tx.put_open_interval(opened[start])
            if state is not sampled:
                tx.save_product(state, now)
            elif state is not before:
                tx.save_product(state, times[-1])
        if alerts or raised:
            self._emit_pending()
        return closed

    def _close_in(
        self,
        tx: Tx,
        state: ProductState,
        now: datetime,
        opened: dict[datetime, OpenInterval],
        stored: set[datetime],
    ) -> tuple[ProductState, list[IntervalRecord], bool]:
        """:meth:`close_intervals`' work inside ``tx`` from ``state``: the new state (not
        saved), the closed intervals, and whether an alert was recorded.

        ``opened`` are the open intervals (those closed are taken out of it), ``stored``
        the starts of those that have a row in the database (deleted when closed)."""
        closed: list[IntervalRecord] = []
        raised = False
        last_end = tx.last_interval_end()
        if last_end is not None:
            start = last_end
        elif opened:
            start = min(opened)
        else:
            return state, closed, raised
        if now - start > self.step * MAX_BACKFILL:
            # A very long stop: record the newest part of the gap, not a row per interval.
            start = self.interval_start(now - self.step * MAX_BACKFILL)
        tags = tags_of(state.license_type)
        queued: list[tuple[str, str, datetime, dict[str, object]]] = []
        while start + self.step <= now:
            end = start + self.step
            row = opened.pop(start, None)
            usage = None
            if row is not None and row.samples > 0:
                usage = {t: row.peaks.get(t, 0) for t in tags}
            state, record, alerts = interval.close(
                state,
                start,
                end,
                usage,
                self.rules,
                self.timers,
                allow_overage=self.cfg.license.allow_overage,
            )
            if record.queued and state.identity is not None:
                piid = state.identity.piid
                report_id = f"{piid}:{iso(start)}"
                queued.append((report_id, piid, start, _payload(report_id, record)))
            if start in stored:
                tx.drop_open_interval(start)
            self._record(tx, end, alerts)
            raised = raised or bool(alerts)
            closed.append(record)
            start = end
        tx.add_intervals(closed)
        tx.enqueue_many(queued, now)
        # Rows older than the last closed interval exist only after the clock went back.
        for stale in [o for o in opened if o < start]:
            del opened[stale]
            if stale in stored:
                tx.drop_open_interval(stale)
        return state, closed, raised

    def flush(self, now: datetime, *, force: bool = False) -> int:
        """Send queued reports oldest first, in batches; returns how many were acknowledged.

        While SSM keeps failing the outbox backs off (``interval.report_failed``), so a
        long outage costs a few attempts an hour, not one per report; ``force`` ignores it.
        """
        if self.ssm is None:
            return 0
        sent = 0
        # A look at the state alone first: while the outbox backs off (a long outage), that
        # is all this job reads. The snapshot below looks again before sending.
        if not force and not interval.may_send(self.state(), now):
            return 0
        while True:
            with self.store.read() as tx:
                state = self._load(tx)
                if not force and not interval.may_send(state, now):
                    break
                # After a failure, probe with one report before sending whole batches again.
                limit = 1 if state.report_failures else REPORT_BATCH
                batch = tx.outbox_batch(limit)
                more = len(batch) == limit
                cred = tx.credentials()
            if not batch:
                break
            if cred is None or cred.piid != batch[0].piid:
                # Reports of an identity this database no longer holds cannot be signed.
                # register and deregister drop them themselves (and say so); reaching this
                # means something else changed the identity: never drop them silently.
                self._drop_unsignable(now, batch[0].piid)
                continue
            batch = [b for b in batch if b.piid == cred.piid]
            try:
                ack = self.ssm.report(cred, [b.payload for b in batch], now)
            except SsmAborted:
                break  # stopping: the batch stays in the outbox as it was
            except SsmError as exc:
                self.report_failed(now, [b.report_id for b in batch], exc)
                break
            ids, current = self.delivered(now, cred, [b.report_id for b in batch], ack)
            sent += len(ids)
            if not ids or not current or not more:
                break  # a short batch emptied the outbox: no read to find it empty
        return sent

    def delivered(
        self, now: datetime, cred: Credentials, batch: Sequence[str], ack: Acknowledged
    ) -> tuple[list[str], bool]:
        """Apply SSM's acknowledgement of the reports ``batch`` sent with ``cred``: the
        acknowledged ids, and whether ``cred`` is still this instance's identity.

        Committed without an fsync (online): if a power cut undoes it, the reports are
        still in the outbox and are sent again, and the server keeps each id once. An
        answer imported from a file is committed durably (its import is recorded here).
        """
        with self.store.transaction(fsync=self._answer_tx is not None) as tx:
            if self._answer_tx is not None:
                self._answer_tx(tx)
            before = state = self._load(tx)
            acked = set(ack.acked)
            ids = [b for b in batch if b in acked]
            tx.outbox_ack(ids)
            if ids:  # for status, the metrics and status --check (reports stale?)
                tx.set_meta(LAST_REPORT_KEY, iso(now))
            if not _same_identity(tx.credentials(), cred):
                # Registered again or deregistered while the answer was on its way:
                # the acknowledgement stands (the server has those reports), but the
                # entitlements of an identity we no longer are must not be applied.
                log.warning(
                    "answer of a replaced identity: acknowledged, nothing else applied",
                    piid=cred.piid,
                    acked=len(ids),
                )
                return ids, False
            state, alerts = lifecycle.communication(state, True)
            state = interval.report_delivered(state)
            if ack.entitlements:
                state = lifecycle.entitlements_received(state, ack.entitlements)
            if state is not before:
                tx.save_product(state, now)
            self._record(tx, now, alerts)
        if alerts:
            self._emit_pending()
        return ids, True

    def _drop_unsignable(self, now: datetime, piid: str) -> None:
        with self.store.transaction() as tx:
            dropped = tx.outbox_drop_piid(piid)
            self._record(
                tx,
                now,
                [
                    Alert(
                        Mnemonic.ENTITLEMENT_REPORT_FAILED,
                        f"{dropped} report(s) of PIID {piid} dropped: this instance no longer "
                        "holds that identity, so they can never be signed",
                    )
                ],
            )
        log.error("reports dropped: their identity is gone", piid=piid, dropped=dropped)
        self._emit_pending()

    def report_failed(self, now: datetime, ids: Sequence[str], exc: SsmError) -> None:
        """The reports ``ids`` were not delivered: count the attempt, back off."""
        reason = str(exc) or type(exc).__name__
        with self.store.transaction() as tx:
            if self._answer_tx is not None:
                self._answer_tx(tx)
            state = self._load(tx)
            tx.outbox_failed(ids, reason)
            alerts: list[Alert] = []
            if isinstance(exc, SsmUnreachable):
                state, alerts = lifecycle.communication(state, False, reason)
            state, more = interval.report_failed(
                state, now, tx.outbox_count(), reason, self.step, self.timers
            )
            tx.save_product(state, now)
            self._record(tx, now, alerts + more)
        if alerts or more:
            self._emit_pending()

    # --- timers -----------------------------------------------------------------------

    def housekeeping(self, now: datetime) -> None:
        """Expiries and warnings, then every renewal that is due, each failing on its own.

        It also emits alerts that a crash left committed but not emitted.
        """
        with self.store.read() as tx:
            before = self._load(tx)
            # Looked at in the same snapshot: with none left and none recorded below, no
            # second read. One committed by another process meanwhile goes at the next run.
            left = bool(tx.alerts(pending_only=True))
        state, alerts = lifecycle.evaluate(before, now, self.timers)
        todo = lifecycle.due(state, now, self.timers)
        if state != before or alerts:
            with self.store.transaction() as tx:
                # Re-read under the write lock: the CLI may have changed the state meanwhile.
                state, alerts = lifecycle.evaluate(self._load(tx), now, self.timers)
                todo = lifecycle.due(state, now, self.timers)
                tx.save_product(state, now)
                self._record(tx, now, alerts)
                left = left or bool(alerts)
        if left:
            self._emit_pending()
        for item in [] if self.offline else todo:  # offline: the warnings say an exchange is due
            if item is Due.RENEW_ID:
                self.renew_id(now)
            elif item is Due.AUTHORIZE:
                self.renew_auth(now)
        last = self._alerts_pruned_at
        # A clock set back prunes at once, as after a restart.
        prune_alerts = last is None or not last <= now < last + ALERT_PRUNE_EVERY
        _, gone = self.prune_history(now, alerts=prune_alerts)
        if prune_alerts:
            self._alerts_pruned_at = None if gone >= PRUNE_BATCH * PRUNE_BATCHES else now

    def prune_history(self, now: datetime, *, alerts: bool = True) -> tuple[int, int]:
        """Drop intervals and (with ``alerts``) delivered alerts older than
        ``history.retention``.

        A few hundred rows per transaction, so the write lock is never held long (the
        sample job and the CLI wait for it); what is left goes at the next run. Reports
        still in the outbox and undelivered alerts are kept (:meth:`Tx.prune_history`).
        """
        before = now - self.cfg.history.retention
        total = [0, 0]
        for _ in range(PRUNE_BATCHES):
            with self.store.transaction() as tx:
                done = tx.prune_history(before, PRUNE_BATCH, alerts=alerts)
            total[0] += done[0]
            total[1] += done[1]
            if max(done) < PRUNE_BATCH:
                break
        return total[0], total[1]

    def _talk(
        self,
        now: datetime,
        call: Callable[[ProductState, Credentials], object],
        on_ok: Callable[[ProductState, object], lifecycle.Result],
        on_fail: Callable[[ProductState, str], lifecycle.Result],
        persist: Callable[[Tx, object], None] | None = None,
    ) -> Outcome:
        """One request to SSM: commit its outcome and the communication state, then emit."""
        with self.store.read() as tx:
            state = self._load(tx)
            cred = tx.credentials()
        error: SsmError | None = None
        result: object = None
        try:
            if state.identity is None:
                raise SsmError("this instance is not registered")
            if cred is None or cred.piid != state.identity.piid:
                raise SsmError("the ID certificate is missing from the database: register again")
            result = call(state, cred)
        except SsmAborted as exc:
            # Stopping: nothing was learnt, so nothing changes (the timer is still due).
            return Outcome(False, str(exc))
        except SsmError as exc:
            error = exc
        with self.store.transaction() as tx:
            if self._answer_tx is not None:
                self._answer_tx(tx)
            state = self._load(tx)
            if cred is not None and not _same_identity(tx.credentials(), cred):
                # register --force or deregister ran while this answer was on its way: it
                # answers an identity this instance no longer is. Applying it would put the
                # old certificate back over the new registration.
                log.warning(
                    "answer discarded: the identity changed during the exchange", piid=cred.piid
                )
                return Outcome(False, "the identity changed during the exchange; nothing applied")
            if error is None:
                state, comm = lifecycle.communication(state, True)
                state, alerts = on_ok(state, result)
                if persist is not None:
                    persist(tx, result)
            else:
                reason = str(error) or type(error).__name__
                comm = []
                if isinstance(error, SsmUnreachable):
                    state, comm = lifecycle.communication(state, False, reason)
                state, alerts = on_fail(state, reason)
            tx.save_product(state, now)
            self._record(tx, now, comm + alerts)
        self._emit_pending()
        if error is None:
            return Outcome(True, alerts[0].detail if alerts else "done")
        return Outcome(False, str(error) or type(error).__name__)

    def ssm_keep_only(self, cred: Credentials) -> None:
        if self.ssm is not None:
            self.ssm.keep_only(cred)

    def _ssm(self) -> SsmPort:
        if self.ssm is None:
            raise SsmUnreachable("no SSM transport is configured")
        return self.ssm

    def renew_id(self, now: datetime) -> Outcome:
        def call(state: ProductState, cred: Credentials) -> object:
            return self._ssm().renew_id(cred, now)

        def ok(state: ProductState, res: object) -> lifecycle.Result:
            assert isinstance(res, IdRenewed)
            return lifecycle.id_renewed(
                state, now, res.cert_issued_at, res.cert_expires_at, self.timers
            )

        def persist(tx: Tx, res: object) -> None:
            # The new certificate replaces the old one in the same transaction as the
            # state that says it was renewed; the client verified it before returning.
            assert isinstance(res, IdRenewed)
            if res.credentials is not None:
                tx.save_credentials(res.credentials, now)

        return self._talk(
            now, call, ok, lambda s, r: lifecycle.id_renew_failed(s, now, r, self.timers), persist
        )

    def auth_usage(self, state: ProductState) -> dict[str, int]:
        """What an AUTHORIZE says is in use: the current interval's peaks."""
        with self.store.read() as tx:
            opened = tx.open_intervals()
        usage = {t: 0 for t in tags_of(state.license_type)}
        for o in opened[-1:]:
            usage.update(o.peaks)
        return usage

    def renew_auth(self, now: datetime, *, tags: frozenset[str] | None = None) -> Outcome:
        """``tags``: the tags in use when the request was made, if not now (a file import)."""
        sent: dict[str, frozenset[str]] = {}

        def call(state: ProductState, cred: Credentials) -> object:
            usage = self.auth_usage(state)
            sent["tags"] = state.tags_in_use if tags is None else tags
            return self._ssm().authorize(cred, state.license_type.value, usage, now)

        def ok(state: ProductState, res: object) -> lifecycle.Result:
            assert isinstance(res, Authorized)
            return lifecycle.authorized(state, now, res.entitlements, sent["tags"], self.timers)

        return self._talk(now, call, ok, lambda s, r: lifecycle.auth_failed(s, now, r, self.timers))

    # --- registration -----------------------------------------------------------------

    def register(self, token: str, now: datetime, *, force: bool = False) -> Outcome:
        with self.store.read() as tx:
            state = self._load(tx)
            current = tx.credentials()
        if not token.strip():
            return Outcome(False, "registration failed: the ID token is empty")
        # An expired registration needs no --force: registering again is the way out of it.
        if state.registered and state.identity is not None and not force:
            return Outcome(
                False,
                f"already registered as PIID {state.identity.piid}; use --force to register again",
            )
        try:
            res = self._ssm().register(token, self.udi, self.cfg.license.type.value, now, current)
        except SsmAborted as exc:
            return Outcome(False, f"registration not completed: {exc}")
        except SsmError as exc:
            reason = str(exc) or type(exc).__name__
            with self.store.transaction() as tx:
                if self._answer_tx is not None:
                    self._answer_tx(tx)
                state = self._load(tx)
                comm: list[Alert] = []
                if isinstance(exc, SsmUnreachable):
                    state, comm = lifecycle.communication(state, False, reason)
                tx.save_product(state, now)
                self._record(tx, now, [*comm, Alert(Mnemonic.REGISTER_FAILED, reason)])
            self._emit_pending()
            return Outcome(False, f"registration failed: {reason}")
        ident = Identity(res.piid, now, res.cert_issued_at, res.cert_expires_at)
        with self.store.transaction() as tx:
            if self._answer_tx is not None:
                self._answer_tx(tx)
            state = self._load(tx)
            old = state.identity.piid if state.identity is not None else None
            dropped = tx.outbox_drop_piid(old) if old is not None else 0
            state, comm = lifecycle.communication(state, True)
            state, alerts = lifecycle.registered(state, now, ident, res.entitlements, self.timers)
            tx.save_product(state, now)
            if res.credentials is not None:
                tx.save_credentials(res.credentials, now)
            if dropped:
                # The old identity's key is replaced: its unsent reports can never be
                # signed. Said, never dropped in silence (docs/daemon.md).
                alerts = [*alerts, _dropped_alert(dropped, old, "it was replaced by register")]
            self._record(tx, now, comm + alerts)
        if res.credentials is not None:
            self.ssm_keep_only(res.credentials)
        self._emit_pending()
        note = (
            f"; {dropped} unsent report(s) of the old PIID {old} dropped (never reported)"
            if dropped
            else ""
        )
        return Outcome(
            True,
            f"registered: PIID {res.piid}, ID certificate valid until "
            f"{iso(res.cert_expires_at)}{note}",
        )

    def deregister(self, now: datetime) -> Outcome:
        with self.store.read() as tx:
            state = self._load(tx)
            cred = tx.credentials()
        if state.identity is None:
            return Outcome(False, "this instance is not registered")
        piid = state.identity.piid
        told = True
        reason = ""
        try:
            if cred is None:
                raise SsmError("the ID certificate is missing, so the server cannot be told")
            self._ssm().deregister(cred, now)
        except SsmError as exc:
            told = False
            reason = str(exc) or type(exc).__name__
        with self.store.transaction() as tx:
            state = self._load(tx)
            dropped = tx.outbox_drop_piid(piid)
            state, alerts = lifecycle.deregistered(state, now, self.timers, told_server=told)
            tx.save_product(state, now)
            tx.drop_credentials()
            if dropped:
                alerts = [*alerts, _dropped_alert(dropped, piid, "the instance was deregistered")]
            self._record(tx, now, alerts)
            if self._answer_tx is not None:  # an answer file's DEREGISTER: applied once
                self._answer_tx(tx)
        # Committed first: a crash here leaves a key no certificate names, never the reverse.
        if self.ssm is not None:
            self.ssm.forget()
        self._emit_pending()
        note = f" ({dropped} unsent report(s) dropped)" if dropped else ""
        if told:
            return Outcome(True, f"deregistered PIID {piid}{note}")
        return Outcome(
            True,
            f"deregistered PIID {piid} locally; the server was not told: {reason}{note}",
            server_told=False,
        )


def _dropped_alert(dropped: int, piid: str | None, why: str) -> Alert:
    return Alert(
        Mnemonic.ENTITLEMENT_REPORT_FAILED,
        f"{dropped} report(s) of PIID {piid} dropped unsent: {why}, so they can never be "
        "signed; their intervals are marked DROPPED",
    )


def _same_identity(current: Credentials | None, asked: Credentials) -> bool:
    """Whether the credentials an exchange was made with are still this instance's."""
    return current is not None and current.piid == asked.piid and current.cert == asked.cert


def _payload(report_id: str, record: IntervalRecord) -> dict[str, object]:
    return {
        "id": report_id,
        "start": iso(record.start),
        "end": iso(record.end),
        "usage": {t: r.reported for t, r in record.tags.items() if r.reported is not None},
    }
