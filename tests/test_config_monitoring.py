"""The ``metrics`` and ``monitoring`` sections of the config (ccx_agent/config/schema.py):
values, defaults, paths beside the config file, and one line per bad value."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from ccx_agent.cli import commands
from ccx_agent.config.schema import listen_address, load
from ccx_agent.config.yamldoc import EX_CONFIG

MINIMAL = "source:\n  kind: file\n  path: /etc/ccx-agent/agents.json\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ccx-agent.yaml"
    path.write_text(MINIMAL + text, encoding="utf-8")
    return path


def test_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""))
    assert cfg.metrics.listen == "127.0.0.1:9725"
    assert cfg.metrics.tls.cert is None and cfg.metrics.tls.key is None
    assert cfg.metrics.basic_auth_file is None
    assert cfg.monitoring.stale_after == timedelta(hours=1)


@pytest.mark.parametrize("off", ["null", '""', "~"])
def test_null_turns_the_endpoint_off(tmp_path: Path, off: str) -> None:
    assert load(write(tmp_path, f"metrics:\n  listen: {off}\n")).metrics.listen is None


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("0.0.0.0:9100", "0.0.0.0", 9100),
        ("localhost:0", "localhost", 0),
        ('"[::1]:9725"', "::1", 9725),
    ],
)
def test_listen_values(tmp_path: Path, value: str, host: str, port: int) -> None:
    cfg = load(write(tmp_path, f"metrics:\n  listen: {value}\n"))
    assert cfg.metrics.listen is not None
    assert listen_address(cfg.metrics.listen) == (host, port)


def test_relative_files_are_beside_the_config(tmp_path: Path) -> None:
    text = (
        "metrics:\n  tls:\n    cert: tls/m.pem\n    key: tls/m.key\n"
        "  basic_auth_file: users\nmonitoring:\n  stale_after: 30m\n"
    )
    cfg = load(write(tmp_path, text))
    assert cfg.metrics.tls.cert == tmp_path / "tls/m.pem"
    assert cfg.metrics.tls.key == tmp_path / "tls/m.key"
    assert cfg.metrics.basic_auth_file == tmp_path / "users"
    assert cfg.monitoring.stale_after == timedelta(minutes=30)


LINE = re.compile(r"^(?P<path>.+):(?P<line>\d+): (?P<key>[\w.]+): (?P<msg>.+)$")


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        ("metrics:\n  listen: 9725\n", 5, "metrics.listen", "must be text"),
        ("metrics:\n  listen: localhost\n", 5, "metrics.listen", "HOST:PORT"),
        ("metrics:\n  listen: host:99999\n", 5, "metrics.listen", "HOST:PORT"),
        ("metrics:\n  listen: '::1:9725'\n", 5, "metrics.listen", "[ADDR]:PORT"),
        ("metrics:\n  tls:\n    cert: a.pem\n", 5, "metrics.tls", "both cert and key"),
        ("metrics:\n  basic_auth: x\n", 5, "metrics.basic_auth", "basic_auth_file"),
        ("monitoring:\n  stale_after: 0s\n", 5, "monitoring.stale_after", "longer than 0s"),
    ],
)
def test_bad_values_are_one_line_each(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    line: int,
    key: str,
    words: str,
) -> None:
    path = write(tmp_path, text)
    assert commands.check_config(path) == EX_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    [only] = err.splitlines()
    m = LINE.match(only)
    assert m is not None, only
    assert (m["path"], int(m["line"]), m["key"]) == (str(path), line, key), only
    assert words in m["msg"], only
