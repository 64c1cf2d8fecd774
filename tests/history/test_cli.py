"""``report``, ``alerts`` and ``features`` as an operator runs them: the contracts (JSON
keys, CSV header), one-line errors with exit 2, no database created, and a read beside a
writer that holds the write lock."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccx_agent.cli.main import main
from ccx_agent.history import cli as history_cli
from ccx_agent.licensing.alerts import Alert
from ccx_agent.store.db import Store
from tests.history.instance import STEP, config, record, write

T0 = datetime(2027, 1, 4, 8, tzinfo=UTC)
P, S, OUT = "flex-premium-seat", "flex-standard-seat", "flex-outbound-port"
ENT = {P: 10, S: 5, OUT: 2}
CONSOLE_SCRIPT = Path(sys.executable).parent / "ccx-agent"


def run(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    out, err = io.StringIO(), io.StringIO()
    code = fn(*args, out=out, err=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A day of intervals (premium 8..12 against 10) and three alerts; the config path."""
    records = [record(T0 + i * STEP, {P: 8 + i % 5, S: 3, OUT: 1}, ENT) for i in range(96)]
    ooc = Alert("SYSTEM_TO_ENTER_OOC_STATE", "in =1 hour", tags=(P,))
    write(
        tmp_path / "state",
        records,
        [
            (T0 + STEP, Alert("REGISTER_SUCCESS", "piid 1"), True),
            (T0 + 2 * STEP, ooc, True),
            (T0 + 3 * STEP, Alert("COMM_FAILED", "timeout"), False),
        ],
    )
    return config(tmp_path)


def test_json_report_has_the_contract_keys(instance: Path) -> None:
    code, out, err = run(
        history_cli.report, instance, start="2027-01-04T08:00Z", end="2027-01-04T12:00Z", fmt="json"
    )
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert list(doc) == ["license_type", "from", "to", "by", "rows", "summary", "alerts"]
    assert (doc["license_type"], doc["from"], doc["to"], doc["by"]) == (
        "flex",
        "2027-01-04T08:00:00Z",
        "2027-01-04T12:00:00Z",
        "hour",
    )
    assert len(doc["rows"]) == 4 * 3
    assert list(doc["rows"][0]) == [
        "start",
        "end",
        "tag",
        "usage",
        "entitlement",
        "reported",
        "state",
        "intervals",
        "no_data",
    ]
    keys = [(r["start"], r["tag"]) for r in doc["rows"]]
    assert keys == sorted(keys)
    assert list(doc["summary"][0]) == [
        "tag",
        "peak",
        "peak_at",
        "intervals",
        "over_entitlement",
        "states",
    ]
    premium = next(s for s in doc["summary"] if s["tag"] == P)
    # 16 intervals: 8, 9, 10, 11, 12, 8, ... -> peak 12 first at 09:00, 11 or 12 six times.
    assert (premium["peak"], premium["peak_at"], premium["over_entitlement"]) == (
        12,
        "2027-01-04T09:00:00Z",
        6,
    )
    assert doc["alerts"] == [
        {
            "time": "2027-01-04T08:15:00Z",
            "mnemonic": "REGISTER_SUCCESS",
            "severity": 6,
            "message": "This Product Instance is registered with Cisco Smart Software Manager. piid 1",
        },
        {
            "time": "2027-01-04T08:30:00Z",
            "mnemonic": "SYSTEM_TO_ENTER_OOC_STATE",
            "severity": 1,
            "message": Alert("SYSTEM_TO_ENTER_OOC_STATE", "").spec.description + " in =1 hour",
        },
        {
            "time": "2027-01-04T08:45:00Z",
            "mnemonic": "COMM_FAILED",
            "severity": 3,
            "message": "Communication with Cisco Smart Software Manager failed. timeout",
        },
    ]


def test_csv_is_rfc_4180_with_the_contract_header(instance: Path) -> None:
    code, out, _ = run(
        history_cli.report,
        instance,
        start="2027-01-04",
        end="2027-01-05",
        by="day",
        tags=[P],
        fmt="csv",
    )
    assert code == 0
    assert out.startswith("start,end,tag,usage,entitlement,reported,state,intervals,no_data\r\n")
    assert out.count("\r\n") == 2 and "\n" not in out.replace("\r\n", "")
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert rows == [
        {
            "start": "2027-01-04T00:00:00Z",
            "end": "2027-01-05T00:00:00Z",
            "tag": P,
            "usage": "12",
            "entitlement": "10",
            "reported": "",
            "state": "IN_COMPLIANCE",
            "intervals": "64",
            "no_data": "0",
        }
    ]


