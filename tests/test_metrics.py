"""ccx_agent/daemon/metrics.py: the licensing-state metrics are the ``status`` document, and the
SSM exchanges are counted by outcome. The agent runs its real jobs against the simulator
in process (ccx_agent.scenario.simssm: the real protocol, no network)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ccx_agent import status
from ccx_agent.agent import Agent
from ccx_agent.daemon import metrics
from ccx_agent.licensing.timeutil import parse_iso
from ccx_agent.scenario.simssm import SCENARIO_TOKEN, ScenarioSsm
from ccx_agent.store.db import DB_NAME, Store
from tests.test_agent import MIN, PREMIUM, STANDARD, STEP, T0, UDI, config, one_interval

OUTBOUND = "flex-outbound-port"


def scrape(m: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition parsed back by prometheus_client's own parser: sample name and
    sorted labels -> value."""
    text = generate_latest(m.registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Any, Store, ScenarioSsm, Agent, metrics.Metrics]]:
    store = Store(tmp_path / DB_NAME)
    ssm = ScenarioSsm({PREMIUM: 1, STANDARD: 10}, timedelta(days=365), T0, tmp_path)
    cfg = config()
    m = metrics.Metrics(version="9.9.9")
    agent = Agent(cfg, store, m.ssm(ssm), udi=UDI, origin=T0)
    yield cfg, store, ssm, agent, m
    store.close()


def test_an_unregistered_instance(rig) -> None:  # type: ignore[no-untyped-def]
    cfg, store, _, _, m = rig
    m.refresh(status.collect(cfg, store, T0))
    got = scrape(m)
    assert got[("ccx_info", (("license_type", "flex"), ("piid", ""), ("version", "9.9.9")))] == 1
    assert got[("ccx_registration_state", (("state", "UNREGISTERED"),))] == 1
    assert got[("ccx_registration_state", (("state", "REGISTERED"),))] == 0
    assert got[("ccx_evaluation_remaining_seconds", ())] == 90 * 86400
    assert got[("ccx_reports_pending", ())] == 0
    # Unknown is absent, never a made-up 0.
    names = {name for name, _ in got}
    for absent in (
        "ccx_id_certificate_expiry_timestamp_seconds",
        "ccx_authorization_expiry_timestamp_seconds",
        "ccx_last_report_success_timestamp_seconds",
        "ccx_last_sample_success_timestamp_seconds",
        "ccx_license_reported",
    ):
        assert absent not in names


