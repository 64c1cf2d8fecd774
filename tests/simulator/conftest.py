from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ccx_agent.simulator.core import Simulator
from tests.simulator.helpers import NOW


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "ssm"


@pytest.fixture
def sim(state_dir: Path) -> Iterator[Simulator]:
    simulator = Simulator.open(state_dir, NOW)
    yield simulator
    simulator.close()
