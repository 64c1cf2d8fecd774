"""The UCCX HA pair (``source.uccx.nodes``) against two real HTTPS servers on loopback.

The reference is the file snapshot of the cluster, as in ``test_uccx.py``: with the master
on either node, after a failover inside a sample, and in island mode (each agent once),
consumption is what the file gives. A standby Finesse (which lists nobody logged in) is
never read for agents, and when no node can answer the sample fails: never a zero.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.cli.main import main
from ccx_agent.config.schema import UccxSource
from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import Consumption, compute
from ccx_agent.licensing.snapshot import Snapshot, parse_snapshot
from ccx_agent.sources import SourceError
from ccx_agent.sources.cluster import (
    Origin,
    Probe,
    SystemInfo,
    User,
    Watch,
    config_order,
    origin_change,
    parse_system_info,
    union,
)
from ccx_agent.sources.safexml import XmlError
from ccx_agent.sources.uccx import UccxSource as Source
from tests.sources.fake_uccx import (
    SYSTEM_INFO,
    USERS,
    Cluster,
    FakePair,
    FakeUccx,
    Pki,
    file_snapshot,
    make_cluster,
    make_pki,
    split_brain,
    system_info_xml,
)

USER = "ccx-license-reader"
PASSWORD = "s3cr3t-Pa55w0rd!"
RESOURCES = "/adminapi/resource?withCsqs"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return make_cluster(300)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def pair(cluster: Cluster, pki: Pki) -> Iterator[FakePair]:
    with FakePair(cluster, pki, USER, PASSWORD) as servers:
        yield servers


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "uccx-password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


SourceMaker = Callable[..., Source]


@pytest.fixture
def source(pair: FakePair, pki: Pki, password_file: Path) -> SourceMaker:
    def make(clock: Clock | None = None, **uccx: Any) -> Source:
        body: dict[str, Any] = {
            "nodes": pair.urls,
            "user": USER,
            "password_file": password_file,
            "ca_bundle": pki.ca,
            "timeout": "2s",
            "connect_timeout": "2s",
        }
        body.update(uccx)
        cfg = UccxSource.model_validate({"kind": "uccx", "uccx": body})
        return Source(cfg, clock=clock or Clock(), environ={})

    return make


def consumption(snap: Snapshot) -> Consumption:
    return compute(snap, LicenseType.FLEX, ALL_FEATURES)


def reference(cluster: Cluster) -> Consumption:
    return consumption(parse_snapshot(file_snapshot(cluster)))


def fails(src: Source) -> str:
    with pytest.raises(SourceError) as info:
        src.read()
    message = str(info.value)
    assert "\n" not in message and PASSWORD not in message
    return message


# --- the master on either node ----------------------------------------------------------------


@pytest.mark.parametrize("master", [0, 1])
@pytest.mark.parametrize("standby", ["nobody", "503"])
def test_consumption_equals_the_file_snapshot_with_the_master_on_either_node(
    source: SourceMaker, pair: FakePair, cluster: Cluster, master: int, standby: str
) -> None:
    pair.make_master(master)
    pair.nodes[1 - master].standby = standby
    src = source()
    got = consumption(src.read())
    assert got == reference(cluster)
    assert got.tags["flex-premium-seat"] > 0
    # Agents and configuration from the master; the standby only asked what it is.
    assert pair.hits(USERS)[master] == 1 and pair.hits(USERS)[1 - master] == 0
    assert pair.hits(RESOURCES)[master] == 1 and pair.hits(RESOURCES)[1 - master] == 0
    assert pair.hits(SYSTEM_INFO) == [1, 1]
    assert src.origin == Origin(pair.urls[master], (pair.urls[master],))


def test_the_master_moves_between_samples(
    source: SourceMaker, pair: FakePair, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    src = source()
    want = reference(cluster)
    with caplog.at_level(logging.INFO, logger="ccx_agent.sources.uccx"):
        assert consumption(src.read()) == want
        pair.make_master(1)
        assert consumption(src.read()) == want
        assert consumption(src.read()) == want
    assert src.origin is not None and src.origin.live_state == (pair.urls[1],)
    changed = [r.getMessage() for r in caplog.records if "master changed" in r.getMessage()]
    assert changed == [
        f"UCCX master changed: live state now from {pair.urls[1]} (was {pair.urls[0]})"
    ]
    # The configuration is not read again for a failover: the database is replicated.
    assert pair.hits(RESOURCES) == [1, 0]


@pytest.mark.parametrize("mode", ["500", "503", "slow", "cut", "html"])
def test_a_master_failing_within_the_sample_fails_over_to_the_other_node(
    source: SourceMaker, pair: FakePair, cluster: Cluster, mode: str
) -> None:
    """Node A says IN_SERVICE, then fails while its agents are read, while B takes over:
    B is asked again, says IN_SERVICE now, and is read. The sample does not fail."""
    src = source(timeout="1s", connect_timeout="1s")
    src.read()
    pair.nodes[0].fail[USERS] = mode
    pair.nodes[0].on_hit[USERS] = lambda: pair.make_master(1)
    snap = src.read()
    assert consumption(snap) == reference(cluster)
    assert src.origin is not None
    assert src.origin.live_state == (pair.urls[1],) and src.origin.failed_over
    assert any(n.startswith(f"failover: Finesse {pair.urls[0]}{USERS}: ") for n in snap.notes)
    assert pair.hits(SYSTEM_INFO) == [2, 3]  # B asked again within the second sample


def test_a_failing_master_with_the_other_node_still_standby_fails_the_sample(
    source: SourceMaker, pair: FakePair
) -> None:
    """No node in service can answer: the sample fails, and the standby (which lists
    nobody) is never read instead."""
    src = source()
    src.read()
    pair.nodes[0].fail[USERS] = "500"
    message = fails(src)
    assert message == (
        f"no UCCX node could be read for agents: Finesse {pair.urls[0]}{USERS}: HTTP 500 "
        f"Internal Server Error; Finesse {pair.urls[1]} is OUT_OF_SERVICE (Finesse is not the "
        "master node): not read for agents (a Finesse out of service reports nobody logged in)"
    )
    assert pair.hits(USERS) == [2, 0]


def test_a_dark_node_is_not_waited_for(source: SourceMaker, pair: FakePair, cluster: Cluster):
    """The old master's port is closed, or it hangs: the new master is read, at the cost
    of one timeout for the hanging node (both are asked at once); when the old one comes
    back as standby it is asked what it is but not read for agents."""
    src = source(timeout="2s", connect_timeout="2s")
    src.read()
    pair.nodes[0].go_dark()
    pair.make_master(1)
    assert consumption(src.read()) == reference(cluster)
    pair.nodes[0].come_back()
    pair.nodes[0].fail[SYSTEM_INFO] = "slow"  # answers nothing for 30 s
    started = time.monotonic()
    assert consumption(src.read()) == reference(cluster)
    took = time.monotonic() - started
    assert 1.8 <= took < 3.5  # node A's 2 s read timeout, once
    del pair.nodes[0].fail[SYSTEM_INFO]
    assert consumption(src.read()) == reference(cluster)
    assert pair.hits(USERS)[0] == 1  # the first sample only


def test_the_configuration_comes_from_the_other_node_when_the_masters_admin_api_fails(
    source: SourceMaker, pair: FakePair, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    pair.nodes[0].fail[RESOURCES] = "500"
    src = source()
    with caplog.at_level(logging.WARNING, logger="ccx_agent.sources.uccx"):
        assert consumption(src.read()) == reference(cluster)
    assert src.origin == Origin(pair.urls[1], (pair.urls[0],))
    assert f"the UCCX configuration was read from {pair.urls[1]} after another node" in (
        caplog.text
    )


# --- island mode ------------------------------------------------------------------------------


def test_island_mode_counts_each_agent_once(
    source: SourceMaker, pair: FakePair, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, both = split_brain(cluster)
    pair.island(a, b)
    src = source()
    with caplog.at_level(logging.INFO, logger="ccx_agent.sources.uccx"):
        for _ in range(3):
            got = consumption(src.read())
            assert got == reference(both)
    # The overlap is real: a sum of the two sides would count agents twice.
    assert len(reference(a).agents) + len(reference(b).agents) > len(got.agents) + 50
    assert len(got.agents) > max(len(reference(a).agents), len(reference(b).agents))
    assert src.origin == Origin(pair.urls[0], tuple(pair.urls), island=True)
    said = [r for r in caplog.records if r.getMessage().startswith("UCCX island mode:")]
    assert len(said) == 1 and said[0].levelno == logging.WARNING  # once, not per sample
    # The nodes agree again: said once too.
    pair.make_master(1)
    pair.nodes[1].set_users(cluster)
    with caplog.at_level(logging.INFO, logger="ccx_agent.sources.uccx"):
        assert consumption(src.read()) == reference(cluster)
        src.read()
    ended = [r.getMessage() for r in caplog.records if "island mode ended" in r.getMessage()]
    assert ended == [f"UCCX island mode ended: live state from {pair.urls[1]} only"]


def test_island_mode_with_one_side_failing_counts_the_other(
    source: SourceMaker, pair: FakePair
) -> None:
    a, b, _ = split_brain(pair.nodes[0].cluster)
    pair.island(a, b)
    pair.nodes[1].fail[USERS] = "500"
    snap = source().read()
    assert consumption(snap) == reference(a)
    assert any(
        n.startswith("island mode: Finesse ") and n.endswith(f"counted from {pair.urls[0]} only")
        for n in snap.notes
    )


# --- no node can answer: the sample fails -----------------------------------------------------


def test_both_nodes_dark_fails_the_sample(source: SourceMaker, pair: FakePair) -> None:
    src = source()
    src.read()
    for node in pair.nodes:
        node.go_dark()
    message = fails(src)
    assert message == (
        "no UCCX node could be read for agents: "
        f"Finesse {pair.urls[0]}{SYSTEM_INFO}: cannot connect: connection refused; "
        f"Finesse {pair.urls[1]}{SYSTEM_INFO}: cannot connect: connection refused"
    )


def test_both_nodes_out_of_service_fails_the_sample(source: SourceMaker, pair: FakePair) -> None:
    for node in pair.nodes:
        node.status = "OUT_OF_SERVICE"
    message = fails(source())
    assert message.startswith("no UCCX node could be read for agents: ")
    assert message.count("is OUT_OF_SERVICE") == 2
    assert message.count(": not read for agents") == 2
    assert pair.hits(USERS) == [0, 0] and pair.hits(RESOURCES) == [0, 0]


def test_one_node_out_of_service_is_an_error_naming_the_cluster(
    cluster: Cluster, pki: Pki, password_file: Path
) -> None:
    """With ``url`` (one node) that turns out to be the standby: the sample fails, and the
    message says how to name both nodes (SystemInfo names them)."""
    with FakeUccx(cluster, pki, USER, PASSWORD) as fake:
        fake.status = "OUT_OF_SERVICE"
        cfg = UccxSource.model_validate(
            {
                "kind": "uccx",
                "uccx": {"url": fake.url, "user": USER, "password_file": password_file},
            }
        )
        cfg = cfg.model_copy(update={"uccx": cfg.uccx.model_copy(update={"ca_bundle": pki.ca})})
        message = fails(Source(cfg, environ={}))
        assert message == (
            f"Finesse {fake.url} is OUT_OF_SERVICE: not read for agents (a Finesse out of "
            "service reports nobody logged in); Finesse names the cluster's nodes "
            "uccx-a.example.com and uccx-b.example.com: list both in source.uccx.nodes"
        )
        assert fake.hits.get(USERS, 0) == 0


# --- the pure parts ---------------------------------------------------------------------------


def test_system_info_is_parsed() -> None:
    info = parse_system_info(system_info_xml("OUT_OF_SERVICE", "no CTI"))
    assert info == SystemInfo(
        "OUT_OF_SERVICE", "no CTI", "uccx-a.example.com", "uccx-b.example.com"
    )
    assert not info.in_service
    assert parse_system_info(b"<SystemInfo><status>in_service</status></SystemInfo>").in_service
    with pytest.raises(XmlError, match="SystemInfo: no status"):
        parse_system_info(b"<SystemInfo/>")
    with pytest.raises(XmlError, match="expected a <SystemInfo> document"):
        parse_system_info(b"<Users/>")


def test_the_configuration_is_read_from_the_node_in_service_first() -> None:
    up = SystemInfo("IN_SERVICE")
    down = SystemInfo("OUT_OF_SERVICE")
    assert config_order([Probe(0, "a", down), Probe(1, "b", up)]) == [1, 0]
    assert config_order([Probe(0, "a", error="refused"), Probe(1, "b", down)]) == [1, 0]
    assert config_order([Probe(0, "a", up), Probe(1, "b", up)]) == [0, 1]


def test_union_counts_each_login_once_and_a_login_wins() -> None:
    a = [User("Ann", "READY", ()), User("bob", "LOGOUT", ()), User("cy", "TALKING", ())]
    b = [User("ann", "NOT_READY", ()), User("BOB", "HOLD", ()), User("dee", "READY", ())]
    users, twice = union([a, b])
    assert [(u.login_id, u.state) for u in users] == [
        ("Ann", "READY"),  # both logged in: the first node's
        ("BOB", "HOLD"),  # logged out on one side, in on the other: logged in
        ("cy", "TALKING"),
        ("dee", "READY"),
    ]
    assert twice == 2


def test_the_watch_says_each_change_once() -> None:
    watch = Watch()
    a, b = Origin("A", ("A",)), Origin("A", ("B",))
    island = Origin("A", ("A", "B"), island=True)
    assert [m for _, m in watch.observe(a)] == [
        "reading UCCX: configuration from A, live state from A"
    ]
    assert watch.observe(a) == []
    assert [m for _, m in watch.observe(b)] == [
        "UCCX master changed: live state now from B (was A)"
    ]
    assert next(m for _, m in watch.observe(island)).startswith("UCCX island mode: both")
    assert watch.observe(island) == []
    assert [m for _, m in watch.observe(b)] == ["UCCX island mode ended: live state from B only"]


def test_island_alerts_once_each_way_even_across_a_restart() -> None:
    """``origin_change``: what the daemon keeps (``saved``) decides the alerts, so a daemon
    restarted during an island does not raise it again, and still says when it ends."""
    t0 = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
    one = Origin("A", ("A",))
    island = Origin("A", ("A", "B"), island=True)
    doc, alerts = origin_change(None, one, t0)
    assert alerts == [] and doc["since"] == "2027-01-04T08:00:00Z"
    doc, alerts = origin_change(doc, island, t0 + timedelta(minutes=1))
    assert [a.mnemonic for a in alerts] == ["UCCX_ISLAND_MODE"]
    assert alerts[0].detail == (
        "both Finesse nodes say IN_SERVICE (A and B): each agent is counted once (by login "
        "id) until they agree on one master"
    )
    # Restarted: the same origin seen again raises nothing, and keeps its "since".
    again, alerts = origin_change(json.loads(json.dumps(doc)), island, t0 + timedelta(hours=1))
    assert alerts == [] and again == doc
    doc, alerts = origin_change(again, Origin("A", ("B",)), t0 + timedelta(hours=2))
    assert [(a.mnemonic, a.detail) for a in alerts] == [
        ("UCCX_ISLAND_MODE_ENDED", "one master again: live state from B")
    ]
    assert doc["since"] == "2027-01-04T10:00:00Z" and doc["island"] is False


def test_usage_names_the_nodes_it_read(
    pair: FakePair,
    pki: Pki,
    password_file: Path,
    cluster: Cluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ccx-agent usage`` over the pair prints what the file snapshot gives, and says on
    stderr where each part came from."""
    snap = tmp_path / "cluster.json"
    snap.write_text(json.dumps(file_snapshot(cluster)), encoding="utf-8")
    (tmp_path / "file.yaml").write_text(f"source:\n  kind: file\n  path: {snap}\n")
    (tmp_path / "pair.yaml").write_text(
        "source:\n  kind: uccx\n  uccx:\n"
        f"    nodes: [{pair.urls[0]}, {pair.urls[1]}]\n    user: {USER}\n"
        f"    password_file: {password_file}\n    ca_bundle: {pki.ca}\n"
    )
    pair.make_master(1)
    outputs = []
    for name in ("file.yaml", "pair.yaml"):
        assert main(["--config", str(tmp_path / name), "usage"]) == 0
        out, err = capsys.readouterr()
        outputs.append(out)
    assert outputs[0] == outputs[1]
    assert (
        f"note: read from UCCX: configuration from {pair.urls[1]}, live state from {pair.urls[1]}\n"
    ) in err
    assert PASSWORD not in err
    assert main(["--config", str(tmp_path / "pair.yaml"), "check-config"]) == 0
