"""The offline rules of the core: the same alerts, the remedy a file exchange."""

from __future__ import annotations

from ccx_agent.licensing.alerts import Alert, Mnemonic
from ccx_agent.licensing.offline import NOTE, exchange_due


def test_an_expiring_timer_says_a_file_exchange_is_due_once() -> None:
    alert = Alert(Mnemonic.AUTHORIZATION_EXPIRED, "authorization expired")
    noted = exchange_due(alert)
    assert noted.detail == "authorization expired" + NOTE
    assert exchange_due(noted) == noted


def test_an_alert_a_file_does_not_cure_is_unchanged() -> None:
    alert = Alert(Mnemonic.UCCX_ISLAND_MODE, "both nodes IN_SERVICE")
    assert exchange_due(alert) is alert
