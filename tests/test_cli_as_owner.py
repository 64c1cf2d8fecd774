"""Root working in the service user's state directory: the files its command line names
(a token in a root-only directory, a root-only USB stick, a 0600 answer file) are opened
with root's rights before it becomes the owner (docs/offline.md's steps, as written).

Each test runs the real console entry as root in a directory owned by ``nobody``: the
command drops to ``nobody`` in process, and imports that come after the drop must be
readable by ``nobody``. Where the interpreter lives in a directory ``nobody`` cannot
enter (a pyenv under a 0700 /root) the tests skip, saying so, except under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ccx_agent.simulator.ca import ca_path
from ccx_agent.simulator.core import Simulator
from tests.users import ids, require_as

REPO = Path(__file__).resolve().parents[1]
AGENTS = REPO / "tests" / "data" / "snapshots" / "mixed.json"
NOBODY = ids()[0]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="working as another user needs root")


@pytest.fixture
def site() -> Iterator[dict[str, Path]]:
    """A state directory owned by nobody; a token, a USB stick and reports in a directory
    only root may enter; an SSM simulator with licences to answer the exchange."""
    require_as()  # skips (fails under CI) when nobody cannot run this interpreter
    base = Path(tempfile.mkdtemp(prefix="ccx-as-owner-"))  # pytest's own are root's alone
    try:
        base.chmod(0o755)
        state = base / "state"
        state.mkdir()
        os.chown(state, NOBODY, NOBODY)
        secret = base / "root-only"
        secret.mkdir(mode=0o700)
        usb = secret / "usb"
        usb.mkdir(mode=0o700)
        ssm = base / "ssm"
        Simulator.open(ssm, datetime.now(UTC)).close()
        assert ccx("ssm", "--state-dir", ssm, "license", "add", "flex-standard-seat", "10").returncode == 0  # fmt: skip
        config = base / "agent.yaml"
        config.write_text(
            f"state_dir: {state}\n"
            f"source: {{kind: file, path: {AGENTS}}}\n"
            "transport:\n"
            "  mode: offline\n"
            f"  trust_anchor: {ca_path(ssm)}\n",
            encoding="utf-8",
        )
        config.chmod(0o644)
        token = secret / "token"
        token.write_text(ccx("ssm", "--state-dir", ssm, "token", "create").stdout)
        token.chmod(0o600)
        yield {"config": config, "secret": secret, "usb": usb, "ssm": ssm, "token": token}
    finally:
        shutil.rmtree(base)


def ccx(*args: str | Path, user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCX_AGENT")}
    return subprocess.run(
        [sys.executable, "-m", "ccx_agent", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/",
        check=False,
        user=user,
        extra_groups=[] if user else None,
    )


def test_the_offline_recipe_as_root_with_the_files_in_root_only_places(
    site: dict[str, Path],
) -> None:
    config, usb, secret = site["config"], site["usb"], site["secret"]
    request, answer = usb / "request.json", usb / "answer.json"
    done = ccx("-c", config, "offline", "export", "--token-file", site["token"], "--output", request)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "note: working as nobody" in done.stderr
    assert f"written to {request} ({request.stat().st_size:,} bytes)" in done.stdout
    st = request.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)  # root's, as root made it
    assert [p.name for p in usb.iterdir()] == ["request.json"]  # no temporary file left

    done = ccx("ssm", "--state-dir", site["ssm"], "offline", "answer", request, "--output", answer)  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer.chmod(0o600)
    done = ccx("-c", config, "offline", "import", answer)
    assert done.returncode == 0, done.stderr
    assert "registered: PIID" in done.stdout

    report = secret / "usage.csv"
    done = ccx("-c", config, "report", "--format", "csv", "--output", report)
    assert done.returncode == 0, done.stderr
    assert "note: working as nobody" in done.stderr
    assert report.read_text().startswith("start,end,tag,usage,")
    assert stat.S_IMODE(report.stat().st_mode) == 0o644


def test_register_reads_a_root_only_token_before_working_as_the_owner(
    site: dict[str, Path],
) -> None:
    """The token is read as root (this instance has no SSM URL, so register then stops
    there: what matters is that the token was read)."""
    done = ccx("-c", site["config"], "register", "--token-file", site["token"])
    assert done.stderr.startswith("note: working as nobody"), done.stderr
    assert "transport.url is not set" in done.stderr.splitlines()[-1]
    assert "token" not in done.stderr and "Permission denied" not in done.stderr, done.stderr


def test_a_permission_error_names_the_user_and_the_path(site: dict[str, Path]) -> None:
    config, secret = site["config"], site["secret"]
    request = site["usb"] / "request.json"
    done = ccx("-c", config, "offline", "export", "--token-file", site["token"], "--output", request)  # fmt: skip
    assert done.returncode == 0, done.stderr  # an instance, for the report below
    done = ccx("-c", config, "register", "--token-file", site["token"], user="nobody")
    assert done.returncode == 1
    assert done.stderr == (
        f"error: --token-file {site['token']}: cannot be read: Permission denied (as user nobody)\n"
    )
    out = secret / "r.csv"
    done = ccx("-c", config, "report", "--output", out, user="nobody")
    assert done.returncode == 1
    assert done.stderr == (
        f"error: {out}: cannot write the report: Permission denied (as user nobody)\n"
    )
