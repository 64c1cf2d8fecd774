"""``ccx-agent run`` reading a two-node UCCX cluster (``source.uccx.nodes``) through a
failover and an island: real processes, the fake cluster as two HTTPS servers on loopback,
the SSM simulator, a UDP syslog listener. Every wait polls with a deadline.

The cluster's consumption is the same from start to end (the island's union is the
cluster), so every interval's usage must be that one: a failover that produced a zero
sample, or an island counted twice, would show as an interval with another number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ccx_agent.config.schema import load
from ccx_agent.licensing.consumption import compute
from ccx_agent.licensing.snapshot import parse_snapshot
from tests.daemon.conftest import (
    SECRETS,
    Daemon,
    DatagramListener,
    Instance,
    Sim,
    make_instance,
    syslog_messages,
    wait_until,
)
from tests.sources.fake_uccx import (
    USERS,
    FakePair,
    file_snapshot,
    make_cluster,
    make_pki,
    split_brain,
)

USER = "ccx-license-reader"
PASSWORD = "ha-Pa55w0rd-4c1d"  # distinctive: the secrets check looks for it everywhere


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[FakePair]:
    pki = make_pki(tmp_path)
    with FakePair(make_cluster(40), pki, USER, PASSWORD) as servers:
        servers.ca = pki.ca  # type: ignore[attr-defined]
        yield servers


def instance(tmp_path: Path, sim: Sim, pair: FakePair, syslog: DatagramListener) -> Instance:
    SECRETS.add(PASSWORD)
    password = tmp_path / "uccx-password"
    password.write_text(PASSWORD + "\n", encoding="utf-8")
    password.chmod(0o600)

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["report"]["interval"] = "2s"
        cfg["source"] = {
            "kind": "uccx",
            "uccx": {
                "nodes": pair.urls,
                "user": USER,
                "password_file": str(password),
                "ca_bundle": str(pair.ca),  # type: ignore[attr-defined]
                "timeout": "2s",
                "connect_timeout": "1s",
            },
        }

    return make_instance(
        tmp_path / "inst", sim, f"udp://127.0.0.1:{syslog.port}", bought=1000, tweak=tweak
    )


def expected(inst: Instance, pair: FakePair) -> dict[str, int]:
    """The cluster's consumption, from its file snapshot, per tag."""
    cfg = load(inst.config)
    snap = parse_snapshot(file_snapshot(pair.nodes[0].cluster))
    want = dict(compute(snap, cfg.license.type, cfg.license.premium_features).tags)
    assert sum(want.values()) > 20
    return want


