"""``ccx-agent status --check`` (ccx_agent/cli/check.py): the monitoring-plugins line and exit
status for each state, read from a real database written as the jobs write it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from ccx_agent.cli import check
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.compliance import TagCompliance, TagState
from ccx_agent.licensing.lifecycle import Identity, ProductState, Registration
from ccx_agent.licensing.timeutil import iso
from ccx_agent.store import statedir
from ccx_agent.store.db import DB_NAME, LAST_REPORT_KEY, UDI_UUID_KEY, OpenInterval, Store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STD, PREM = "flex-standard-seat", "flex-premium-seat"
LINE = re.compile(r"^CCX-LICENSE (OK|WARNING|CRITICAL|UNKNOWN) - ([^|]+?)(?: \| (.*))?$")

#: Registered 10 days ago, certificate valid 355 more days, authorized 1 day ago,
#: reports delivered 5 minutes ago, 8 standard seats in use of 10.
HEALTHY = ProductState(
    LicenseType.FLEX,
    identity=Identity(
        "PIID-1", NOW - timedelta(days=10), NOW - timedelta(days=10), NOW + timedelta(days=355)
    ),
    registration=Registration.REGISTERED,
    last_auth_at=NOW - timedelta(days=1),
    entitlements={STD: 10, PREM: 2},
    tags={STD: TagCompliance(run_peak=8)},
    tags_in_use=frozenset({STD}),
    last_sample_at=NOW - timedelta(seconds=30),
)


def instance(
    tmp_path: Path,
    state: ProductState | None,
    *,
    usage: int = 8,
    pending: int = 0,
    last_report: datetime | None = NOW - timedelta(minutes=5),
    config: dict[str, object] | None = None,
) -> Path:
    """A config and a database holding ``state``, as the daemon's jobs leave them."""
    cfg: dict[str, object] = {
        "state_dir": str(tmp_path / "state"),
        "source": {"kind": "scripted", "steps": [{"agents": 1}]},
        **(config or {}),
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "ccx-agent.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    store = Store(tmp_path / "state" / DB_NAME)
    try:
        with store.transaction() as tx:
            if state is not None:
                tx.save_product(state, NOW)
            tx.set_meta(UDI_UUID_KEY, "00000000-0000-4000-8000-000000000001")
            tx.put_open_interval(OpenInterval(NOW - timedelta(minutes=1), {STD: usage}, 1, 0))
            for n in range(pending):
                start = NOW - timedelta(minutes=15 * (n + 1))
                tx.enqueue_many([(f"PIID-1:{iso(start)}", "PIID-1", start, {"usage": {}})], NOW)
            if last_report is not None:
                tx.set_meta(LAST_REPORT_KEY, iso(last_report))
    finally:
        store.close()
    # The marker a daemon's first start writes: the directory holds a live instance.
    statedir.write_marker(tmp_path / "state", NOW.isoformat())
    return path


def run(path: Path, now: datetime = NOW) -> tuple[int, str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check.main(path, now, out=out, err=err)
    [line] = out.getvalue().splitlines()
    m = LINE.match(line)
    assert m is not None, line
    assert check.NAMES[code] == m.group(1), (code, line)
    return code, m.group(2), m.group(3) or "", err.getvalue()


def test_ok_with_usage_and_entitlement_per_tag_as_perfdata(tmp_path: Path) -> None:
    code, what, perf, _ = run(instance(tmp_path, HEALTHY))
    assert code == check.OK == 0
    assert what == "REGISTERED, AUTHORIZED, 3 tag(s) in compliance"
    assert perf.split() == [
        f"{STD}_usage=8;10;;0",
        f"{STD}_entitlement=10;;;0",
        f"{PREM}_usage=0;2;;0",
        f"{PREM}_entitlement=2;;;0",
        "flex-outbound-port_usage=0;0;;0",
        "flex-outbound-port_entitlement=0;;;0",
    ]


def test_a_countdown_is_a_warning(tmp_path: Path) -> None:
    state = replace(HEALTHY, tags={STD: TagCompliance(TagState.OVERAGE, 2, 13)})
    code, what, perf, _ = run(instance(tmp_path, state, usage=13))
    assert code == check.WARNING == 1
    assert what == f"{STD} countdown 2/5 (usage 13, entitlement 10)"
    assert f"{STD}_usage=13;10;;0" in perf.split()


@pytest.mark.parametrize("tag_state", [TagState.OUT_OF_COMPLIANCE, TagState.ENFORCEMENT])
def test_out_of_compliance_or_enforcement_is_critical(tmp_path: Path, tag_state: TagState) -> None:
    state = replace(
        HEALTHY, tags={STD: TagCompliance(tag_state, 5, 13, 13, NOW - timedelta(hours=1))}
    )
    code, what, _, _ = run(instance(tmp_path, state, usage=13, pending=2))
    assert code == check.CRITICAL == 2
    assert what.startswith(f"{STD} {tag_state.value} (locked usage 13, entitlement 10)")
    if tag_state is TagState.ENFORCEMENT:
        assert "enforcement: OUT_OF_COMPLIANCE" in what
    # Warnings follow the critical problems in the same line.
    assert what.endswith("; 2 report(s) pending")


def test_pending_reports_are_a_warning(tmp_path: Path) -> None:
    code, what, _, _ = run(instance(tmp_path, HEALTHY, pending=3))
    assert (code, what) == (check.WARNING, "3 report(s) pending")


def test_reports_stale_is_critical_after_monitoring_stale_after(tmp_path: Path) -> None:
    old = NOW - timedelta(hours=2, minutes=5)
    code, what, _, _ = run(instance(tmp_path, HEALTHY, last_report=old))
    assert code == check.CRITICAL
    assert what == "no report delivered for 2h5m (monitoring.stale_after 1h)"
    # The threshold is the config's.
    relaxed = instance(
        tmp_path / "relaxed", HEALTHY, last_report=old, config={"monitoring": {"stale_after": "3h"}}
    )
    assert run(relaxed)[0] == check.OK


def test_never_delivered_counts_from_the_registration(tmp_path: Path) -> None:
    state = replace(
        HEALTHY,
        identity=replace(HEALTHY.identity, registered_at=NOW - timedelta(minutes=20)),  # type: ignore[type-var]
    )
    assert run(instance(tmp_path, state, last_report=None))[0] == check.OK
    code, what, _, _ = run(
        instance(tmp_path / "b", state, last_report=None), NOW + timedelta(hours=1)
    )
    assert code == check.CRITICAL and what.startswith("no report delivered for 1h20m"), what


def test_expiring_timers_are_warnings(tmp_path: Path) -> None:
    state = replace(
        HEALTHY,
        identity=replace(HEALTHY.identity, cert_expires_at=NOW + timedelta(days=20)),  # type: ignore[type-var]
        last_auth_at=NOW - timedelta(days=70),  # valid 90 d: expires in 20 d (warning at 30)
    )
    code, what, _, _ = run(instance(tmp_path, state))
    assert code == check.WARNING
    assert what == "ID certificate expires in 20d; authorization expires in 20d"


def test_an_expired_authorization_is_critical(tmp_path: Path) -> None:
    state = replace(HEALTHY, last_auth_at=NOW - timedelta(days=91))
    code, what, _, _ = run(instance(tmp_path, state))
    assert code == check.CRITICAL
    assert what.startswith("authorization expired at ")
    assert "authorization expires in" not in what


def test_an_expired_registration_is_critical(tmp_path: Path) -> None:
    state = replace(
        HEALTHY,
        identity=replace(HEALTHY.identity, cert_expires_at=NOW - timedelta(hours=1)),  # type: ignore[type-var]
    )
    code, what, _, _ = run(instance(tmp_path, state))
    assert code == check.CRITICAL
    assert what.startswith("registration expired (ID certificate ")


def test_evaluation_mode_is_a_warning_and_its_end_critical(tmp_path: Path) -> None:
    fresh = ProductState(LicenseType.FLEX, tags_in_use=frozenset({STD}))
    code, what, _, _ = run(instance(tmp_path, fresh, last_report=None))
    assert (code, what) == (check.WARNING, "not registered: evaluation mode, 90d left")
    used = replace(fresh, evaluation_used=timedelta(days=90))
    code, what, _, _ = run(instance(tmp_path / "b", used, last_report=None))
    assert code == check.CRITICAL
    assert (
        what == "enforcement: EVALUATION_EXPIRED; evaluation period expired: register the instance"
    )


def test_no_database_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "ccx-agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {"state_dir": str(tmp_path / "none"), "source": {"kind": "scripted", "steps": [{}]}}
        ),
        encoding="utf-8",
    )
    code, what, perf, _ = run(path)
    assert code == check.UNKNOWN == 3
    assert what.startswith("cannot read the state database: ") and "no state database" in what
    assert perf == ""
    assert not (tmp_path / "none").exists()  # looking creates nothing


