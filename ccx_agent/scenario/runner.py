"""Run a scenario: the real agent jobs and store on a simulated clock.

The order of things at one instant is fixed and documented, because it decides what an
operator reads: first the scenario's events (the world changes), then the report of the
interval that just ended (computed with what the agent knew), then the sample, then
renewals. A purchase therefore takes effect at the next report, as with a real SSM.
Samples are committed in batches, so the renewal check at an instant sees the samples up
to the one before (except at the start); a change of usage shows in the product state at
the next report, as in the daemon, where sampling only records and the report and
housekeeping jobs decide.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ccx_agent.agent import Agent, Emit
from ccx_agent.licensing import lifecycle
from ccx_agent.licensing.catalogue import tags_of
from ccx_agent.licensing.interval import IntervalRecord
from ccx_agent.licensing.lifecycle import ProductState, evaluation_left
from ccx_agent.licensing.timeutil import iso
from ccx_agent.offline import exchange as offline
from ccx_agent.offline.answer import answer
from ccx_agent.scenario.model import LoadedScenario, ScenarioEvent
from ccx_agent.scenario.simssm import SCENARIO_TOKEN, TOKEN_LIFETIME, ScenarioSsm
from ccx_agent.ssm.port import Udi
from ccx_agent.store.db import DB_NAME, UDI_UUID_KEY, AlertRow, Store


@dataclass
class SimulationResult:
    intervals: list[IntervalRecord]
    alerts: list[AlertRow]
    final: dict[str, Any]
    tags: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "intervals": [
                {
                    "start": iso(r.start),
                    "end": iso(r.end),
                    "status": r.status,
                    "registration": r.registration,
                    "authorization": r.authorization,
                    "enforcement": r.enforcement,
                    "tags": {t: v.as_json() for t, v in r.tags.items()},
                }
                for r in self.intervals
            ],
            "alerts": [
                {
                    "time": iso(a.time),
                    "mnemonic": a.mnemonic,
                    "severity": a.severity,
                    "tags": list(a.tags),
                    "lines": list(a.lines),
                }
                for a in self.alerts
            ],
            "final": self.final,
        }


#: The identity of every simulated instance: fixed, so a scenario's output is reproducible.
SIM_UDI = Udi("CCX-SIM", "SIM0001", "00000000-0000-4000-8000-000000000001")


def setup(
    loaded: LoadedScenario, workdir: Path, emit: Emit, agent_cls: type[Agent] = Agent
) -> tuple[Agent, ScenarioSsm, Store]:
    """The pieces of a run: a fresh store in ``workdir``, the in-process simulator, the agent."""
    sc, cfg = loaded.scenario, loaded.config
    ssm = ScenarioSsm(dict(sc.entitlements), cfg.id_certificate.lifetime, sc.start, workdir)
    store = Store(workdir / DB_NAME, durable=False)
    # The UDI a real instance keeps in its database: ``simulate --state-dir`` leaves one
    # that ``status``, ``report`` and ``alerts`` read as an instance's (never a lost one).
    with store.transaction() as tx:
        tx.set_meta(UDI_UUID_KEY, SIM_UDI.uuid)
    agent = agent_cls(
        cfg,
        store,
        None if sc.offline else ssm,
        udi=SIM_UDI,
        emit=emit,
        origin=sc.start,
        offline=sc.offline,
    )
    return agent, ssm, store


def run(loaded: LoadedScenario, workdir: Path | None = None) -> SimulationResult:
    """Run ``loaded`` to its end in a throw-away database and return what happened."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="ccx-simulate-") as tmp:
            return run(loaded, Path(tmp))
    sc = loaded.scenario
    cfg = loaded.config
    emitted: list[AlertRow] = []
    agent, ssm, store = setup(loaded, workdir, emitted.extend)
    try:
        _drive(agent, ssm, sc.start, sc.duration, sc.events, sc.registered)
        with store.read() as tx:
            intervals = tx.intervals()
            outbox = tx.outbox_count()
        state = agent.state()
        final = {
            "registration": state.registration.value,
            "authorization": state.authorization.value,
            "enforcement": state.enforcement.value if state.enforcement else None,
            "evaluation_seconds_left": int(evaluation_left(state, agent.timers).total_seconds()),
            "outbox": outbox,
        }
        return SimulationResult(intervals, emitted, final, tags_of(cfg.license.type))
    finally:
        store.close()


#: Quiet report boundaries are caught up in runs of at most this many intervals.
MAX_QUIET = 96
#: Boundaries processed one by one after an event, so its effect shows at the right report.
SETTLE = 2


