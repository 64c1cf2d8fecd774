"""Secrets by value: which values of a config or a command line are secrets (the whole
path, from an SSM that echoes the token to the bundle, is tests/daemon/test_secret_echo.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccx_agent import secretvalues


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["snap", "--token", "abcd1234", "--all"], ["abcd1234"]),
        (["snap", "--password=pw123456", "-p", "p2p2p2"], ["pw123456", "p2p2p2"]),
        (["snap", "--token-file", "/etc/t", "--api-key", "k"], ["k"]),
        (["snap", "--verbose", "x"], []),
    ],
)
def test_command_secrets(argv: list[str], want: list[str]) -> None:
    assert secretvalues.command_secrets(argv) == want


def test_url_secrets() -> None:
    assert secretvalues.url_secrets("https://u:pw12@h/") == ["pw12"]
    assert secretvalues.url_secrets("https://tok12345@h/") == ["tok12345"]
    assert secretvalues.url_secrets("https://h/") == []


def test_a_password_file_that_is_a_fifo_or_a_device_is_not_read(tmp_path: Path) -> None:
    """Read at every config load: a FIFO nobody writes must not block it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert secretvalues.first_line(fifo) is None
    regular = tmp_path / "password"
    regular.write_text("  s3cret-pa55 \nsecond line\n")
    assert secretvalues.first_line(regular) == "s3cret-pa55"
    assert secretvalues.first_line(tmp_path / "missing") is None
