"""``report --format html``: self-contained, peaks kept by the downsampling, and a year of
15-minute intervals loaded in a real headless Chromium (no console error, the chart's
peak point is the JSON peak, a screenshot a person can look at).

Chromium is the Debian package ``chromium``. Where it is absent the browser test skips
and says so, except in CI (``CI`` set), where it fails: CI must run it.
Set ``CCX_AGENT_SCREENSHOT=PATH`` to keep the screenshot (docs/img/report.png is made so).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from ccx_agent.history import render_csv, render_html
from ccx_agent.history.report import Row, build
from ccx_agent.licensing.catalogue import LicenseType, tags_of
from ccx_agent.licensing.timeutil import parse_iso
from tests.history.instance import (
    YEAR_INTERVALS,
    YEAR_PEAK,
    YEAR_PEAK_AT,
)

CONSOLE_SCRIPT = Path(sys.executable).parent / "ccx-agent"
T0 = datetime(2027, 1, 4, tzinfo=UTC)
P = "flex-premium-seat"


def _report(n: int, peak_at: int, by: str = "interval"):  # type: ignore[no-untyped-def]
    rows = [
        (
            (T0 + i * timedelta(minutes=15)).isoformat(),
            (T0 + (i + 1) * timedelta(minutes=15)).isoformat(),
            P,
            99 if i == peak_at else 10 + i % 7,
            50,
            None,
            "OUT_OF_COMPLIANCE" if 100 <= i < 200 else "IN_COMPLIANCE",
        )
        for i in range(n)
    ]
    end = T0 + n * timedelta(minutes=15)
    return build(rows, license_type="flex", start=T0, end=end, by=by, tags=[P])


def test_the_file_is_self_contained() -> None:
    page = render_html.render(_report(500, 7))
    assert page.startswith("<!DOCTYPE html>")
    # Nothing is fetched: no src, no link, no url(), no @import, no http(s) reference.
    assert not re.search(r"\bsrc=|<link\b|url\(|@import|https?://(?!www\.w3\.org/2000/svg)", page)
    assert page.count("<svg") == 1


def test_downsampling_keeps_the_peak_of_a_narrow_spike() -> None:
    # 20,000 points on a 940-column chart: the one-interval spike must survive.
    page = render_html.render(_report(20_000, 12_345))
    svg = re.search(r"<svg [^>]*>", page)
    assert svg is not None
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', svg.group(0)))
    assert attrs["data-peak"] == "99"
    assert attrs["data-peak-at"] == (T0 + 12_345 * timedelta(minutes=15)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert int(attrs["data-points"]) == 20_000
    assert int(attrs["data-columns"]) <= render_html.WIDTH
    # The usage line itself reaches the peak's height (max per column, not a mean).
    path = re.search(r'<path class="usage" d="([^"]+)"', page)
    assert path is not None
    ys = [float(y) for y in re.findall(r"[ML][\d.]+ ([\d.]+)", path.group(1))]
    cy = float(re.search(r'class="peak" cx="[\d.]+" cy="([\d.]+)"', page).group(1))  # type: ignore[union-attr]
    assert min(ys) == cy
    # The out-of-compliance run is one shaded rectangle.
    assert page.count('<rect class="ooc"') == 1


def test_the_row_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_html, "MAX_TABLE_ROWS", 50)
    page = render_html.render(_report(2000, 3))
    assert page.count("<tr><td>") + page.count("<tr class='fold'>") < 60
    assert "The table stops after 50 lines" in page


def test_empty_report_renders() -> None:
    page = render_html.render(
        build([], license_type="flex", start=T0, end=T0 + timedelta(days=1), by="hour", tags=[P])
    )
    assert "data-peak" not in page and "No alerts in this range." in page


def test_row_type_is_what_the_renderer_reads() -> None:
    # The renderers read a row by position, in the CSV header's order.
    assert Row._fields == render_csv.HEADER


# --- in a real browser ----------------------------------------------------------------

#: Injected into the test's copy of the page, first thing in <head>: collects uncaught
#: errors and console.error calls into an attribute that --dump-dom shows.
_CATCH = """<script>(function(){var errs=[];function note(m){errs.push(String(m));
document.documentElement.setAttribute('data-errors',JSON.stringify(errs));}
window.addEventListener('error',function(e){note(e.message||e);});
var ce=console.error;console.error=function(){note([].join.call(arguments,' '));
ce.apply(console,arguments);};document.documentElement.setAttribute('data-errors','[]');})();
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    exe = _chromium()
    assert exe is not None
    return subprocess.run(
        [
            exe,
            "--headless",
            # The test may run as root (CI containers), where Chromium needs this.
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory, year_instance: Path) -> tuple[Path, dict]:  # type: ignore[type-arg]
    """A year of intervals (35,040 x 3 tags) as HTML and JSON, made by the console script."""
    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser test")
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    tmp = tmp_path_factory.mktemp("year")
    cfg = year_instance
    common = [str(CONSOLE_SCRIPT), "--config", str(cfg), "report", "--by", "interval"]
    common += ["--from", "2027-01-04", "--to", "2028-01-04"]
    for fmt in ("html", "json"):
        done = subprocess.run(
            [*common, "--format", fmt, "--output", str(tmp / f"year.{fmt}")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    return tmp, json.loads((tmp / "year.json").read_text(encoding="utf-8"))


def test_a_year_loads_in_chromium_without_error_and_its_peaks_are_the_json_peaks(
    year: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    tmp, doc = year
    assert len(doc["rows"]) == YEAR_INTERVALS * 3
    page = (tmp / "year.html").read_text(encoding="utf-8")
    probe = tmp / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + _CATCH, 1), encoding="utf-8")
    done = _browser("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # The page's own script ran to its end (it counts the peak points it found) ...
    assert re.search(r'<body[^>]* data-rendered="3"', dom), dom[:500]
    # ... and nothing failed on the way: no uncaught error, no console.error.
    errors = re.search(r'<html[^>]* data-errors="([^"]*)"', dom)
    assert errors is not None and errors.group(1) == "[]"
    assert "Uncaught" not in done.stderr
    # Each chart's peak point is the JSON summary's peak, at the same instant.
    peaks = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(
            r'<svg [^>]*data-tag="([^"]+)"[^>]*data-peak="(\d+)" data-peak-at="([^"]+)"', dom
        )
    }
    assert peaks == {s["tag"]: (str(s["peak"]), s["peak_at"]) for s in doc["summary"]}
    assert peaks[P] == (str(YEAR_PEAK), YEAR_PEAK_AT.strftime("%Y-%m-%dT%H:%M:%SZ"))
    circles = re.findall(r'<circle class="peak"[^>]*data-value="(\d+)"', dom)
    assert sorted(circles) == sorted(str(s["peak"]) for s in doc["summary"])


def test_a_screenshot_of_the_year(year: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    tmp, _ = year
    shot = tmp / "report.png"
    done = _browser("--window-size=1200,1100", f"--screenshot={shot}", (tmp / "year.html").as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1100)
    assert len(data) > 20_000  # charts drawn, not a blank page
    keep = os.environ.get("CCX_AGENT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


# --- the chart's geometry (issue 25: 1 and 9) -------------------------------------------


def _usage_path(page: str, tag: str = P) -> str:
    svg = re.search(rf'<svg [^>]*data-tag="{tag}".*?</svg>', page)
    assert svg is not None
    path = re.search(r'<path class="usage" d="([^"]+)"', svg.group(0))
    assert path is not None
    return path.group(1)


def _segments(d: str) -> list[list[tuple[float, float]]]:
    """The sub-paths of a path of M/L commands, as their points."""
    subs: list[list[tuple[float, float]]] = []
    for cmd, x, y in re.findall(r"([ML])([\d.]+) ([\d.]+)", d):
        if cmd == "M":
            subs.append([])
        subs[-1].append((float(x), float(y)))
    return subs


def _length(sub: list[tuple[float, float]]) -> float:
    return sum(abs(b[0] - a[0]) + abs(b[1] - a[1]) for a, b in pairwise(sub))


@pytest.mark.parametrize(
    ("n", "by"),
    [(7 * 96, "day"), (2 * 96, "hour"), (24, "interval"), (4 * 96, "interval"), (1, "interval")],
)
def test_the_usage_line_is_drawn_whatever_the_number_of_points(n: int, by: str) -> None:
    # Issue 25.1: under about 940 points every command was a move (nothing drawn).
    page = render_html.render(_report(n, n // 2, by=by))
    subs = _segments(_usage_path(page))
    assert subs and all(_length(s) > 0 for s in subs)
    # Periods that follow each other make one line: no gap, no break.
    assert len(subs) == 1


def test_the_usage_line_breaks_only_where_data_is_missing() -> None:
    rows = [
        (
            (T0 + i * timedelta(hours=1)).isoformat(),
            (T0 + (i + 1) * timedelta(hours=1)).isoformat(),
            P,
            None if i in (5, 6) else 10 + i,
            50,
            None,
            "IN_COMPLIANCE",
        )
        for i in range(24)
        if i != 15  # an hour with no interval at all
    ]
    rep = build(
        rows, license_type="flex", start=T0, end=T0 + timedelta(days=1), by="hour", tags=[P]
    )
    subs = _segments(_usage_path(render_html.render(rep)))
    assert len(subs) == 3
    assert all(_length(s) > 0 for s in subs)


def test_the_entitlement_line_reaches_the_right_edge() -> None:
    page = render_html.render(_report(7 * 96, 3, by="day"))
    pts = re.search(r'<polyline class="ent" points="([^"]+)"', page)
    assert pts is not None
    xs = [float(p.split(",")[0]) for p in pts.group(1).split()]
    assert (min(xs), max(xs)) == (render_html.LEFT, render_html.WIDTH - render_html.RIGHT)


def test_the_default_range_starts_the_axis_at_the_first_data() -> None:
    # A young instance: 6 hours of history in a 7-day default range.
    rows = [
        (
            (T0 + i * timedelta(minutes=15)).isoformat(),
            (T0 + (i + 1) * timedelta(minutes=15)).isoformat(),
            P,
            5 + i % 3,
            9,
            None,
            "IN_COMPLIANCE",
        )
        for i in range(24)
    ]
    end = T0 + timedelta(hours=6)

    def first_x(axis_from_data: bool) -> float:
        rep = build(
            rows,
            license_type="flex",
            start=end - timedelta(days=7),
            end=end,
            by="hour",
            tags=[P],
            axis_from_data=axis_from_data,
        )
        return _segments(_usage_path(render_html.render(rep)))[0][0][0]

    assert first_x(True) == render_html.LEFT
    # With --from given, the range asked for is the axis (the data at its far right).
    assert first_x(False) > render_html.WIDTH - 60


def test_charts_are_in_the_order_status_and_usage_list_the_tags() -> None:
    flex = tags_of(LicenseType.FLEX)
    assert list(flex) != sorted(flex)
    rep = build([], license_type="flex", start=T0, end=T0 + timedelta(days=1), by="hour", tags=flex)
    page = render_html.render(rep)
    assert re.findall(r'<svg [^>]*data-tag="([^"]+)"', page) == list(flex)


@pytest.mark.parametrize(
    ("start", "end", "labels"),
    [
        (
            "2027-01-04T00:00:00Z",
            "2028-01-04T00:00:00Z",
            ["2027-03", "2027-05", "2027-07", "2027-09", "2027-11", "2028-01"],
        ),
        (
            "2027-04-01T06:07:00Z",
            "2027-04-08T06:07:00Z",
            [f"2027-04-0{d}" for d in (2, 3, 4, 5, 6, 7, 8)],
        ),
        (
            "2027-04-05T06:07:00Z",
            "2027-04-05T12:07:00Z",
            ["2027-04-05 07:00", *(f"{h:02d}:00" for h in (8, 9, 10, 11, 12))],
        ),
        (
            "2027-04-05T20:00:00Z",
            "2027-04-06T08:00:00Z",
            ["2027-04-05 20:00", "22:00", "2027-04-06 00:00", "02:00", "04:00", "06:00", "08:00"],
        ),
    ],
)
def test_time_ticks_are_calendar_boundaries(start: str, end: str, labels: list[str]) -> None:
    marks = render_html.ticks(parse_iso(start), parse_iso(end))
    assert [label for _, label in marks] == labels
    assert all(ts.minute == ts.second == 0 for ts, _ in marks)


#: Appended before </body> of the test's copy: the rendered length of every usage path.
_LENGTHS = """<script>(function(){var out=[];
document.querySelectorAll('svg[data-tag]').forEach(function(svg){
 svg.querySelectorAll('path.usage').forEach(function(p){
  out.push([svg.getAttribute('data-tag'),p.getTotalLength()]);});});
document.documentElement.setAttribute('data-lengths',JSON.stringify(out));})();</script>"""


@pytest.mark.parametrize(
    "args",
    [
        # The default range (7 days before --to), by day.
        ["--to", "2027-06-05T10:00Z"],
        ["--from", "2027-06-01", "--to", "2027-06-03", "--by", "hour"],
        ["--from", "2027-06-01T08:00Z", "--to", "2027-06-01T14:00Z", "--by", "interval"],
    ],
    ids=["default-by-day", "by-hour", "six-hours-by-interval"],
)
def test_every_usage_line_has_a_length_in_chromium(
    year: tuple[Path, dict],  # type: ignore[type-arg]
    year_instance: Path,
    args: list[str],
) -> None:
    # Issue 25.1: every report of fewer than about 940 points drew no usage line.
    tmp, _ = year
    page_path = tmp / f"short-{'-'.join(args).replace(':', '')}.html"
    done = subprocess.run(
        [
            str(CONSOLE_SCRIPT),
            *("--config", str(year_instance), "report", *args),
            *("--format", "html", "--output", str(page_path)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    page = page_path.read_text(encoding="utf-8")
    probe = tmp / "probe-lengths.html"
    probe.write_text(
        page.replace("<head>", "<head>" + _CATCH, 1).replace("</body>", _LENGTHS + "</body>"),
        encoding="utf-8",
    )
    shown = _browser("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert shown.returncode == 0, shown.stderr[-2000:]
    errors = re.search(r'<html[^>]* data-errors="([^"]*)"', shown.stdout)
    assert errors is not None and errors.group(1) == "[]"
    found = re.search(r'<html[^>]* data-lengths="([^"]*)"', shown.stdout)
    assert found is not None
    lengths = json.loads(html.unescape(found.group(1)))
    # Each of the three tags has usage in these ranges: one line each at least, all drawn.
    assert {tag for tag, _ in lengths} == set(tags_of(LicenseType.FLEX))
    assert all(length > 0 for _, length in lengths), lengths