def test_text_report_folds_alike_periods_and_shows_the_summary(instance: Path) -> None:
    code, out, _ = run(
        history_cli.report, instance, start="2027-01-04", end="2027-01-05", by="interval", tags=[S]
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("License consumption report: license type flex")
    # 64 alike intervals of the standard seat: the first row, then one fold line.
    assert "  (+63 more intervals alike, to 2027-01-04T23:45:00Z)" in lines
    assert len(lines) < 20
    assert any(line.startswith(S) and " 3 " in line for line in lines)


def test_defaults_are_seven_days_to_now_by_day(instance: Path) -> None:
    now = T0 + timedelta(days=3)
    code, out, _ = run(history_cli.report, instance, fmt="json", now=now)
    doc = json.loads(out)
    assert code == 0
    assert (doc["from"], doc["to"], doc["by"]) == (
        "2026-12-31T08:00:00Z",
        "2027-01-07T08:00:00Z",
        "day",
    )
    assert {r["start"] for r in doc["rows"]} == {"2027-01-04T00:00:00Z", "2027-01-05T00:00:00Z"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday"], "error: --from: 'yesterday' is not an ISO 8601 date"),
        (["--to", "2027-02-30"], "error: --to: '2027-02-30' is not an ISO 8601 date"),
        (
            ["--from", "2027-01-05", "--to", "2027-01-04"],
            "error: --from (2027-01-05) is after --to (2027-01-04)",
        ),
        (
            ["--tag", "premium-seat"],
            "error: --tag: unknown flex tag 'premium-seat' (did you mean 'flex-premium-seat'?)",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    instance: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["--config", str(instance), "report", *args])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(message)


def test_without_an_instance_one_line_and_nothing_created(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for command in (["report"], ["alerts"]):
        proc = subprocess.run(
            [str(CONSOLE_SCRIPT), "--config", str(cfg), *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert len(proc.stderr.splitlines()) == 1
        assert str(tmp_path / "state" / "ccx-agent.db") in proc.stderr
        assert not (tmp_path / "state").exists()


def test_reads_while_a_writer_holds_the_write_lock(instance: Path, tmp_path: Path) -> None:
    writer = Store(tmp_path / "state" / "ccx-agent.db")
    try:
        with writer.transaction() as tx:  # BEGIN IMMEDIATE: the daemon's write lock
            tx.add_intervals([record(T0 + 96 * STEP, {P: 99, S: 0, OUT: 0}, ENT)])
            code, out, err = run(
                history_cli.report, instance, start="2027-01-04", end="2027-01-06", fmt="json"
            )
            assert (code, err) == (0, "")
            # The snapshot does not see the uncommitted interval.
            assert max(r["usage"] or 0 for r in json.loads(out)["rows"]) == 12
            code, out, err = run(history_cli.alerts, instance, since="2027-01-01")
            assert (code, err) == (0, "")
    finally:
        writer.close()


def test_output_file_is_written_whole(instance: Path, tmp_path: Path) -> None:
    target = tmp_path / "r.csv"
    code, out, _ = run(
        history_cli.report,
        instance,
        start="2027-01-04",
        end="2027-01-05",
        by="day",
        fmt="csv",
        output=target,
    )
    assert code == 0
    assert out.strip() == f"{target}: 3 rows by day, csv"
    assert target.read_bytes().count(b"\r\n") == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.csv")] == []


def test_output_into_a_missing_directory_is_one_line(instance: Path, tmp_path: Path) -> None:
    code, _, err = run(
        history_cli.report, instance, fmt="csv", output=tmp_path / "no" / "r.csv", now=T0
    )
    assert code == 1 and len(err.splitlines()) == 1 and "cannot write the report" in err


def test_alert_log_oldest_first_with_delivery(instance: Path) -> None:
    code, out, err = run(history_cli.alerts, instance, since="2027-01-04T08:20Z", as_json=True)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["since"] == "2027-01-04T08:20:00Z"
    assert [(a["mnemonic"], a["delivered"]) for a in doc["alerts"]] == [
        ("SYSTEM_TO_ENTER_OOC_STATE", True),
        ("COMM_FAILED", False),
    ]
    first = doc["alerts"][0]
    assert first["time"] == "2027-01-04T08:30:00Z" and first["severity"] == 1
    assert first["tags"] == [P]
    # The lines as sent, in the configured styles (MCVD, then UC).
    assert first["lines"][0].startswith("%MCVD-LIB_LICENSE-1-SYSTEM_TO_ENTER_OOC_STATE: ")
    assert first["lines"][1].startswith("%UC_LIB_LICENSE-1-SYSTEM_TO_ENTER_OOC_STATE: ")
    code, out, _ = run(history_cli.alerts, instance, since="2027-01-04T08:20Z")
    lines = out.splitlines()
    assert lines[0] == "2 alert(s) since 2027-01-04T08:20:00Z, oldest first:"
    assert "delivered to syslog" in lines[1] and "NOT YET DELIVERED" in lines[4]
    assert lines[2].strip() == first["lines"][0]


def test_alert_log_defaults_to_seven_days(instance: Path) -> None:
    code, out, _ = run(history_cli.alerts, instance, now=T0 + timedelta(days=7, minutes=40))
    assert code == 0
    assert out.splitlines()[0] == "1 alert(s) since 2027-01-04T08:40:00Z, oldest first:"
    code, out, _ = run(history_cli.alerts, instance, now=T0 + timedelta(days=30))
    assert out.strip() == "no alerts since 2027-01-27T08:00:00Z"


def test_alerts_bad_since_is_exit_2(instance: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(instance), "alerts", "--since", "last week"]) == 2
    assert capsys.readouterr().err.startswith("error: --since: 'last week' is not an ISO 8601")


def test_features_lists_every_type_from_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_type = {t["license_type"]: t for t in doc["license_types"]}
    assert list(by_type) == ["flex", "flex-hcs", "perpetual-premium", "perpetual-enhanced", "nfr"]
    flex = by_type["flex"]
    assert [(t["tag"], t["kind"]) for t in flex["tags"]] == [
        ("flex-standard-seat", "standard-seat"),
        ("flex-premium-seat", "premium-seat"),
        ("flex-outbound-port", "outbound-port"),
    ]
    assert flex["tags"][1]["description"] == "CCX Flex Premium Agent"
    assert flex["premium_features"] == ["chat", "email", "outbound"]
    assert flex["can_go_out_of_compliance"] is True
    assert by_type["nfr"]["can_go_out_of_compliance"] is False
    assert by_type["perpetual-enhanced"]["premium_features"] == []
    assert [t["tag"] for t in by_type["perpetual-enhanced"]["tags"]] == ["enhanced-seat"]


def test_features_of_one_type_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "--license-type", "nfr"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "nfr: never out of compliance (lab use)"
    assert "nfr-seat" in out and "flex" not in out


def test_features_unknown_type_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "--license-type", "flexx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --license-type: unknown license type 'flexx'")
    assert len(err.splitlines()) == 1


def test_output_keeps_an_old_files_mode_and_never_replaces_a_device(
    instance: Path, tmp_path: Path
) -> None:
    old = tmp_path / "r.csv"
    old.write_text("old")
    old.chmod(0o600)  # it was 0644 after a report
    code, _, err = run(history_cli.report, instance, fmt="csv", output=old, now=T0)
    assert code == 0, err
    assert stat.S_IMODE(old.stat().st_mode) == 0o600 and old.read_text() != "old"
    link = tmp_path / "link.csv"
    link.symlink_to(old)
    assert run(history_cli.report, instance, fmt="json", output=link, now=T0)[0] == 0
    assert link.is_symlink() and old.read_text().startswith("{")
    if os.geteuid() == 0:  # the null device's numbers, in the test's own directory
        null = tmp_path / "null"
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        code, _, err = run(history_cli.report, instance, fmt="csv", output=null, now=T0)
        assert code == 0, err
        assert stat.S_ISCHR(null.lstat().st_mode)
    disk = tmp_path / "dir.csv"
    disk.mkdir()
    code, _, err = run(history_cli.report, instance, fmt="csv", output=disk, now=T0)
    assert (code, err) == (1, f"error: {disk}: is a directory: refused (it is never replaced)\n")


# --- a year's report streams: memory flat in the range (issue 26) ------------------------


#: Runs the command from a small interpreter and prints its peak RSS (KiB) from wait4.
#: A child forked straight from pytest would count pytest's own pages in its peak (the
#: kernel keeps the high-water mark across exec).
_LAUNCH = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(status, usage.ru_maxrss)
"""


def _peak_rss_mib(argv: list[str]) -> float:
    """Peak RSS of a real ``python -m ccx_agent`` process, from the kernel."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCH, sys.executable, "-m", "ccx_agent", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    status, kib = done.stdout.split()
    assert status == "0", done.stderr
    return int(kib) / 1024


@pytest.mark.parametrize("fmt", ["json", "csv", "text", "html"])
def test_a_years_report_holds_no_year_in_memory(
    year_instance: Path, tmp_path: Path, fmt: str
) -> None:
    # Before the rows streamed, a year by interval took 143-176 MiB against 54 MiB for an
    # empty range: the whole list of rows, a Row per row, the whole text in memory.
    common = ["--config", str(year_instance), "report", "--by", "interval", "--format", fmt]
    out = str(tmp_path / f"report.{fmt}")
    empty = _peak_rss_mib([*common, "--from", "2029-01-01", "--to", "2029-01-02", "--output", out])
    year = _peak_rss_mib([*common, "--from", "2027-01-04", "--to", "2028-01-04", "--output", out])
    assert Path(out).stat().st_size > 1_000_000
    assert year - empty < 16, (year, empty)
