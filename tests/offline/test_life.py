"""A whole air-gapped life on the simulated clock: the scenario runner drives the real
agent jobs and store; every ``exchange`` event is a real export file, the simulator's
answer (``Simulator.handle``) and a real import. Nothing sleeps."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccx_agent.config.yamldoc import parse_yaml
from ccx_agent.licensing.lifecycle import Enforcement
from ccx_agent.licensing.timeutil import iso
from ccx_agent.offline import exchange
from ccx_agent.offline.answer import answer
from ccx_agent.scenario import runner
from ccx_agent.scenario.model import load_scenario
from ccx_agent.store.db import AlertRow

START = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
REPO = Path(__file__).resolve().parents[2]


def live(tmp: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """Run a scenario; what the server holds, the agent's intervals, outbox and alerts."""
    loaded = load_scenario(parse_yaml(yaml.safe_dump(doc, sort_keys=False), "life.yaml"))
    emitted: list[AlertRow] = []
    agent, ssm, store = runner.setup(loaded, tmp, emitted.extend)
    sc = loaded.scenario
    try:
        runner._drive(agent, ssm, sc.start, sc.duration, sc.events, sc.registered)
        with store.read() as tx:
            intervals = tx.intervals()
            outbox = [b.report_id for b in tx.outbox_batch(10**6)]
        return {
            "server": [r["id"] for r in ssm.simulator.reports()],
            "intervals": intervals,
            "outbox": outbox,
            "alerts": emitted,
            "piid": agent.state().identity.piid,  # type: ignore[union-attr]
            "state": agent.state(),
        }
    finally:
        store.close()


def scenario(exchanges: list[int], days: int, **more: Any) -> dict[str, Any]:
    return {
        "start": START.isoformat(),
        "license_type": "flex",
        "registered": True,
        "offline": True,
        "entitlements": {"flex-standard-seat": 10, "flex-premium-seat": 2},
        "events": [
            {"at": "0m", "usage": {"flex-standard-seat": 6, "flex-premium-seat": 1}},
            *({"at": f"{d}d", "exchange": True} for d in exchanges),
        ],
        "duration": f"{days}d",
        **more,
    }


def first(alerts: list[AlertRow], mnemonic: str) -> datetime | None:
    return next((a.time for a in alerts if a.mnemonic == mnemonic), None)


def test_400_days_by_file_every_report_delivered_once_never_enforcement(tmp_path: Path) -> None:
    life = live(tmp_path, scenario(list(range(30, 400, 30)), 400))
    seen = Counter(a.mnemonic for a in life["alerts"])
    assert seen["REGISTER_SUCCESS"] == 1
    assert seen["AUTH_RENEW_SUCCESS"] == 13
    assert seen["ID_CERT_RENEW_SUCCESS"] == 2  # days 150 and 300 (due at 180 and 330)
    for never in ("COMM_FAILED", "ENFORCEMENT_MODE", "AUTHORIZATION_EXPIRED", "AUTH_RENEW_FAILED"):
        assert seen[never] == 0, never
    assert all(r.enforcement is None for r in life["intervals"])
    # Every interval reported exactly once: on the server, or still waiting for day 420.
    expected = {f"{life['piid']}:{iso(r.start)}" for r in life["intervals"]}
    assert len(expected) == 400 * 96
    server = life["server"]
    assert len(server) == len(set(server))
    assert set(server) | set(life["outbox"]) == expected
    assert not set(server) & set(life["outbox"])
    # The 10 days since the exchange of day 390, and the interval that ended at its very
    # instant (events come before that instant's report, docs/simulate.md).
    assert len(life["outbox"]) == 10 * 96 + 1


def _missed_exchange(tmp: Path, mode: str) -> dict[str, Any]:
    """300 days of one site whose exchange of day 90 never happens: offline (exchanges
    on days 30, 60 and 260), or online with SSM unreachable from just after the renewal
    of day 60 until day 260."""
    if mode == "offline":
        return live(tmp, scenario([30, 60, 260], 300))
    online_doc = scenario([], 300, offline=False)
    online_doc["events"].append({"at": "60d1h", "ssm": "unreachable"})
    online_doc["events"].append({"at": "260d", "ssm": "reachable"})
    return live(tmp, online_doc)


