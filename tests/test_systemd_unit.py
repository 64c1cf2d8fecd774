"""systemd/: the unit's contract keys, `systemd-analyze verify` and `security` on it, and
the sysusers / tmpfiles files applied to a scratch root. The systemd tools are skipped
where they are not installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ccx_agent.config import schema as config
from ccx_agent.config.yamldoc import EX_CONFIG

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "ccx-agent.service"
SYSUSERS = SYSTEMD / "ccx-agent.sysusers"
TMPFILES = SYSTEMD / "ccx-agent.tmpfiles"
DROPIN = SYSTEMD / "uccx-credentials.conf"

#: The exposure `systemd-analyze security` may give the unit at most (0 best, 10 worst).
MAX_EXPOSURE = 2.0


def _entries(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, in file order (a key may be given several times)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"no continuation lines: {raw!r}"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"entry before any section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _one(key: str) -> str:
    values = _entries(UNIT)["Service"][key]
    assert len(values) == 1, f"{key} given {len(values)} times"
    return values[0]


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def _installable_copy(tmp_path: Path, *, dropin: bool = False) -> Path:
    """The unit in tmp_path with ExecStart's binary replaced by one that exists here
    (verify checks it), everything else untouched."""
    exe = Path(sys.executable).parent / "ccx-agent"
    if not exe.exists():
        exe = Path(sys.executable)
    text = UNIT.read_text()
    assert text.count("ExecStart=/usr/local/bin/ccx-agent ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("ExecStart=/usr/local/bin/ccx-agent ", f"ExecStart={exe} "))
    if dropin:
        directory = tmp_path / f"{UNIT.name}.d"
        directory.mkdir()
        shutil.copy(DROPIN, directory / DROPIN.name)
    return copy


# -- the contract ----------------------------------------------------------------------------


def test_unit_service_contract() -> None:
    service = _entries(UNIT)["Service"]
    assert _one("Type") == "notify"
    assert _one("NotifyAccess") == "main"
    assert _one("ExecStart") == (f"/usr/local/bin/ccx-agent --config {config.DEFAULT_PATH} run")
    assert _one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert re.fullmatch(r"\d+(s|min)", _one("WatchdogSec"))
    assert _one("Restart") == "on-failure"
    assert re.fullmatch(r"\d+(s|min)", _one("RestartSec"))
    assert _one("RestartPreventExitStatus") == str(EX_CONFIG) == "78"
    assert re.fullmatch(r"\d+(s|min)", _one("TimeoutStopSec"))
    assert _one("User") == _one("Group") == "ccx-agent"
    assert "DynamicUser" not in service
    assert _one("StateDirectory") == "ccx-agent"
    assert _one("StateDirectoryMode") == "0700"
    assert _one("ConfigurationDirectory") == "ccx-agent"
    assert _one("ConfigurationDirectoryMode") == "0750"
    assert _one("UMask") == "0077"
    assert _entries(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_hardening() -> None:
    service = _entries(UNIT)["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "RemoveIPC": "yes",
    }
    assert {key: _one(key) for key in expected} == expected
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # Every peer (SSM, UCCX, a remote syslog) is remote: no IP deny list.
    assert "IPAddressDeny" not in service
    assert "PrivateNetwork" not in service


def test_unit_state_dir_is_the_config_default() -> None:
    """StateDirectory=ccx-agent is /var/lib/ccx-agent, the example config's state_dir."""
    example = (Path(__file__).resolve().parent.parent / "config" / "ccx-agent.yaml").read_text()
    assert re.search(r"^state_dir: /var/lib/ccx-agent$", example, re.MULTILINE)
    assert str(config.DEFAULT_PATH).startswith("/etc/" + _one("ConfigurationDirectory") + "/")


