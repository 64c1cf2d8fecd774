"""``run`` refuses to start on a file the config names but that is not there, and says so
as check-config does: ``PATH:LINE: key: message``, exit 78 (systemd does not restart it),
where it used to name the file but not the key."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .conftest import json_lines, run_cli

LINE = re.compile(r"^(?P<path>.+?):(?P<line>[1-9]\d*): (?P<key>\S+): (?P<message>.+)$")


def _config(tmp_path: Path, transport: dict[str, str]) -> Path:
    snapshot = tmp_path / "agents.json"
    snapshot.write_text('{"agents": []}\n')
    config = tmp_path / "ccx-agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "alerts": {"syslog": {"target": "udp://127.0.0.1:9"}},
                "transport": {"url": "https://127.0.0.1:9/", **transport},
                "source": {"kind": "file", "path": str(snapshot)},
            },
            sort_keys=False,
        )
    )
    return config


def test_a_missing_ca_bundle_is_named_by_its_key(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    config = _config(tmp_path, {"ca_bundle": str(missing)})
    done = run_cli(config, "run", timeout=30)
    assert done.returncode == 78, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    line = config.read_text().splitlines().index(f"  ca_bundle: {missing}") + 1
    assert done.stderr == f"{config}:{line}: transport.ca_bundle: {missing}: no such file\n"
    # The structured log says why too, and AGENT_INIT_FAILED goes to syslog; a start that
    # fails makes no instance (no state directory, no database) to record it in.
    assert any(doc.get("event") == "cannot start" for doc in json_lines(done.stdout))
    assert [d["mnemonic"] for d in json_lines(done.stdout) if d.get("event") == "alert"] == [
        "AGENT_INIT_FAILED"
    ]
    assert not (tmp_path / "state").exists()


def test_every_missing_file_is_named_at_start(tmp_path: Path) -> None:
    config = _config(
        tmp_path, {"ca_bundle": str(tmp_path / "ca.pem"), "trust_anchor": "anchor.pem"}
    )
    done = run_cli(config, "run", timeout=30)
    assert done.returncode == 78, (done.stdout, done.stderr)
    keys = [m["key"] for m in map(LINE.match, done.stderr.splitlines()) if m]
    assert keys == ["transport.ca_bundle", "transport.trust_anchor"], done.stderr
    assert f"transport.trust_anchor: {tmp_path / 'anchor.pem'}: no such file" in done.stderr
