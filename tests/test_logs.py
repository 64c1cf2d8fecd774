"""The structured log: JSON lines, the stdlib routed through it, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from cryptography.hazmat.primitives import serialization

from ccx_agent.logs import (
    REDACTED,
    configure,
    journal_stream,
    redact,
    redact_text,
    secret_key,
    syslog_priority,
)
from ccx_agent.simulator.ca import create_authority
from tests.ssm.test_identity import _stranger_root

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
    logging.captureWarnings(False)


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


# --- the journal: <N> priority prefixes, Python warnings as log lines -------------------

REPO = Path(__file__).resolve().parent.parent

#: A process that logs one line at every level, through structlog and the stdlib, and
#: raises two Python warnings after configure(): what the daemon's output can hold.
EMITTER = """
import logging, warnings, structlog
from ccx_agent import logs
logs.configure(level="debug")
log = structlog.get_logger("ccx_agent.test")
log.debug("at debug")
log.info("at info")
log.warning("at warning")
log.error("at error", password="hunter2")
log.critical("at critical")
logging.getLogger("urllib3.connectionpool").error("stdlib at %s", "error")
warnings.warn("a library is deprecated", DeprecationWarning)
warnings.warn_explicit("Parsed a negative serial number", UserWarning, "x509.py", 7)
"""

#: What EMITTER's lines are, in order: (level, event or its start, syslog priority).
EMITTED = [
    ("debug", "at debug", 7),
    ("info", "at info", 6),
    ("warning", "at warning", 4),
    ("error", "at error", 3),
    ("critical", "at critical", 2),
    ("error", "stdlib at error", 3),
    ("warning", "<string>:12: DeprecationWarning: a library is deprecated", 4),
    ("warning", "x509.py:7: UserWarning: Parsed a negative serial number", 4),
]


def env_with(journal_stream: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    return env


def run_emitter(journal: str | None) -> tuple[list[str], str]:
    """EMITTER in a child whose stdout is a pipe; ``journal``: "match" sets
    JOURNAL_STREAM to that pipe's device and inode, any other text is used as it is.
    Its stdout lines and its stderr."""
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    value = f"{st.st_dev}:{st.st_ino}" if journal == "match" else journal
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", EMITTER],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env_with(value),
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as out:
        stdout = out.read().decode()
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    return stdout.splitlines(), stderr.decode()


def check_emitted(records: list[dict[str, Any]]) -> None:
    """The records are EMITTER's, in order, each one whole (nothing split or lost)."""
    assert len(records) == len(EMITTED), records
    assert [
        (r["level"], str(r["event"])[: len(e)])
        for r, (_, e, _) in zip(records, EMITTED, strict=True)
    ] == [(lv, e) for lv, e, _ in EMITTED]
    assert records[3]["password"] == REDACTED
    assert {r["logger"] for r in records[-2:]} == {"py.warnings"}


def test_on_the_journal_every_line_starts_with_its_syslog_priority() -> None:
    out, err = run_emitter("match")
    assert err == ""  # the warnings too went through the log
    prefixes = [re.match(r"<(\d)>", line) for line in out]
    assert all(prefixes), out
    assert [int(m[1]) for m in prefixes if m] == [p for _, _, p in EMITTED]
    check_emitted([json.loads(line[3:]) for line in out])


@pytest.mark.parametrize("value", [None, "", "1:2", "garbage", "nonsense:1", "0:0"])
def test_off_the_journal_lines_are_plain_json(value: str | None) -> None:
    """No JOURNAL_STREAM, or one naming another file (a shell started from the service
    inherits the variable, not the socket): JSON lines exactly as before."""
    out, err = run_emitter(value)
    assert err == ""
    assert all(line.startswith('{"timestamp": ') for line in out), out
    check_emitted([json.loads(line) for line in out])


def test_journal_stream_compares_the_streams_device_and_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    other.write_text("")
    with ours.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert journal_stream(stream)
        assert not journal_stream(io.StringIO())  # no file descriptor
        with other.open("w") as elsewhere:
            assert not journal_stream(elsewhere)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not journal_stream(stream)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not journal_stream(stream)
    with pytest.raises(ValueError):
        stream.fileno()  # closed: the check says no rather than raising
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert not journal_stream(stream)


@pytest.mark.parametrize(
    ("levelno", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.DEBUG + 5, 7),
        (logging.INFO, 6),
        (25, 5),  # a library's NOTICE
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (logging.CRITICAL + 10, 2),
    ],
)
def test_syslog_priority(levelno: int, priority: int) -> None:
    assert syslog_priority(levelno) == priority


def test_forced_journal_prefixes_each_line_of_a_console_traceback() -> None:
    out = io.StringIO()
    configure(json=False, journal=True, stream=out)
    try:
        fail_with_secret_url()
    except ConnectionError:
        structlog.get_logger("ccx_agent.test").exception("failed")
    text = out.getvalue()
    assert "Traceback (most recent call last):" in text
    assert all(line.startswith("<3>") for line in text.splitlines()), text