def test_credential_dropin_names_what_the_source_reads() -> None:
    entries = _entries(DROPIN)
    assert list(entries) == ["Service"]
    assert entries["Service"]["LoadCredential"] == [
        f"{config.UCCX_CREDENTIAL}:/etc/ccx-agent/{config.UCCX_CREDENTIAL}"
    ]
    assert f"LoadCredential={config.FINESSE_CREDENTIAL}:" in DROPIN.read_text()


# -- systemd-analyze --------------------------------------------------------------------------


@pytest.mark.parametrize("dropin", [False, True], ids=["unit", "with-credential-dropin"])
def test_systemd_analyze_verify_is_clean(tmp_path: Path, dropin: bool) -> None:
    analyze = _tool("systemd-analyze")
    unit = _installable_copy(tmp_path, dropin=dropin)
    result = _run(analyze, "verify", "--man=no", "--generators=no", str(unit))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a typo'd key is reported."""
    analyze = _tool("systemd-analyze")
    unit = _installable_copy(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = _run(analyze, "verify", "--man=no", "--generators=no", str(unit))
    assert "ProtectSytem" in result.stdout + result.stderr


def _exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for ccx-agent\.service: (\d+\.\d+)", output)
    assert match, output
    return float(match.group(1))


def test_systemd_analyze_security_score() -> None:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "security", "--offline=yes", "--no-pager", str(UNIT))
    assert result.returncode == 0, result.stderr
    assert _exposure(result.stdout) <= MAX_EXPOSURE, result.stdout
    # The same bar through systemd's own check (--threshold is on a 0-100 scale).
    threshold = int(MAX_EXPOSURE * 10)
    gated = _run(analyze, "security", "--offline=yes", f"--threshold={threshold}", str(UNIT))
    assert gated.returncode == 0, gated.stdout + gated.stderr


def test_systemd_analyze_security_with_dropin(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    unit = _installable_copy(tmp_path, dropin=True)
    result = _run(analyze, "security", "--offline=yes", "--no-pager", str(unit))
    assert result.returncode == 0, result.stderr
    assert _exposure(result.stdout) <= MAX_EXPOSURE


# -- sysusers and tmpfiles ----------------------------------------------------------------------


def _sysusers_root(tmp_path: Path) -> Path:
    sysusers = _tool("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run(
        [sysusers, f"--root={root}", "-"],
        input=SYSUSERS.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return root


def test_sysusers_creates_a_system_user_without_login(tmp_path: Path) -> None:
    root = _sysusers_root(tmp_path)
    passwd = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines() if line]
    (user,) = [p for p in passwd if p[0] == "ccx-agent"]
    _, _, uid, gid, _, home, shell = user
    assert int(uid) < 1000  # a system user
    assert home == "/var/lib/ccx-agent"
    assert shell.endswith("/nologin")
    groups = [g.split(":") for g in (root / "etc/group").read_text().splitlines() if g]
    assert [g[2] for g in groups if g[0] == "ccx-agent"] == [gid]


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles needs root to chown")
def test_tmpfiles_makes_the_config_and_state_dirs(tmp_path: Path) -> None:
    root = _sysusers_root(tmp_path)
    tmpfiles = _tool("systemd-tmpfiles")
    result = subprocess.run(
        [tmpfiles, f"--root={root}", "--create", "-"],
        input=TMPFILES.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ids = next(
        p.split(":")[2:4]
        for p in (root / "etc/passwd").read_text().splitlines()
        if p.startswith("ccx-agent:")
    )
    uid, gid = int(ids[0]), int(ids[1])

    def owner_mode(path: str) -> tuple[int, int, int]:
        st = (root / path).stat()
        return st.st_uid, st.st_gid, st.st_mode & 0o7777

    # Modes as the unit's ConfigurationDirectoryMode= / StateDirectoryMode= set them.
    assert owner_mode("etc/ccx-agent") == (0, gid, int(_one("ConfigurationDirectoryMode"), 8))
    assert owner_mode("var/lib/ccx-agent") == (uid, gid, int(_one("StateDirectoryMode"), 8))