def test_a_bad_config_is_unknown_with_the_problem_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "ccx-agent.yaml"
    path.write_text("monitoring:\n  stale_after: soon\n", encoding="utf-8")
    code, what, _, err = run(path)
    assert code == check.UNKNOWN
    assert what == f"the config {path} is not valid"
    assert f"{path}:2: monitoring.stale_after: " in err


def test_the_cli(tmp_path: Path) -> None:
    """The real console entry: the line on stdout, the plugin status as the exit code."""
    path = instance(tmp_path, replace(HEALTHY, last_auth_at=NOW - timedelta(days=3650)))
    done = subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", str(path), "status", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert LINE.match(done.stdout.strip()), done.stdout
    assert done.stdout.startswith("CCX-LICENSE CRITICAL - ")
    both = subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", str(path), "status", "--check", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_a_pipe_in_a_reason_cannot_start_the_perfdata() -> None:
    assert check.line(check.WARNING, "a | b", "x=1") == "CCX-LICENSE WARNING - a / b | x=1"


def test_a_failing_source_is_a_warning_then_critical_past_the_countdown(tmp_path: Path) -> None:
    """WARNING while the source fails; CRITICAL once no good sample has come for
    ``compliance.ooc_threshold`` report intervals (5 x 15 min by default)."""
    recent = replace(
        HEALTHY,
        last_sample_at=NOW - timedelta(minutes=20),
        source_failing_since=NOW - timedelta(minutes=19),
        source_error="SourceError: UCCX down",
    )
    code, what, _, _ = run(instance(tmp_path / "a", recent))
    assert code == check.WARNING
    assert what == (
        "source failing since 2026-03-01T11:41:00Z: SourceError: UCCX down "
        "(last good sample 2026-03-01T11:40:00Z)"
    )
    old = replace(recent, last_sample_at=NOW - timedelta(minutes=80))
    code, what, _, _ = run(instance(tmp_path / "b", old))
    assert code == check.CRITICAL
    assert what.startswith("no usage measured for 1h20m (past 1h15m, "), what
    assert "compliance can no longer be trusted" in what
