"""Whole timelines on the simulated clock: evaluation, renewals, outages, 400 days.

These run the real agent jobs and a real SQLite store (a temporary file) through
``simulate``; nothing sleeps, the clock is the scenario's.
"""

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccx_agent.cli.main import main
from ccx_agent.licensing.timeutil import parse_iso

START = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def simulate(tmp_path: Path, capsys, text: str) -> dict:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    code = main(["simulate", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def times(result, mnemonic):
    return [parse_iso(a["time"]) for a in result["alerts"] if a["mnemonic"] == mnemonic]


def test_400_days_unreachable_ssm_renewal_timers_and_expiries(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: flex
registered: true
entitlements: {flex-premium-seat: 100, flex-standard-seat: 50}
events:
  - at: 0m
    usage: {flex-premium-seat: 80, flex-standard-seat: 40}
  - at: 1d
    ssm: unreachable
duration: 400d
""",
    )
    assert len(result["intervals"]) == 400 * 96
    count = Counter(a["mnemonic"] for a in result["alerts"])
    # One communication failure, announced once; reports keep failing, at most daily.
    assert count["COMM_FAILED"] == 1 and count["COMM_RESTORED"] == 0
    failed = times(result, "ENTITLEMENT_REPORT_FAILED")
    assert failed[0] == START + DAY
    assert all(b - a >= DAY for a, b in itertools.pairwise(failed))
    # Authorization: renewal due at day 30, failing; expiring soon from day 60, expired at 90.
    auth_failed = times(result, "AUTH_RENEW_FAILED")
    assert auth_failed[0] == START + 30 * DAY
    soon = times(result, "AUTHORIZATION_EXPIRING_SOON")
    assert soon[0] == START + 60 * DAY and soon[-1] < START + 90 * DAY
    assert times(result, "AUTHORIZATION_EXPIRED") == [START + 90 * DAY]
    # ID certificate: renewal due at day 180, failing; expiring soon from day 335; expired at 365.
    assert times(result, "ID_CERT_RENEW_FAILED")[0] == START + 180 * DAY
    reg_soon = times(result, "REGISTRATION_EXPIRING_SOON")
    assert reg_soon[0] == START + 335 * DAY and len(reg_soon) == 30
    assert times(result, "REGISTRATION_EXPIRED") == [START + 365 * DAY]
    # Enforcement 90 days after the authorization expired (day 180), with its reason.
    enforcement = times(result, "ENFORCEMENT_MODE")
    assert enforcement[0] == START + 180 * DAY
    by_start = {i["start"]: i for i in result["intervals"]}
    day = lambda n: (START + n * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    assert by_start[day(100)]["authorization"] == "AUTHORIZATION_EXPIRED"
    assert by_start[day(100)]["enforcement"] is None
    assert by_start[day(200)]["enforcement"] == "AUTHORIZATION_EXPIRED"
    # After the registration expired, evaluation resumes: 35 days of use are charged.
    assert by_start[day(370)]["registration"] == "REGISTRATION_EXPIRED"
    assert by_start[day(370)]["authorization"] == "EVALUATION"
    assert times(result, "EVAL_START") == [START + 365 * DAY]
    final = result["final"]
    assert final["registration"] == "REGISTRATION_EXPIRED"
    left = final["evaluation_seconds_left"]
    assert abs(left - (90 - 35) * 86400) <= 15 * 60
    # Every interval while registered waits in the outbox; nothing was dropped or invented.
    reported = [
        i for i in result["intervals"] if i["tags"]["flex-premium-seat"]["reported"] is not None
    ]
    # 95 were delivered on the first day (the SSM went away at the 96th report's instant).
    assert final["outbox"] == len(reported) - 95


def test_evaluation_counts_only_with_usage_and_expires_into_enforcement(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: perpetual-premium
registered: false
events:
  - at: 0m
    usage: {premium-seat: 5}
  - at: 10d
    usage: {premium-seat: 0}     # nobody logged in for 20 days: evaluation pauses
  - at: 30d
    usage: {premium-seat: 5}
duration: 101d
""",
    )
    # Transitions are decided at the next report (or housekeeping), not by the sample.
    assert times(result, "EVAL_START") == [START, START + 30 * DAY + timedelta(minutes=15)]
    # 10 days used, 20 paused: expiry after 90 days of use = day 110 > 101: not yet.
    assert times(result, "EVAL_EXPIRED") == []
    warnings = times(result, "EVAL_EXPIRY_WARNING")
    # 30 days left after 60 days of use = day 80; 14 left = day 96.
    assert [round((w - START) / DAY) for w in warnings] == [80, 96]
    assert result["final"]["authorization"] == "EVALUATION"
    assert abs(result["final"]["evaluation_seconds_left"] - 9 * 86400) <= 15 * 60
    # In evaluation nothing is reported nor queued, and usage is never out of compliance.
    assert all(i["tags"]["premium-seat"]["reported"] is None for i in result["intervals"])
    assert result["final"]["outbox"] == 0
    assert all(i["tags"]["premium-seat"]["state"] == "IN_COMPLIANCE" for i in result["intervals"])


def test_evaluation_expired_then_registration_lifts_enforcement(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: flex
registered: false
entitlements: {flex-standard-seat: 10}
events:
  - at: 0m
    usage: {flex-standard-seat: 3}
  - at: 95d
    register: true
duration: 96d
""",
    )
    expired = times(result, "EVAL_EXPIRED")
    assert len(expired) == 1 and START + 90 * DAY <= expired[0] <= START + 90 * DAY + timedelta(
        minutes=15
    )
    assert times(result, "ENFORCEMENT_MODE")[0] == expired[0]
    by_start = {i["start"]: i for i in result["intervals"]}
    assert by_start["2027-04-07T08:00:00Z"]["enforcement"] == "EVALUATION_EXPIRED"
    assert times(result, "REGISTER_SUCCESS") == [START + 95 * DAY]
    assert result["final"]["enforcement"] is None
    assert result["final"]["registration"] == "REGISTERED"
    assert result["final"]["evaluation_seconds_left"] == 0


def test_outage_then_recovery_delivers_every_interval_once(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: flex
registered: true
entitlements: {flex-premium-seat: 10}
events:
  - at: 0m
    usage: {flex-premium-seat: 4}
  - at: 2h
    ssm: unreachable
  - at: 3d2h
    ssm: reachable
duration: 3d6h
""",
    )
    assert Counter(a["mnemonic"] for a in result["alerts"])["COMM_RESTORED"] == 1
    assert result["final"]["outbox"] == 0
    assert times(result, "COMM_FAILED") == [START + timedelta(hours=2)]


def test_deregistration_wipes_identity_and_evaluation_resumes(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: flex
registered: true
entitlements: {flex-premium-seat: 10}
events:
  - at: 0m
    usage: {flex-premium-seat: 4}
  - at: 1h
    ssm: unreachable
  - at: 2h
    deregister: true        # the server cannot be told: the identity is wiped anyway
duration: 4h
""",
    )
    assert times(result, "DEREGISTER_FAILED") == [START + timedelta(hours=2)]
    assert times(result, "EVAL_START") == [START + timedelta(hours=2)]
    final = result["final"]
    assert final["registration"] == "UNREGISTERED"
    assert final["authorization"] == "EVALUATION"
    assert final["outbox"] == 0  # reports of a wiped identity can never be signed again
    assert final["evaluation_seconds_left"] == 90 * 86400 - 2 * 3600


def test_license_control_raises_limit_reached(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: flex
registered: true
entitlements: {flex-standard-seat: 10}
config: {license: {allow_overage: false}}
events:
  - at: 0m
    usage: {flex-standard-seat: 12}
duration: 1h
""",
    )
    limit = [a for a in result["alerts"] if a["mnemonic"] == "LICENSE_LIMIT_REACHED"]
    assert len(limit) == 1 and limit[0]["tags"] == ["flex-standard-seat"]
    assert limit[0]["severity"] == 2


def test_license_limit_is_news_again_after_usage_came_back_within_the_entitlement(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: flex
registered: true
entitlements: {flex-standard-seat: 10}
config: {license: {allow_overage: false}}
events:
  - at: 0m
    usage: {flex-standard-seat: 12}
  - at: 30m
    usage: {flex-standard-seat: 8}
  - at: 1h
    usage: {flex-standard-seat: 11}
duration: 2h
""",
    )
    # Over at 08:00-08:30 (once, not repeated), within at 08:30-09:00, over again from 09:00.
    assert times(result, "LICENSE_LIMIT_REACHED") == [
        START + timedelta(minutes=15),
        START + timedelta(minutes=75),
    ]


def test_nfr_is_never_out_of_compliance(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: nfr
registered: true
events:
  - at: 0m
    usage: {nfr-seat: 500}
duration: 3h
""",
    )
    assert {i["tags"]["nfr-seat"]["state"] for i in result["intervals"]} == {"IN_COMPLIANCE"}
    assert not [a for a in result["alerts"] if "OOC" in a["mnemonic"]]


def test_ooc_for_90_days_enters_enforcement_and_purchase_leaves_it(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: flex
registered: true
entitlements: {flex-premium-seat: 100}
events:
  - at: 0m
    usage: {flex-premium-seat: 130}
  - at: 95d
    purchase: {flex-premium-seat: 30}
duration: 96d
""",
    )
    ooc_at = times(result, "SYSTEM_IN_OOC_STATE")[0]
    assert ooc_at == START + timedelta(minutes=75)
    enforcement = times(result, "ENFORCEMENT_MODE")
    assert enforcement[0] == ooc_at + 90 * DAY
    # SYSTEM_IN_OOC_STATE is a standing condition: repeated at most daily.
    ooc = times(result, "SYSTEM_IN_OOC_STATE")
    assert all(b - a >= DAY for a, b in itertools.pairwise(ooc))
    assert times(result, "SYSTEM_BACK_IN_COMPLIANCE") == [START + 95 * DAY + timedelta(minutes=15)]
    assert result["final"]["enforcement"] is None
    assert result["final"]["authorization"] == "AUTHORIZED"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "license_type: flex\nentitlements: {premium-seat: 3}\n",
            ["2: entitlements.premium-seat: unknown tag for license type 'flex'"],
        ),
        (
            "events:\n  - at: 2h\n    ssm: unreachable\n  - at: 1h\n    ssm: reachable\nduration: 3h\n",
            ["4: events[1].at: events must be in time order"],
        ),
        (
            "events:\n  - at: 2d\n    ssm: unreachable\nduration: 1d\n",
            ["2: events[0].at: is after the end of the scenario (duration)"],
        ),
        (
            "license_type: nfr\nconfig:\n  license: {type: flex}\n",
            ["3: config.license.type: set the license type with the top-level license_type"],
        ),
    ],
)
def test_bad_scenarios_name_the_line_and_exit_78(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["simulate", str(path)]) == 78
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{path}:{line}" for line in expected]


COMPRESSED = """
license_type: flex
registered: true
entitlements: {flex-premium-seat: 10, flex-standard-seat: 5}
config:
  id_certificate: {lifetime: 6d, renew_after: 3d, expiry_warning: 2d}
  authorization: {renew_after: 2d, validity: 4d, expiry_warning: 1d, grace: 2d}
  evaluation: {period: 3d, warning_days: [2, 1]}
  compliance: {ooc_period: 2d}
events:
  - at: 0m
    usage: {flex-premium-seat: 12, flex-standard-seat: 3}
  - at: 1d
    ssm: unreachable
  - at: 1d7h
    usage: {flex-premium-seat: 8}
  - at: 8d
    ssm: reachable
  - at: 8d1h
    purchase: {flex-premium-seat: 5}
  - at: 9d
    deregister: true
  - at: 11d
    register: true
duration: 13d
"""


def test_catching_up_quiet_boundaries_gives_the_same_record_as_stepping_each(
    tmp_path, capsys, monkeypatch
):
    """simulate skips quiet report boundaries and catches them up; the record must not change."""
    from ccx_agent.scenario import runner

    fast = simulate(tmp_path, capsys, COMPRESSED)
    monkeypatch.setattr(runner, "MAX_QUIET", 1)
    slow = simulate(tmp_path, capsys, COMPRESSED)
    assert fast == slow
    # The compressed timers really were exercised.
    seen = {a["mnemonic"] for a in slow["alerts"]}
    assert {
        "SYSTEM_IN_OOC_STATE",
        "AUTHORIZATION_EXPIRED",
        "ENFORCEMENT_MODE",
        "REGISTRATION_EXPIRED",
        "EVAL_START",
        "EVAL_EXPIRY_WARNING",
        "COMM_RESTORED",
        "REGISTER_SUCCESS",
    } <= seen


def test_registering_again_does_not_clear_a_locked_out_of_compliance(tmp_path, capsys):
    result = simulate(
        tmp_path,
        capsys,
        """
license_type: flex
registered: true
entitlements: {flex-premium-seat: 100}
events:
  - at: 0m
    usage: {flex-premium-seat: 130}
  - at: 1h30m
    deregister: true
  - at: 1h45m
    register: true
duration: 3h
""",
    )
    assert times(result, "SYSTEM_IN_OOC_STATE")[0] == START + timedelta(minutes=75)
    last = result["intervals"][-1]
    assert last["registration"] == "REGISTERED"
    assert last["tags"]["flex-premium-seat"]["state"] == "OUT_OF_COMPLIANCE"
    assert last["tags"]["flex-premium-seat"]["reported"] == 130
    assert times(result, "SYSTEM_BACK_IN_COMPLIANCE") == []
