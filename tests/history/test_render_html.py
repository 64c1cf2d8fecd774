"""``report --format html``: self-contained, peaks kept by the downsampling, and a year of
15-minute intervals loaded in a real headless Chromium (no console error, the chart's
peak point is the JSON peak, a screenshot a person can look at).

Chromium is the Debian package ``chromium``. Where it is absent the browser test skips
and says so, except in CI (``CI`` set), where it fails: CI must run it.
Set ``CCX_AGENT_SCREENSHOT=PATH`` to keep the screenshot (docs/img/report.png is made so).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccx_agent.history import render_html
from ccx_agent.history.report import Row, build
from tests.history.instance import (
    YEAR_INTERVALS,
    YEAR_PEAK,
    YEAR_PEAK_AT,
    config,
    write,
    year_alerts,
    year_records,
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
    assert set(Row.__dataclass_fields__) >= {"start", "end", "usage", "entitlement", "state"}


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
def year(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    """A year of intervals (35,040 x 3 tags) as HTML and JSON, made by the console script."""
    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser test")
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    tmp = tmp_path_factory.mktemp("year")
    write(tmp / "state", year_records(), year_alerts())
    cfg = config(tmp)
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
