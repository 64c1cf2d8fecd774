"""The scripted source: steps on a clock that never jumps, counted by the real rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccx_agent.config import schema as config
from ccx_agent.config.yamldoc import DocumentError
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.consumption import compute
from ccx_agent.sources import SourceError
from ccx_agent.sources.factory import build
from ccx_agent.sources.scripted import ScriptedSource


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def load(tmp_path: Path, source: str) -> config.Config:
    path = tmp_path / "ccx-agent.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\nsource:\n{source}", encoding="utf-8")
    return config.load(path)


STEPS = """  kind: scripted
  steps:
    - {agents: 8, outbound_ports: 2}
    - {at: 10s, agents: 13, premium_agents: 2, supervisors: 1}
    - {at: 20s, fail: true}
"""


def test_steps_follow_the_clock_and_are_counted_by_the_license_rules(tmp_path: Path) -> None:
    cfg = load(tmp_path, STEPS)
    assert isinstance(cfg.source, config.ScriptedSource)
    clock = Clock()
    source = ScriptedSource(cfg.source, clock)

    def usage() -> dict[str, int]:
        return dict(compute(source.read(), LicenseType.FLEX, cfg.license.premium_features).tags)

    assert usage() == {"flex-standard-seat": 8, "flex-premium-seat": 0, "flex-outbound-port": 2}
    clock.now += 9.9
    assert usage()["flex-standard-seat"] == 8
    clock.now += 0.1
    # Supervisors hold a seat too; chat agents take a premium seat on flex.
    assert usage() == {"flex-standard-seat": 14, "flex-premium-seat": 2, "flex-outbound-port": 0}
    clock.now += 10
    with pytest.raises(SourceError, match="step 2 fails on purpose"):
        source.read()


def test_perpetual_enhanced_flags_the_premium_agents(tmp_path: Path) -> None:
    cfg = load(tmp_path, STEPS)
    assert isinstance(cfg.source, config.ScriptedSource)
    clock = Clock()
    source = ScriptedSource(cfg.source, clock)
    clock.now += 10
    result = compute(source.read(), LicenseType.PERPETUAL_ENHANCED, cfg.license.premium_features)
    assert result.tags["enhanced-seat"] == 16
    assert len(result.unlicensed_agents) == 2


def test_repeat_after_starts_the_script_over(tmp_path: Path) -> None:
    cfg = load(tmp_path, STEPS.replace("kind: scripted", "kind: scripted\n  repeat_after: 30s"))
    assert isinstance(cfg.source, config.ScriptedSource)
    clock = Clock()
    source = ScriptedSource(cfg.source, clock)
    clock.now += 31
    assert source.step_index() == 0
    clock.now += 10
    assert source.step_index() == 1


def test_the_factory_builds_it(tmp_path: Path) -> None:
    cfg = load(tmp_path, STEPS)
    assert isinstance(build(cfg.source), ScriptedSource)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("  steps: []\n", "source.steps: "),
        ("  steps:\n    - {at: 5s, agents: 1}\n", "the first step must be at 0s"),
        (
            "  steps:\n    - {agents: 1}\n    - {at: 5s}\n    - {at: 5s}\n",
            "step 2 must come after step 1",
        ),
        ("  steps:\n    - {agents: -1}\n", "source.steps[0].agents: must be at least 0"),
        ("  repeat_after: 5s\n  steps:\n    - {agents: 1}\n    - {at: 5s}\n", "repeat_after"),
        ("  steps:\n    - {agent: 1}\n", "unknown key"),
    ],
)
def test_bad_scripts_are_refused_with_the_key(tmp_path: Path, steps: str, message: str) -> None:
    with pytest.raises(DocumentError) as info:
        load(tmp_path, "  kind: scripted\n" + steps)
    assert message in str(info.value)