def test_a_python_warning_after_configure_is_one_json_line() -> None:
    out = io.StringIO()
    configure(stream=out)
    with warnings.catch_warnings():  # pytest records warnings; this test wants the default
        warnings.simplefilter("always")
        logging.captureWarnings(True)
        warnings.warn("old API\nsecond line", DeprecationWarning, stacklevel=1)
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert (record["level"], record["logger"]) == ("warning", "py.warnings")
    assert "DeprecationWarning: old API\nsecond line" in record["event"]
    assert not record["event"].endswith("\n")


# --- the real daemon on a JOURNAL_STREAM ----------------------------------------------


def daemon_config(tmp_path: Path, bundle: Path, syslog_port: int) -> Path:
    """An unregistered instance whose transport CA bundle is ``bundle``: the daemon starts
    (no SSM contact before a registration) and reads the bundle as its trust anchor."""
    config = tmp_path / "ccx-agent.yaml"
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "license": {"type": "flex"},
        "report": {"interval": "1h", "jitter": "0s"},
        "sample": {"interval": "1h"},
        "alerts": {"syslog": {"target": f"udp://127.0.0.1:{syslog_port}"}},
        "transport": {"url": "https://127.0.0.1:9/", "ca_bundle": str(bundle)},
        "identity": {"pid": "UCCX", "serial": "TEST0001"},
        "metrics": {"listen": "127.0.0.1:0"},
        "source": {"kind": "scripted", "steps": [{"at": "0s", "agents": 8}]},
    }
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return config


def test_the_daemon_on_the_journal_with_a_strangers_root_in_its_ca_bundle(
    tmp_path: Path,
) -> None:
    """``ccx-agent run`` as systemd starts it, stdout on the journal (a file here, its
    device and inode in JOURNAL_STREAM), its CA bundle holding a root that cryptography
    warns about: every line is ``<N>`` and one JSON object, stderr stays empty."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        _stranger_root(0xDA)
        + create_authority(datetime.now(UTC)).root.public_bytes(serialization.Encoding.PEM)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as syslog:
        syslog.bind(("127.0.0.1", 0))
        config = daemon_config(tmp_path, bundle, syslog.getsockname()[1])
        out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            st = os.fstat(out.fileno())
            env = env_with(f"{st.st_dev}:{st.st_ino}")
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(name, None)
            daemon = subprocess.Popen(
                [sys.executable, "-m", "ccx_agent.cli.main", "--config", str(config), "run"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 30
            while '"event": "ready"' not in out_path.read_text():
                assert daemon.poll() is None, out_path.read_text() + err_path.read_text()
                assert time.monotonic() < deadline, "no ready line within 30 s"
                time.sleep(0.05)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
        finally:
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
    assert err_path.read_text() == ""
    lines = out_path.read_text().splitlines()
    events = []
    for line in lines:
        match = re.fullmatch(r"<(\d)>(\{.*\})", line)
        assert match, line
        record = json.loads(match[2])
        assert int(match[1]) == syslog_priority(
            logging.getLevelNamesMapping()[record["level"].upper()]
        )
        events.append((record["logger"], record["event"]))
    assert ("ccx_agent.daemon", "ready") in events
    assert ("ccx_agent.daemon", "stopping") in events
    # The stranger's root was skipped quietly (a debug line, below the "info" level).
    assert [e for e in events if e[0] == "py.warnings"] == []


# --- a real journal -------------------------------------------------------------------


def _real_journal_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a private journald needs root (a mount namespace)"
    missing = [p for p in ("unshare", "journalctl", "mount") if shutil.which(p) is None]
    if missing or not Path("/lib/systemd/systemd-journald").exists():
        return f"not installed: {missing or 'systemd-journald'}"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"unshare -m fails here: {probe.stderr.decode().strip()}"
    return None


_NO_REAL_JOURNAL = _real_journal_unavailable()


@pytest.mark.skipif(_NO_REAL_JOURNAL is not None, reason=str(_NO_REAL_JOURNAL))
def test_a_real_journal_files_each_line_at_its_priority() -> None:
    """systemd-journald itself (in a private mount namespace, tests/journal_run.py), the
    emitter's stdout connected as systemd connects a service's: ``journalctl -p err``
    finds exactly the error and critical lines, each MESSAGE is one JSON object."""
    ident = f"ccx-agent-test-{os.getpid()}"
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "tests.journal_run",
            ident,
            "--",
            sys.executable,
            "-c",
            EMITTER,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rc"] == 0
    entries = result["entries"]
    assert [int(e["PRIORITY"]) for e in entries] == [p for _, _, p in EMITTED]
    check_emitted([json.loads(e["MESSAGE"]) for e in entries])
    errors = [json.loads(e["MESSAGE"])["event"] for e in result["err"]]
    assert errors == ["at error", "at critical", "stdlib at error"]


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
