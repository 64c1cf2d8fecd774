"""``simulate SCENARIO --state-dir DIR``: the simulated database kept, and read back by
``report``, ``alerts`` and ``status`` through a config whose ``state_dir`` is DIR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccx_agent.cli.main import main
from tests.history.instance import config

SCENARIO = """
start: 2027-01-04T08:00:00Z
license_type: flex
registered: true
entitlements: {flex-premium-seat: 100, flex-standard-seat: 50}
events:
  - at: 0m
    usage: {flex-premium-seat: 130, flex-standard-seat: 20}
  - at: 1h30m
    usage: {flex-premium-seat: 90}
  - at: 2h30m
    purchase: {flex-premium-seat: 30}
duration: 2d
"""


@pytest.fixture
def simulated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict]:  # type: ignore[type-arg]
    scenario = tmp_path / "ooc.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    state = tmp_path / "state"  # absent: created
    assert main(["simulate", str(scenario), "--json", "--state-dir", str(state)]) == 0
    result = json.loads(capsys.readouterr().out)
    return config(tmp_path), result


def test_report_alerts_and_status_read_the_simulated_instance(
    simulated: tuple[Path, dict],  # type: ignore[type-arg]
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, result = simulated
    base = ["--config", str(cfg)]
    window = ["--from", "2027-01-04", "--to", "2027-01-07"]
    assert main([*base, "report", *window, "--format", "json", "--by", "interval"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # Every interval simulate closed is a row per tag, with the same usage.
    sim = {
        (i["start"], tag): v["usage"] for i in result["intervals"] for tag, v in i["tags"].items()
    }
    assert {(r["start"], r["tag"]): r["usage"] for r in doc["rows"]} == sim
    premium = next(s for s in doc["summary"] if s["tag"] == "flex-premium-seat")
    assert (premium["peak"], premium["peak_at"]) == (130, "2027-01-04T08:00:00Z")
    assert premium["states"]["OUT_OF_COMPLIANCE"] > 0
    assert [a["mnemonic"] for a in doc["alerts"]] == [a["mnemonic"] for a in result["alerts"]]

    assert main([*base, "alerts", "--since", "2027-01-01", "--json"]) == 0
    log = json.loads(capsys.readouterr().out)["alerts"]
    assert [a["lines"] for a in log] == [a["lines"] for a in result["alerts"]]
    assert all(a["delivered"] for a in log)

    assert main([*base, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["registration"]["state"] == result["final"]["registration"]


def test_a_directory_holding_an_instance_is_refused(
    simulated: tuple[Path, dict],  # type: ignore[type-arg]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = (tmp_path / "state" / "ccx-agent.db").read_bytes()
    code = main(["simulate", str(tmp_path / "ooc.yaml"), "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1
    assert "already holds an instance" in err
    assert (tmp_path / "state" / "ccx-agent.db").read_bytes() == before


def test_a_directory_with_other_files_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["simulate", str(scenario), "--state-dir", str(tmp_path / "busy")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]
