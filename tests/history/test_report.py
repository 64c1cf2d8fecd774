"""The report's rows and summary (pure): periods, maxima, worst state, counts."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.history import render_csv, render_json, render_text
from ccx_agent.history.report import (
    WhenError,
    build,
    default_by,
    parse_when,
    period_end,
    period_start,
    stream,
)
from ccx_agent.licensing.alerts import Alert
from ccx_agent.licensing.interval import IntervalRecord
from ccx_agent.store.db import AlertRow, Store
from tests.history.instance import STEP, record, write

T0 = datetime(2027, 1, 4, 8, tzinfo=UTC)  # a Monday
P, S = "flex-premium-seat", "flex-standard-seat"
ENT = {P: 10, S: 5}


def rows_of(tmp: Path, records: list[IntervalRecord], start: datetime, end: datetime):  # type: ignore[no-untyped-def]
    """Through the real store query, as the command reads them."""
    path = write(tmp / "state", records)
    store = Store(path, readonly=True)
    try:
        with store.read() as tx:
            return list(tx.iter_interval_tag_rows(start, end))
    finally:
        store.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T08:00Z", datetime(2026, 11, 1, 8, tzinfo=UTC)),
        ("2026-11-01T10:00+02:00", datetime(2026, 11, 1, 8, tzinfo=UTC)),
        ("2026-11-01T08:00:30", datetime(2026, 11, 1, 8, 0, 30, tzinfo=UTC)),
    ],
)
def test_when_is_iso_8601_with_offsets_honoured(text: str, expected: datetime) -> None:
    assert parse_when(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "2026-11-01T25:00Z", ""])
def test_a_bad_when_is_named(text: str) -> None:
    with pytest.raises(WhenError, match="is not an ISO 8601 date"):
        parse_when(text)


def test_default_period_is_hour_up_to_two_days_then_day() -> None:
    assert default_by(T0, T0 + timedelta(days=2)) == "hour"
    assert default_by(T0, T0 + timedelta(days=2, seconds=1)) == "day"


@pytest.mark.parametrize(
    ("by", "at", "start", "end"),
    [
        ("hour", "2027-01-06T13:45:00Z", "2027-01-06T13:00:00Z", "2027-01-06T14:00:00Z"),
        ("day", "2027-01-06T13:45:00Z", "2027-01-06T00:00:00Z", "2027-01-07T00:00:00Z"),
        # 2027-01-10 is a Sunday: its week began on Monday the 4th.
        ("week", "2027-01-10T23:59:00Z", "2027-01-04T00:00:00Z", "2027-01-11T00:00:00Z"),
        ("month", "2027-02-28T23:00:00Z", "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"),
        ("month", "2027-12-31T23:00:00Z", "2027-12-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    ],
)
def test_periods_are_aligned_to_utc_boundaries(by: str, at: str, start: str, end: str) -> None:
    ps = period_start(parse_when(at), by)
    assert (ps, period_end(ps, by)) == (parse_when(start), parse_when(end))


def test_an_hour_row_is_the_highest_peak_the_worst_state_and_the_counts(tmp_path: Path) -> None:
    records = [
        record(T0, {P: 7, S: 2}, ENT),
        record(T0 + STEP, {P: 12, S: 1}, ENT, state={P: "OVERAGE"}, reported={P: 12, S: 1}),
        record(T0 + 2 * STEP, None, ENT, state={P: "OVERAGE"}),
        record(T0 + 3 * STEP, {P: 9, S: 4}, {P: 11, S: 5}),
        # The next hour: only no-data intervals.
        record(T0 + 4 * STEP, None, ENT),
    ]
    end = T0 + timedelta(hours=2)
    rep = build(
        rows_of(tmp_path, records, T0, end),
        license_type="flex",
        start=T0,
        end=end,
        by="hour",
        tags=[S, P],
    )
    doc = rep.as_json()
    assert doc["rows"] == [
        {
            "start": "2027-01-04T08:00:00Z",
            "end": "2027-01-04T09:00:00Z",
            "tag": P,
            "usage": 12,
            "entitlement": 11,
            "reported": 12,
            "state": "OVERAGE",
            "intervals": 3,
            "no_data": 1,
        },
        {
            "start": "2027-01-04T08:00:00Z",
            "end": "2027-01-04T09:00:00Z",
            "tag": S,
            "usage": 4,
            "entitlement": 5,
            "reported": 1,
            "state": "IN_COMPLIANCE",
            "intervals": 3,
            "no_data": 1,
        },
        {
            "start": "2027-01-04T09:00:00Z",
            "end": "2027-01-04T10:00:00Z",
            "tag": P,
            "usage": None,
            "entitlement": 10,
            "reported": None,
            "state": "IN_COMPLIANCE",
            "intervals": 0,
            "no_data": 1,
        },
        {
            "start": "2027-01-04T09:00:00Z",
            "end": "2027-01-04T10:00:00Z",
            "tag": S,
            "usage": None,
            "entitlement": 5,
            "reported": None,
            "state": "IN_COMPLIANCE",
            "intervals": 0,
            "no_data": 1,
        },
    ]
    assert doc["summary"] == [
        {
            "tag": P,
            "peak": 12,
            "peak_at": "2027-01-04T08:15:00Z",
            "intervals": 3,
            "over_entitlement": 1,
            "states": {
                "IN_COMPLIANCE": 3,
                "OVERAGE": 2,
                "OUT_OF_COMPLIANCE": 0,
                "ENFORCEMENT": 0,
            },
        },
        {
            "tag": S,
            "peak": 4,
            "peak_at": "2027-01-04T08:45:00Z",
            "intervals": 3,
            "over_entitlement": 0,
            "states": {
                "IN_COMPLIANCE": 5,
                "OVERAGE": 0,
                "OUT_OF_COMPLIANCE": 0,
                "ENFORCEMENT": 0,
            },
        },
    ]
    assert (doc["from"], doc["to"], doc["by"], doc["license_type"]) == (
        "2027-01-04T08:00:00Z",
        "2027-01-04T10:00:00Z",
        "hour",
        "flex",
    )


def test_the_worst_state_wins_in_its_order(tmp_path: Path) -> None:
    order = ["OVERAGE", "ENFORCEMENT", "OUT_OF_COMPLIANCE", "IN_COMPLIANCE"]
    records = [record(T0 + i * STEP, {P: 1}, {P: 1}, state={P: s}) for i, s in enumerate(order)]
    rep = build(
        rows_of(tmp_path, records, T0, T0 + timedelta(hours=1)),
        license_type="flex",
        start=T0,
        end=T0 + timedelta(hours=1),
        by="hour",
        tags=[P],
    )
    assert [r.state for r in rep.rows] == ["ENFORCEMENT"]


def test_by_interval_week_and_month_and_empty_periods_left_out(tmp_path: Path) -> None:
    # Two intervals on Monday 4 January, one on Sunday 10th, one on Monday 1 February.
    starts = [T0, T0 + STEP, T0 + timedelta(days=6), datetime(2027, 2, 1, 0, tzinfo=UTC)]
    records = [record(s, {P: n + 1}, {P: 3}) for n, s in enumerate(starts)]
    start, end = datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC)
    raw = rows_of(tmp_path, records, start, end)

    def by(period: str) -> list[tuple[str, str, int | None, int]]:
        rep = build(raw, license_type="flex", start=start, end=end, by=period, tags=[P])
        return [(r.start, r.end, r.usage, r.intervals) for r in rep.rows]

    assert by("interval") == [
        ("2027-01-04T08:00:00Z", "2027-01-04T08:15:00Z", 1, 1),
        ("2027-01-04T08:15:00Z", "2027-01-04T08:30:00Z", 2, 1),
        ("2027-01-10T08:00:00Z", "2027-01-10T08:15:00Z", 3, 1),
        ("2027-02-01T00:00:00Z", "2027-02-01T00:15:00Z", 4, 1),
    ]
    assert by("week") == [
        ("2027-01-04T00:00:00Z", "2027-01-11T00:00:00Z", 3, 3),
        ("2027-02-01T00:00:00Z", "2027-02-08T00:00:00Z", 4, 1),
    ]
    assert by("month") == [
        ("2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", 3, 3),
        ("2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z", 4, 1),
    ]


def test_the_range_is_half_open_on_interval_starts(tmp_path: Path) -> None:
    records = [record(T0 + i * STEP, {P: i}, {P: 9}) for i in range(4)]
    raw = rows_of(tmp_path, records, T0 + STEP, T0 + 3 * STEP)
    assert [r[0] for r in raw] == ["2027-01-04T08:15:00+00:00", "2027-01-04T08:30:00+00:00"]


def test_a_tag_without_data_has_a_summary_without_a_peak() -> None:
    rep = build([], license_type="flex", start=T0, end=T0 + STEP, by="hour", tags=[P])
    assert rep.rows == []
    assert rep.as_json()["summary"][0]["peak"] is None
    assert rep.as_json()["summary"][0]["peak_at"] is None


def test_alerts_about_other_tags_are_left_out() -> None:
    def row(n: int, mnemonic: str, tags: tuple[str, ...]) -> AlertRow:
        return AlertRow(n, T0 + n * STEP, mnemonic, 1, tags, "detail", ("line",))

    rep = build(
        [],
        license_type="flex",
        start=T0,
        end=T0 + timedelta(hours=2),
        by="hour",
        tags=[P],
        alerts=[
            row(2, "SYSTEM_IN_OOC_STATE", (P,)),
            row(1, "SYSTEM_TO_ENTER_OOC_STATE", (S,)),
            row(3, "COMM_FAILED", ()),
        ],
    )
    assert [a["mnemonic"] for a in rep.as_json()["alerts"]] == [
        "SYSTEM_IN_OOC_STATE",
        "COMM_FAILED",
    ]
    first = rep.as_json()["alerts"][0]
    assert first == {
        "time": "2027-01-04T08:30:00Z",
        "mnemonic": "SYSTEM_IN_OOC_STATE",
        "severity": 1,
        "message": Alert("SYSTEM_IN_OOC_STATE", "").spec.description + " detail",
    }


# --- the streamed writers write what the objects say (issue 26) ---------------------------


def _alike_records() -> list[IntervalRecord]:
    """Two days with no-data intervals, nothing reported at times, a state change."""
    out = []
    for i in range(2 * 96):
        usage = None if 30 <= i < 34 else {P: 5 + i % 7, S: i % 3}
        reported = None if i < 10 else usage
        state = {P: "OVERAGE" if 50 <= i < 60 else "IN_COMPLIANCE"}
        out.append(record(T0 + i * STEP, usage, ENT, state=state, reported=reported))
    return out


@pytest.mark.parametrize("by", ["interval", "hour", "day", "week", "month"])
def test_the_streamed_json_and_csv_are_the_documents_of_the_rows(tmp_path: Path, by: str) -> None:
    raw = rows_of(tmp_path, _alike_records(), T0, T0 + timedelta(days=2))
    rep = build(
        raw,
        license_type="flex",
        start=T0,
        end=T0 + timedelta(days=2),
        by=by,
        tags=[S, P],
        alerts=[AlertRow(1, T0, "COMM_FAILED", 3, (), 'naïve "quoted"', ("x",))],
    )
    out = io.StringIO()
    render_json.write(rep, out)
    assert out.getvalue() == json.dumps(rep.as_json(), separators=(",", ":")) + "\n"
    out = io.StringIO()
    render_csv.write(rep, out)
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\r\n")
    writer.writerow(render_csv.HEADER)
    writer.writerows(tuple(r) for r in rep.rows)
    assert out.getvalue() == expected.getvalue()


def test_the_report_streams_from_the_store_cursor(tmp_path: Path) -> None:
    path = write(tmp_path / "state", _alike_records())
    store = Store(path, readonly=True)
    try:
        with store.read() as tx:
            rows = tx.iter_interval_tag_rows(T0, T0 + timedelta(days=2))
            assert not isinstance(rows, list)
            rep = stream(
                lambda: tx.iter_interval_tag_rows(T0, T0 + timedelta(days=2)),
                license_type="flex",
                start=T0,
                end=T0 + timedelta(days=2),
                by="hour",
                tags=[P, S],
            )
            with pytest.raises(RuntimeError):
                rep.summary  # noqa: B018 - known only once the rows were read
            first = list(rep.rows)
            # Each iteration is a new pass with the same rows and summary.
            assert list(rep.rows) == first and rep.count == len(first) == 2 * 48
            assert (
                rep.summary
                == build(
                    list(rows),
                    license_type="flex",
                    start=T0,
                    end=T0 + timedelta(days=2),
                    by="hour",
                    tags=[P, S],
                ).summary
            )
    finally:
        store.close()


def test_a_tags_document_the_typed_decoder_refuses_is_read_as_before(tmp_path: Path) -> None:
    path = write(tmp_path / "state", [record(T0, {P: 3}, {P: 4})])
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE intervals SET tags = ?",
            (json.dumps({P: {"usage": 3.0, "entitlement": 4, "reported": None, "state": "X"}}),),
        )
    assert rows_of_existing(path) == [
        (T0.isoformat(), (T0 + STEP).isoformat(), P, 3.0, 4, None, "X")
    ]


def rows_of_existing(path: Path) -> list[Any]:
    store = Store(path, readonly=True)
    try:
        with store.read() as tx:
            return list(tx.iter_interval_tag_rows(T0, T0 + timedelta(days=1)))
    finally:
        store.close()


@pytest.mark.parametrize("by", ["interval", "day"])
def test_an_empty_range_as_text_has_its_summary(tmp_path: Path, by: str) -> None:
    path = write(tmp_path / "state", _alike_records())
    store = Store(path, readonly=True)
    try:
        with store.read() as tx:
            later = T0 + timedelta(days=30)
            rep = stream(
                lambda: tx.iter_interval_tag_rows(later, later + STEP),
                license_type="flex",
                start=later,
                end=later + STEP,
                by=by,
                tags=[P],
            )
            text = render_text.format_text(rep)
    finally:
        store.close()
    assert "no closed intervals in this range" in text
    assert f"{P}     -  -" in text
