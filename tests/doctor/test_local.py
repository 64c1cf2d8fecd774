"""The checks of the host itself (config, files, database, daemon, timers), and the
doctor's output contract: one line per check, a fix line for WARN and FAIL, the JSON
shape, the exit status."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.cli import doctor
from ccx_agent.cli.doctor import Finding, Result, local
from tests import users
from tests.daemon.conftest import RUNNING, Daemon, Instance
from tests.doctor.conftest import Ssm, config, register, run
from tests.users import group_name, ids, needs_nobody

LINE = r"^(PASS|WARN|FAIL|SKIP)  [a-z]+  \S.*$"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's own tmp is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="ccx-doctor-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _nobody() -> tuple[int, int]:
    return ids("nobody")


def _service_owned(base: Path, ssm: Ssm) -> Path:
    """A registered instance whose state directory belongs to ``nobody`` (the service
    user), with the CA where nobody can read it."""
    ca = base / "ca.pem"
    shutil.copy(ssm.server.ca_path, ca)
    ca.chmod(0o644)
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, *_nobody())

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["transport"]["ca_bundle"] = str(ca)

    path = config(base, ssm, tweak=tweak)
    path.chmod(0o644)
    # Registered as the service user would be: every file nobody's.
    done = subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", str(path), "register", "--", ssm.token()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return path


@needs_nobody
def test_a_root_owned_key_in_the_service_users_dir(ssm: Ssm, open_dir: Path) -> None:
    """The old ``sudo register``'s fault: the files check names the key, its owner and
    the chown to run, whoever runs the doctor."""
    path = _service_owned(open_dir, ssm)
    keys = open_dir / "state" / "keys"
    for key in [keys, *keys.iterdir()]:
        os.chown(key, 0, 0)
    # In process, as root: root can read anything, so ownership is what tells.
    files = run(path)["files"]
    assert files.result is Result.FAIL
    assert f"{keys} is owned by root, not by nobody (the owner of {open_dir / 'state'})" in (
        files.finding
    )
    group = group_name("nobody")
    assert files.fix == f"run: chown -R nobody:{group} {open_dir / 'state'}"
    # As the CLI runs it for root: it works as the service user, who cannot read the key.
    done = subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", str(path), "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["files"]["result"] == "FAIL"
    assert f"{keys}: owned by root:root" in checks["files"]["finding"]
    assert f"chown -R nobody:{group} {open_dir / 'state'}" in checks["files"]["fix"]
    # And the ssm check cannot sign without the key: it says so (a SKIP: the files
    # check has the fix), it does not crash.
    assert checks["ssm"]["result"] == "SKIP"
    assert "cannot read its private key" in checks["ssm"]["finding"]
    assert done.stderr.startswith("note: working as nobody")


def _unreachable_python(base: Path) -> Path:
    """This interpreter and its packages as a venv in a directory only root may enter: as
    a Python under a 0700 ``/root`` is for ``nobody`` (made here, so that CI, where the real
    one is reachable, meets it too)."""
    private = base / "private"
    private.mkdir(mode=0o700)
    venv = private / "venv"
    (venv / "bin").mkdir(parents=True)
    real = Path(os.path.realpath(sys.executable))
    (venv / "pyvenv.cfg").write_text(
        f"home = {real.parent}\ninclude-system-site-packages = false\n"
    )
    (venv / "bin" / "python").symlink_to(real)
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    lib = venv / Path(site).relative_to(sys.prefix)
    lib.parent.mkdir(parents=True)
    lib.symlink_to(site)
    return venv / "bin" / "python"


@pytest.mark.skipif(os.geteuid() != 0, reason="another user's state directory needs root")
def test_a_service_user_who_cannot_reach_the_interpreter(open_dir: Path) -> None:
    """Root in nobody's state directory, with a Python nobody cannot enter: the doctor
    stays root and says the daemon could not run (no traceback from an import after the
    drop to nobody); any other command stops with one line."""
    python = _unreachable_python(open_dir)
    state = open_dir / "state"
    state.mkdir(mode=0o700)
    os.chown(state, *_nobody())
    path = config(open_dir, None)
    path.chmod(0o644)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "-m", "ccx_agent", "--config", str(path), *args],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = cli("doctor", "--json")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    daemon = checks["daemon"]
    assert daemon["result"] == "FAIL"
    assert daemon["finding"].startswith(f"nobody cannot run the interpreter {python} (-> ")
    assert (
        f"the daemon runs as nobody (the owner of {state}) and could not start"
        in (daemon["finding"])
    )
    assert "chmod o+x" in daemon["fix"]
    done = cli("status")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: nobody cannot run the interpreter {python} (-> ")
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_an_unreadable_file_the_config_names(ssm: Ssm, tmp_path: Path) -> None:
    def tweak(cfg: dict[str, Any]) -> None:
        cfg["transport"]["ca_bundle"] = str(tmp_path / "missing-ca.pem")

    found = run(config(tmp_path, ssm, tweak=tweak))
    assert found["config"].result is Result.PASS
    files = found["files"]
    assert files.result is Result.FAIL
    assert files.finding.endswith(
        f"transport.ca_bundle: {tmp_path / 'missing-ca.pem'}: no such file"
    )
    assert files.fix == "create the file, or correct the path at the config line named"
    # Not "the connection broke during the TLS handshake, check the port".
    tls = found["tls"]
    assert tls.result is Result.FAIL
    assert tls.finding.startswith(
        f"transport.ca_bundle {tmp_path / 'missing-ca.pem'} cannot be read (No such file"
    )
    assert (
        tls.fix
        == "create the file, or correct transport.ca_bundle (the files check names the line)"
    )
    assert found["ssm"].result is Result.SKIP


CLI = (sys.executable, "-m", "ccx_agent")


def _doctor_obeying_modes(path: Path) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [*users.obeying_modes(), *CLI, "--config", str(path), "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    return {c["name"]: c for c in json.loads(done.stdout)["checks"]}


def test_a_key_of_mode_0000_is_a_chmod_and_the_ssm_check_skips(ssm: Ssm, tmp_path: Path) -> None:
    """Its owner runs the doctor: the key's mode is wrong, not its owner; and the ssm check
    cannot start (a SKIP pointing at the files check, not "report it as a bug")."""
    path = config(tmp_path, ssm)
    register(path, ssm)
    (key,) = (tmp_path / "state" / "keys").iterdir()
    key.chmod(0)
    checks = _doctor_obeying_modes(path)
    assert checks["files"]["result"] == "FAIL"
    assert f"{key}: owned by" in checks["files"]["finding"]
    assert checks["files"]["fix"] == f"run: chmod 600 {key}"
    assert checks["ssm"]["result"] == "SKIP"
    assert checks["ssm"]["finding"] == (
        "this instance cannot read its private key (see the files check)"
    )


def test_a_config_the_doctor_cannot_read_says_so(tmp_path: Path) -> None:
    path = config(tmp_path, None)
    path.chmod(0)
    checks = _doctor_obeying_modes(path)
    assert checks["config"]["finding"] == (
        f"{path}:1: (file): cannot read: Permission denied (as user root)"
    )
    assert checks["config"]["fix"].startswith(f"make {path} readable by ")
    assert f"chmod 0640 {path}" in checks["config"]["fix"]


def test_an_invalid_config_fails_and_skips_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("source: {kind: scripted, steps: [{at: 0s}]}\nreport:\n  intervall: 5m\n")
    out = io.StringIO()
    assert doctor.main(path, out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        f"FAIL  config  {path}:3: report.intervall: unknown key (did you mean 'interval'?)"
    )
    assert lines[1].startswith("      fix: correct the key(s) at the line(s) named in ")
    assert lines[2:] == [
        f"SKIP  {name}  the config does not load (see the config check)"
        for name in doctor.NAMES[1:]
    ]


def test_no_database_yet_is_a_warning_and_says_how_to_start(tmp_path: Path) -> None:
    found = run(config(tmp_path, None))
    assert found["database"].result is Result.WARN
    assert "no state database yet" in found["database"].finding
    assert found["timers"].result is Result.SKIP


def test_a_lost_database(ssm: Ssm, tmp_path: Path) -> None:
    path = config(tmp_path, ssm)
    register(path, ssm)
    (tmp_path / "state" / "ccx-agent.db").unlink()
    found = run(path)
    database = found["database"]
    assert database.result is Result.FAIL
    assert "the state database is missing, but an instance lived here" in database.finding
    assert database.fix is not None and "restore the state directory from a backup" in database.fix


def test_a_garbled_database(ssm: Ssm, tmp_path: Path) -> None:
    path = config(tmp_path, ssm)
    register(path, ssm)
    db = tmp_path / "state" / "ccx-agent.db"
    for name in ("ccx-agent.db-wal", "ccx-agent.db-shm"):
        (tmp_path / "state" / name).unlink(missing_ok=True)
    db.write_bytes(b"not a database at all" * 400)
    database = run(path)["database"]
    assert database.result is Result.FAIL
    assert "the state database is damaged" in database.finding


def test_a_registered_instance_with_its_daemon(ssm: Ssm, tmp_path: Path) -> None:
    """Every check passes against the real simulator and a real daemon; the text output
    is one line per check in the contract's format; exit 0."""
    path = config(tmp_path, ssm)
    register(path, ssm)
    inst = Instance(tmp_path, path, {})
    daemon = Daemon(inst)
    try:
        daemon.wait_event("ready")
        out = io.StringIO()
        code = doctor.main(path, out=out)
    finally:
        daemon.stop()
        RUNNING.remove(daemon)
    text = out.getvalue()
    assert code == 0, text
    lines = text.splitlines()
    assert [line.split("  ")[1] for line in lines] == list(doctor.NAMES), text
    import re

    assert all(re.match(LINE, line) for line in lines), text
    by_name = {line.split("  ")[1]: line for line in lines}
    assert by_name["daemon"].startswith(
        f"PASS  daemon  PID {daemon.pid} runs on {tmp_path / 'state'}"
    )
    assert "last sample" in by_name["daemon"]
    assert by_name["database"].startswith("PASS  database  ")
    assert "registered as " in by_name["database"]
    assert by_name["timers"].startswith("PASS  timers  ID certificate ")
    assert "authorization " in by_name["timers"]


