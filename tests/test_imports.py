"""What a real ``ccx-agent`` process imports for the commands run most often: a
monitoring system runs ``status --check`` every minute, and ``--help`` / ``--version``
must answer at once. Each is a real ``python -m ccx_agent`` whose ``sys.modules`` is
read from ``-X importtime`` on its standard error."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from ccx_agent import checkconfig
from ccx_agent.cli import check, commands
from ccx_agent.config import schema as config_mod
from ccx_agent.store.db import DB_NAME, Store
from tests.test_check import HEALTHY, LINE, NOW, instance

#: Third-party modules the light commands must never load.
HEAVY = ("pydantic", "pydantic_core", "cryptography", "structlog", "tenacity", "bcrypt", "requests")


def loaded(*argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m ccx_agent ARGV``; the top-level packages it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ccx_agent", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    names = set()
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", line)
        if m:
            names.add(m.group(1).split(".")[0])
    return done, names


def said(done: subprocess.CompletedProcess[str]) -> list[str]:
    """Standard error without ``-X importtime``'s lines."""
    return [line for line in done.stderr.splitlines() if not line.startswith("import time:")]


def recorded(path: Path) -> None:
    """What the daemon does at start: record the config it validated for the check."""
    before = checkconfig.digest(path)
    cfg = config_mod.load(path)
    store = Store(cfg.state_dir / DB_NAME)
    try:
        checkconfig.record(store, path, cfg, before)
    finally:
        store.close()


def test_status_check_loads_no_schema_nor_crypto_nor_logging(tmp_path: Path) -> None:
    path = instance(tmp_path, replace(HEALTHY, last_auth_at=NOW - timedelta(days=3650)))
    full, full_modules = loaded("--config", str(path), "status", "--check")
    assert "pydantic" in full_modules  # nothing recorded: the file is validated in full
    recorded(path)
    fast, modules = loaded("--config", str(path), "status", "--check")
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert "ccx_agent" in modules and "sqlite3" in modules
    # The same answer either way (the line's spans are said to the hour).
    assert (fast.returncode, fast.stdout, said(fast)) == (full.returncode, full.stdout, said(full))
    assert fast.returncode == 2 and LINE.match(fast.stdout.strip()), fast.stdout


def test_an_edited_config_is_validated_in_full_and_refused_the_same_way(tmp_path: Path) -> None:
    path = instance(tmp_path, HEALTHY)
    recorded(path)
    # Edited after the daemon read it: the record no longer applies.
    path.write_text(path.read_text() + "monitoring:\n  stale_after: soon\n", encoding="utf-8")
    done, modules = loaded("--config", str(path), "status", "--check")
    assert "pydantic" in modules
    assert done.returncode == 3
    assert done.stdout == f"CCX-LICENSE UNKNOWN - the config {path} is not valid\n"
    assert f"{path}:7: monitoring.stale_after: " in done.stderr


def test_a_record_of_other_values_is_not_used(tmp_path: Path) -> None:
    """A record whose file digest matches but whose state directory does not (moved):
    validated in full, never trusted."""
    path = instance(tmp_path, HEALTHY)
    recorded(path)
    store = Store(tmp_path / "state" / DB_NAME)
    try:
        with store.transaction() as tx:
            text = tx.meta(checkconfig.META_KEY)
            assert text is not None
            tx.set_meta(checkconfig.META_KEY, text.replace(str(tmp_path), "/elsewhere"))
    finally:
        store.close()
    _, modules = loaded("--config", str(path), "status", "--check")
    assert "pydantic" in modules


def test_help_and_version_load_no_dependency() -> None:
    for argv in (["--help"], ["--version"]):
        done, modules = loaded(*argv)
        assert done.returncode == 0, done
        assert not modules & set(HEAVY), (argv, sorted(modules & set(HEAVY)))


def test_a_key_the_record_lacks_makes_the_check_read_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key read by the check but left out of the record (KEYS) is never a crash nor a
    default: the check answers from the file, as without a record."""
    path = instance(tmp_path, HEALTHY, last_report=NOW - timedelta(hours=2))
    keys = {k: v for k, v in checkconfig.KEYS.items() if k != "monitoring.stale_after"}
    monkeypatch.setattr(checkconfig, "KEYS", keys)
    recorded(path)
    found = check._recorded(path)
    assert found is not None  # the record is used...
    found[1].close()
    answers = []
    for record in (True, False):
        out, err = io.StringIO(), io.StringIO()
        code = check.main(path, NOW, out=out, err=err, record=record)
        answers.append((code, out.getvalue(), err.getvalue()))
    assert answers[0] == answers[1]  # ...and stale_after is read from the file
    assert "(monitoring.stale_after 1h)" in answers[0][1]


#: What ``status``, ``report`` and ``alerts`` must not load when the daemon's record of
#: the config applies: the schema and the YAML parser (nor what the light check avoids
#: beyond the logging library, which every command but the check configures).
SCHEMA = ("pydantic", "pydantic_core", "yaml", "cryptography", "tenacity", "bcrypt", "requests")


@pytest.mark.parametrize(
    "argv",
    [
        ("status",),
        ("status", "--json"),
        ("report", "--from", "2026-02-20T00:00:00Z", "--to", "2026-03-01T00:00:00Z"),
        ("report", "--from", "2026-02-20", "--to", "2026-03-01", "--format", "json"),
        ("report", "--from", "2026-02-20", "--to", "2026-03-01", "--tag", "nope"),
        ("alerts", "--since", "2026-02-01T00:00:00Z", "--json"),
    ],
    ids=" ".join,
)
def test_the_commands_that_only_look_read_the_record_and_say_the_same(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """``status``, ``report`` and ``alerts`` read few keys, none secret: with the daemon's
    record of the config they validate nothing, and say byte for byte what they say after
    validating the file (the UDI's serial included: the host name, as the schema has it)."""
    path = instance(tmp_path, HEALTHY, config={"identity": {"pid": "UCCX-LAB"}})
    full, full_modules = loaded("--config", str(path), *argv)
    assert "pydantic" in full_modules and "yaml" in full_modules  # nothing recorded yet
    recorded(path)
    fast, modules = loaded("--config", str(path), *argv)
    light = set(SCHEMA) - ({"yaml"} if "nope" in argv else set())  # says "one of" as yamldoc
    assert not modules & light, sorted(modules & light)
    assert (fast.returncode, fast.stdout, said(fast)) == (full.returncode, full.stdout, said(full))
    if argv == ("status", "--json"):
        udi = json.loads(fast.stdout)["registration"]["udi"]
        assert (udi["pid"], udi["serial"]) == ("UCCX-LAB", socket.gethostname())


def test_status_answers_from_the_file_when_the_record_lacks_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key ``status`` reads but the record does not carry: never a crash nor a default,
    the file is validated and read instead (as the check does)."""
    path = instance(tmp_path, HEALTHY, config={"identity": {"pid": "UCCX-LAB"}})
    keys = {k: v for k, v in checkconfig.KEYS.items() if k != "identity.pid"}
    monkeypatch.setattr(checkconfig, "KEYS", keys)
    recorded(path)
    assert checkconfig.lookup(path) is not None  # the record is there, and used...
    answers = []
    for record in (True, False):
        out, err = io.StringIO(), io.StringIO()
        code = commands.status(path, True, out=out, err=err, record=record)
        answers.append((code, out.getvalue(), err.getvalue()))
    assert answers[0] == answers[1]  # ...and the PID is read from the file
    assert '"pid": "UCCX-LAB"' in answers[0][1]
