"""`ccx-agent run` as a real process: systemd notify, syslog on the wire, signals, crashes,
reloads, a dead syslog target, a bad config, and no secret in any output.

The SSM simulator is the real HTTPS server; the agent registers with the real CLI; timers
are seconds instead of minutes. Every wait polls against a deadline.
"""

from __future__ import annotations

import itertools
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccx_agent.licensing.alerts import CATALOGUE, Alert, AlertFormat, lines, ooc_countdown
from tests.daemon.conftest import (
    CAPTURED,
    SECRETS,
    TAG,
    Daemon,
    DatagramListener,
    Instance,
    Received,
    Sim,
    TcpListener,
    assert_no_secrets,
    json_lines,
    make_instance,
    run_cli,
    syslog_messages,
    wait_until,
)

RFC3164 = re.compile(
    rb"^<(?P<pri>\d{1,3})>(?P<ts>(?P<mon>[A-Z][a-z]{2}) (?P<day>[ 1-3]\d) "
    rb"(?P<hms>\d\d:\d\d:\d\d)) (?P<host>\S+) (?P<tag>ccx-agent)\[(?P<pid>\d+)\]: (?P<msg>.*)$",
    re.DOTALL,
)
RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>\S+) "
    rb"(?P<app>ccx-agent) (?P<pid>\d+) - - (?P<msg>.*)$",
    re.DOTALL,
)
USER, LOCAL7 = 1, 23
OOC = ("SYSTEM_TO_ENTER_OOC_STATE", "SYSTEM_TO_ENTER_OOC_STATE_SHORTLY", "SYSTEM_IN_OOC_STATE")
FMT = AlertFormat(node_id="uccxpubsu1")


def mnemonic(msg: str) -> str | None:
    m = re.match(r"^%(?:MCVD-LIB_LICENSE|UC_LIB_LICENSE)-\d-([A-Z_]+): ", msg)
    return m.group(1) if m else None


def local_host() -> str:
    return socket.gethostname()


# --- the main scenario: notify + UDP rfc3164 + the full countdown ------------------------


@dataclass
class Scenario:
    inst: Instance
    daemon: Daemon
    notify: list[Received]
    syslog: list[Received]
    status_while_running: dict[str, Any]
    exit_code: int
    stop_s: float
    stop_sent_at: float


