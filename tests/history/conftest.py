"""Fixtures shared by the history tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.history.instance import config, write, year_alerts, year_records


@pytest.fixture(scope="session")
def year_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A year of 15-minute intervals x 3 flex tags and its alerts, written once per
    session (per worker): the config path."""
    tmp = tmp_path_factory.mktemp("year-instance")
    write(tmp / "state", year_records(), year_alerts())
    return config(tmp)