def test_the_json_document(tmp_path: Path) -> None:
    out = io.StringIO()
    code = doctor.main(config(tmp_path, None), as_json=True, out=out)
    doc = json.loads(out.getvalue())
    assert list(doc) == ["checks"]
    assert [c["name"] for c in doc["checks"]] == list(doctor.NAMES)
    for check in doc["checks"]:
        assert list(check) == ["name", "result", "finding", "fix"]
        assert check["result"] in ("PASS", "WARN", "FAIL", "SKIP")
        assert isinstance(check["finding"], str) and check["finding"]
        assert (check["fix"] is None) == (check["result"] in ("PASS", "SKIP"))
    assert code == (1 if any(c["result"] == "FAIL" for c in doc["checks"]) else 0)


def test_a_check_that_crashes_is_a_fail_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one check must not hide the others (nor print a traceback). The only
    stand-in of these tests: a check replaced by one that raises, as a bug would."""

    def broken(ctx: doctor.Context) -> Finding:
        raise KeyError("boom")

    monkeypatch.setattr(local, "timers", broken)
    found = run(config(tmp_path, None))
    assert found["timers"].result is Result.FAIL
    assert found["timers"].finding == "the check itself failed (KeyError: 'boom')"
    assert found["config"].result is Result.PASS


@pytest.mark.parametrize(
    ("path", "env", "unit"),
    [
        ("/etc/ccx-agent/ccx-agent.yaml", None, "ccx-agent.service"),
        ("/etc/ccx-agent/cluster-b.yaml", None, "ccx-agent@cluster-b.service"),
        ("/srv/elsewhere.yaml", None, "ccx-agent.service"),
        ("/etc/ccx-agent/x.yaml", "hcs1", "ccx-agent@hcs1.service"),
    ],
)
def test_the_unit_that_runs_a_config(
    monkeypatch: pytest.MonkeyPatch, path: str, env: str | None, unit: str
) -> None:
    if env is None:
        monkeypatch.delenv(local.INSTANCE_ENV, raising=False)
    else:
        monkeypatch.setenv(local.INSTANCE_ENV, env)
    assert local.unit_name(Path(path)) == unit
