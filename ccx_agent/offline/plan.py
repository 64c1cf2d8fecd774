"""What the next export would carry: shared by ``offline export`` and ``status``, so that
what ``status`` announces is what the export writes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ccx_agent.licensing.lifecycle import ProductState, Timers
from ccx_agent.licensing.timeutil import iso
from ccx_agent.store import ExportRecord, Tx

#: An ID-certificate renewal rides along when it falls due within this long.
RENEW_ID_AHEAD = timedelta(days=30)


def renew_id_due(state: ProductState, now: datetime, timers: Timers) -> bool:
    """Whether an export at ``now`` carries an ID-certificate renewal unasked."""
    ident = state.identity
    if ident is None or not state.registered:
        return False
    return ident.cert_issued_at + timers.id_cert_renew_after <= now + RENEW_ID_AHEAD


def _export(record: ExportRecord | None) -> dict[str, Any] | None:
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
        "last_export": _export(latest),
        "last_import": _export(imported),
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