def source_samples(url: str) -> dict[str, float]:
    text = requests.get(url, timeout=5).text
    return {
        s.labels["outcome"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "ccx_source_samples_total"
    }


def mnemonics(syslog: DatagramListener, name: str) -> list[str]:
    return [m for m in syslog_messages(syslog.snapshot()) if f"-{name}: " in m]


def test_the_daemon_reads_through_a_failover_and_an_island(
    sim: Sim, tmp_path: Path, pair: FakePair, udp_syslog: DatagramListener
) -> None:
    inst = instance(tmp_path, sim, pair, udp_syslog)
    want = expected(inst, pair)
    daemon = Daemon(inst)
    metrics = daemon.metrics_url()

    def samples_on(node: int, more: int) -> None:
        at = pair.hits(USERS)[node] + more
        wait_until(
            f"{more} samples read from node {node}",
            lambda: daemon.assert_alive() or pair.hits(USERS)[node] >= at,
            timeout=40,
        )

    samples_on(0, 3)
    assert inst.status(in_process=True)["source"]["live_state_from"] == [pair.urls[0]]

    # Failover: node A goes dark, node B is master; ten samples with A dark.
    pair.nodes[0].go_dark()
    pair.make_master(1)
    samples_on(1, 10)
    source = inst.status(in_process=True)["source"]
    assert source["live_state_from"] == [pair.urls[1]]
    assert source["configuration_from"] == pair.urls[0]  # the one read at the start, kept
    assert source["island"] is False
    # A comes back as the standby: asked what it is, never read for agents.
    pair.nodes[0].come_back()
    read_from_a = pair.hits(USERS)[0]
    samples_on(1, 3)
    assert pair.hits(USERS)[0] == read_from_a

    # Island mode: both in service, different overlapping agents logged in.
    a, b, _ = split_brain(pair.nodes[0].cluster)
    pair.island(a, b)
    udp_syslog.wait("UCCX_ISLAND_MODE", lambda _: mnemonics(udp_syslog, "UCCX_ISLAND_MODE"), 30)
    samples_on(0, 3)
    assert inst.status(in_process=True)["source"]["island"] is True

    # One master again.
    for node in pair.nodes:
        node.set_users(node.cluster)
    pair.make_master(1)
    udp_syslog.wait(
        "UCCX_ISLAND_MODE_ENDED",
        lambda _: mnemonics(udp_syslog, "UCCX_ISLAND_MODE_ENDED"),
        30,
    )
    samples_on(1, 3)
    outcomes = source_samples(metrics)
    code, _ = daemon.stop()
    assert code == 0

    # No failed sample, no LICENSE_COMPUTATION_FAILED, each island alert once.
    assert outcomes.get("error", 0) == 0 and outcomes["ok"] >= 22
    store = inst.store()
    try:
        with store.read() as tx:
            alerts = [r.mnemonic for r in tx.alerts()]
            intervals = tx.intervals()
            opened = tx.open_intervals()
    finally:
        store.close()
    assert "LICENSE_COMPUTATION_FAILED" not in alerts
    assert alerts.count("UCCX_ISLAND_MODE") == 1 and alerts.count("UCCX_ISLAND_MODE_ENDED") == 1
    assert not mnemonics(udp_syslog, "LICENSE_COMPUTATION_FAILED")
    assert all(o.failures == 0 for o in opened)
    # Every interval with usage has the cluster's: no dip to zero, no double count.
    measured = [r for r in intervals if any(t.usage is not None for t in r.tags.values())]
    assert len(measured) >= 10
    for record in measured:
        got = {tag: t.usage for tag, t in record.tags.items() if tag in want}
        assert got == want, (record.start, got)
    # The log says when the master changed, and the island, once each.
    events = [d.get("event", "") for d in daemon.logs()]
    assert sum(e.startswith("UCCX master changed: live state now from") for e in events) == 1
    assert sum(e.startswith("UCCX island mode: both Finesse") for e in events) == 1
    assert sum(e.startswith("UCCX island mode ended") for e in events) == 1


def test_both_nodes_dark_fail_the_samples(
    sim: Sim, tmp_path: Path, pair: FakePair, udp_syslog: DatagramListener
) -> None:
    """As with one node today: LICENSE_COMPUTATION_FAILED, and no usage for the samples
    (never a zero)."""
    inst = instance(tmp_path, sim, pair, udp_syslog)
    want = expected(inst, pair)
    daemon = Daemon(inst)
    metrics = daemon.metrics_url()
    wait_until("a good sample", lambda: source_samples(metrics).get("ok", 0) >= 1, 30)
    for node in pair.nodes:
        node.go_dark()
    udp_syslog.wait(
        "LICENSE_COMPUTATION_FAILED",
        lambda _: mnemonics(udp_syslog, "LICENSE_COMPUTATION_FAILED"),
        30,
    )
    wait_until("six failed samples", lambda: source_samples(metrics).get("error", 0) >= 6, 30)
    daemon.stop()
    (line, *_) = [
        m for m in mnemonics(udp_syslog, "LICENSE_COMPUTATION_FAILED") if m.startswith("%MCVD")
    ]
    # Node A went dark first: the first failed sample may still have found B standby, and
    # may have caught A's connections being cut rather than refused, after A's SystemInfo
    # said in service and before its Users answered: both nodes named, in order, each with
    # its reason.
    assert re.search(
        f": no UCCX node could be read for agents: Finesse {re.escape(pair.urls[0])}"
        f"/finesse/api/(SystemInfo|Users): [^;]+; Finesse {re.escape(pair.urls[1])}",
        line,
    ), line
    store = inst.store()
    try:
        with store.read() as tx:
            intervals = tx.intervals()
    finally:
        store.close()
    measured = [r for r in intervals if any(t.usage is not None for t in r.tags.values())]
    assert measured and len(measured) < len(intervals)  # the dark ones have none
    for record in measured:
        assert {tag: t.usage for tag, t in record.tags.items() if tag in want} == want
    assert intervals[-1].status == "NO_DATA"
