"""When a failing job becomes an alert: the second failure in a row, again every repeat
period while it stands, a recovery line after it (and none after a lone failure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ccx_agent.daemon.jobhealth import JobHealth, failed, succeeded

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_one_failure_says_nothing_and_its_success_says_nothing() -> None:
    h, alert = failed(JobHealth(), "report", T0, "OSError: x", DAY)
    assert alert is None and h.consecutive_failures == 1 and h.failing_since == T0
    h, alert = succeeded(h, "report", T0 + timedelta(minutes=15))
    assert alert is None and not h.failing
    assert (h.last_error, h.last_error_at) == ("OSError: x", T0)


def test_the_second_failure_alerts_then_every_repeat_then_recovery() -> None:
    h = JobHealth()
    raised = []
    for n in range(200):
        now = T0 + n * timedelta(minutes=15)
        h, alert = failed(h, "sample", now, "OperationalError: database or disk is full", DAY)
        if alert is not None:
            raised.append((n, alert))
    # The 2nd failure (n=1), then once a day (96 quarter hours) while it stands.
    assert [n for n, _ in raised] == [1, 97, 193]
    first = raised[0][1]
    assert first.mnemonic == "AGENT_JOB_FAILED"
    assert first.detail == (
        "job sample has failed 2 times in a row since 2026-11-01T00:00:00Z: "
        "OperationalError: database or disk is full"
    )
    assert first.params == (("Job", "sample"),)
    assert h.consecutive_failures == 200 and h.failing_since == T0
    h, alert = succeeded(h, "sample", T0 + 200 * timedelta(minutes=15))
    assert alert is not None and alert.mnemonic == "AGENT_JOB_RECOVERED"
    assert alert.detail == "job sample ran again after 200 failure(s) since 2026-11-01T00:00:00Z"
    assert not h.failing and h.alerted_at is None
    # A new run of failures starts a new count and alerts again on its second.
    h, alert = failed(h, "sample", T0 + 300 * timedelta(minutes=15), "e", DAY)
    assert alert is None
    h, alert = failed(h, "sample", T0 + 301 * timedelta(minutes=15), "e", DAY)
    assert alert is not None


def test_health_has_a_json_form() -> None:
    h, _ = failed(JobHealth(), "report", T0, "PermissionError: [Errno 13]", DAY)
    h, _ = failed(h, "report", T0 + DAY, "PermissionError: [Errno 13]", DAY)
    assert h.as_json() == {
        "consecutive_failures": 2,
        "failing_since": "2026-11-01T00:00:00Z",
        "last_error": "PermissionError: [Errno 13]",
        "last_error_at": "2026-11-02T00:00:00Z",
        "alerted_at": "2026-11-02T00:00:00Z",
    }
