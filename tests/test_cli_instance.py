"""The instance commands (register, deregister, renew, status) as a user runs them:
one line of result, a non-zero exit with the reason, never a traceback."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccx_agent.cli import commands
from ccx_agent.licensing.interval import IntervalRecord, IntervalStatus, TagRecord
from ccx_agent.licensing.timeutil import iso
from ccx_agent.simulator.server import RunningServer, start
from ccx_agent.store.db import DB_NAME, Store

AGENTS = Path(__file__).parent / "data" / "snapshots" / "mixed.json"


def _config(tmp: Path, extra: str = "") -> Path:
    path = tmp / "agent.yaml"
    path.write_text(
        f"state_dir: state\nsource: {{kind: file, path: {AGENTS}}}\n{extra}", encoding="utf-8"
    )
    return path


def _run(fn, *args):  # type: ignore[no-untyped-def]
    out, err = io.StringIO(), io.StringIO()
    code = fn(*args, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    running = start(tmp_path / "ssm")
    yield running
    running.stop()


def _transport(server: RunningServer, **more: str) -> str:
    lines = [f"  url: {server.url}", f"  ca_bundle: {server.ca_path}"]
    lines += [f"  {k}: {v}" for k, v in more.items()]
    return "transport:\n" + "\n".join(lines) + "\n"


def test_register_without_a_transport_url_says_so(tmp_path: Path) -> None:
    code, out, err = _run(commands.register, _config(tmp_path), "tok", False)
    assert code == 1 and out == ""
    assert err.startswith("error: transport.url is not set in ")


def _fresh_db(tmp: Path) -> None:
    """An instance that exists but was never registered (as the daemon leaves it)."""
    from ccx_agent.store.db import DB_NAME, Store

    Store(tmp / "state" / DB_NAME).close()


def test_status_of_a_fresh_instance(tmp_path: Path) -> None:
    _fresh_db(tmp_path)
    code, out, err = _run(commands.status, _config(tmp_path), True)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "ok"
    assert doc["registration"]["state"] == "UNREGISTERED"
    assert doc["authorization"]["state"] == "NO_LICENSES_IN_USE"
    assert doc["daemon"] == {"running": False, "pid": None, "jobs": {}}
    assert {"enforcement", "evaluation_seconds_left", "outbox", "tags"} <= doc.keys()


@pytest.mark.parametrize("as_json", [True, False])
def test_status_creates_nothing_where_there_is_no_instance(tmp_path: Path, as_json: bool) -> None:
    """A typo in state_dir must not make a directory and show a blank instance."""
    code, out, err = _run(commands.status, _config(tmp_path), as_json)
    assert code == 1
    db = tmp_path / "state" / "ccx-agent.db"
    assert err == (
        f"error: {db}: no state database (no instance has been registered or run with "
        f"state_dir {tmp_path / 'state'}): check state_dir in the config\n"
    )
    if as_json:
        assert json.loads(out) == {"state": "no-database", "path": str(db)}
    else:
        assert out == ""
    assert not (tmp_path / "state").exists()


def test_deregister_when_not_registered(tmp_path: Path) -> None:
    code, _, err = _run(commands.deregister, _config(tmp_path))
    assert code == 1 and "no state database" in err and err.count("\n") == 1
    assert not (tmp_path / "state").exists()
    _fresh_db(tmp_path)
    code, _, err = _run(commands.deregister, _config(tmp_path))
    assert (code, err) == (
        1,
        "error: this instance is not registered: run 'ccx-agent register TOKEN' first\n",
    )


def test_renew_when_not_registered_is_one_line_and_no_alert(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    """No error-severity alert promising a retry that never comes."""
    from ccx_agent.store.db import DB_NAME, Store

    cfg = _config(tmp_path, _transport(server))
    code, _, err = _run(commands.renew, cfg, "auth")
    assert code == 1 and "no state database" in err and err.count("\n") == 1
    assert not (tmp_path / "state").exists()
    _fresh_db(tmp_path)
    for what in ("auth", "id"):
        code, out, err = _run(commands.renew, cfg, what)
        assert (code, out) == (1, "")
        assert (
            err == "error: this instance is not registered: run 'ccx-agent register TOKEN' first\n"
        )
    store = Store(tmp_path / "state" / DB_NAME)
    try:
        with store.read() as tx:
            assert tx.alerts() == []
    finally:
        store.close()


def test_register_status_renew_deregister(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    server.simulator.add_licenses("flex-premium-seat", 7)
    token = server.simulator.create_token(now=datetime.now(UTC))
    cfg = _config(tmp_path, _transport(server))
    code, out, err = _run(commands.register, cfg, token, False)
    assert code == 0, err
    assert out.startswith("registered: PIID ")
    assert "REGISTER_SUCCESS" in err and token not in out + err
    piid = out.split()[2].rstrip(",")

    code, out, _ = _run(commands.status, cfg, True)
    doc = json.loads(out)
    assert doc["registration"]["piid"] == piid
    assert doc["tags"]["flex-premium-seat"]["entitlement"] == 7

    code, out, err = _run(commands.register, cfg, token, False)
    assert code == 1 and "use --force" in err
    assert _run(commands.renew, cfg, "id")[1].startswith("ID certificate renewed: ")
    assert _run(commands.renew, cfg, "auth")[1].startswith("authorization renewed: ")

    code, out, err = _run(commands.deregister, cfg)
    assert (code, out) == (0, f"deregistered PIID {piid}\n")
    assert list((tmp_path / "state" / "keys").glob("*.pem")) == []
    shown = server.simulator.show(datetime.now(UTC))
    assert [i["state"] for i in shown["instances"]] == ["deregistered"]


def test_deregister_that_could_not_tell_ssm_says_so_and_exits_3(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    """SSM down: the identity is wiped all the same, but SSM still counts the licences;
    the command says so, with how to release them, and does not exit 0."""
    token = server.simulator.create_token(now=datetime.now(UTC))
    cfg = _config(tmp_path, _transport(server, attempts="1", timeout="2s"))
    code, out, err = _run(commands.register, cfg, token, False)
    assert code == 0, err
    piid = out.split()[2].rstrip(",")
    server.stop()
    code, out, err = _run(commands.deregister, cfg)
    assert (code, out) == (commands.EX_NOT_TOLD, "")
    assert f"deregistered PIID {piid} locally; the server was not told: " in err
    assert (
        f"SSM still counts the licences of PIID {piid} as in use: release them by removing "
        f"the product instance {piid} in SSM" in err
    )
    assert list((tmp_path / "state" / "keys").glob("*.pem")) == []
    # Nothing left to deregister: the usual refusal, exit 1.
    assert _run(commands.deregister, cfg)[0] == 1


def test_a_used_token_is_refused_with_the_servers_reason(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    token = server.simulator.create_token(now=datetime.now(UTC))
    server.simulator.revoke_token(token)
    code, out, err = _run(commands.register, _config(tmp_path, _transport(server)), token, False)
    assert code == 1 and out == ""
    assert "registration failed:" in err and "TOKEN_REVOKED" in err
    assert token not in err


def test_changing_the_license_type_while_registered_is_refused(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    token = server.simulator.create_token(now=datetime.now(UTC))
    assert _run(commands.register, _config(tmp_path, _transport(server)), token, False)[0] == 0
    changed = _config(tmp_path, _transport(server) + "license: {type: perpetual-premium}\n")
    code, _, err = _run(commands.renew, changed, "auth")
    assert code == 1
    assert "run 'ccx-agent deregister' first" in err


def test_an_unreadable_trust_anchor_is_one_line(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(tmp_path, _transport(server, trust_anchor=str(tmp_path / "none.pem")))
    code, _, err = _run(commands.register, cfg, "tok", False)
    assert code == 1
    assert (
        err
        == f"error: {tmp_path / 'none.pem'}: cannot read the trust anchor: No such file or directory\n"
    )


def test_a_commands_alerts_are_shown_once_and_left_for_the_daemon(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    """``register`` shows REGISTER_SUCCESS; ``renew auth`` then shows only its own alert;
    both stay pending in the database, for the daemon to deliver to syslog."""
    from ccx_agent.store.db import DB_NAME, Store

    token = server.simulator.create_token(now=datetime.now(UTC))
    cfg = _config(tmp_path, _transport(server))
    _, _, err = _run(commands.register, cfg, token, False)
    assert [line.split(":")[1].strip() for line in err.splitlines()] == [
        "%MCVD-LIB_LICENSE-6-REGISTER_SUCCESS",
        "%UC_LIB_LICENSE-6-REGISTER_SUCCESS",
    ]
    _, _, err = _run(commands.renew, cfg, "auth")
    assert "REGISTER_SUCCESS" not in err and "AUTH_RENEW_SUCCESS" in err
    store = Store(tmp_path / "state" / DB_NAME)
    try:
        with store.read() as tx:
            pending = [row.mnemonic for row in tx.alerts(pending_only=True)]
    finally:
        store.close()
    assert pending == ["REGISTER_SUCCESS", "AUTH_RENEW_SUCCESS"]


def test_check_config_refuses_a_license_type_other_than_the_registered_one(
    tmp_path: Path, server
) -> None:  # type: ignore[no-untyped-def]
    """What run would refuse, check-config says first, with the key and its line."""
    token = server.simulator.create_token(now=datetime.now(UTC))
    assert _run(commands.register, _config(tmp_path, _transport(server)), token, False)[0] == 0
    assert _run(commands.check_config, _config(tmp_path, _transport(server)))[:2] == (0, "OK\n")
    changed = _config(tmp_path, _transport(server) + "license:\n  type: perpetual-premium\n")
    line = changed.read_text().splitlines().index("  type: perpetual-premium") + 1
    code, out, err = _run(commands.check_config, changed)
    assert (code, out) == (78, "")
    assert err == (
        f"{changed}:{line}: license.type: is 'perpetual-premium' but the instance in "
        f"{tmp_path / 'state'} is registered as 'flex': run 'ccx-agent deregister' first, "
        "then change the license type\n"
    )


def test_check_config_says_when_the_instance_is_lost(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    token = server.simulator.create_token(now=datetime.now(UTC))
    cfg = _config(tmp_path, _transport(server))
    assert _run(commands.register, cfg, token, False)[0] == 0
    (tmp_path / "state" / "ccx-agent.db").write_bytes(b"")
    code, out, err = _run(commands.check_config, cfg)
    assert (code, out) == (78, "")
    assert err.startswith(f"{cfg}:1: state_dir: {tmp_path / 'state' / 'ccx-agent.db'}: ")
    assert "restore the state directory from a backup" in err and err.count("\n") == 1
    assert (tmp_path / "state" / "ccx-agent.db").stat().st_size == 0


def _pending_reports(tmp: Path, piid: str, n: int) -> list[str]:
    """``n`` closed REPORTED intervals whose reports wait in the outbox (as an SSM outage
    leaves them), written through the real store; their starts."""
    base = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
    step = timedelta(minutes=15)
    records = [
        IntervalRecord(
            base + i * step,
            base + (i + 1) * step,
            IntervalStatus.REPORTED,
            "REGISTERED",
            "AUTHORIZED",
            None,
            {"flex-standard-seat": TagRecord(3, 5, 3, "IN_COMPLIANCE", 0)},
        )
        for i in range(n)
    ]
    store = Store(tmp / "state" / DB_NAME)
    try:
        with store.transaction() as tx:
            tx.add_intervals(records)
            tx.enqueue_many(
                [(f"{piid}:{iso(r.start)}", piid, r.start, {"usage": {}}) for r in records],
                base,
            )
    finally:
        store.close()
    return [iso(r.start) for r in records]


def test_register_force_says_how_many_reports_it_drops_and_marks_them(
    tmp_path: Path,
    server,  # type: ignore[no-untyped-def]
) -> None:
    """The old identity's unsent reports can never be signed once it is replaced: one
    line on stdout, ENTITLEMENT_REPORT_FAILED, and their intervals no longer REPORTED."""
    cfg = _config(tmp_path, _transport(server))
    token = server.simulator.create_token(now=datetime.now(UTC))
    code, out, err = _run(commands.register, cfg, token, False)
    assert code == 0, err
    old = out.split()[2].rstrip(",")
    _pending_reports(tmp_path, old, 3)
    assert json.loads(_run(commands.status, cfg, True)[1])["outbox"] == 3

    again = server.simulator.create_token(now=datetime.now(UTC))
    code, out, err = _run(commands.register, cfg, again, True)
    assert code == 0, err
    assert out.startswith("registered: PIID ")
    assert out.rstrip().endswith(
        f"; 3 unsent report(s) of the old PIID {old} dropped (never reported)"
    )
    assert "ENTITLEMENT_REPORT_FAILED" in err
    assert f"3 report(s) of PIID {old} dropped unsent" in err

    store = Store(tmp_path / "state" / DB_NAME, readonly=True)
    try:
        with store.read() as tx:
            assert tx.outbox_count() == 0
            records = tx.intervals()
            mnemonics = [a.mnemonic for a in tx.alerts()]
    finally:
        store.close()
    assert [r.status.value for r in records] == ["DROPPED"] * 3
    assert all(t.reported is None and t.usage == 3 for r in records for t in r.tags.values())
    assert "ENTITLEMENT_REPORT_FAILED" in mnemonics
