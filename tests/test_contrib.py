"""contrib/: the Prometheus alerting rules, checked and driven by the real ``promtool``,
and the Grafana dashboard, whose every query is valid PromQL (promtool parses it) over
metrics the agent exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ccx_agent.daemon.metrics import Metrics
from tests.promtools import DASHBOARD, RULES, RULES_TEST, dashboard_exprs, tool

ALERTS = {
    "CcxLicenseCountdownStarted",
    "CcxLicenseOutOfCompliance",
    "CcxLicenseEnforcement",
    "CcxAuthorizationExpiringSoon",
    "CcxReportsStale",
    "CcxSourceDown",
    "CcxAgentDown",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_test_rules_drives_every_alert() -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert names == ALERTS
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for t in tests["tests"]
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == ALERTS, "every alert has a test case in which it fires"
    done = promtool("test", "rules", str(RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """The same tests against rules whose out-of-compliance alert never fires: promtool
    says FAILED (so the test above is not vacuous)."""
    broken = RULES.read_text(encoding="utf-8").replace(
        'state=~"OUT_OF_COMPLIANCE|ENFORCEMENT"', 'state="NO_SUCH_STATE"'
    )
    (tmp_path / "rules.yml").write_text(broken, encoding="utf-8")
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    tests["rule_files"] = ["rules.yml"]
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    done = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert done.returncode != 0
    assert "CcxLicenseOutOfCompliance" in done.stdout + done.stderr


def _exported() -> set[str]:
    """Every sample name the agent exports (a registered, locked, pending state)."""
    m = Metrics()
    m.refresh(
        {
            "license_type": "flex",
            "registration": {
                "state": "REGISTERED",
                "piid": "P",
                "certificate_expires_at": "2030-01-01T00:00:00Z",
            },
            "authorization": {"state": "AUTHORIZED", "expires_at": "2030-01-01T00:00:00Z"},
            "enforcement": "OUT_OF_COMPLIANCE",
            "evaluation_seconds_left": 0,
            "outbox": 1,
            "last_report_at": "2029-01-01T00:00:00Z",
            "last_sample_at": "2029-01-01T00:00:00Z",
            "tags": {
                "t": {
                    "usage": 1,
                    "entitlement": 1,
                    "reported": 1,
                    "state": "ENFORCEMENT",
                    "overage_count": 5,
                    "locked": 1,
                }
            },
        }
    )
    m.sampled(0.1, ok=True)
    m.ssm_duration.observe(0.1)
    m.emitted([("AGENT_READY", 6)])
    text = generate_latest(m.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_dashboard() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = [p["title"] for p in doc["panels"]]
    assert len(set(titles)) == len(titles)
    assert len({p["id"] for p in doc["panels"]}) == len(titles)
    # What the issue asks of it: usage vs entitlement per tag, states, timers, pending.
    for needed in (
        "Usage vs entitlement per tag",
        "Compliance per tag",
        "Registration",
        "Authorization",
        "Enforcement",
        "Timers",
        "Pending reports",
    ):
        assert needed in titles
    exprs = dashboard_exprs()
    usage = [e for t, e in exprs if t == "Usage vs entitlement per tag"]
    assert any("ccx_license_usage" in e for e in usage)
    assert any("ccx_license_entitlement" in e for e in usage)
    # Every ccx_ series a query names is one the agent exports.
    exported = _exported()
    for title, expr in exprs:
        for name in re.findall(r"\bccx_[a-z_]+", expr):
            assert name in exported, f"{title}: {name} is not exported"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["instance"]["definition"] == "label_values(ccx_info, instance)"
    for p in doc["panels"]:
        assert p["datasource"]["uid"] == "${datasource}"
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule (it has no other offline parser)."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": expr}
                    for i, (_, expr) in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(dashboard_exprs())} rules found" in done.stdout
