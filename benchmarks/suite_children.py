"""A pytest plugin for :mod:`benchmarks.bench_suite`: the CPU of every child process the
tests start, by command, and each test's whole CPU (its worker's, threads and in-process
servers included, plus its children's), so the suite's CPU can be split between the test
processes themselves and the ``ccx-agent`` (and other) processes they run, and the
costliest tests named.

On two cores the suite is CPU-bound, so its wall time is its CPU over two; where that CPU
goes says what would make it quicker (fewer interpreter starts, cheaper ones, or cheaper
in-process tests). Loaded with ``-p benchmarks.suite_children`` and
``CCX_BENCH_CHILDREN=<dir>``; each xdist worker writes ``<dir>/<worker>.json``.

How: ``subprocess`` reaps its children with ``os.waitpid``; this plugin puts ``os.wait4``
behind it, which also returns the child's rusage (its own CPU and that of the children it
reaped), and remembers each child's command line from ``Popen``. A child reaped some
other way is not counted. Not for the test suite itself: only this benchmark loads it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_real_waitpid = os.waitpid
_commands: dict[int, str] = {}
_records: list[tuple[str, float]] = []
#: Each test's CPU: its worker's own during the test (setup, call and teardown), and its
#: children's.
_tests: dict[str, list[float]] = {}


#: Commands whose first word is a sub-command worth telling apart.
_TWO_WORDS = frozenset({"offline", "renew"})


def command_name(args: Any) -> str:
    """``ccx-agent <command>`` for the product's CLI (``offline`` and ``renew`` with their
    sub-command; options, their values and arguments left out), else the program's base
    name."""
    argv = [str(a) for a in (args if isinstance(args, list | tuple) else [args])]
    if "ccx_agent" in argv or any(a.endswith("/ccx-agent") for a in argv):
        i = argv.index("ccx_agent") + 1 if "ccx_agent" in argv else 1
        rest = argv[i:]
        while rest and rest[0].startswith("-"):  # --config X, -v, --log-level X
            rest = rest[2:] if rest[0] in ("--config", "-c", "--log-level") else rest[1:]
        if not rest:
            return "ccx-agent"
        if rest[0] in _TWO_WORDS and len(rest) > 1 and not rest[1].startswith("-"):
            return f"ccx-agent {rest[0]} {rest[1]}"
        return f"ccx-agent {rest[0]}"
    if argv[:3] and argv[0].endswith(("python", "python3")) and "-c" in argv[:3]:
        return "python -c"
    return Path(argv[0]).name if argv else "?"


def _waitpid(pid: int, options: int) -> tuple[int, int]:
    reaped, status, usage = os.wait4(pid, options)
    if reaped:
        _records.append((_commands.pop(reaped, "?"), usage.ru_utime + usage.ru_stime))
    return reaped, status


_real_init = subprocess.Popen.__init__


def _init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
    _real_init(self, args, *rest, **kw)
    _commands[self.pid] = command_name(args)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Iterator[None]:
    if not os.environ.get("CCX_BENCH_CHILDREN"):
        yield
        return
    own = resource.getrusage(resource.RUSAGE_SELF)
    started = len(_records)
    yield
    after = resource.getrusage(resource.RUSAGE_SELF)
    _tests[item.nodeid] = [
        after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime,
        sum(cpu for _, cpu in _records[started:]),
    ]


def pytest_configure(config: Any) -> None:
    if os.environ.get("CCX_BENCH_CHILDREN"):
        os.waitpid = _waitpid
        subprocess.Popen.__init__ = _init  # type: ignore[method-assign]


def pytest_sessionfinish(session: Any) -> None:
    where = os.environ.get("CCX_BENCH_CHILDREN")
    if not where:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    Path(where, f"{worker}.json").write_text(json.dumps(_records))
    if _tests:
        Path(where, f"{worker}.tests").write_text(json.dumps(_tests))