# One test per life (each 300 simulated days): the two run side by side under xdist, and
# each asserts the same timeline, so offline enforces exactly as online does.
@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_missed_exchange_enforces_on_day_180_as_online_and_one_exchange_ends_it(
    tmp_path: Path, mode: str
) -> None:
    life = _missed_exchange(tmp_path, mode)
    alerts = life["alerts"]
    assert first(alerts, "AUTHORIZATION_EXPIRED") == START + 150 * DAY
    assert first(alerts, "ENFORCEMENT_MODE") == START + 240 * DAY
    enforced = [r for r in life["intervals"] if r.enforcement]
    assert enforced[0].enforcement == Enforcement.AUTHORIZATION_EXPIRED.value
    assert enforced[0].end == START + 240 * DAY  # the interval closed at that instant
    assert enforced[-1].start < START + 260 * DAY + timedelta(minutes=15)
    assert life["state"].enforcement is None
    seen = Counter(a.mnemonic for a in alerts)
    if mode == "online":
        assert seen["COMM_FAILED"] == 1
        return
    # Offline, nobody is told that SSM is unreachable: the warnings say an exchange is due.
    assert seen["COMM_FAILED"] == 0
    expiring = [a for a in alerts if a.mnemonic == "AUTHORIZATION_EXPIRING_SOON"]
    assert expiring and all("a file exchange is due" in a.detail for a in expiring)
    assert len(life["server"]) == len(set(life["server"]))


def test_switching_offline_to_online_and_back_loses_and_doubles_nothing(tmp_path: Path) -> None:
    doc = scenario([30], 90)
    loaded = load_scenario(parse_yaml(yaml.safe_dump(doc, sort_keys=False), "switch.yaml"))
    emitted: list[AlertRow] = []
    agent, ssm, store = runner.setup(loaded, tmp_path, emitted.extend)
    sc = loaded.scenario
    try:
        # Day 0-40 offline, with one exchange; an export on day 40 whose answer comes
        # back only after the site went online on day 45 (and sent those reports itself).
        runner._drive(agent, ssm, sc.start, 40 * DAY, sc.events[:2], sc.registered)
        now = START + 40 * DAY
        request, response = tmp_path / "late-request.json", tmp_path / "late-response.json"
        exchange.export(agent, ssm.client.keys, request, now)
        answer(ssm.simulator, request, response, now)
        agent.offline, agent.ssm = False, ssm  # transport.mode: online
        runner._drive(agent, ssm, now, 20 * DAY, [], False)
        now += 20 * DAY
        with store.read() as tx:
            assert tx.outbox_count() <= 1  # online, the reports went out as they closed
        result = exchange.import_answers(
            agent, ssm.client.keys, [ssm.simulator.root], response, now
        )
        assert result.changed  # the late answer still applies: its acks find nothing left
        agent.offline, agent.ssm = True, None  # and offline again
        runner._drive(agent, ssm, now, 20 * DAY, [], False)
        now += 20 * DAY
        runner.file_exchange(agent, ssm, now)
        with store.read() as tx:
            intervals = tx.intervals()
            outbox = [b.report_id for b in tx.outbox_batch(10**6)]
        piid = agent.state().identity.piid  # type: ignore[union-attr]
        expected = {f"{piid}:{iso(r.start)}" for r in intervals}
        server = [r["id"] for r in ssm.simulator.reports()]
        assert len(server) == len(set(server))
        assert set(server) | set(outbox) == expected and not set(server) & set(outbox)
        assert len(expected) == 80 * 96
    finally:
        store.close()


def test_the_documented_example_runs(tmp_path: Path) -> None:
    example = REPO / "docs" / "examples" / "air-gapped-site.yaml"
    doc = yaml.safe_load(example.read_text())
    life = live(tmp_path, doc)
    seen = Counter(a.mnemonic for a in life["alerts"])
    assert seen["ENFORCEMENT_MODE"] == 0 and seen["COMM_FAILED"] == 0
    assert first(life["alerts"], "AUTHORIZATION_EXPIRING_SOON") == START + 120 * DAY
    assert seen["ID_CERT_RENEW_SUCCESS"] == 1
