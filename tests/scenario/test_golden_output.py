"""``simulate --json`` is byte-identical to what it was before the speed work of issue 16.

The hashes below were recorded from main at commit 7915923 (before ``simulate`` and the
simulator were made faster), with ``ccx-agent simulate FILE --json | sha256sum``. Any
change of an alert, a record, an interval or the final state changes a hash, so a speed-up
that alters what an operator reads fails here. The 400-day runs of the benchmark
(``benchmarks/bench_simulate.py``) are checked against their own recorded hashes there;
these runs are short enough for the suite (a month of each, plus the shipped scenarios).

If a deliberate change of behaviour alters an output, record the new hash from a run of
the changed code and say why in the commit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ccx_agent.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

QUIET_30D = """
license_type: flex
registered: true
entitlements: {flex-premium-seat: 100, flex-standard-seat: 50}
events:
  - at: 0m
    usage: {flex-premium-seat: 80, flex-standard-seat: 40}
duration: 30d
"""
OUTAGE_30D = QUIET_30D.replace("duration:", "  - at: 1d\n    ssm: unreachable\nduration:")

#: sha256 of ``simulate FILE --json`` (stdout, its final newline included).
GOLDEN = {
    "quiet-30d": "97631ea414282b1344a6367e55ff2321d0f1194093c61adb188d751eb37f8521",
    "outage-30d": "d17cb62cede294e545c6e699a4241321b29232c83a4e8623981cf12fce75bfb1",
    "config/scenarios/seed-scenario-1.yaml": (
        "842e317ea3099e7b0c0decb1509e364c4c1a709be6c562cb93e92e56457153dd"
    ),
    "config/scenarios/seed-scenario-2.yaml": (
        "cdb159a7ca5eb302894eb779f8b16ca1e6c9c03d18b713014ac8e6a34b422f3d"
    ),
    "docs/examples/more-agents-tomorrow.yaml": (
        "288ff3ce5addaa35cd2e26bd5ef20e05c0fa8bd3b724b94dd79eda8c77fe6bf6"
    ),
    "docs/examples/register-again.yaml": (
        "070806dce2b0a0760b8c52df2b6be9ccf685ceb40e7540803f0b74c3918e6581"
    ),
    "docs/examples/ssm-down-a-week.yaml": (
        "6fec828c27a5e5a69c91d71c96bc948d5a531324e0d4794d7819ec6c3133ed80"
    ),
}


def _path(name: str, tmp_path: Path) -> Path:
    inline = {"quiet-30d": QUIET_30D, "outage-30d": OUTAGE_30D}
    if name in inline:
        path = tmp_path / f"{name}.yaml"
        path.write_text(inline[name])
        return path
    return ROOT / name


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_simulate_json_is_byte_identical_to_the_recorded_output(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", str(_path(name, tmp_path)), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"intervals"' in out  # a run, not an error message
    assert hashlib.sha256(out.encode("utf-8")).hexdigest() == GOLDEN[name]
