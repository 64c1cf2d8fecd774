"""``report --format html`` (being written)."""

from __future__ import annotations

from typing import TextIO

from ccx_agent.history.report import Report


def write(report: Report, out: TextIO) -> None:
    raise NotImplementedError