def _drive(
    agent: Agent,
    ssm: ScenarioSsm,
    start: datetime,
    duration: timedelta,
    events: Sequence[ScenarioEvent],
    registered: bool,
) -> None:
    """Run the agent's jobs at every instant of the scenario.

    A report boundary at which nothing can happen (no event near it, no renewal or retry
    due) is caught up later, as a daemon catches up after a pause: the same jobs close
    each interval at its own end time with its own peak, so the record is the same, and
    400 days take seconds instead of minutes.
    """
    report_step = agent.cfg.report.interval
    sample_step = agent.cfg.sample.interval
    usage: dict[str, int] = dict.fromkeys(tags_of(agent.cfg.license.type), 0)
    pending = list(events)
    batch: list[datetime] = []
    quiet = 0
    settle = SETTLE
    renews = not agent.offline
    # The state as the last job left it. Between two jobs nothing changes it (samples
    # wait in ``batch``), so a quiet boundary asks the core about it without a read.
    known: ProductState | None = None

    def busy(now: datetime) -> bool:
        """Whether this boundary must be processed now rather than caught up later."""
        nonlocal known
        if known is None:
            known = agent.state()
        return lifecycle.must_decide(known, now, agent.timers, renews=renews)

    def flush_samples() -> None:
        nonlocal known
        if batch:
            agent.sample(list(batch), dict(usage))
            batch.clear()
            known = None

    def catch_up(now: datetime) -> None:
        nonlocal quiet, known
        # The sample job and the report job back to back: one transaction for both.
        agent.sample_and_close(list(batch), dict(usage), now)
        batch.clear()
        agent.flush(now)
        quiet = 0
        known = None

    if registered and agent.offline:
        file_exchange(agent, ssm, start)
    elif registered:
        agent.register(SCENARIO_TOKEN, start)

    # Every instant at which a job may run (report boundaries and events), in order, as
    # whole seconds from the start. A sample instant between two of them only adds to
    # ``batch``: those are added in bulk (a 400-day walk has 576,000 samples and 38,400
    # boundaries).
    rep = int(report_step.total_seconds())
    smp = int(sample_step.total_seconds())
    total = int(duration.total_seconds())
    offsets = sorted({*range(0, total + 1, rep), *(int(e.at.total_seconds()) for e in events)})
    second = timedelta(seconds=1)

    def samples_before(off: int, previous: int) -> None:
        """The sample instants strictly between ``previous`` and ``off`` (before the end)."""
        first = (previous // smp + 1) * smp
        batch.extend(map(start.__add__, map(second.__mul__, range(first, min(off, total), smp))))

    previous = -1
    for off in offsets:
        samples_before(off, previous)
        previous = off
        now = start + off * second
        due_events = []
        while pending and pending[0].at.total_seconds() <= off:
            due_events.append(pending.pop(0))
        is_report = off % rep == 0
        if due_events:
            # The world is about to change: everything before it is settled first.
            # (The report due at this very instant comes after the events, as always.)
            if quiet:
                catch_up(now - report_step if is_report else agent.interval_start(now))
            flush_samples()
            for ev in due_events:
                _apply(agent, ssm, ev, now, usage)
            settle = SETTLE
            known = None
        if is_report and off > 0:
            if settle or quiet + 1 >= MAX_QUIET or off >= total or busy(now):
                catch_up(now)
                settle = max(0, settle - 1)
            else:
                quiet += 1
        if off < total and off % smp == 0:
            batch.append(now)
        if is_report and quiet == 0:
            if off == 0:
                flush_samples()  # the first renewal check sees what is in use from the start
            agent.housekeeping(now)
            known = None
    samples_before(total, previous)
    if quiet:
        # A duration that ends between boundaries: close the whole intervals still pending.
        catch_up(start + (total // rep) * report_step)
    flush_samples()


def _apply(
    agent: Agent, ssm: ScenarioSsm, ev: ScenarioEvent, now: datetime, usage: dict[str, int]
) -> None:
    if ev.usage is not None:
        usage.update(ev.usage)
    if ev.purchase is not None:
        ssm.purchase(ev.purchase)
    if ev.ssm is not None:
        ssm.reachable = ev.ssm == "reachable"
    if ev.deregister:
        agent.deregister(now)
    if ev.register_:
        agent.register(SCENARIO_TOKEN, now, force=True)
    if ev.exchange:
        file_exchange(agent, ssm, now)


def file_exchange(agent: Agent, ssm: ScenarioSsm, now: datetime) -> None:
    """An ``exchange`` event: the agent's export, the simulator's answer and the agent's
    import, through real files in the run's directory (docs/offline.md). An instance that
    is not registered registers by it, with a token made in the simulator just before."""
    keys = ssm.client.keys
    workdir = keys.dir.parent
    token = None
    if not agent.state().registered:
        token = ssm.simulator.create_token(uses=1, expires=TOKEN_LIFETIME, now=now)
    request, response = workdir / "exchange-request.json", workdir / "exchange-response.json"
    offline.export(agent, keys, request, now, token=token)
    answer(ssm.simulator, request, response, now)
    offline.import_answers(agent, keys, [ssm.simulator.root], response, now)


def format_text(result: SimulationResult) -> str:
    """Alert lines prefixed by their simulated time, then the table of intervals.

    A run of intervals that differ only in their start is shown as its first row and a
    count, so that 400 quiet days read as a few lines (``--json`` has every interval).
    """
    out: list[str] = []
    for alert in result.alerts:
        for line in alert.lines:
            out.append(f"{iso(alert.time)} {line}")
    out.append("")
    header = ["start", "registration", "authorization", "enforcement", *result.tags]
    rows: list[list[str]] = [header]
    previous: list[str] | None = None
    repeated = 0

    def close_run() -> None:
        if repeated:
            rows.append([f"  (+{repeated} more)", "", "", "", *("" for _ in result.tags)])

    for r in result.intervals:
        cells = [r.registration, r.authorization, r.enforcement or "-"]
        for tag in result.tags:
            v = r.tags.get(tag)
            if v is None or v.usage is None:
                cells.append("no data")
                continue
            reported = "-" if v.reported is None else str(v.reported)
            cells.append(f"{v.usage}/{v.entitlement} rep={reported} {v.state}({v.overage_count})")
        if cells == previous:
            repeated += 1
            continue
        close_run()
        repeated = 0
        previous = cells
        rows.append([iso(r.start), *cells])
    close_run()
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    f = result.final
    out.append("")
    out.append(
        f"final: registration={f['registration']} authorization={f['authorization']} "
        f"enforcement={f['enforcement'] or '-'} evaluation_seconds_left={f['evaluation_seconds_left']} "
        f"outbox={f['outbox']}"
    )
    return "\n".join(out)
