"""What ``transport.mode: offline`` changes in the core, pure (no I/O, ``now`` given).

An alert says the same, at the same instants, but the way out of an expiring timer is a
file exchange, not a retry (:func:`exchange_due`); an export carries an ID-certificate
renewal unasked when one falls due soon (:func:`renew_id_due`), which ``status`` announces
and ``offline export`` does."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from ccx_agent.licensing.alerts import Alert, Mnemonic
from ccx_agent.licensing.lifecycle import ProductState, Timers

#: An ID-certificate renewal rides along when it falls due within this long.
RENEW_ID_AHEAD = timedelta(days=30)

#: Alerts whose remedy, offline, is to carry a file to SSM and back.
EXCHANGE_REMEDY = frozenset(
    {
        Mnemonic.AUTHORIZATION_EXPIRING_SOON,
        Mnemonic.REGISTRATION_EXPIRING_SOON,
        Mnemonic.AUTHORIZATION_EXPIRED,
    }
)
NOTE = "; a file exchange is due: run 'ccx-agent offline export' (docs/offline.md)"


def exchange_due(alert: Alert) -> Alert:
    """``alert`` with the note that a file exchange is due, where that is the remedy."""
    if alert.mnemonic not in EXCHANGE_REMEDY or alert.detail.endswith(NOTE):
        return alert
    return replace(alert, detail=alert.detail + NOTE)


def renew_id_due(state: ProductState, now: datetime, timers: Timers) -> bool:
    """Whether an export at ``now`` carries an ID-certificate renewal unasked."""
    ident = state.identity
    if ident is None or not state.registered:
        return False
    return ident.cert_issued_at + timers.id_cert_renew_after <= now + RENEW_ID_AHEAD
