"""Secrets by value: which values of a config or a command line are secrets (the whole
path, from an SSM that echoes the token to the bundle, is tests/daemon/test_secret_echo.py)."""

from __future__ import annotations

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
