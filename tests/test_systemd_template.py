"""systemd/ccx-agent@.service: the main unit for one instance among several on a host;
checked as tests/test_systemd_unit.py checks the main unit."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.test_systemd_unit import MAX_EXPOSURE, SYSTEMD, UNIT, _entries, _exposure, _run, _tool

TEMPLATE = SYSTEMD / "ccx-agent@.service"


def test_the_template_is_the_main_unit_but_for_the_instances_own_keys() -> None:
    main, tpl = _entries(UNIT), _entries(TEMPLATE)
    assert tpl["Unit"]["Description"] == [main["Unit"]["Description"][0] + " (%i)"]
    assert tpl["Service"]["ExecStart"] == [
        "/usr/local/bin/ccx-agent --config /etc/ccx-agent/%i.yaml run"
    ]
    assert tpl["Service"]["StateDirectory"] == ["ccx-agent/%i"]
    assert tpl["Service"]["Environment"] == [
        *main["Service"]["Environment"],
        "CCX_AGENT_INSTANCE=%i",
    ]
    own = {"ExecStart", "StateDirectory", "Environment"}
    assert {k: v for k, v in tpl["Service"].items() if k not in own} == {
        k: v for k, v in main["Service"].items() if k not in own
    }
    assert tpl["Install"] == main["Install"]


def _instance(tmp_path: Path, text: str | None = None) -> Path:
    """The template as an instance unit file, its binary one that exists here."""
    exe = Path(sys.executable).parent / "ccx-agent"
    body = (text or TEMPLATE.read_text()).replace(
        "ExecStart=/usr/local/bin/ccx-agent ", f"ExecStart={exe} "
    )
    unit = tmp_path / "ccx-agent@cluster-a.service"
    unit.write_text(body)
    return unit


def test_systemd_analyze_verify_is_clean_for_an_instance(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "verify", "--man=no", "--generators=no", str(_instance(tmp_path)))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    broken = _instance(tmp_path, TEMPLATE.read_text().replace("UMask=", "UMaks="))
    result = _run(analyze, "verify", "--man=no", "--generators=no", str(broken))
    assert "UMaks" in result.stdout + result.stderr


def test_systemd_analyze_security_score_of_an_instance(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "security", "--offline=yes", "--no-pager", str(_instance(tmp_path)))
    assert result.returncode == 0, result.stderr
    text = result.stdout.replace("ccx-agent@cluster-a.service", "ccx-agent.service")
    assert _exposure(text) <= MAX_EXPOSURE, result.stdout
