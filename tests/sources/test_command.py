"""``source.kind: command``: real programs in real subprocesses (the test's own Python)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.config.schema import CommandSource as CommandSourceConfig
from ccx_agent.config.schema import load
from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import compute
from ccx_agent.sources import SourceError
from ccx_agent.sources.command import CommandSource
from ccx_agent.sources.factory import build
from ccx_agent.sources.file import FileSource

DATA = Path(__file__).parent.parent / "data" / "snapshots"


def source(*argv: str, **settings: Any) -> CommandSource:
    cfg = CommandSourceConfig.model_validate({"kind": "command", "command": list(argv), **settings})
    return CommandSource(cfg)


def python(code: str, **settings: Any) -> CommandSource:
    return source(sys.executable, "-c", code, **settings)


def fails(src: CommandSource) -> str:
    with pytest.raises(SourceError) as info:
        src.read()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("source.command (")
    return message


def test_output_is_read_like_a_file_snapshot() -> None:
    for name in ("mixed.json", "mixed.yaml"):
        path = DATA / name
        got = source("cat", str(path)).read()
        assert got == FileSource(path).read()
    result = compute(got, LicenseType.FLEX, ALL_FEATURES)
    assert result.tags == {"flex-standard-seat": 2, "flex-premium-seat": 4, "flex-outbound-port": 4}


def test_no_shell_is_involved(tmp_path: Path) -> None:
    """Shell syntax in an argument is just text handed to the program."""
    marker = tmp_path / "marker"
    code = "import sys, json; print(json.dumps({'agents': [], 'csqs': []})); print(sys.argv[1], file=sys.stderr)"
    src = python(code, timeout="5s")
    src.argv = (*src.argv, f"; touch {marker}")
    assert len(src.read().agents) == 0
    assert not marker.exists()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "import sys; print('cannot reach UCCX', file=sys.stderr); sys.exit(3)",
            "exited with status 3; its last error line: cannot reach UCCX",
        ),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", "was killed by signal 15"),
        ("print('{\"agents\": [')", "output:2: not valid JSON: Expecting value (column 1)"),
        ("print('')", "output: snapshot: empty document (for no agents at all, write agents: [])"),
        (
            'print(\'{"agents": [{"id": "a1"}]}\')',
            "output: agents[0] (id 'a1'): state: must be a Finesse state",
        ),
    ],
)
def test_a_failing_program_fails_the_sample(code: str, expected: str) -> None:
    message = fails(python(code))
    assert message.startswith(f"source.command ({sys.executable})")
    assert expected in message


def test_a_program_that_does_not_finish_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    message = fails(python(code, timeout="1s"))
    assert time.monotonic() - start < 10
    assert "did not finish within 1s: killed" in message
    child = int(pid_file.read_text())
    # The child was in the program's process group: SIGKILL was sent to it too. Its death
    # is asynchronous (init reaps it), so wait for it, briefly.
    status = Path(f"/proc/{child}/status")

    def alive() -> bool:
        try:
            return "zombie" not in status.read_text()
        except OSError:
            return False

    until = time.monotonic() + 10
    while alive() and time.monotonic() < until:
        time.sleep(0.01)
    assert not alive()


def test_output_is_capped() -> None:
    code = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    message = fails(python(code, max_output_mb=1, timeout="20s"))
    assert f"printed more than {1024 * 1024} bytes: killed" in message


def test_a_missing_program_is_named(tmp_path: Path) -> None:
    message = fails(source(str(tmp_path / "nope")))
    assert (
        message
        == f"source.command ({tmp_path / 'nope'}): cannot run the program: No such file or directory"
    )


def test_a_relative_program_is_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "snap"
    script.write_text(f"#!{sys.executable}\nprint('agents: []')\n")
    script.chmod(0o755)
    path = tmp_path / "ccx-agent.yaml"
    path.write_text("source:\n  kind: command\n  command: [bin/snap, --all]\n  timeout: 10s\n")
    cfg = load(path).source
    assert isinstance(cfg, CommandSourceConfig)
    assert cfg.command == [str(script), "--all"]
    assert len(build(cfg).read().agents) == 0
    # A bare name is looked up on PATH, not beside the config file.
    path.write_text("source:\n  kind: command\n  command: [snap]\n")
    assert load(path).source.command == ["snap"]  # type: ignore[union-attr]


def test_json_output_equals_the_file(tmp_path: Path) -> None:
    doc = json.loads((DATA / "mixed.json").read_text())
    src = python(f"import json; print(json.dumps({doc!r}))")
    assert src.read() == FileSource(DATA / "mixed.json").read()


def _gone(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_a_child_in_its_own_session_holding_the_output_is_killed(tmp_path: Path) -> None:
    """The program prints its snapshot and exits 0, leaving a child in a session of its
    own (``setsid``) that holds stdout: out of reach of the process group, it kept the
    pipe open until the timeout (every sample failed) and was left behind (one more
    process per sample). The sample now succeeds shortly after the program ended, and
    the child is killed."""
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('agents: [{id: a1, state: READY}]')\n"
    )
    for _ in range(2):
        start = time.monotonic()
        assert len(python(code, timeout="20s").read().agents) == 1
        assert time.monotonic() - start < 10  # EXIT_GRACE, not the 20 s timeout
        child = int(pid_file.read_text())
        until = time.monotonic() + 10
        while not _gone(child) and time.monotonic() < until:
            time.sleep(0.01)  # SIGKILL was sent; its death is asynchronous
        assert _gone(child), "the child holding the output was left behind"


def test_abort_kills_a_hanging_program_at_once(tmp_path: Path) -> None:
    """A stop must not wait for ``source.timeout``: abort() (from the stop thread) kills
    the program now, and no program runs after it."""
    import threading

    started = tmp_path / "started"
    code = f"import time; open({str(started)!r}, 'w').close(); time.sleep(60)"
    src = python(code, timeout="30s")
    errors: list[str] = []

    def read() -> None:
        try:
            src.read()
        except SourceError as exc:
            errors.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    until = time.monotonic() + 20
    while not started.exists() and time.monotonic() < until:
        time.sleep(0.01)
    assert started.exists()
    aborted = time.monotonic()
    src.abort()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert time.monotonic() - aborted < 3
    assert errors and "stopped: the daemon is stopping: killed" in errors[0]
    started.unlink()
    assert "not run: the daemon is stopping" in fails(src)
    assert not started.exists()
    src.close()


def test_a_relative_program_with_a_relative_config_path(tmp_path: Path) -> None:
    """``command: [./snap.sh]`` with ``--config ccx-agent.yaml`` (relative): the program
    was looked up on PATH (``Path('.') / './snap.sh'`` is ``snap.sh``)."""
    import subprocess

    script = tmp_path / "snap.sh"
    script.write_text("#!/bin/sh\necho 'agents: [{id: a1, state: READY}]'\n")
    script.chmod(0o755)
    (tmp_path / "ccx-agent.yaml").write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "source:\n  kind: command\n  command: [./snap.sh]\n  timeout: 10s\n"
        "license:\n  type: flex\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", "ccx-agent.yaml", "usage", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tags"]["flex-standard-seat"] == 1
