"""What an alert says in ``transport.mode: offline``: the same alerts, at the same
instants, but the way out of an expiring timer is a file exchange, not a retry."""

from __future__ import annotations

from dataclasses import replace

from ccx_agent.licensing.alerts import Alert, Mnemonic

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
