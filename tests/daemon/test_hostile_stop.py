"""A real ``ccx-agent run`` against a slow or hostile SSM: it stops at once, and no bad
answer crashes a job.

The daemon talks to a relay (:mod:`tests.ssm.servers`) in front of the session's real
simulator, with the simulator's TLS certificate. The relay either drips the simulator's
answer to REPORT_USAGE one byte every two seconds (a slowloris: no per-read timeout ever
trips, and ``transport.timeout`` is set long, so only the stop can end the exchange), or
answers it with JSON nested 10,000 deep. Nothing is mocked: the daemon is a process,
signalled for real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.simulator import ca
from tests.daemon.conftest import Daemon, DatagramListener, Instance, Sim, make_instance, wait_until
from tests.ssm.servers import MisbehavingServer, Relay, Reply, drip

#: The slowloris pace of the issue: one byte every two seconds.
DRIP_EVERY = 2.0
#: How long SIGTERM may take to end the daemon while an exchange drips.
STOP_BOUND = 5.0


@pytest.fixture
def relay(sim: Sim) -> Iterator[tuple[Relay, MisbehavingServer]]:
    """A relay to the session's simulator, on a server with the simulator's TLS files."""
    forward = Relay(sim.server.url, sim.server.ca_path)
    server = MisbehavingServer(forward, ca.tls_files(sim.state_dir))
    try:
        yield forward, server
    finally:
        server.stop()
        forward.close()


def through(inst: Instance, url: str, timeout: str = "30s") -> None:
    inst.cfg["transport"] = {**inst.cfg["transport"], "url": url, "timeout": timeout}
    inst.write()


def outbox_ids(inst: Instance) -> list[str]:
    store = inst.store()
    try:
        with store.read() as tx:
            return [item.report_id for item in tx.outbox_batch(100_000)]
    finally:
        store.close()


def delivered_once(sim: Sim, inst: Instance, ids: list[str]) -> list[str]:
    """The simulator's report ids: each at most once, and ``ids`` all among them."""
    at_sim = [r["id"] for r in sim.reports(inst.piid)]
    assert len(at_sim) == len(set(at_sim)), "a report was stored twice"
    return at_sim if set(ids) <= set(at_sim) else []


def no_crash(daemon: Daemon) -> None:
    """No job failed, nothing went to stderr as a traceback."""
    assert daemon.events("job failed") == []
    assert "Traceback" not in daemon.stdout and "Traceback" not in daemon.stderr


def test_sigterm_while_ssm_drips_its_answer_exits_0_within_5_s(
    sim: Sim,
    tmp_path: Path,
    udp_syslog: DatagramListener,
    relay: tuple[Relay, MisbehavingServer],
) -> None:
    """SIGTERM during a REPORT_USAGE whose answer drips: the exchange is cut at once, the
    daemon exits 0 within 5 s, the report stays in the outbox with nothing recorded
    against SSM, and the next start delivers every report once (the simulator, which
    did receive the cut one, does not store it twice)."""
    forward, server = relay
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")

    def on_response(request: bytes, reply: Reply) -> Reply:
        if json.loads(request)["type"] != "REPORT_USAGE":
            return reply
        return Reply(reply.status, b"", stream=drip(server, [reply.body], DRIP_EVERY))

    forward.on_response = on_response
    through(inst, server.url)
    daemon = Daemon(inst)
    wait_until("a REPORT_USAGE answer dripping", server.streaming.is_set, 30)
    daemon.assert_alive()

    code, took = daemon.stop()
    assert code == 0 and took < STOP_BOUND, (code, took, daemon.stdout[-2000:])
    # The daemon hung up mid-answer (the server finds out at its next byte).
    wait_until(
        "the dripped answer cut",
        lambda: any(not complete for _, complete in server.answers),
        2 * DRIP_EVERY + 1,
    )
    no_crash(daemon)
    assert daemon.events("stopped")
    alerts = [e.get("mnemonic") for e in daemon.events("alert")]
    assert "COMM_FAILED" not in alerts and "ENTITLEMENT_REPORT_FAILED" not in alerts
    waiting = outbox_ids(inst)
    assert waiting, "the cut report is no longer in the outbox"
    # The relay did forward it: the server has it, the agent does not know yet.
    at_sim = {r["id"] for r in sim.reports(inst.piid)}
    assert set(waiting) & at_sim, (waiting, sorted(at_sim))

    through(inst, sim.server.url)
    again = Daemon(inst)
    wait_until(
        "the waiting reports delivered",
        lambda: again.assert_alive() or delivered_once(sim, inst, waiting),
        30,
    )
    wait_until("an empty outbox", lambda: not outbox_ids(inst) or None, 30)
    code, _ = again.stop()
    assert code == 0
    no_crash(again)
    delivered_once(sim, inst, waiting)


def test_a_10000_deep_json_answer_is_a_communication_failure_not_a_crashed_job(
    sim: Sim,
    tmp_path: Path,
    udp_syslog: DatagramListener,
    relay: tuple[Relay, MisbehavingServer],
) -> None:
    """JSON nested 10,000 deep in answer to REPORT_USAGE: COMM_FAILED with the reason on
    one line, no job failure, no traceback; when the path heals, the reports are
    delivered once (COMM_RESTORED) by the same running daemon."""
    forward, server = relay
    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}")
    deep = b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}"

    def on_response(request: bytes, reply: Reply) -> Reply:
        if json.loads(request)["type"] != "REPORT_USAGE":
            return reply
        return Reply(200, deep)

    forward.on_response = on_response
    through(inst, server.url, timeout="5s")
    daemon = Daemon(inst)

    def alert(mnemonic: str) -> list[dict[str, Any]]:
        daemon.assert_alive()
        return [e for e in daemon.events("alert") if e.get("mnemonic") == mnemonic]

    (failed,) = wait_until("COMM_FAILED", lambda: alert("COMM_FAILED"), 30)
    assert "nested deeper than 32" in failed["detail"]
    assert "\n" not in failed["detail"]
    no_crash(daemon)
    waiting = outbox_ids(inst)
    assert waiting

    forward.on_response = None
    wait_until("COMM_RESTORED", lambda: alert("COMM_RESTORED"), 30)
    wait_until("the waiting reports delivered", lambda: delivered_once(sim, inst, waiting), 30)
    code, took = daemon.stop()
    assert code == 0 and took < STOP_BOUND
    no_crash(daemon)


def test_sigterm_while_a_command_source_hangs_exits_at_once(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    """A ``command`` source whose program hangs (``source.timeout`` 30 s): SIGTERM kills
    it at once and the daemon exits 0 within the bound, instead of waiting out the
    timeout (16.6 s at 20 s before). The program's first run answers, the next hang."""
    import sys

    hanging = tmp_path / "hanging"
    answered = tmp_path / "answered"
    program = tmp_path / "snap.py"
    program.write_text(
        "import os, time\n"
        f"if os.path.exists({str(answered)!r}):\n"
        f"    open({str(hanging)!r}, 'w').close()\n"
        "    time.sleep(120)\n"
        f"open({str(answered)!r}, 'w').close()\n"
        "print('agents: [{id: a1, state: READY}]')\n"
    )

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["source"] = {
            "kind": "command",
            "command": [sys.executable, str(program)],
            "timeout": "30s",
        }

    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}", tweak=tweak)
    daemon = Daemon(inst)
    wait_until("the program hanging", lambda: daemon.assert_alive() or hanging.exists(), 30)
    code, took = daemon.stop()
    assert code == 0 and took < STOP_BOUND, (code, took, daemon.stdout[-2000:])
    assert "Traceback" not in daemon.stderr
