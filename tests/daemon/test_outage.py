"""The outage drill: the real daemon, a ``command`` source made to fail for three report
intervals, and ``status``, ``status --check``, ``admit`` and ``/metrics`` asked throughout
and after the recovery. Each must answer the truth: the last known usage and when it was
measured, since when the source fails, WARNING, ``ccx_source_up 0``; never a traceback,
never ``usage=None``, never a frozen metric."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.conftest import TAG, Daemon, Instance, Sim, make_instance, run_cli, wait_until

SNAPSHOT = Path(__file__).parents[1] / "data" / "snapshots" / "mixed.json"
#: Report intervals of the drill, and how many of them the outage lasts.
INTERVAL_S = 2
OUTAGE_INTERVALS = 3


def _scrape(url: str) -> dict[str, float]:
    text = requests.get(url, timeout=5).text
    return {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _ask(inst: Instance, url: str) -> dict[str, Any]:
    """All four answers, each from its own real process or request."""
    answers: dict[str, Any] = {}
    done = run_cli(inst.config, "status", "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    answers["json"] = json.loads(done.stdout)
    text = run_cli(inst.config, "status")
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    answers["text"] = text.stdout
    check = run_cli(inst.config, "status", "--check")
    assert "Traceback" not in check.stderr and "None" not in check.stdout, check
    answers["check"] = (check.returncode, check.stdout)
    admit = run_cli(inst.config, "admit", "--tag", TAG, "--json")
    assert admit.returncode in (0, 1) and "Traceback" not in admit.stderr, admit.stderr
    answers["admit"] = json.loads(admit.stdout)
    answers["metrics"] = _scrape(url)
    return answers


def test_a_source_outage_of_three_intervals_is_told_truthfully_throughout(
    sim: Sim, tmp_path: Path
) -> None:
    down = tmp_path / "uccx-down"
    script = tmp_path / "snap.py"
    script.write_text(
        "import pathlib, sys\n"
        f"if pathlib.Path({str(down)!r}).exists():\n"
        "    sys.exit('UCCX is down (drill)')\n"
        f"sys.stdout.write(pathlib.Path({str(SNAPSHOT)!r}).read_text())\n",
        encoding="utf-8",
    )

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["report"]["interval"] = f"{INTERVAL_S}s"
        # The CRITICAL bound (ooc_threshold report intervals without a good sample) lies
        # well past the drill's outage: WARNING is the truth throughout.
        cfg["compliance"] = {"ooc_threshold": 30}
        cfg["source"] = {
            "kind": "command",
            "command": [sys.executable, str(script)],
            "timeout": "5s",
        }

    inst = make_instance(tmp_path / "agent", sim, "udp://127.0.0.1:9", tweak=tweak)
    daemon = Daemon(inst)
    url = daemon.metrics_url()
    series = f'ccx_license_usage{{"tag": "{TAG}"}}'

    # Healthy: a closed interval with usage, the source up.
    def healthy() -> dict[str, Any] | None:
        doc = inst.status(in_process=True)
        tag = doc["tags"][TAG]
        return doc if tag["reported"] is not None and doc["sampling"]["ok"] else None

    before = wait_until("a reported interval", healthy, 30)
    usage = before["tags"][TAG]["usage"]
    assert usage > 0
    wait_until("ccx_source_up 1", lambda: _scrape(url).get("ccx_source_up{}") == 1.0, 20)

    # The outage.
    down.touch()
    wait_until("the failure seen", lambda: not inst.status(in_process=True)["sampling"]["ok"], 20)
    seen_no_data = 0
    while seen_no_data < OUTAGE_INTERVALS:
        a = _ask(inst, url)
        tag, sampling = a["json"]["tags"][TAG], a["json"]["sampling"]
        # status --json: the last known usage, when, and since when the source fails.
        assert sampling["ok"] is False
        assert sampling["failing_since"] is not None
        assert "UCCX is down (drill)" in (sampling["last_error"] or "")
        assert tag["usage"] == usage and tag["usage_at"] is not None
        assert tag["usage_at"] <= sampling["failing_since"]
        assert sampling["last_good_sample_at"] <= sampling["failing_since"]
        seen_no_data = max(seen_no_data, sampling["intervals_without_data"])
        if sampling["intervals_without_data"]:
            assert tag["usage_current"] is False
        # status: the same, in words.
        assert f"Source FAILING since {sampling['failing_since']}" in a["text"]
        # status --check: WARNING, saying why.
        code, line = a["check"]
        assert code == 1 and line.startswith("CCX-LICENSE WARNING - "), line
        assert "source failing since" in line
        # admit: decided on the last known usage, and saying so.
        assert a["admit"]["in_use"] == usage
        assert a["admit"]["source_failing_since"] is not None
        # /metrics: the source down, the usage the last known (not frozen at a traceback).
        m = a["metrics"]
        assert m["ccx_source_up{}"] == 0.0
        assert m["ccx_source_failing_since_timestamp_seconds{}"] > 0
        assert m[series] == usage
        assert m["ccx_intervals_without_data{}"] >= sampling["intervals_without_data"] - 1
    assert "NO USAGE for the last" in a["text"]
    assert a["admit"]["usage_current"] is False
    # Neither a job nor the metrics refresh raised.
    assert daemon.events("job failed") == [] and daemon.events("metrics not refreshed") == []

    # The recovery.
    down.unlink()

    def recovered() -> dict[str, Any] | None:
        doc = inst.status(in_process=True)
        s = doc["sampling"]
        return doc if s["ok"] and s["intervals_without_data"] == 0 else None

    wait_until("the recovery", recovered, 30)
    a = _ask(inst, url)
    sampling, tag = a["json"]["sampling"], a["json"]["tags"][TAG]
    assert sampling["ok"] is True and sampling["failing_since"] is None
    assert tag["usage"] == usage and tag["usage_current"] is True
    assert "FAILING" not in a["text"] and "NO USAGE" not in a["text"]
    assert "source failing" not in a["check"][1] and "no usage" not in a["check"][1]
    assert a["admit"]["usage_current"] is True and a["admit"]["source_failing_since"] is None
    assert a["metrics"]["ccx_source_up{}"] == 1.0
    assert "ccx_source_failing_since_timestamp_seconds{}" not in a["metrics"]
    assert daemon.stop()[0] == 0
