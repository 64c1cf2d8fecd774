"""The structured log: JSON lines, the stdlib routed through it, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from ccx_agent.logs import REDACTED, configure, redact, redact_text, secret_key

URL_SECRET = "hunter2-in-url"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.tok3n-value"
LOCAL_VALUE = "distinctive-local-4d7f1c"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def fail_with_secret_url() -> None:
    password_local = LOCAL_VALUE  # noqa: F841 - must not show up in a traceback
    raise ConnectionError(f"cannot reach https://admin:{URL_SECRET}@ssm.example.com/api")


def test_json_lines_have_timestamp_level_logger_event() -> None:
    out = io.StringIO()
    configure(stream=out)  # a StringIO is no terminal: JSON
    before = datetime.now(UTC)
    structlog.get_logger("ccx_agent.test").info("sampled", agents=12, features=["a", "b"])
    (line,) = lines(out)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["level"] == "info"
    assert line["logger"] == "ccx_agent.test"
    assert line["event"] == "sampled"
    assert (line["agents"], line["features"]) == (12, ["a", "b"])
    stamp = str(line["timestamp"])
    assert stamp.endswith("Z")
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert timedelta(0) <= when - before.replace(microsecond=0) < timedelta(seconds=5)


def test_secrets_are_redacted() -> None:
    out = io.StringIO()
    configure(stream=out)
    log = structlog.get_logger("ccx_agent.test")
    log.info(
        f"POST https://u:{URL_SECRET}@ssm.example.com/x with Authorization: Bearer {TOKEN}",
        token=TOKEN,
        password_file="/etc/ccx-agent/uccx.pw",
        headers={"Authorization": f"Basic {TOKEN}", "Accept": "application/json"},
        urls=[f"https://u:{URL_SECRET}@h/?password={URL_SECRET}&page=2"],
    )
    try:
        fail_with_secret_url()
    except ConnectionError:
        log.exception("report failed")
    text = out.getvalue()
    assert URL_SECRET not in text
    assert TOKEN not in text
    first, second = lines(out)
    assert first["event"] == (
        f"POST https://u:{REDACTED}@ssm.example.com/x with Authorization: Bearer {REDACTED}"
    )
    assert first["token"] == REDACTED
    assert first["password_file"] == "/etc/ccx-agent/uccx.pw"  # a path, not a secret
    assert first["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert first["urls"] == [f"https://u:{REDACTED}@h/?password={REDACTED}&page=2"]
    (exc,) = second["exception"]  # type: ignore[misc]
    assert exc["exc_type"] == "ConnectionError"
    assert exc["exc_value"] == f"cannot reach https://admin:{REDACTED}@ssm.example.com/api"


def test_tracebacks_have_no_local_variables() -> None:
    out = io.StringIO()
    configure(stream=out)
    try:
        fail_with_secret_url()
    except ConnectionError:
        structlog.get_logger("ccx_agent.test").exception("failed")
        logging.getLogger("urllib3.connectionpool").exception("stdlib failed")
    text = out.getvalue()
    assert LOCAL_VALUE not in text
    assert "password_local" not in text
    records = lines(out)
    assert len(records) == 2
    for record in records:
        frames = record["exception"][0]["frames"]  # type: ignore[index]
        assert [f["name"] for f in frames][-1] == "fail_with_secret_url"
        assert all("locals" not in f for f in frames)


def test_console_tracebacks_are_plain_redacted_and_without_locals() -> None:
    out = io.StringIO()
    configure(json=False, stream=out)
    try:
        fail_with_secret_url()
    except ConnectionError:
        structlog.get_logger("ccx_agent.test").exception("failed", token=TOKEN)
    text = out.getvalue()
    assert "Traceback (most recent call last):" in text
    assert "fail_with_secret_url" in text
    assert f"https://admin:{REDACTED}@ssm.example.com/api" in text
    for secret in (LOCAL_VALUE, URL_SECRET, TOKEN, "\x1b["):  # no colours off a terminal
        assert secret not in text
    assert not text.lstrip().startswith("{")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_console_renderer() -> None:
    out = Terminal()
    configure(stream=out)
    structlog.get_logger("ccx_agent.test").warning("on a tty", password="x")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colours on a terminal
    assert "on a tty" in text and f"password={REDACTED}" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    out = Terminal()
    configure(json=True, stream=out)
    structlog.get_logger("ccx_agent.test").warning("forced json")
    assert lines(out)[0]["event"] == "forced json"


def test_stdlib_logging_goes_through_the_same_pipeline() -> None:
    out = io.StringIO()
    configure(stream=out)
    logging.getLogger("apscheduler.scheduler").warning(
        "Run time of job %r was missed by %s", "report", "0:00:03"
    )
    logging.getLogger("urllib3.connectionpool").info(
        "https://ssm.example.com:443 GET /x?token=%s", TOKEN
    )
    first, second = lines(out)
    assert first == {
        "timestamp": first["timestamp"],
        "level": "warning",
        "logger": "apscheduler.scheduler",
        "event": "Run time of job 'report' was missed by 0:00:03",
    }
    assert second["event"] == f"https://ssm.example.com:443 GET /x?token={REDACTED}"
    assert second["level"] == "info"


def test_configure_twice_keeps_one_handler_and_the_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure(stream=first)
    configure(stream=second, level="warning")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_ccx_agent_logs", False)]
    assert len(ours) == 1
    log = structlog.get_logger("ccx_agent.test")
    log.info("quiet")
    logging.getLogger("apscheduler.scheduler").info("quiet too")
    log.warning("loud")
    assert first.getvalue() == ""
    assert [r["event"] for r in lines(second)] == ["loud"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure(level="chatty", stream=io.StringIO())


def test_a_logger_made_before_configure_follows_it() -> None:
    log = structlog.get_logger("ccx_agent.early")
    out = io.StringIO()
    configure(stream=out)
    log.info("after")
    assert lines(out)[0]["logger"] == "ccx_agent.early"


# --- the redaction rules ------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "access_token",
        "X-Auth-Token",
        "Authorization",
        "password",
        "userPassword",
        "passwd",
        "client_secret",
        "Cookie",
        "set-cookie",
        "private_key",
        "tls_private_key",
        "key_pem",
        "api_key",
        "apiKey",
        "credentials",
    ],
)
def test_secret_keys(key: str) -> None:
    assert secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "keys_dir",
        "key_id",
        "public_key",
        "password_file",
        "token_expiry",
        "secret_path",
        "tokenizer",
        "pid",
        "monkey",
        "event",
        "",
    ],
)
def test_not_secret_keys(key: str) -> None:
    assert not secret_key(key)


PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB2\nsecretbits==\n-----END EC PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"key:\n{PEM}\ndone",
            f"key:\n-----BEGIN EC PRIVATE KEY-----{REDACTED}-----END EC PRIVATE KEY-----\ndone",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nMIGH truncated",
            f"-----BEGIN PRIVATE KEY-----{REDACTED}-----END PRIVATE KEY-----",
        ),
        (
            "proxy socks5h://bob:s3cr%40t@proxy:1080 down",
            f"proxy socks5h://bob:{REDACTED}@proxy:1080 down",
        ),
        ("https://:onlypass@host/", f"https://:{REDACTED}@host/"),
        ("GET /a?user=x&password=p4ss&x=1", f"GET /a?user=x&password={REDACTED}&x=1"),
        ("token=abc; api_key='k e y'", f"token={REDACTED}; api_key='{REDACTED}'"),
        (
            'body {"password": "p4ss", "user": "x"}',
            f'body {{"password": "{REDACTED}", "user": "x"}}',
        ),
        ("authorization: basic dXNlcjpwYXNz", f"authorization: basic {REDACTED}"),
        ("BEARER abc.def-ghi_jkl~", f"BEARER {REDACTED}"),
        # Not secrets: left alone.
        ("basic setup done", "basic setup done"),
        ("https://ssm.example.com/a?page=2", "https://ssm.example.com/a?page=2"),
        ("ssh://git@host/repo", "ssh://git@host/repo"),
        ("password_file=/etc/pw token_count=3", "password_file=/etc/pw token_count=3"),
        (
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        ),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # idempotent


def test_redact_recurses_and_leaves_plumbing_alone() -> None:
    exc_info = (ValueError, ValueError("x"), None)
    event = {
        "event": "Bearer abcdef",
        "nested": {"inner": {"secret": "s", "list": [f"https://a:{URL_SECRET}@b", 3, None]}},
        "tuple": ("password=x", True),
        "error": ConnectionError(f"https://a:{URL_SECRET}@b"),
        "exc_info": exc_info,
        "count": 7,
    }
    out = redact(None, "info", event)
    assert out["event"] == f"Bearer {REDACTED}"
    assert out["nested"] == {
        "inner": {"secret": REDACTED, "list": [f"https://a:{REDACTED}@b", 3, None]}
    }
    assert out["tuple"] == [f"password={REDACTED}", True]
    assert out["error"] == f"ConnectionError: https://a:{REDACTED}@b"
    assert out["exc_info"] is exc_info
    assert out["count"] == 7
