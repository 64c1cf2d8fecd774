"""The real Prometheus tools (Debian package ``prometheus``) for the tests that need them;
not a test itself. Where a tool is absent the test is skipped with the reason, except in
CI (``CI`` set), where that is a failure: CI must run them (.ci/run installs the package).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RULES = ROOT / "contrib" / "prometheus" / "ccx-agent.rules.yml"
RULES_TEST = ROOT / "tests" / "data" / "prometheus" / "ccx-agent.rules.test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "ccx-agent.json"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must not skip this test; .ci/run installs it")
        pytest.skip(reason)
    return path


def dashboard_exprs(instance: str = ".*") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard, ``$instance`` filled in."""
    import json

    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (p["title"], re.sub(r"\$instance\b", instance, t["expr"]))
        for p in doc["panels"]
        for t in p["targets"]
    ]
