"""``status``: the document scripts read, and the text people read, from the database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ccx_agent import status
from ccx_agent.agent import Agent
from ccx_agent.scenario.simssm import SCENARIO_TOKEN, ScenarioSsm
from ccx_agent.store.db import DB_NAME, SOURCE_META_KEY, Store
from tests.test_agent import MIN, PREMIUM, STANDARD, STEP, T0, UDI, config, one_interval

UDI_DOC = {"pid": UDI.pid, "serial": UDI.serial}


@pytest.fixture
def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store(tmp_path / DB_NAME)
    ssm = ScenarioSsm({PREMIUM: 1, STANDARD: 10}, timedelta(days=365), T0, tmp_path)
    cfg = config()
    agent = Agent(cfg, store, ssm, udi=UDI, origin=T0)
    yield cfg, store, ssm, agent
    store.close()


def test_an_unregistered_instance(rig) -> None:  # type: ignore[no-untyped-def]
    cfg, store, _, _ = rig
    doc = status.collect(cfg, store, T0, UDI_DOC)
    assert doc["registration"]["state"] == "UNREGISTERED"
    assert doc["registration"]["piid"] is None
    assert doc["authorization"]["state"] == "NO_LICENSES_IN_USE"
    assert doc["enforcement"] is None
    assert doc["evaluation_seconds_left"] == 90 * 86400
    assert doc["outbox"] == 0
    assert set(doc["tags"]) == {PREMIUM, STANDARD, "flex-outbound-port"}
    assert doc["tags"][PREMIUM] == {
        "usage": 0,
        "usage_at": None,
        "usage_current": True,
        "entitlement": 0,
        "reported": None,
        "state": "IN_COMPLIANCE",
        "overage_count": 0,
        "locked": None,
    }
    assert "UNREGISTERED" in status.format_text(doc)


def test_a_registered_instance_reporting_over_its_entitlement(rig) -> None:  # type: ignore[no-untyped-def]
    cfg, store, ssm, agent = rig
    assert agent.register(SCENARIO_TOKEN, T0).ok
    one_interval(agent, T0, {PREMIUM: 3, STANDARD: 2})
    agent.flush(T0 + STEP)
    # A sample in the next interval: usage is the current peak, reported the last report.
    agent.sample([T0 + STEP + MIN], {PREMIUM: 4, STANDARD: 2})
    doc = status.collect(cfg, store, T0 + STEP + 2 * MIN, UDI_DOC)
    reg, auth = doc["registration"], doc["authorization"]
    assert reg["state"] == "REGISTERED"
    assert reg["piid"] in ssm.instances
    assert reg["udi"] == {"pid": UDI.pid, "serial": UDI.serial, "uuid": None}
    assert reg["account"] == "default"
    assert reg["registered_at"] == "2027-01-04T08:00:00Z"
    assert reg["certificate_expires_at"] == "2028-01-04T08:00:00Z"
    assert reg["next_renewal"] == "2027-07-03T08:00:00Z"  # 180 days after issue
    assert auth["expires_at"] == "2027-04-04T08:00:00Z"  # 90 days
    assert auth["communication_deadline"] == "2027-07-03T08:00:00Z"  # + 90 days of grace
    assert doc["outbox"] == 0
    assert doc["tags"][PREMIUM] == {
        "usage": 4,
        "usage_at": "2027-01-04T08:16:00Z",
        "usage_current": True,
        "entitlement": 1,
        "reported": 3,
        "state": "OVERAGE",
        "overage_count": 1,
        "locked": None,
    }
    text = status.format_text(doc)
    assert reg["piid"] in text and "OVERAGE" in text


def test_unsent_reports_and_the_last_error_are_shown(rig) -> None:  # type: ignore[no-untyped-def]
    cfg, store, ssm, agent = rig
    assert agent.register(SCENARIO_TOKEN, T0).ok
    ssm.reachable = False
    one_interval(agent, T0, {PREMIUM: 1})
    agent.flush(T0 + STEP)
    doc = status.collect(cfg, store, T0 + STEP, UDI_DOC)
    assert doc["outbox"] == 1
    assert doc["oldest_unsent"] == "2027-01-04T08:00:00Z"
    assert doc["communication"] == {"ok": False, "last_error": "SSM is unreachable (scenario)"}
    assert "Unsent reports:           1 (oldest interval 2027-01-04T08:00:00Z)" in (
        status.format_text(doc)
    )


def test_the_state_is_derived_for_now_without_writing(rig) -> None:  # type: ignore[no-untyped-def]
    cfg, store, _, agent = rig
    assert agent.register(SCENARIO_TOKEN, T0).ok
    later = T0 + timedelta(days=366)
    doc = status.collect(cfg, store, later, UDI_DOC)
    assert doc["registration"]["state"] == "REGISTRATION_EXPIRED"
    # Nothing was written: the stored state still says registered.
    with store.read() as tx:
        stored = tx.load_product()
    assert stored is not None and stored.registration.value == "REGISTERED"


def test_the_uccx_nodes_read_are_shown(rig) -> None:  # type: ignore[no-untyped-def]
    """What the daemon keeps of the source's origin (``source_origin``) is in both forms;
    null, and no section, for a source that has none."""
    import json

    from ccx_agent.sources.cluster import Origin, origin_change

    cfg, store, _, _ = rig
    doc = status.collect(cfg, store, T0, UDI_DOC)
    assert doc["source"] is None
    assert "UCCX source" not in status.format_text(doc)
    origin = Origin("https://uccx-a", ("https://uccx-a", "https://uccx-b"), island=True)
    kept, _ = origin_change(None, origin, T0)
    with store.transaction() as tx:
        tx.set_meta(SOURCE_META_KEY, json.dumps(kept))
    doc = status.collect(cfg, store, T0, UDI_DOC)
    assert doc["source"] == {
        "configuration_from": "https://uccx-a",
        "configuration_kept": False,
        "live_state_from": ["https://uccx-a", "https://uccx-b"],
        "island": True,
        "since": "2027-01-04T08:00:00Z",
    }
    text = status.format_text(doc)
    assert "  Configuration from:     https://uccx-a\n" in text
    assert "  Live state from:        https://uccx-a and https://uccx-b\n" in text
    assert "ISLAND MODE: both Finesse nodes are in service" in text


def test_a_stop_then_sync_shows_the_last_known_usage_and_says_so(rig) -> None:  # type: ignore[no-untyped-def]
    """Intervals closed without a good sample (the daemon stopped, then ``sync``): the
    newest is NO_DATA. The usage shown is the last known one, with when it was measured;
    never null (which made status, admit and the metrics crash)."""
    cfg, store, _, agent = rig
    assert agent.register(SCENARIO_TOKEN, T0).ok
    one_interval(agent, T0, {PREMIUM: 3, STANDARD: 2})
    agent.close_intervals(T0 + 4 * STEP)  # three intervals without a sample
    doc = status.collect(cfg, store, T0 + 4 * STEP + MIN, UDI_DOC)
    tag = doc["tags"][PREMIUM]
    assert (tag["usage"], tag["usage_current"], tag["reported"]) == (3, False, None)
    assert tag["usage_at"] is not None and tag["usage_at"] <= "2027-01-04T08:15:00Z"
    assert doc["sampling"] == {
        "ok": True,  # nothing failed: no sample was taken
        "failing_since": None,
        "last_error": None,
        "last_good_sample_at": tag["usage_at"],
        "intervals_without_data": 3,
    }
    text = status.format_text(doc)
    assert (
        f"NO USAGE for the last 3 interval(s): shown is the last known, measured at {tag['usage_at']}"
        in text
    )

    # The source fails: since when, and why; a good sample clears it.
    agent.sample([T0 + 4 * STEP + 2 * MIN], None, error="SourceError: UCCX down")
    agent.sample([T0 + 4 * STEP + 3 * MIN], None, error="SourceError: UCCX down")
    doc = status.collect(cfg, store, T0 + 4 * STEP + 4 * MIN, UDI_DOC)
    assert doc["sampling"]["ok"] is False
    assert doc["sampling"]["failing_since"] == "2027-01-04T09:02:00Z"
    assert doc["sampling"]["last_error"] == "SourceError: UCCX down"
    assert "Source FAILING since 2027-01-04T09:02:00Z: SourceError: UCCX down" in (
        status.format_text(doc)
    )
    agent.sample([T0 + 4 * STEP + 5 * MIN], {PREMIUM: 5, STANDARD: 2})
    doc = status.collect(cfg, store, T0 + 4 * STEP + 6 * MIN, UDI_DOC)
    assert doc["sampling"]["ok"] is True and doc["sampling"]["failing_since"] is None
    assert doc["tags"][PREMIUM]["usage"] == 5 and doc["tags"][PREMIUM]["usage_current"]
