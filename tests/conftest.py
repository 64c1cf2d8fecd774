"""Suite-wide: the order the tests are handed out in, and which must share a worker.

``make test`` spreads the suite over several pytest-xdist workers, which take the tests in
collection order. A few tests run real daemons or whole simulated lives for 10 to 30 s
each; collected last (``tests/test_demo.py`` sorts after every sub-package) one of them
would start when the other workers are already idle and hold the end of the run alone.
So the modules that hold them come first, slowest first; everything else keeps its
collection order. The order is a pure function of the collected ids, the same in every
worker (xdist requires that), and changes nothing in what any test checks.

The tests that share one costly module-scoped run (:data:`SHARED_RUNS`) go to one worker
together: spread over four workers, each worker would start that run again. xdist's own
``xdist_group`` mark cannot say so with pytest 9.2 (xdist 3.8 renames ``item._nodeid``,
which pytest 9.2 no longer reads), so ``--dist loadgroup`` uses the scheduler below, which
knows these groups by node id and still honours an ``@group`` suffix.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

#: Node-id prefixes of the modules with the longest tests, slowest first (the durations
#: ``make test`` prints with ``--durations=15``). The snapshot fuzzer is left out on
#: purpose: its per-case time bound is wall time, best measured once the CPU-bound
#: simulations at the front are done.
SLOW_FIRST = (
    "tests/scenario/test_timelines.py",
    "tests/test_demo.py",
    "tests/daemon/test_prometheus.py",
    "tests/daemon/test_ha.py",
    "tests/daemon/test_disk.py",
    "tests/test_packaging.py",
    "tests/offline/test_life.py",
    "tests/daemon/test_crash_storm.py",
    "tests/daemon/",
    "tests/offline/",
    "tests/doctor/test_network.py",
    "tests/history/test_render_html.py",
)

#: Module-scoped fixtures that run a real daemon for seconds: (module, fixture) -> the
#: tests that use it. Collection fails if a test uses one and is not listed here.
SHARED_RUNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("tests/daemon/test_process.py", "scenario"): (
        "test_ready_watchdog_stopping_and_exit_0",
        "test_countdown_lines_exact_and_in_order_over_udp_rfc3164",
        "test_alerts_in_the_log_name_their_tags",
        "test_status_json_while_running_reads_the_db",
        "test_no_secret_in_any_output",
    ),
}

#: Node id -> the name of its group.
_GROUP_OF = {
    f"{module}::{test}": f"{module}:{fixture}"
    for (module, fixture), tests in SHARED_RUNS.items()
    for test in tests
}


def _rank(item: pytest.Item) -> int:
    for rank, prefix in enumerate(SLOW_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: within a rank, collection order
    for item in items:
        module, _, name = item.nodeid.partition("::")
        for (shared_module, fixture), tests in SHARED_RUNS.items():
            uses = fixture in getattr(item, "fixturenames", ())
            if module == shared_module and uses and name.split("[", maxsplit=1)[0] not in tests:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the module-scoped {fixture!r}: list it in "
                    "SHARED_RUNS (tests/conftest.py) so that it shares the run's worker"
                )


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: harmless without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: xdist's group scheduler, with :data:`SHARED_RUNS` as groups."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling  # type: ignore[import-untyped]

    class SharedRunScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            group = _GROUP_OF.get(nodeid.split("[", maxsplit=1)[0])
            return group if group is not None else super()._split_scope(nodeid)

    return SharedRunScheduling(config, log)


@pytest.fixture(autouse=True)
def _forget_secret_values() -> Iterator[None]:
    """The secrets one test's config named are not the next test's: a process remembers
    them all (ccx_agent.secretvalues), and a pytest worker runs many tests."""
    yield
    from ccx_agent import secretvalues

    secretvalues.forget()


@pytest.fixture
def as_nobody() -> tuple[int, int]:
    """For a test that runs a program as ``nobody``: skips, saying why, where that cannot
    work (not root, or an interpreter ``nobody`` cannot reach), fails so under CI; gives
    nobody's uid and gid. ``tests.users.needs_nobody`` marks a test with it."""
    from tests import users

    users.require_as(users.NOBODY)
    return users.ids(users.NOBODY)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose connects hang (the listener's backlog is full and never accepted)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = int(srv.getsockname()[1])
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    probe = socket.socket()
    probe.settimeout(0.2)
    try:
        probe.connect(("127.0.0.1", port))
    except TimeoutError:
        pass
    else:
        pytest.skip("this kernel accepts connections beyond the backlog")
    finally:
        probe.close()
    yield port
    filler.close()
    srv.close()
