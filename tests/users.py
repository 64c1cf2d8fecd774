"""Running a program as another user, the one way every test does it.

Some tests run the CLI or the daemon as ``nobody``, as the service runs as its own user:
that needs root (to switch users and to change owners) and an interpreter that ``nobody``
can reach. A Python installed under a directory ``nobody`` cannot enter (a pyenv under
``/root``, mode 0700) is common on a fresh machine, and ``make test`` must pass there: such
a test skips and says why. Under ``CI=true`` it fails instead, because ``.ci/run`` makes
the path reachable and a skip there would hide the tests that matter most.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import shutil
import subprocess
import sys
from typing import Any

import pytest

#: The unprivileged user these tests run as (the service user's stand-in).
NOBODY = "nobody"


def ids(user: str = NOBODY) -> tuple[int, int]:
    """The user's uid and primary gid."""
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def group_name(user: str = NOBODY) -> str:
    """The name of the user's primary group (``nogroup`` on Debian, ``nobody`` elsewhere)."""
    return grp.getgrgid(ids(user)[1]).gr_name


def run_as(user: str = NOBODY) -> dict[str, Any]:
    """The :func:`subprocess.run` keywords that run a child as ``user`` with only its own
    group (root's supplementary groups would let it read what the user cannot)."""
    uid, gid = ids(user)
    return {"user": uid, "group": gid, "extra_groups": []}


@functools.cache
def why_not_as(user: str = NOBODY) -> str | None:
    """Why a test cannot run a program as ``user`` here, or None when it can: it needs root,
    and the user must be able to start this interpreter and import ``ccx_agent``."""
    if os.geteuid() != 0:
        return f"running a program as {user} needs root"
    try:
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import asyncio, ccx_agent.cli.main, ccx_agent.daemon.scheduler",
            ],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **run_as(user),
        )
    except OSError as exc:
        return f"the user {user} cannot run {sys.executable}: {exc}"
    if probe.returncode != 0:
        return f"the user {user} cannot run {sys.executable}: {probe.stderr.strip()[-200:]}"
    return None


def require_as(user: str = NOBODY) -> None:
    """Skip the calling test, saying why, unless a program can run as ``user``; under CI,
    fail instead (CI must run these tests)."""
    why = why_not_as(user)
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the tests that run as another user: {why}")
    pytest.skip(why)


#: Marks a test that runs a program as ``nobody`` (the ``as_nobody`` fixture of
#: tests/conftest.py calls :func:`require_as`).
needs_nobody = pytest.mark.usefixtures("as_nobody")


#: Root without the capabilities that let it ignore file modes (CAP_DAC_OVERRIDE,
#: CAP_DAC_READ_SEARCH): what a service user meets with a file of mode 0000, met by root
#: in its own directory, where no other user needs to reach the interpreter.
_NO_DAC = ["--bounding-set=-dac_override,-dac_read_search"]


def obeying_modes() -> list[str]:
    """The prefix of a command line that runs it obeying file modes: nothing for a user
    other than root, ``setpriv`` dropping the DAC override for root. Skips (fails under CI)
    when root has no ``setpriv``."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        why = "root ignores file modes, and setpriv (util-linux) is not installed to stop it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    return [setpriv, *_NO_DAC]
