"""``ccx-agent status``: what an operator needs to see, read from the database alone.

It opens a read snapshot, so it answers the same whether the daemon runs or not and never
blocks it. The JSON keys are an interface for scripts (``registration.state``,
``authorization.state``, ``enforcement``, ``evaluation_seconds_left``, ``outbox``,
``tags`` with the per-tag shape of ``simulate``'s intervals); the text is for people, in
the spirit of UCCX's ``show license status``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ccx_agent.licensing import lifecycle
from ccx_agent.licensing.catalogue import DISPLAY_NAMES, tags_of
from ccx_agent.licensing.interval import IntervalRecord, IntervalStatus
from ccx_agent.licensing.lifecycle import ProductState, Timers
from ccx_agent.licensing.offline import renew_id_due
from ccx_agent.licensing.timeutil import iso
from ccx_agent.store.db import (
    JOBS_META_KEY,
    LAST_REPORT_KEY,
    SOURCE_META_KEY,
    UDI_UUID_KEY,
    ExportRecord,
    Store,
    Tx,
)

if TYPE_CHECKING:
    from ccx_agent.config.schema import CommonConfig


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _export_json(record: ExportRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "number": record.number,
        "created_at": iso(record.created_at),
        "carries": record.carries,
        "imported_at": iso(record.imported_at) if record.imported_at else None,
    }


def exchange_status(tx: Tx, state: ProductState, now: datetime, timers: Timers) -> dict[str, Any]:
    """``status``'s ``file_exchange`` key: the last export, the last import, whether an
    answer is awaited, and what an export made now would carry."""
    latest = tx.latest_export()
    imported = tx.last_import()
    ident = state.identity
    count, first, last = (0, None, None)
    if ident is not None and state.registered:
        count, first, last = tx.outbox_span(ident.piid)
    return {
        "last_export": _export_json(latest),
        "last_import": _export_json(imported),
        "awaiting_answer": latest is not None and latest.imported_at is None,
        "next_export": {
            "register": not state.registered,
            "reports": count,
            "first_interval": iso(first) if first else None,
            "last_interval": iso(last) if last else None,
            "authorize": state.registered,
            "renew_id": renew_id_due(state, now, timers),
        },
    }


def collect(
    cfg: CommonConfig,
    store: Store,
    now: datetime,
    udi: dict[str, str] | None = None,
    *,
    daemon_pid: int | None = None,
) -> dict[str, Any]:
    """The status document at ``now``; the state is derived for ``now`` (not written).

    ``daemon_pid`` is the PID holding the state directory's lock (0: unknown PID), None
    when no daemon runs on it.
    """
    timers: Timers = cfg.timers()
    with store.read() as tx:
        stored = tx.load_product()
        cred = tx.credentials()
        outbox = tx.outbox_count()
        opened = tx.open_intervals()
        last = tx.last_intervals(1) if stored is not None else []
        # In an outage the newest closed interval has no usage (NO_DATA): the last one
        # that had some, and how many since had none.
        known, no_data = (
            tx.last_interval_with_data()
            if last and last[0].status is IntervalStatus.NO_DATA
            else (None, 0)
        )
        oldest = tx.outbox_batch(1)
        uuid = tx.meta(UDI_UUID_KEY)
        jobs_text = tx.meta(JOBS_META_KEY)
        last_report = tx.meta(LAST_REPORT_KEY)
        source_text = tx.meta(SOURCE_META_KEY)
        state = lifecycle.derive(stored or ProductState(cfg.license.type), now, timers)
        exchange = exchange_status(tx, state, now, timers)
    ident = state.identity
    when = lifecycle.deadlines(state, timers)
    current = opened[-1].peaks if opened else {}
    last_tags = last[0].tags if last else {}
    sampled_at = state.last_sample_at
    tags: dict[str, dict[str, Any]] = {}
    for tag in tags_of(state.license_type):
        comp = state.tag(tag)
        rec = last_tags.get(tag)
        usage, usage_at, fresh = _usage(tag, current, last[0] if last else None, known, sampled_at)
        tags[tag] = {
            # The last known usage: during an outage (the last closed interval had no
            # good sample) the newest there is, ``usage_current`` false and ``usage_at``
            # saying when it was measured (null: never; the usage is then 0).
            "usage": usage,
            "usage_at": _iso(usage_at),
            "usage_current": fresh,
            "entitlement": state.entitlements.get(tag, 0),
            "reported": rec.reported if rec else None,
            "state": comp.state.value,
            "overage_count": comp.overage_count,
            # What is reported while out of compliance, until enough is bought (None: not locked).
            "locked": comp.locked,
        }
    try:
        jobs = json.loads(jobs_text) if jobs_text else {}
    except ValueError:
        jobs = {}
    try:
        source = json.loads(source_text) if source_text else None
    except ValueError:
        source = None
    return {
        "state": "ok",
        "license_type": state.license_type.value,
        "daemon": {
            "running": daemon_pid is not None,
            "pid": daemon_pid or None,
            # Each job's last error and since when it has been failing (the daemon's
            # last word; null values when the job never failed).
            "jobs": jobs if isinstance(jobs, dict) else {},
        },
        "registration": {
            "state": state.registration.value,
            "piid": ident.piid if ident else None,
            "udi": {
                "pid": (udi or {}).get("pid"),
                "serial": (udi or {}).get("serial"),
                "uuid": uuid,
            },
            "account": cred.account if cred and cred.account else None,
            "registered_at": _iso(ident.registered_at) if ident else None,
            "certificate_issued_at": _iso(ident.cert_issued_at) if ident else None,
            "certificate_expires_at": _iso(ident.cert_expires_at) if ident else None,
            "next_renewal": _iso(when.id_renewal),
        },
        "authorization": {
            "state": state.authorization.value,
            "last_success": _iso(state.last_auth_at),
            "next_attempt": _iso(when.next_attempt),
            "expires_at": _iso(when.auth_expires_at),
            # After this instant without a successful exchange, enforcement begins.
            "communication_deadline": _iso(when.communication_deadline),
        },
        "enforcement": state.enforcement.value if state.enforcement else None,
        "evaluation_seconds_left": int(lifecycle.evaluation_left(state, timers).total_seconds()),
        "outbox": outbox,
        "oldest_unsent": _iso(oldest[0].interval_start) if oldest else None,
        # When SSM last acknowledged reports (null: never, or before this was recorded).
        "last_report_at": last_report,
        "last_sample_at": _iso(state.last_sample_at),
        "communication": {
            "ok": state.comm_ok,
            "last_error": state.last_comm_error,
        },
        "tags": tags,
        # ``transport.mode``, and the file exchanges of an air-gapped site (docs/offline.md).
        "transport": {"mode": getattr(getattr(cfg, "transport", None), "mode", "online")},
        "file_exchange": exchange,
        # The UCCX nodes the last good sample was read from (null: not a uccx source).
        "source": source if isinstance(source, dict) else None,
        # Whether the source answers: since when it fails and why (null while it
        # answers), and how many closed intervals in a row had no good sample.
        "sampling": {
            "ok": state.source_failing_since is None,
            "failing_since": _iso(state.source_failing_since),
            "last_error": state.source_error,
            "last_good_sample_at": _iso(sampled_at),
            "intervals_without_data": no_data,
        },
    }


def _usage(
    tag: str,
    current: Mapping[str, int],
    last: IntervalRecord | None,
    known: IntervalRecord | None,
    sampled_at: datetime | None,
) -> tuple[int, datetime | None, bool]:
    """A tag's usage to show, when it was measured, and whether it is current: the
    interval in progress, else the last closed one, else (that one had no good sample)
    the newest closed interval that had one."""
    if tag in current:
        return current[tag], sampled_at, True
    for rec, fresh in ((last, True), (known, False)):
        usage = rec.tags[tag].usage if rec is not None and tag in rec.tags else None
        if rec is not None and usage is not None:
            at = rec.end if sampled_at is None else min(rec.end, sampled_at)
            return usage, at, fresh
    return 0, None, last is None or last.status is not IntervalStatus.NO_DATA


def format_text(doc: dict[str, Any]) -> str:
    reg, auth = doc["registration"], doc["authorization"]
    udi = reg["udi"]
    days, rest = divmod(doc["evaluation_seconds_left"], 86400)
    daemon = doc["daemon"]
    sampling = doc.get("sampling") or {}
    if daemon["running"]:
        running = f"running (PID {daemon['pid']})" if daemon["pid"] else "running"
    else:
        running = "not running"
    lines = [
        f"License type:             {doc['license_type']}",
        f"Daemon:                   {running}",
    ]
    for name, job in sorted(daemon["jobs"].items()):
        if job.get("consecutive_failures"):
            lines.append(
                f"  Job {name}: FAILING since {job.get('failing_since')} "
                f"({job['consecutive_failures']} in a row): {job.get('last_error')}"
            )
        elif job.get("last_error"):
            lines.append(
                f"  Job {name}: ok; last error at {job.get('last_error_at')}: {job['last_error']}"
            )
    lines += [
        "",
        "Smart Licensing registration:",
        f"  Status:                 {reg['state']}",
        f"  PIID:                   {reg['piid'] or '-'}",
        f"  UDI:                    PID:{udi['pid'] or '-'},SN:{udi['serial'] or '-'},"
        f"UUID:{udi['uuid'] or '(created at registration)'}",
        f"  Virtual account:        {reg['account'] or '-'}",
        f"  Registered at:          {reg['registered_at'] or '-'}",
        f"  ID certificate expires: {reg['certificate_expires_at'] or '-'}",
        f"  Next ID renewal:        {reg['next_renewal'] or '-'}",
        "",
        "License authorization:",
        f"  Status:                 {auth['state']}",
        f"  Last success:           {auth['last_success'] or '-'}",
        f"  Next attempt:           {auth['next_attempt'] or '-'}",
        f"  Expires:                {auth['expires_at'] or '-'}",
        f"  Communication deadline: {auth['communication_deadline'] or '-'}",
        f"  Enforcement:            {doc['enforcement'] or 'none'}",
        f"  Evaluation left:        {days} d {rest // 3600} h",
        "",
        f"Unsent reports:           {doc['outbox']}"
        + (f" (oldest interval {doc['oldest_unsent']})" if doc["oldest_unsent"] else ""),
        f"Last communication error: {doc['communication']['last_error'] or '-'}",
        f"Last good sample:         {sampling.get('last_good_sample_at') or '-'}",
        *(
            [f"  Source FAILING since {sampling['failing_since']}: {sampling.get('last_error')}"]
            if sampling.get("failing_since")
            else []
        ),
        *_source_lines(doc.get("source")),
        "",
        *_exchange_lines(doc),
        "License usage:",
    ]
    stale = [t for t in doc["tags"].values() if not t.get("usage_current", True)]
    if stale:
        seen = max((t["usage_at"] for t in stale if t.get("usage_at")), default=None)
        lines.append(
            f"  NO USAGE for the last {sampling.get('intervals_without_data', 0)} interval(s): "
            + (f"shown is the last known, measured at {seen}" if seen else "none ever measured")
        )
    width = max((len(t) for t in doc["tags"]), default=3)
    lines.append(f"  {'tag'.ljust(width)}  {'usage':>6}  {'entitled':>8}  {'reported':>8}  state")
    for tag, t in doc["tags"].items():
        reported = "-" if t["reported"] is None else str(t["reported"])
        lines.append(
            f"  {tag.ljust(width)}  {t['usage']:>6}  {t['entitlement']:>8}  {reported:>8}  "
            f"{t['state']}  ({DISPLAY_NAMES.get(tag, '')})"
        )
    return "\n".join(lines)


def _exchange_lines(doc: dict[str, Any]) -> list[str]:
    """The transport mode; offline, or after any file exchange, the exchanges too."""
    mode = doc["transport"]["mode"]
    ex = doc["file_exchange"]
    lines = [f"Transport mode:           {mode}"]
    if mode != "offline" and ex["last_export"] is None:
        return [*lines, ""]
    last, imported = ex["last_export"], ex["last_import"]
    lines.append(
        "  Last export:            "
        + (f"#{last['number']} at {last['created_at']}" if last else "never")
        + (" (answer not imported yet)" if ex["awaiting_answer"] else "")
    )
    lines.append(
        "  Last import:            "
        + (f"answer to #{imported['number']} at {imported['imported_at']}" if imported else "never")
    )
    nxt = ex["next_export"]
    parts = ["REGISTER (with --token-file)"] if nxt["register"] else []
    if nxt["reports"]:
        parts.append(
            f"{nxt['reports']} report(s) ({nxt['first_interval']} to {nxt['last_interval']})"
        )
    if nxt["authorize"]:
        parts.append("authorization renewal")
    if nxt["renew_id"]:
        parts.append("ID certificate renewal")
    lines.append(f"  Next export carries:    {', '.join(parts) or 'nothing'}")
    return [*lines, ""]


def _source_lines(source: Any) -> list[str]:
    """Which UCCX node each part of the samples comes from, and island mode."""
    if not isinstance(source, dict):
        return []
    kept = " (kept: its refresh failed)" if source.get("configuration_kept") else ""
    live = " and ".join(str(u) for u in source.get("live_state_from") or []) or "-"
    out = [
        "",
        "UCCX source (since {}):".format(source.get("since") or "-"),
        f"  Configuration from:     {source.get('configuration_from') or '-'}{kept}",
        f"  Live state from:        {live}",
    ]
    if source.get("island"):
        out.append("  ISLAND MODE: both Finesse nodes are in service; each agent counted once")
    return out
