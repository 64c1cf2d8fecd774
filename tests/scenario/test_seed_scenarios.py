"""The two calculation scenarios of the UCCX licensing guide, through ``simulate --json``."""

import json
from pathlib import Path

import pytest

from ccx_agent.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "config" / "scenarios"


def simulate(capsys, path: Path) -> dict:
    assert main(["simulate", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def premium(result):
    return [(i["start"][11:16], i["tags"]["flex-premium-seat"]) for i in result["intervals"]]


def compliance_alerts(result):
    keep = {
        "SYSTEM_TO_ENTER_OOC_STATE",
        "SYSTEM_TO_ENTER_OOC_STATE_SHORTLY",
        "SYSTEM_IN_OOC_STATE",
        "SYSTEM_BACK_IN_COMPLIANCE",
    }
    return [(a["time"][11:16], a["mnemonic"]) for a in result["alerts"] if a["mnemonic"] in keep]


def test_seed_scenario_1_irreversible_ooc_locked_usage_then_purchase(capsys):
    result = simulate(capsys, SCENARIOS / "seed-scenario-1.yaml")
    rows = premium(result)
    # Five consecutive overage intervals: =60, =45, =30, =15, then out of compliance.
    assert [r["overage_count"] for _, r in rows[:5]] == [1, 2, 3, 4, 5]
    assert [r["state"] for _, r in rows[:5]] == ["OVERAGE"] * 4 + ["OUT_OF_COMPLIANCE"]
    assert compliance_alerts(result) == [
        ("08:15", "SYSTEM_TO_ENTER_OOC_STATE"),
        ("08:30", "SYSTEM_TO_ENTER_OOC_STATE"),
        ("08:45", "SYSTEM_TO_ENTER_OOC_STATE"),
        ("09:00", "SYSTEM_TO_ENTER_OOC_STATE_SHORTLY"),
        ("09:15", "SYSTEM_IN_OOC_STATE"),
        ("10:45", "SYSTEM_BACK_IN_COMPLIANCE"),
    ]
    countdown = [a["lines"][0] for a in result["alerts"] if "ENTER_OOC" in a["mnemonic"]]
    assert [line.rsplit(" ", 2)[-2] for line in countdown] == ["=60", "=45", "=30", "=15"]
    # Usage falls to 90 at 09:30, but the locked 130 is reported until the deficit is bought.
    by_start = dict(rows)
    for start in ("09:30", "09:45", "10:00", "10:15"):
        assert by_start[start]["usage"] == 90
        assert by_start[start]["reported"] == 130
        assert by_start[start]["state"] == "OUT_OF_COMPLIANCE"
    # 30 bought at 10:30; the next report (10:30-10:45) sees 130 and reports actual usage.
    assert by_start["10:30"] == {
        "usage": 90,
        "entitlement": 130,
        "reported": 90,
        "state": "IN_COMPLIANCE",
        "overage_count": 0,
    }
    assert result["intervals"][5]["authorization"] == "OUT_OF_COMPLIANCE"
    assert result["final"] == {
        "registration": "REGISTERED",
        "authorization": "AUTHORIZED",
        "enforcement": None,
        "evaluation_seconds_left": 7776000,
        "outbox": 0,
    }


def test_seed_scenario_2_reversible_overage_counts_one_again(capsys):
    result = simulate(capsys, SCENARIOS / "seed-scenario-2.yaml")
    rows = premium(result)
    assert [r["overage_count"] for _, r in rows[:6]] == [1, 2, 0, 0, 1, 0]
    assert all(r["state"] != "OUT_OF_COMPLIANCE" for _, r in rows)
    assert [r["reported"] for _, r in rows[:6]] == [110, 110, 95, 95, 105, 100]
    assert compliance_alerts(result) == [
        ("08:15", "SYSTEM_TO_ENTER_OOC_STATE"),
        ("08:30", "SYSTEM_TO_ENTER_OOC_STATE"),
        ("08:45", "SYSTEM_BACK_IN_COMPLIANCE"),
        ("09:15", "SYSTEM_TO_ENTER_OOC_STATE"),
        ("09:30", "SYSTEM_BACK_IN_COMPLIANCE"),
    ]
    # The second overage counts 1/5 again: =60 minutes, not =30.
    again = next(a for a in result["alerts"] if a["time"].endswith("09:15:00Z"))
    assert again["lines"][0].endswith("=60 minutes")
    assert again["tags"] == ["flex-premium-seat"]


def test_json_shape_is_the_documented_one(capsys):
    result = simulate(capsys, SCENARIOS / "seed-scenario-1.yaml")
    assert set(result) == {"intervals", "alerts", "final"}
    first = result["intervals"][0]
    # The documented keys, plus "status" (REPORTED, LOCAL or NO_DATA).
    assert set(first) == {
        "start",
        "end",
        "status",
        "registration",
        "authorization",
        "enforcement",
        "tags",
    }
    assert first["status"] == "REPORTED"
    assert first["start"] == "2027-01-04T08:00:00Z" and first["end"] == "2027-01-04T08:15:00Z"
    # Every tag of the license type is listed, zeros included.
    assert set(first["tags"]) == {"flex-standard-seat", "flex-premium-seat", "flex-outbound-port"}
    assert set(first["tags"]["flex-premium-seat"]) == {
        "usage",
        "entitlement",
        "reported",
        "state",
        "overage_count",
    }
    alert = next(a for a in result["alerts"] if a["mnemonic"] == "SYSTEM_TO_ENTER_OOC_STATE")
    assert set(alert) == {"time", "mnemonic", "severity", "tags", "lines"}
    assert alert["severity"] == 1
    assert alert["lines"][0].startswith("%MCVD-LIB_LICENSE-1-SYSTEM_TO_ENTER_OOC_STATE: ")
    assert alert["lines"][1].startswith("%UC_LIB_LICENSE-1-SYSTEM_TO_ENTER_OOC_STATE: ")
    assert set(result["final"]) == {
        "registration",
        "authorization",
        "enforcement",
        "evaluation_seconds_left",
        "outbox",
    }


def test_text_output_prefixes_alert_lines_with_simulated_time_then_a_table(capsys):
    assert main(["simulate", str(SCENARIOS / "seed-scenario-1.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        "2027-01-04T08:30:00Z %MCVD-LIB_LICENSE-1-SYSTEM_TO_ENTER_OOC_STATE: [REPORT_ENTITLE] "
        "com.cisco.smartlicense.util.SmartLicenseUtil This Product Instance will enter Out of "
        "Compliance state because of insufficient licenses.: This Product Instance will enter "
        "Out of Compliance state in =45 minutes"
    ) in out
    header = next(line for line in out if line.startswith("start "))
    assert "flex-premium-seat" in header
    assert any(line.startswith("2027-01-04T09:30:00Z  REGISTERED") for line in out)
    assert out[-1].startswith("final: registration=REGISTERED")


@pytest.mark.parametrize("name", ["seed-scenario-1.yaml", "seed-scenario-2.yaml"])
def test_shipped_scenarios_are_deterministic(capsys, name):
    a = simulate(capsys, SCENARIOS / name)
    b = simulate(capsys, SCENARIOS / name)
    assert a == b


def test_text_table_collapses_runs_of_identical_intervals(tmp_path, capsys):
    path = tmp_path / "quiet.yaml"
    path.write_text(
        "license_type: flex\nentitlements: {flex-premium-seat: 10}\n"
        "events:\n  - at: 0m\n    usage: {flex-premium-seat: 4}\nduration: 2d\n"
    )
    assert main(["simulate", str(path)]) == 0
    table = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(("2027", "  (+"))
    ]
    table = [line for line in table if "%" not in line]
    # 192 intervals, all alike but the first (before the first authorization took effect).
    assert len(table) <= 4
    assert (
        sum(int(line.split("+")[1].split()[0]) for line in table if "more)" in line)
        + sum(1 for line in table if line.startswith("2027"))
        == 192
    )