@pytest.fixture(scope="module")
def scenario(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """One daemon run shared by the notify, countdown, status and secrets tests: 13 agents
    logged in against 10 licenses, a 2 s report interval, the systemd watchdog at 2 s."""
    base = tmp_path_factory.mktemp("scenario")
    notify = DatagramListener(socket.AF_UNIX, str(base / "notify.sock"))
    udp = DatagramListener()

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["report"]["interval"] = "2s"
        cfg["source"]["steps"] = [{"at": "0s", "agents": 13}]

    inst = make_instance(base / "agent", sim, f"udp://127.0.0.1:{udp.port}", tweak=tweak)
    daemon = Daemon(
        inst, env={"NOTIFY_SOCKET": str(base / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    )
    try:
        udp.wait(
            "SYSTEM_IN_OOC_STATE in both styles",
            lambda items: sum("-SYSTEM_IN_OOC_STATE: " in m for m in syslog_messages(items)) >= 2,
            timeout=40,
        )
        status = inst.status()
        daemon.assert_alive()
        stop_sent_at = time.monotonic()
        code, took = daemon.stop()
        notify.wait("STOPPING=1", lambda items: any(b"STOPPING=1" in r.data for r in items), 5)
        yield Scenario(
            inst, daemon, notify.snapshot(), udp.snapshot(), status, code, took, stop_sent_at
        )
    finally:
        daemon.cleanup()
        notify.close()
        udp.close()


def test_ready_watchdog_stopping_and_exit_0(scenario: Scenario) -> None:
    msgs = [r.text.split("\n") for r in scenario.notify]
    kinds = [m[0] for m in msgs]
    # READY=1 first, with a STATUS= line in the same datagram.
    ready = kinds.index("READY=1")
    assert ready == 0, kinds
    assert any(a.startswith("STATUS=") and len(a) > len("STATUS=") for a in msgs[ready]), msgs
    # The watchdog at WATCHDOG_USEC/2 = 1 s: at least two pings after READY, before STOPPING.
    stopping = kinds.index("STOPPING=1")
    pings = [i for i, k in enumerate(kinds) if k == "WATCHDOG=1"]
    assert len([i for i in pings if ready < i < stopping]) >= 2, kinds
    # Never more than ~1 s apart while the daemon ran (2 s would let systemd kill it).
    times = [scenario.notify[i].at for i in pings if i < stopping]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 1.9, gaps
    # STATUS= after the reports (the licensing state), STOPPING=1 after the SIGTERM only.
    assert any(k.startswith("STATUS=") and "REGISTERED" in k for k in kinds[ready + 1 :]), kinds
    assert scenario.notify[stopping].at >= scenario.stop_sent_at
    assert all(k != "READY=1" for k in kinds[1:])
    assert scenario.exit_code == 0
    assert scenario.stop_s < 5, f"SIGTERM took {scenario.stop_s:.1f}s"
    events = [d.get("event") for d in json_lines(scenario.daemon.stdout)]
    assert "ready" in events and "stopped" in events


def _expected_countdown() -> list[str]:
    out: list[str] = []
    for n, is_last in ((1, False), (2, False), (3, False), (4, True)):
        out += lines(ooc_countdown(timedelta(seconds=2 * (5 - n)), [TAG], is_last), FMT)
    out += lines(
        Alert("SYSTEM_IN_OOC_STATE", f"{TAG} locked usage=13 entitlement=10", tags=(TAG,)), FMT
    )
    return out


def test_countdown_lines_exact_and_in_order_over_udp_rfc3164(scenario: Scenario) -> None:
    expected = _expected_countdown()
    # Spelled out once, byte for byte, so the builder above cannot drift with the product.
    assert expected[2] == (
        "%MCVD-LIB_LICENSE-1-SYSTEM_TO_ENTER_OOC_STATE: [REPORT_ENTITLE] "
        "com.cisco.smartlicense.util.SmartLicenseUtil This Product Instance will enter Out "
        "of Compliance state because of insufficient licenses.: This Product Instance will "
        "enter Out of Compliance state in =6 seconds"
    )
    assert expected[7] == (
        "%UC_LIB_LICENSE-0-SYSTEM_TO_ENTER_OOC_STATE_SHORTLY: %[The time remaining to enter "
        "OOC state=2 seconds][AppID=Cisco Unified CCX Cluster View Daemon][ClusterID=]"
        "[NodeID=uccxpubsu1]: The time required for the Product to be in compliance is about "
        "to expire. Else, you will have to procure more licenses."
    )
    assert expected[9] == (
        "%UC_LIB_LICENSE-1-SYSTEM_IN_OOC_STATE: %[AppID=Cisco Unified CCX Cluster View Daemon]"
        "[ClusterID=][NodeID=uccxpubsu1]: This Product Instance is currently in Out of "
        "Compliance state because of insufficient licenses."
    )
    got = [m for m in syslog_messages(scenario.syslog) if mnemonic(m) in OOC]
    assert got == expected

    host = local_host().split(".", 1)[0]
    now = datetime.now(UTC)
    for r in scenario.syslog:
        m = RFC3164.match(r.data)
        assert m, r.data
        msg = m["msg"].decode()
        name = mnemonic(msg)
        assert name in CATALOGUE, msg
        assert int(m["pri"]) == USER * 8 + CATALOGUE[name].severity, r.data
        assert m["host"].decode() == host
        assert int(m["pid"]) == scenario.daemon.pid
        assert not r.data.endswith(b"\n")
        # Local time, no year: within two minutes of now (either side of a new year aside).
        stamp = datetime.strptime(
            f"{now.astimezone().year} {m['ts'].decode()}", "%Y %b %d %H:%M:%S"
        ).replace(tzinfo=now.astimezone().tzinfo)
        assert abs((stamp - now).total_seconds()) < 120, m["ts"]
    pris = {
        mnemonic(x): int(RFC3164.match(r.data)["pri"])
        for r, x in zip(scenario.syslog, syslog_messages(scenario.syslog), strict=True)  # type: ignore[index]
    }
    assert pris["SYSTEM_TO_ENTER_OOC_STATE"] == 9
    assert pris["SYSTEM_TO_ENTER_OOC_STATE_SHORTLY"] == 8
    assert pris["AGENT_READY"] == 14


def test_alerts_in_the_log_name_their_tags(scenario: Scenario) -> None:
    """The countdown's syslog lines cannot name the tag (checked byte for byte above);
    its log line does, like SYSTEM_IN_OOC_STATE's, and an alert about no tag has []."""
    alerts = scenario.daemon.events("alert")
    by_mnemonic: dict[str, list[list[str]]] = {}
    for a in alerts:
        by_mnemonic.setdefault(a["mnemonic"], []).append(a["tags"])
    assert by_mnemonic["SYSTEM_TO_ENTER_OOC_STATE"] == [[TAG]] * 3
    assert by_mnemonic["SYSTEM_TO_ENTER_OOC_STATE_SHORTLY"] == [[TAG]]
    assert by_mnemonic["SYSTEM_IN_OOC_STATE"] == [[TAG]]
    assert by_mnemonic["AGENT_READY"] == [[]]
    countdown = [a for a in alerts if a["mnemonic"].startswith("SYSTEM_TO_ENTER_OOC_STATE")]
    assert [a["detail"] for a in countdown] == [
        f"This Product Instance will enter Out of Compliance state in ={s} seconds"
        for s in (8, 6, 4, 2)
    ]


def test_status_json_while_running_reads_the_db(scenario: Scenario) -> None:
    doc = scenario.status_while_running
    assert doc["registration"]["state"] == "REGISTERED"
    assert doc["registration"]["piid"] == scenario.inst.piid
    assert doc["tags"][TAG]["usage"] == 13
    assert doc["tags"][TAG]["entitlement"] == 10
    assert doc["outbox"] == 0 or isinstance(doc["outbox"], int)


def test_no_secret_in_any_output(scenario: Scenario) -> None:
    assert scenario.inst.token in SECRETS
    everything = [
        scenario.daemon.stdout,
        scenario.daemon.stderr,
        *(r.data.decode("utf-8", "replace") for r in scenario.syslog),
        *(r.data.decode("utf-8", "replace") for r in scenario.notify),
        *(p.read_text(errors="replace") for p in scenario.inst.dir.glob("*.out")),
        *(p.read_text(errors="replace") for p in scenario.inst.dir.glob("*.err")),
    ]
    assert all(everything[:2]) or everything[0]  # the daemon did log
    assert_no_secrets(everything)


# --- TCP, RFC 5424, octet counting ------------------------------------------------------


def test_tcp_rfc5424_octet_counting_local7(sim: Sim, tmp_path: Path) -> None:
    tcp = TcpListener()
    try:

        def tweak(cfg: dict[str, Any]) -> None:
            cfg["alerts"]["syslog"].update({"format": "rfc5424", "facility": "local7"})

        inst = make_instance(tmp_path, sim, f"tcp://127.0.0.1:{tcp.port}", tweak=tweak)
        daemon = Daemon(inst)
        tcp.wait_messages(
            "AGENT_READY in both styles",
            lambda ms: sum(b"-AGENT_READY: " in m for m in ms) >= 2,
            timeout=20,
        )
        # Stopped once it runs steadily: a stop during start-up is its own test (a bug).
        _wait_reports(sim, inst, daemon, 1)
        code, _ = daemon.stop()
        assert code == 0
        msgs = tcp.messages()
        # The whole stream is frames and nothing else: re-framing gives it back exactly.
        raw = b"".join(bytes(s) for s in tcp.streams)
        assert raw == b"".join(b"%d %s" % (len(m), m) for m in msgs)
        assert len(tcp.streams) == 1, "one persistent connection"
        now = datetime.now(UTC)
        seen: dict[str, int] = {}
        for data in msgs:
            m = RFC5424.match(data)
            assert m, data
            name = mnemonic(m["msg"].decode())
            assert name in CATALOGUE, data
            assert int(m["pri"]) == LOCAL7 * 8 + CATALOGUE[name].severity
            assert m["host"].decode() == local_host()
            assert int(m["pid"]) == daemon.pid
            stamp = datetime.strptime(m["ts"].decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            assert abs((stamp - now).total_seconds()) < 120
            assert not data.endswith(b"\n")
            seen[name] = int(m["pri"])
        assert seen["AGENT_READY"] == 190
        ready = [m for m in msgs if b"-AGENT_READY: " in m]
        assert ready[0].endswith(
            b"%MCVD-LIB_LICENSE-6-AGENT_READY: [AGENT] com.cisco.smartlicense.util."
            b"SmartLicenseUtil The Smart Licensing agent has started and is ready.: "
            b"license type flex, source scripted, report every 1s"
        )
        assert ready[1].endswith(
            b" - - %UC_LIB_LICENSE-6-AGENT_READY: %[AppID=Cisco Unified CCX Cluster View Daemon]"
            b"[ClusterID=][NodeID=uccxpubsu1]: The Smart Licensing agent has started and is ready."
        )
    finally:
        tcp.close()


# --- stop / restart and crash / restart: nothing lost, nothing counted twice ----------------


def _outbox_ids(inst: Instance) -> list[str]:
    store = inst.store()
    try:
        with store.read() as tx:
            return [item.report_id for item in tx.outbox_batch(1_000_000)]
    finally:
        store.close()


def _check_reports(sim: Sim, inst: Instance, settled: bool = False) -> list[str]:
    """Exactly once: every report the agent queued is at the simulator once, or still in
    the outbox (a stop cuts an exchange in flight: that report goes at the next start).

    A stop can cut the exchange after the server committed the report and before its
    answer came back: then the report is at the server and still queued. The next
    exchange must settle it without a second count: ``sync`` (the real CLI) sends it
    again, and the check runs once more, where no report may be both."""
    reports = sim.reports(inst.piid)
    sim_ids = [r["id"] for r in reports]
    # The report id is unique in the simulator's table; an interval is not: one reported
    # twice under two ids (a report id not derived from its start) would show here.
    starts = [r["start"] for r in reports]
    assert len(starts) == len(set(starts)), "an interval was counted twice"
    assert sim_ids == [f"{inst.piid}:{start}" for start in starts]
    agent_ids = inst.reported_ids()
    assert agent_ids, "the agent queued nothing"
    waiting = _outbox_ids(inst)
    if set(waiting) & set(sim_ids) and not settled:
        done = run_cli(inst.config, "sync")
        assert done.returncode == 0, done.stderr
        return _check_reports(sim, inst, settled=True)
    assert not set(waiting) & set(sim_ids), "a report both delivered and still queued"
    assert sorted(sim_ids + waiting) == sorted(agent_ids)
    return sim_ids


def _check_contiguous(inst: Instance) -> list[Any]:
    store = inst.store()
    try:
        with store.read() as tx:
            rows = tx.intervals()
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    for a, b in itertools.pairwise(rows):
        assert a.end == b.start, f"gap or overlap in the interval history: {a.end} {b.start}"
    return rows


def _wait_reports(sim: Sim, inst: Instance, daemon: Daemon, n: int, timeout: float = 20):
    def enough() -> list[dict[str, Any]] | None:
        daemon.assert_alive()
        got = sim.reports(inst.piid)
        return got if len(got) >= n else None

    return wait_until(f"{n} reports at the simulator", enough, timeout, step=0.1)


def test_sigterm_then_restart_loses_and_duplicates_nothing(sim: Sim, tmp_path: Path) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9")
    first = Daemon(inst)
    _wait_reports(sim, inst, first, 2)
    code, took = first.stop()
    assert code == 0 and took < 5
    assert first.events("stopped")
    before = len(sim.reports(inst.piid))

    second = Daemon(inst)
    _wait_reports(sim, inst, second, before + 2)
    code, _ = second.stop()
    assert code == 0
    _check_reports(sim, inst)
    rows = _check_contiguous(inst)
    assert sum(r.status == "REPORTED" for r in rows) >= 4


def test_kill_9_mid_report_then_restart(sim: Sim, tmp_path: Path) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9")
    first = Daemon(inst)
    _wait_reports(sim, inst, first, 2)
    # Just after a report boundary, while that report is being closed and sent.
    now = time.time()
    time.sleep(1 - (now % 1) + 0.03)
    first.kill9()
    killed_at = datetime.now(UTC)
    down_from = time.monotonic()
    n_at_kill = len(sim.reports(inst.piid))
    # Down for more than two whole report intervals (1 s each).
    wait_until("3.2 s of downtime", lambda: time.monotonic() - down_from > 3.2, 10)
    restarted_at = datetime.now(UTC)
    second = Daemon(inst)
    _wait_reports(sim, inst, second, n_at_kill + 2)

    def reported_after_restart() -> bool:
        store = inst.store()
        try:
            with store.read() as tx:
                rows = tx.intervals()
        finally:
            store.close()
        return any(r.start >= restarted_at and r.status == "REPORTED" for r in rows)

    # Reporting again after the restart (an interval of its own life REPORTED: not "the
    # very last one", as a 1 s interval a loaded machine gave no sample is NO_DATA).
    wait_until("an interval after the restart reported", reported_after_restart, 20, 0.1)
    code, _ = second.stop()
    assert code == 0

    _check_reports(sim, inst)
    rows = _check_contiguous(inst)
    down = [r for r in rows if r.start >= killed_at and r.end <= restarted_at]
    assert len(down) >= 2, [(r.start, r.status) for r in rows]
    assert {r.status for r in down} == {"NO_DATA"}, [(r.start, r.status) for r in down]


# --- SIGHUP -------------------------------------------------------------------------------


def test_sighup_bad_config_kept_then_good_config_applied(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    def tweak(cfg: dict[str, Any]) -> None:
        # A long countdown: a SYSTEM_TO_ENTER_OOC_STATE alert at every 1 s report.
        cfg["compliance"] = {"ooc_threshold": 200}
        cfg["source"]["steps"] = [{"at": "0s", "agents": 13}]

    inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}", tweak=tweak)
    good = yaml.safe_load(inst.config.read_text())
    daemon = Daemon(inst)
    daemon.wait_event("ready")

    def uc_countdowns(node: str):
        def count(items: list[Received]) -> int:
            return sum(
                m.startswith("%UC_LIB_LICENSE-1-SYSTEM_TO_ENTER_OOC_STATE:")
                and m.endswith(f"[NodeID={node}]: {CATALOGUE[OOC[0]].description}")
                for m in syslog_messages(items)
            )

        return count

    udp_syslog.wait("a first countdown alert", uc_countdowns("uccxpubsu1"), 15)

    # 1. A config that is not YAML: refused, the daemon goes on with the old one.
    inst.config.write_text("alerts: [node_id: {\n", encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_event("reload refused: bad config, keeping the old one")
    assert refused[0].get("level") == "error"
    n_reports = len(sim.reports(inst.piid))
    n_alerts = uc_countdowns("uccxpubsu1")(udp_syslog.snapshot())
    _wait_reports(sim, inst, daemon, n_reports + 2)
    udp_syslog.wait(
        "countdown alerts after the refused reload",
        lambda items: uc_countdowns("uccxpubsu1")(items) >= n_alerts + 2,
        15,
    )

    # 2. A valid config with an unknown key: refused too, one line per problem.
    bad = yaml.safe_load(yaml.safe_dump(good))
    bad["alerts"]["node_idd"] = "typo"
    inst.write(bad)
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_event("reload refused: bad config, keeping the old one", count=2)
    assert "node_idd" in str(refused[-1])
    daemon.assert_alive()

    # 3. A good config with a new node id: later UC lines carry it, and only it.
    changed = yaml.safe_load(yaml.safe_dump(good))
    changed["alerts"]["node_id"] = "uccxpubsu2"
    inst.write(changed)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config reloaded")
    reloaded_at = time.monotonic()
    udp_syslog.wait("countdown alerts with NodeID=uccxpubsu2", uc_countdowns("uccxpubsu2"), 15)
    n_reports = len(sim.reports(inst.piid))
    _wait_reports(sim, inst, daemon, n_reports + 1)
    code, _ = daemon.stop()
    assert code == 0
    # The reload runs between two reports: once a new-id line came, no old-id line follows.
    items = udp_syslog.snapshot()
    msgs = syslog_messages(items)
    first_new = next(i for i, m in enumerate(msgs) if "[NodeID=uccxpubsu2]" in m)
    assert items[first_new].at >= reloaded_at - 0.5
    assert not [m for m in msgs[first_new:] if "[NodeID=uccxpubsu1]" in m]
    _check_reports(sim, inst)


# --- syslog target down -------------------------------------------------------------------


def test_syslog_down_udp_and_tcp_reports_still_flow(sim: Sim, tmp_path: Path) -> None:
    # A TCP port that refuses connections: bound, never listening, held for the test.
    closed_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed_tcp.bind(("127.0.0.1", 0))
    tcp_port = closed_tcp.getsockname()[1]
    # A UDP port with nothing bound: datagrams to it are refused (ICMP port unreachable).
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    udp_port = probe.getsockname()[1]
    probe.close()
    try:
        insts = [
            make_instance(tmp_path / "udp", sim, f"udp://127.0.0.1:{udp_port}"),
            make_instance(tmp_path / "tcp", sim, f"tcp://127.0.0.1:{tcp_port}"),
        ]
        daemons = [Daemon(i) for i in insts]
        for inst, daemon in zip(insts, daemons, strict=True):
            _wait_reports(sim, inst, daemon, 2)
        for inst in insts:
            doc = inst.status(in_process=True)
            assert doc["registration"]["state"] == "REGISTERED"
            assert doc["authorization"]["state"] == "AUTHORIZED"
            assert doc["communication"]["ok"] is True
        # UDP learns of a refusal (ICMP) only at the next send: said once, never "restored".
        udp_events = [str(d.get("event")) for d in daemons[0].logs()]
        assert sum("UDP target refuses datagrams" in e for e in udp_events) == 1
        assert not [e for e in udp_events if "reachable again" in e]
        assert daemons[1].events("syslog target unreachable"), daemons[1].stdout[-2000:]
        # Both stopped at once; each drains its queue for at most SYSLOG_DRAIN_S (5 s).
        started = time.monotonic()
        for daemon in daemons:
            daemon.signal(signal.SIGTERM)
        for inst, daemon in zip(insts, daemons, strict=True):
            code = daemon.proc.wait(timeout=15)
            took = time.monotonic() - started
            daemon.capture()
            assert code == 0, daemon.stderr[-2000:]
            assert took < 8, f"{inst.cfg['alerts']['syslog']['target']}: exit took {took:.1f}s"
            _check_reports(sim, inst)
    finally:
        closed_tcp.close()


# --- a bad config at start ------------------------------------------------------------------


def test_bad_config_at_start_exits_78_one_line_per_problem(sim: Sim, tmp_path: Path) -> None:
    inst = make_instance(tmp_path, sim, "udp://127.0.0.1:9", register=False)
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["report"]["interval"] = "soon"
    cfg["alerts"]["colour"] = "red"
    inst.write(cfg)
    done = run_cli(inst.config, "run", timeout=30)
    assert done.returncode == 78, (done.stdout, done.stderr)
    problems = done.stderr.splitlines()
    assert len(problems) == 2, problems
    line = re.compile(rf"^{re.escape(str(inst.config))}:(\d+): ([\w.]+): \S.*$")
    keys = set()
    text = inst.config.read_text().splitlines()
    for p in problems:
        m = line.match(p)
        assert m, p
        keys.add(m[2])
        # The line number points at the key.
        assert m[2].split(".")[-1] in text[int(m[1]) - 1], (p, text[int(m[1]) - 1])
    assert keys == {"report.interval", "alerts.colour"}
    for out in done.stdout.splitlines():
        assert json_lines(out), f"stdout holds something else than JSON logs: {out!r}"
    assert not (inst.state_dir / "ccx-agent.db").exists()


# --- secrets: a uccx source with a password --------------------------------------------------


def test_uccx_password_never_printed(
    sim: Sim, tmp_path: Path, udp_syslog: DatagramListener
) -> None:
    password = "Uccx-Pa55w0rd-7f3e1c"
    SECRETS.add(password)
    nobody = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    nobody.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    port = nobody.getsockname()[1]

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["source"] = {
            "kind": "uccx",
            "uccx": {
                "url": f"https://127.0.0.1:{port}",
                "user": "administrator",
                "password": password,
                "timeout": "1s",
                "connect_timeout": "1s",
            },
        }

    try:
        inst = make_instance(tmp_path, sim, f"udp://127.0.0.1:{udp_syslog.port}", tweak=tweak)
        daemon = Daemon(inst)
        udp_syslog.wait(
            "LICENSE_COMPUTATION_FAILED",
            lambda items: any("-LICENSE_COMPUTATION_FAILED: " in m for m in syslog_messages(items)),
            20,
        )
        # A reload whose config is wrong exactly at the password.
        cfg = yaml.safe_load(inst.config.read_text())
        cfg["source"]["uccx"]["password"] = [password]
        inst.write(cfg)
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload refused: bad config, keeping the old one")
        code, _ = daemon.stop()
        assert code == 0
        for args in (("check-config",), ("run",), ("status", "--json")):
            run_cli(inst.config, *args)
        assert CAPTURED
        assert_no_secrets()
    finally:
        nobody.close()


# --- SIGTERM during start-up -------------------------------------------------------------------


def test_sigterm_during_first_sample_exits_0(sim: Sim, tmp_path: Path) -> None:
    """A slow source holds start-up in the first sample; SIGTERM then must still exit 0."""
    marker = tmp_path / "sampling"
    program = (
        "import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(1.0); "
        "print(open(sys.argv[2]).read())"
    )
    snapshot = Path(__file__).parent.parent / "data" / "snapshots" / "mixed.json"

    def tweak(cfg: dict[str, Any]) -> None:
        cfg["source"] = {
            "kind": "command",
            "command": [sys.executable, "-c", program, str(marker), str(snapshot)],
        }

    inst = make_instance(tmp_path / "agent", sim, "udp://127.0.0.1:9", tweak=tweak)
    for _ in range(3):
        marker.unlink(missing_ok=True)
        daemon = Daemon(inst)
        # The signal handlers are installed: run() is in its first sample.
        wait_until("the first sample to start", marker.exists, 20, step=0.01)
        code, _ = daemon.stop()
        assert code == 0, daemon.stderr[-1500:]
        assert "Traceback" not in daemon.stderr


def test_simulator_tokens_never_start_with_a_dash(sim: Sim) -> None:
    """A token starting with '-' would read as an option (`register -x…`): the simulator
    never makes one (token_urlsafe alone did, one time in 64)."""
    account = "acct-dash"
    sim.admin("/admin/licenses", {"tag": TAG, "count": 1, "account": account})
    tokens = [sim.admin("/admin/tokens", {"account": account})["token"] for _ in range(400)]
    SECRETS.update(tokens)
    assert len(set(tokens)) == 400
    assert not [t for t in tokens if t.startswith("-")]
