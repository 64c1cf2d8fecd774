"""The record a real daemon leaves for ``status --check`` (ccx_agent/checkconfig.py): with
it, the check loads no schema, no cryptography and no logging library, and answers as it
would after validating the file; after a reload it follows the new file."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from ccx_agent import checkconfig
from tests.daemon.conftest import Daemon, Sim, make_instance, wait_until

HEAVY = {"pydantic", "pydantic_core", "cryptography", "structlog", "tenacity", "requests"}


CHECK = ("status", "--check")


def check(config: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ccx_agent", "-c", str(config), *CHECK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", done.stderr, re.M)
    return done, {name.split(".")[0] for name in found}


def test_the_daemon_records_its_config_for_the_check(sim: Sim, tmp_path: Path) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9")
    daemon = Daemon(inst)
    try:
        daemon.wait_event("ready", 60)
        done, modules = check(inst.config)
        assert not modules & HEAVY, sorted(modules & HEAVY)
        assert done.stdout.startswith("CCX-LICENSE OK - "), done
        # A valid edit, reloaded: the record follows it (a stricter threshold, said).
        inst.cfg["monitoring"] = {"stale_after": "1s"}
        inst.write()
        _, modules = check(inst.config)
        assert "pydantic" in modules  # not what the daemon validated: validated here
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("config reloaded", 30)

        def fast() -> tuple[subprocess.CompletedProcess[str], set[str]] | None:
            done, modules = check(inst.config)
            return (done, modules) if not modules & HEAVY else None

        wait_until("the check uses the new record", fast, 30)
        store = inst.store()
        try:
            with store.read() as tx:
                text = tx.meta(checkconfig.META_KEY)
        finally:
            store.close()
        assert text is not None
        assert json.loads(text)["keys"]["monitoring.stale_after"] == 1.0
    finally:
        assert daemon.stop()[0] == 0