def test_the_state_metrics_say_what_status_says(rig) -> None:  # type: ignore[no-untyped-def]
    """Registered, one interval over the premium entitlement, reported, a sample after."""
    cfg, store, _, agent, m = rig
    assert agent.register(SCENARIO_TOKEN, T0).ok
    one_interval(agent, T0, {PREMIUM: 3, STANDARD: 2})
    assert agent.flush(T0 + STEP) == 1
    agent.sample([T0 + STEP + MIN], {PREMIUM: 4, STANDARD: 2})
    now = T0 + STEP + 2 * MIN
    doc = status.collect(cfg, store, now)
    m.refresh(doc)
    got = scrape(m)

    def v(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    piid = doc["registration"]["piid"]
    assert v("ccx_info", version="9.9.9", license_type="flex", piid=piid) == 1
    for tag, t in doc["tags"].items():
        assert v("ccx_license_usage", tag=tag) == t["usage"]
        assert v("ccx_license_entitlement", tag=tag) == t["entitlement"]
        assert v("ccx_license_reported", tag=tag) == t["reported"]
        assert v("ccx_license_locked_usage", tag=tag) == (t["locked"] or 0)
        assert v("ccx_license_overage_intervals", tag=tag) == t["overage_count"]
        hot = {
            s: v("ccx_license_compliance", tag=tag, state=s)
            for s in ("IN_COMPLIANCE", "OVERAGE", "OUT_OF_COMPLIANCE", "ENFORCEMENT")
        }
        assert hot == {s: float(s == t["state"]) for s in hot}
    assert v("ccx_license_usage", tag=PREMIUM) == 4  # the interval in progress
    assert v("ccx_license_reported", tag=PREMIUM) == 3  # the last closed one
    assert v("ccx_license_overage_intervals", tag=PREMIUM) == 1  # 3 > 1: the countdown's n
    assert v("ccx_license_compliance", tag=PREMIUM, state="OVERAGE") == 1
    assert v("ccx_registration_state", state="REGISTERED") == 1
    assert v("ccx_authorization_state", state=doc["authorization"]["state"]) == 1
    assert (
        sum(
            v("ccx_authorization_state", state=s)
            for s in (
                "NO_LICENSES_IN_USE",
                "EVALUATION",
                "EVALUATION_EXPIRED",
                "AUTHORIZED",
                "OUT_OF_COMPLIANCE",
                "AUTHORIZATION_EXPIRED",
            )
        )
        == 1
    )
    assert v("ccx_enforcement") == 0
    assert v("ccx_enforcement_reason", reason="OUT_OF_COMPLIANCE") == 0
    reg, auth = doc["registration"], doc["authorization"]
    assert v("ccx_id_certificate_expiry_timestamp_seconds") == (
        parse_iso(reg["certificate_expires_at"]).timestamp()
    )
    assert v("ccx_authorization_expiry_timestamp_seconds") == (
        parse_iso(auth["expires_at"]).timestamp()
    )
    # The agent recorded SSM's acknowledgement; status shows it, the metric is it.
    assert doc["last_report_at"] is not None
    assert v("ccx_last_report_success_timestamp_seconds") == (T0 + STEP).timestamp()
    assert v("ccx_last_sample_success_timestamp_seconds") == (T0 + STEP + MIN).timestamp()
    assert v("ccx_reports_pending") == doc["outbox"] == 0


def test_locked_usage_and_enforcement_one_hot() -> None:
    """Pure: a document in enforcement (as status.collect shapes it)."""
    doc = {
        "license_type": "flex",
        "registration": {"state": "REGISTERED", "piid": "P", "certificate_expires_at": None},
        "authorization": {"state": "OUT_OF_COMPLIANCE", "expires_at": None},
        "enforcement": "OUT_OF_COMPLIANCE",
        "evaluation_seconds_left": 0,
        "outbox": 4,
        "last_report_at": None,
        "last_sample_at": None,
        "tags": {
            STANDARD: {
                "usage": 14,
                "entitlement": 10,
                "reported": 13,
                "state": "ENFORCEMENT",
                "overage_count": 5,
                "locked": 13,
            }
        },
    }
    m = metrics.Metrics()
    m.refresh(doc)
    got = scrape(m)
    assert got[("ccx_license_locked_usage", (("tag", STANDARD),))] == 13
    assert got[("ccx_license_compliance", (("state", "ENFORCEMENT"), ("tag", STANDARD)))] == 1
    assert got[("ccx_enforcement", ())] == 1
    assert got[("ccx_enforcement_reason", (("reason", "OUT_OF_COMPLIANCE"),))] == 1
    assert got[("ccx_enforcement_reason", (("reason", "EVALUATION_EXPIRED"),))] == 0
    assert got[("ccx_reports_pending", ())] == 4


def test_ssm_exchanges_are_counted_by_type_and_outcome(rig) -> None:  # type: ignore[no-untyped-def]
    _, _, ssm, agent, m = rig
    before = scrape(m)
    # Every known label pair is there from the start, at 0 (rate() sees the first one).
    assert before[("ccx_ssm_requests_total", (("outcome", "ok"), ("type", "report")))] == 0
    assert not agent.register("not-a-token", T0).ok  # the server refuses it
    assert agent.register(SCENARIO_TOKEN, T0).ok
    one_interval(agent, T0, {STANDARD: 2})
    ssm.reachable = False
    assert agent.flush(T0 + STEP) == 0  # no answer
    ssm.reachable = True
    assert agent.flush(T0 + STEP + MIN, force=True) == 1
    got = scrape(m)

    def n(type_: str, outcome: str) -> float:
        return got[("ccx_ssm_requests_total", (("outcome", outcome), ("type", type_)))]

    assert (n("register", "refused"), n("register", "ok")) == (1, 1)
    assert (n("report", "unreachable"), n("report", "ok")) == (1, 1)
    assert n("authorize", "ok") + n("renew_id", "ok") + n("deregister", "ok") == 0
    assert got[("ccx_ssm_request_duration_seconds_count", ())] == 4
    assert got[("ccx_ssm_request_duration_seconds_bucket", (("le", "+Inf"),))] == 4


def test_samples_alerts_and_job_failures_are_counted() -> None:
    m = metrics.Metrics()
    m.sampled(0.003, ok=True)
    m.sampled(2.0, ok=False)
    m.emitted([("SYSTEM_IN_OOC_STATE", 2), ("SYSTEM_IN_OOC_STATE", 2), ("AGENT_READY", 6)])
    m.job_failures.labels("report").inc()
    drops = [7]
    m.syslog_dropped(lambda: drops[0])
    got = scrape(m)
    assert got[("ccx_source_samples_total", (("outcome", "ok"),))] == 1
    assert got[("ccx_source_samples_total", (("outcome", "error"),))] == 1
    assert got[("ccx_source_sample_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("ccx_source_sample_duration_seconds_sum", ())] == pytest.approx(2.003)
    key = (("mnemonic", "SYSTEM_IN_OOC_STATE"), ("severity", "2"))
    assert got[("ccx_alerts_total", key)] == 2
    assert got[("ccx_job_failures_total", (("task", "report"),))] == 1
    assert got[("ccx_job_failures_total", (("task", "sample"),))] == 0
    assert got[("ccx_syslog_dropped_total", ())] == 7
    drops[0] = 9  # read at scrape time
    assert scrape(m)[("ccx_syslog_dropped_total", ())] == 9


def test_every_metric_name_is_prefixed_and_documented() -> None:
    """The names are a contract: ccx_ prefix, and docs/monitoring.md describes each."""
    m = metrics.Metrics()
    m.refresh(
        {
            "license_type": "flex",
            "registration": {
                "state": "REGISTERED",
                "piid": "P",
                "certificate_expires_at": "2030-01-01T00:00:00Z",
            },
            "authorization": {"state": "AUTHORIZED", "expires_at": "2030-01-01T00:00:00Z"},
            "enforcement": None,
            "evaluation_seconds_left": 0,
            "outbox": 0,
            "last_report_at": "2029-01-01T00:00:00Z",
            "last_sample_at": "2029-01-01T00:00:00Z",
            "tags": {
                STANDARD: {
                    "usage": 1,
                    "usage_at": "2029-01-01T00:00:00Z",
                    "entitlement": 1,
                    "reported": 1,
                    "state": "IN_COMPLIANCE",
                    "overage_count": 0,
                    "locked": None,
                }
            },
        }
    )
    text = generate_latest(m.registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    ours = {n for n in names if not n.startswith("process_")}
    assert all(n.startswith("ccx_") for n in ours)
    docs = (Path(__file__).parents[1] / "docs" / "monitoring.md").read_text(encoding="utf-8")
    counters = {"ccx_ssm_requests", "ccx_source_samples", "ccx_alerts", "ccx_syslog_dropped"}
    counters |= {"ccx_job_failures"}
    expected = {
        "ccx_info",
        "ccx_license_usage",
        "ccx_license_usage_timestamp_seconds",
        "ccx_source_up",
        "ccx_intervals_without_data",
        "ccx_license_reported",
        "ccx_license_entitlement",
        "ccx_license_locked_usage",
        "ccx_license_overage_intervals",
        "ccx_license_compliance",
        "ccx_registration_state",
        "ccx_authorization_state",
        "ccx_enforcement",
        "ccx_enforcement_reason",
        "ccx_id_certificate_expiry_timestamp_seconds",
        "ccx_authorization_expiry_timestamp_seconds",
        "ccx_evaluation_remaining_seconds",
        "ccx_reports_pending",
        "ccx_last_report_success_timestamp_seconds",
        "ccx_last_sample_success_timestamp_seconds",
        "ccx_ssm_request_duration_seconds",
        "ccx_source_sample_duration_seconds",
        *counters,
    }
    assert ours == expected
    for name in expected:
        shown = f"{name}_total" if name in counters else name
        assert f"`{shown}" in docs, f"{shown} is not in docs/monitoring.md"
