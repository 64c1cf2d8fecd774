"""A crash storm: the real daemon killed with SIGKILL at random instants, again and
again, with the real simulator and a real TCP syslog collector. After the storm and one
clean run: no report lost, none counted twice, no gap in the history, the database
intact, and every alert line the database recorded delivered to syslog at least once."""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.daemon.conftest import (
    Daemon,
    Sim,
    TcpListener,
    lines_arrived,
    make_instance,
    wait_until,
)
from tests.daemon.test_process import _check_contiguous, _check_reports

KILLS = 12
SEED = 20261130


def test_random_kill_9s_lose_nothing_double_nothing_and_leave_no_line_unsent(
    sim: Sim, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    collector = TcpListener()

    def tweak(cfg: dict) -> None:  # type: ignore[type-arg]
        cfg["compliance"] = {"ooc_threshold": 400}  # a countdown alert at every report
        cfg["source"]["steps"] = [{"at": "0s", "agents": 13}]

    try:
        inst = make_instance(tmp_path, sim, f"tcp://127.0.0.1:{collector.port}", tweak=tweak)
        for _ in range(KILLS):
            daemon = Daemon(inst)
            if rng.random() < 0.5:
                daemon.wait_event("ready")
            # The instant of the kill (not a wait for a timer): anywhere in a second or two
            # of work, so it lands in samples, reports, commits and sends alike.
            time.sleep(rng.uniform(0.0, 1.5))
            daemon.kill9()
        final = Daemon(inst)
        wait_until(
            "the outbox drained",
            lambda: final.events("ready") and inst.status(in_process=True)["outbox"] == 0,
            30,
        )
        store = inst.store()
        try:
            with store.read() as tx:
                rows = tx.alerts()
        finally:
            store.close()
        wanted = {line for row in rows for line in row.lines}

        collector.wait_messages("every recorded alert line", lines_arrived(wanted), 30)
        assert final.stop()[0] == 0
    finally:
        collector.close()
    _check_reports(sim, inst)
    _check_contiguous(inst)
    store = inst.store()
    try:
        with store.read() as tx:
            assert tx.alerts(pending_only=True) == []
    finally:
        store.close()
