"""An identity that changes while an answer is on its way (real simulator over TLS, a
relay that holds the answer, the agent's real database shared with a second agent as the
CLI shares it with the daemon).

``register --force`` or ``deregister`` during the daemon's RENEW_ID used to let the late
answer put the old PIID's certificate back over the new registration; every report of the
new PIID was then dropped without a word. An answer now applies only if the identity it
was asked for is still the current one, checked inside the write transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccx_agent.agent import Agent, Outcome
from ccx_agent.simulator.admin import Admin
from ccx_agent.store.db import DB_NAME, Store
from tests.ssm.servers import Reply
from tests.ssm.test_https import STANDARD, Lab, config


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    running = Lab(tmp_path)
    try:
        yield running
    finally:
        running.close()


def _daemon_agent(lab: Lab) -> tuple[Agent, threading.Event, threading.Event, Store]:
    """The daemon's agent: its own connection to the database and a path to SSM whose
    RENEW_ID answer is held until the test lets it go."""
    relay, server = lab.relay()
    held, release = threading.Event(), threading.Event()

    def hold(sent: bytes, reply: Reply) -> Reply:
        if b'"type":"RENEW_ID"' in sent:
            held.set()
            assert release.wait(30)
        return reply

    relay.on_response = hold
    store = Store(lab.agent_dir / DB_NAME)
    return Agent(config(), store, lab.client(server.url), udi=lab.agent.udi), held, release, store


def _renew_in_background(agent: Agent, lab: Lab) -> tuple[threading.Thread, list[Outcome]]:
    out: list[Outcome] = []
    thread = threading.Thread(target=lambda: out.append(agent.renew_id(lab.now)))
    thread.start()
    return thread, out


def _server_reports(lab: Lab, piid: str) -> list[str]:
    admin = Admin.for_state_dir(lab.ssm_dir)
    try:
        return [r["id"] for r in admin.reports(piid)]
    finally:
        admin.close()


def test_register_force_during_renew_id_keeps_the_new_registration(lab: Lab) -> None:
    old = lab.register()
    daemon, held, release, store = _daemon_agent(lab)
    try:
        thread, out = _renew_in_background(daemon, lab)
        assert held.wait(30)
        # The operator registers again meanwhile (the CLI: the lab's own agent).
        assert lab.agent.register(lab.token(), lab.now, force=True).ok
        new = lab.agent.state().identity
        assert new is not None and new.piid != old
        cred_before = lab.credentials()
        release.set()
        thread.join(30)
        assert out == [Outcome(False, "the identity changed during the exchange; nothing applied")]
        # The late answer changed nothing: the new registration and its certificate stand.
        assert lab.credentials() == cred_before
        state = lab.agent.state()
        assert state.identity == new
        # And the new PIID's reports reach SSM, through the daemon's own agent.
        start = lab.last_start(2)
        lab.interval(start, {STANDARD: 3})
        assert daemon.flush(lab.now) == 1
        assert _server_reports(lab, new.piid) == [
            f"{new.piid}:{start.isoformat()}".replace("+00:00", "Z")
        ]
        assert lab.outbox() == []
    finally:
        release.set()
        store.close()


def test_deregister_during_renew_id_does_not_bring_the_old_credentials_back(lab: Lab) -> None:
    lab.register()
    daemon, held, release, store = _daemon_agent(lab)
    try:
        thread, out = _renew_in_background(daemon, lab)
        assert held.wait(30)
        assert lab.agent.deregister(lab.now).ok
        release.set()
        thread.join(30)
        assert out[0].ok is False
        assert lab.credentials() is None
        assert lab.agent.state().identity is None
        assert lab.keys() == []
    finally:
        release.set()
        store.close()


def test_reports_of_an_identity_that_is_gone_are_never_dropped_silently(lab: Lab) -> None:
    """If reports of a PIID the database no longer holds are found (whatever put them
    there), they are dropped with a log line and an alert, not in silence."""
    piid = lab.register()
    start = lab.last_start(2)
    lab.interval(start, {STANDARD: 2})
    with lab.store.transaction() as tx:
        tx.drop_credentials()
    assert lab.agent.flush(lab.now) == 0
    assert lab.outbox() == []
    with lab.store.read() as tx:
        last = tx.alerts()[-1]
    assert last.mnemonic == "ENTITLEMENT_REPORT_FAILED"
    assert last.detail == (
        f"1 report(s) of PIID {piid} dropped: this instance no longer holds that identity, "
        "so they can never be signed"
    )
