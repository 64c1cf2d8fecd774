"""``ccx-agent support-bundle``: what goes in, and no secret in any member, ever."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ccx_agent.cli import bundle, commands
from ccx_agent.simulator import server as ssm_server
from tests.doctor.conftest import Ssm, config

MEMBERS = {
    "config.yaml",
    "status.json",
    "doctor.json",
    "report.json",
    "alerts.json",
    "commands.txt",
    "versions.json",
}


@pytest.fixture(scope="module")
def ssm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ssm]:
    running = ssm_server.start(tmp_path_factory.mktemp("ssm"))
    try:
        yield Ssm(running)
    finally:
        running.stop()


UCCX_PASSWORD = "Inline-Uccx-Pa55"
FINESSE_PASSWORD = "Finesse-File-Pa55"
PROXY_PASSWORD = "Proxy-Pa55-word"
BEARER = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LWJlYXJlcg.c2ln"


def _members(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        out = {}
        for info in tar.getmembers():
            data = tar.extractfile(info)
            assert data is not None
            out[info.name.split("/", 1)[1]] = data.read().decode("utf-8")
            assert info.mode == 0o600
        return out


def _fake_journalctl(directory: Path, lines: list[str]) -> Path:
    """A ``journalctl`` on PATH that prints ``lines``: the one stand-in of these tests,
    because no journald runs here. The lines carry secrets the way a library's debug
    line or a careless script would put them in the journal."""
    directory.mkdir()
    text = directory / "journal.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    program = directory / "journalctl"
    program.write_text(f'#!/bin/sh\necho "$@" > {directory}/args\ncat {text}\n')
    program.chmod(0o755)
    return directory


def test_a_bundle_with_every_secret_configured_holds_none(ssm: Ssm, tmp_path: Path) -> None:
    # A registered instance: a token was used, a private key is in state/keys.
    token = ssm.token()
    path = config(tmp_path, ssm)
    out, err = io.StringIO(), io.StringIO()
    assert commands.register(path, token, False, out, err) == 0, err.getvalue()
    keys = list((tmp_path / "state" / "keys").iterdir())
    assert keys
    key_lines = [
        line
        for key in keys
        for line in key.read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    # Then every kind of secret in the config: an inline password, a password file, a
    # proxy password.
    finesse = tmp_path / "finesse-password"
    finesse.write_text(FINESSE_PASSWORD + "\n")
    finesse.chmod(0o600)
    cfg = yaml.safe_load(path.read_text())
    cfg["source"] = {
        "kind": "uccx",
        "uccx": {"url": "https://127.0.0.1:9/", "user": "admin", "password": UCCX_PASSWORD},
        "finesse": {"user": "finesse", "password_file": str(finesse)},
    }
    cfg["transport"]["proxy"] = f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:9"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    secrets = [token, UCCX_PASSWORD, FINESSE_PASSWORD, PROXY_PASSWORD, BEARER]
    secrets += [ssm.server.admin_token, *key_lines]
    pem = keys[0].read_text()
    journal = _fake_journalctl(
        tmp_path / "bin",
        [
            '{"level": "info", "event": "ready", "license_type": "flex"}',
            f"requests: Authorization: Bearer {BEARER}",
            f'debug: POST body {{"token": "{token}", "license_type": "flex"}}',
            f"curl -H 'Authorization: Bearer {ssm.server.admin_token}' https://ssm/admin",
            f"uccx: login admin password={UCCX_PASSWORD}",
            f"finesse said: {FINESSE_PASSWORD} is wrong",
            f"proxy http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:9 refused",
            "a script dumped a key:",
            *pem.splitlines(),
        ],
    )
    output = tmp_path / "case-123.tar.gz"
    env = {**os.environ, "PATH": f"{journal}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccx_agent",
            "--config",
            str(path),
            "support-bundle",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{output}: 8 files, ")
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    members = _members(output)
    assert set(members) == MEMBERS | {"journal.txt"}
    # Every member, grepped for every secret (and for any private key at all).
    for name, text in members.items():
        for secret in secrets:
            assert secret not in text, f"{name} holds a secret: {secret[:12]}…"
        assert "PRIVATE KEY-----\nM" not in text, name
    for secret in [*secrets, pem]:
        assert secret not in done.stdout + done.stderr
    # What support needs is still there.
    assert "<redacted>" in members["config.yaml"]
    assert len(members["config.yaml"].splitlines()) == len(path.read_text().splitlines())
    assert "password: <redacted>" in members["config.yaml"]
    assert "http://proxyuser:<redacted>@127.0.0.1:9" in members["config.yaml"]
    assert str(finesse) in members["config.yaml"]  # a path is not a secret
    status = json.loads(members["status.json"])
    assert status["registration"]["state"] == "REGISTERED"
    doctor = json.loads(members["doctor.json"])
    assert [c["name"] for c in doctor["checks"]][:3] == ["config", "files", "database"]
    assert json.loads(members["report.json"])
    assert "alerts" in json.loads(members["alerts.json"])
    assert "REGISTER_SUCCESS" in members["alerts.json"]
    versions = json.loads(members["versions.json"])
    assert versions["ccx-agent"] and versions["python"] == sys.version.split()[0]
    assert {"cryptography", "pydantic", "requests"} <= {n.lower() for n in versions["dependencies"]}
    assert "ready" in members["journal.txt"]
    args = (journal / "args").read_text().split()
    assert args[:2] == ["--unit", "ccx-agent.service"] and "2000" in args


def test_without_journalctl_the_bundle_says_so(tmp_path: Path) -> None:
    path = config(tmp_path, None)
    empty = tmp_path / "bin"
    empty.mkdir()
    output = tmp_path / "b.tar.gz"
    env = {**os.environ, "PATH": str(empty)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccx_agent",
            "--config",
            str(path),
            "support-bundle",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    members = _members(output)
    assert set(members) == MEMBERS
    assert "journalctl is not installed here" in members["commands.txt"]
    # No database yet: status says so, and the bundle is made all the same.
    assert json.loads(members["status.json"])["state"] == "no-database"


def test_an_unwritable_output_is_one_line(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "no-such-dir" / "b.tar.gz"
    assert bundle.main(config(tmp_path, None), target, out=out, err=err) == 1
    assert err.getvalue().startswith(f"error: {target}: cannot write the bundle: ")
    assert err.getvalue().count("\n") == 1


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("a: 1\npassword: hunter22 # old\nb: 2\n", "a: 1\npassword: <redacted>\nb: 2\n"),
        ("uccx:\n  password: 'x y'\n  user: u\n", "uccx:\n  password: <redacted>\n  user: u\n"),
        ("password_file: /etc/p\n", "password_file: /etc/p\n"),
        ("password: |\n  line1\n  line2\nnext: 1\n", "password: <redacted>\nnext: 1\n"),
        ("proxy: http://u:pw@h:1\n", "proxy: http://u:<redacted>@h:1\n"),
    ],
)
def test_redact_config_line_by_line(text: str, want: str) -> None:
    assert bundle.redact_config(text) == want


def test_a_secret_in_a_flow_mapping_is_caught_by_parsing_again() -> None:
    text = "source: {kind: uccx, uccx: {url: 'https://h/', user: u, password: hunter22}}\n"
    out = bundle.redact_config(text)
    assert "hunter22" not in out
    assert yaml.safe_load(out.split("\n", 1)[1])["source"]["uccx"]["password"] == "<redacted>"


@pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod of a device needs root")
def test_a_device_output_is_written_through_never_replaced(tmp_path: Path) -> None:
    """As root, ``--output /dev/null`` replaced the host's /dev/null with a regular file.
    The null device's numbers, made in the test's own directory."""
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    written = bundle.write({"a.txt": "a\n"}, null, "top")
    assert written.size > 0 and written.mode() is None
    st = null.lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


def test_a_symlink_output_writes_its_target_and_an_old_file_keeps_its_mode(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real.tar.gz"
    real.write_bytes(b"old")
    real.chmod(0o640)
    link = tmp_path / "link.tar.gz"
    link.symlink_to(real)
    out, err = io.StringIO(), io.StringIO()
    assert bundle.main(config(tmp_path, None), link, out=out, err=err) == 0, err.getvalue()
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o640
    assert f"{real.stat().st_size} bytes, mode 0640" in out.getvalue()
    with tarfile.open(real) as tar:
        assert "link/commands.txt" in tar.getnames()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    err = io.StringIO()
    assert bundle.main(config(tmp_path, None), fifo, out=out, err=err) == 1
    assert err.getvalue() == f"error: {fifo}: is a FIFO (named pipe) that nothing reads: refused\n"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


# --- secrets by value: what nothing marks as a secret --------------------------------------

COMMAND_TOKEN = "Cmd-Arg-T0ken-4242"
OLD_PASSWORD = "Commented-0ut-Pa55"
URL_USER_TOKEN = "ghp_UrlUserT0ken9"


def _cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_secrets_nothing_marks_leave_no_trace_in_the_bundle(tmp_path: Path) -> None:
    """A commented-out password, a token passed to the source command as a separate
    argument, a token used as a URL's user name: the bundle keeps none of them, and the
    source command that echoes its argument in its error does not leak it either."""
    snap = tmp_path / "snap.sh"
    snap.write_text('#!/bin/sh\necho "snap: the server refused token $2" >&2\nexit 3\n')
    snap.chmod(0o755)
    path = config(tmp_path, None)
    cfg = yaml.safe_load(path.read_text())
    cfg["source"] = {"kind": "command", "command": ["./snap.sh", "--token", COMMAND_TOKEN]}
    cfg["transport"] = {"proxy": f"http://{URL_USER_TOKEN}@127.0.0.1:9"}
    path.write_text(
        "# uccx:\n"
        f"#   password: {OLD_PASSWORD}   # the old one\n"
        f"#   command: [./snap.sh, --password, {OLD_PASSWORD}x]\n"
        + yaml.safe_dump(cfg, sort_keys=False)
    )
    # What the operator sees of the command's failure does not show the token either.
    usage = _cli(path, "usage")
    assert usage.returncode != 0
    assert "snap: the server refused token" in usage.stderr
    assert COMMAND_TOKEN not in usage.stdout + usage.stderr
    output = tmp_path / "b.tar.gz"
    done = _cli(path, "support-bundle", "--output", str(output))
    assert done.returncode == 0, done.stderr
    members = _members(output)
    for name, member in members.items():
        for secret in (COMMAND_TOKEN, OLD_PASSWORD, URL_USER_TOKEN):
            assert secret not in member, f"{name} holds {secret}"
    config_member = members["config.yaml"]
    assert "#   password: <redacted>   # the old one" in config_member
    assert "  - --token\n  - <redacted>\n" in config_member
    assert "http://<redacted>@127.0.0.1:9" in config_member
    assert len(config_member.splitlines()) == len(path.read_text().splitlines())
    # The doctor ran the command: its finding is there, without the token.
    assert "snap: the server refused token [REDACTED]" in members["doctor.json"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("a: 1\n# password: hunter22\n", "a: 1\n# password: <redacted>\n"),
        ("a: 1  # was password: hunter22\n", "a: 1  # was password: <redacted>\n"),
        ("#command: [snap, --token, abcd1234]\n", "#command: [snap, --token, <redacted>]\n"),
        ("# proxy: http://tok12345@h:1\n", "# proxy: http://<redacted>@h:1\n"),
        ("# interval: 1234 (a comment)\n", "# interval: 1234 (a comment)\n"),
    ],
)
def test_redact_config_comments(text: str, want: str) -> None:
    assert bundle.redact_config(text) == want
