"""``source.kind: uccx`` against a real HTTPS server on loopback (``fake_uccx``).

The reference is the file format: consumption from the fake cluster over UCCX + Finesse
must equal that of the same cluster written as a file snapshot, for every license type.
Every failure is a :class:`SourceError` with a message that says what failed, never a
snapshot (so never a sample of zero agents), and the password appears nowhere.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ccx_agent.agent import Agent
from ccx_agent.cli.main import main
from ccx_agent.config.schema import CommonConfig, UccxSource, load
from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import compute
from ccx_agent.licensing.snapshot import parse_snapshot
from ccx_agent.sources import SourceError
from ccx_agent.sources import uccx as uccx_mod
from ccx_agent.sources.factory import build
from ccx_agent.sources.safexml import XmlError, parse_xml
from ccx_agent.sources.uccx import UccxSource as Source
from ccx_agent.ssm.port import Udi
from ccx_agent.store.db import DB_NAME, Store
from tests.sources.fake_uccx import (
    BOMB,
    Cluster,
    FakeUccx,
    Pki,
    file_snapshot,
    make_cluster,
    make_pki,
)
from tests.ssm.servers import MisbehavingServer, fixed

USER = "ccx-license-reader"
PASSWORD = "s3cr3t-Pa55w0rd!"  # distinctive, so that any leak is found


class Clock:
    """The source's monotonic clock, moved by hand: no test waits for a timer."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return make_cluster(400)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def fake(cluster: Cluster, pki: Pki) -> Iterator[FakeUccx]:
    with FakeUccx(cluster, pki, USER, PASSWORD) as server:
        yield server


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "uccx-password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def settings(fake: FakeUccx, pki: Pki, pw_file: Path, **uccx: Any) -> UccxSource:
    body: dict[str, Any] = {
        "url": fake.url,
        "user": USER,
        "password_file": pw_file,
        "ca_bundle": pki.ca,
        "timeout": "2s",
        "connect_timeout": "2s",
    }
    body.update(uccx)
    finesse = body.pop("finesse", {})
    return UccxSource.model_validate({"kind": "uccx", "uccx": body, "finesse": finesse})


SourceMaker = Callable[..., Source]


@pytest.fixture
def source(fake: FakeUccx, pki: Pki, password_file: Path) -> SourceMaker:
    def make(clock: Clock | None = None, environ: dict[str, str] | None = None, **uccx: Any):
        cfg = settings(fake, pki, password_file, **uccx)
        return Source(cfg, clock=clock or Clock(), environ=environ or {})

    return make


def fails(src: Source) -> str:
    with pytest.raises(SourceError) as info:
        src.read()
    message = str(info.value)
    assert "\n" not in message
    assert PASSWORD not in message
    return message


# --- the same consumption as the file snapshot ------------------------------------------------


@pytest.mark.parametrize("license_type", list(LicenseType))
def test_consumption_equals_the_file_snapshot(
    source: SourceMaker, cluster: Cluster, license_type: LicenseType
) -> None:
    got = compute(source().read(), license_type, ALL_FEATURES)
    want = compute(parse_snapshot(file_snapshot(cluster)), license_type, ALL_FEATURES)
    assert got == want
    assert got.tags == want.tags and list(got.agents) == list(want.agents)


def test_the_cluster_has_every_case(source: SourceMaker, cluster: Cluster) -> None:
    """The fixture is what it claims: chat, email and outbound seats, strangers counted."""
    snap = source().read()
    result = compute(snap, LicenseType.FLEX, ALL_FEATURES)
    features = {f for a in result.agents for f in a.features}
    assert features == {"chat", "email", "outbound"}
    assert result.tags["flex-standard-seat"] > 0 and result.tags["flex-premium-seat"] > 0
    states = set(snap.agents.states)
    assert {"READY", "NOT_READY", "TALKING", "HOLD", "WORK", "LOGOUT", "UNKNOWN"} <= states
    by_id = {a.id: a for a in result.agents}
    assert by_id["agent0020"].tag == "flex-standard-seat"  # no skills
    assert by_id["agent0021"].tag == "flex-standard-seat"  # a skill no CSQ uses
    assert "MixedCase.User" in by_id  # joined whatever the case Finesse uses
    assert by_id["ghost.agent"].tag == "flex-standard-seat"
    assert by_id["ghost.super"].tag == "flex-standard-seat"
    assert "gone.agent" not in by_id and "agent0022" not in by_id
    assert any("unknown to the UCCX Admin API" in n and "'ghost.agent'" in n for n in snap.notes)
    # Resource-group CSQs and campaigns count: email by group, outbound by group and skill.
    assert len(snap.agents) == len(cluster.resources) + 2
    assert len(result.agents) > 250


def test_a_stranger_is_logged(source: SourceMaker, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ccx_agent.sources.uccx"):
        source().read()
    assert any("ghost.super" in r.getMessage() for r in caplog.records)


def test_usage_against_the_fake_server_prints_what_the_file_gives(
    fake: FakeUccx,
    pki: Pki,
    password_file: Path,
    cluster: Cluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's "done when": ``ccx-agent usage`` prints the same for both sources."""
    snap = tmp_path / "cluster.json"
    snap.write_text(json.dumps(file_snapshot(cluster)), encoding="utf-8")
    (tmp_path / "file.yaml").write_text(f"source:\n  kind: file\n  path: {snap.name}\n")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes(pki.ca.read_bytes())
    (tmp_path / "uccx.yaml").write_text(
        "source:\n  kind: uccx\n  uccx:\n"
        f"    url: {fake.url}\n    user: {USER}\n"
        f"    password_file: {password_file.name}\n"  # relative: beside the config file
        "    ca_bundle: certs/ca.pem\n"
    )
    outputs = []
    for name in ("file.yaml", "uccx.yaml"):
        for args in ([], ["--json"]):
            code = main(["--config", str(tmp_path / name), "usage", *args])
            out, err = capsys.readouterr()
            assert code == 0, err
            assert PASSWORD not in out + err
            outputs.append(out)
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    assert "flex-premium-seat" in outputs[0]


# --- configuration refresh -------------------------------------------------------------------


def test_configuration_is_cached_and_refreshed(source: SourceMaker, fake: FakeUccx) -> None:
    clock = Clock()
    src = source(clock, config_refresh="5m")
    src.read()
    src.read()
    clock.now += 299
    src.read()
    assert fake.hits["/adminapi/resource?withCsqs"] == 1
    assert fake.hits["/adminapi/csq"] == 1
    assert fake.hits["/finesse/api/Users"] == 3  # the live state at every sample
    clock.now += 1
    src.read()
    assert fake.hits["/adminapi/resource?withCsqs"] == 2


@pytest.mark.parametrize("mode", ["500", "401", "slow", "truncated", "bomb", "html"])
def test_a_failed_refresh_keeps_the_last_good_configuration(
    source: SourceMaker, fake: FakeUccx, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    src = source(clock, timeout="1s")
    good = src.read()
    fake.fail["/adminapi/csq"] = mode
    clock.now += 301
    with caplog.at_level(logging.DEBUG):
        kept = src.read()
    assert kept == good
    assert any("kept the one read 301s ago" in n for n in kept.notes)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("refreshing the UCCX configuration failed" in w for w in warned)
    assert PASSWORD not in caplog.text
    # Retried at the next sample; once it works, the note is gone.
    del fake.fail["/adminapi/csq"]
    clock.now += 60
    assert not any("kept" in n for n in src.read().notes)


def test_no_configuration_at_all_fails_the_sample(source: SourceMaker, fake: FakeUccx) -> None:
    fake.fail["/adminapi/resource?withCsqs"] = "500"
    message = fails(source())
    assert message.startswith("no UCCX configuration yet: UCCX Admin API https://127.0.0.1:")
    assert message.endswith("/adminapi/resource?withCsqs: HTTP 500 Internal Server Error")


# --- the live state fails the sample ---------------------------------------------------------

USERS = "/finesse/api/Users"
SYSTEM_INFO = "/finesse/api/SystemInfo"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("401", "HTTP 401 Unauthorized: the user name or password was refused (source.uccx.user)"),
        ("403", "HTTP 403 Forbidden: the account may not read this"),
        ("500", "HTTP 500 Internal Server Error"),
        ("302", "HTTP 302 redirect, not followed"),
        ("slow", "no response within 1s (source.uccx.timeout)"),
        ("truncated", "not well-formed XML: "),
        ("cut", "the response was cut short"),
        ("bomb", "holds a <!DOCTYPE declaration, refused (possible XML bomb)"),
        ("html", "expected a <Users> document, got <html>"),
        ("empty", "lists no users while the UCCX Admin API has 400"),
        ("404", "HTTP 404 Not Found"),
        ("huge", f"response larger than {uccx_mod.MAX_BODY} bytes, refused"),
    ],
)
def test_a_failed_live_state_read_fails_the_sample(
    source: SourceMaker, fake: FakeUccx, mode: str, expected: str
) -> None:
    src = source(timeout="1s")
    src.read()
    fake.fail[USERS] = mode
    message = fails(src)
    assert message.startswith(f"Finesse {fake.url}{USERS}: ")
    assert expected in message


def test_a_dripped_answer_is_cut_at_the_deadline_of_the_whole_request(
    source: SourceMaker, fake: FakeUccx
) -> None:
    """One byte every 0.2 s never trips the 1 s read timeout: the request's deadline
    (``connect_timeout + timeout``) cuts it while it is reading, and the client hangs up."""
    src = source(timeout="1s", connect_timeout="1s")
    src.read()
    fake.fail[USERS] = "drip"
    started = time.monotonic()
    message = fails(src)
    took = time.monotonic() - started
    assert message == (
        f"Finesse {fake.url}{USERS}: response not complete within 2s "
        "(source.uccx.connect_timeout + source.uccx.timeout)"
    )
    assert 1.8 <= took < 4
    wait = time.monotonic() + 5
    while not fake.dripped and time.monotonic() < wait:
        time.sleep(0.05)
    assert fake.dripped and fake.dripped[0] < len(fake.bodies[USERS])


def test_abort_cuts_a_read_in_flight_and_every_later_one(
    source: SourceMaker, fake: FakeUccx
) -> None:
    """The daemon's stop: a read waiting on a dripping Finesse ends at once, and the
    source reads nothing more (no request is even sent)."""
    src = source(timeout="30s")
    src.read()
    fake.fail[USERS] = "drip"
    errors: list[str] = []

    def read() -> None:
        try:
            src.read()
        except SourceError as exc:
            errors.append(str(exc))

    job = threading.Thread(target=read)
    job.start()
    assert fake.dripping.wait(10)
    started = time.monotonic()
    src.abort()
    job.join(5)
    assert not job.is_alive() and time.monotonic() - started < 1
    assert errors == [f"Finesse {fake.url}{USERS}: not completed: the agent is stopping"]
    hits = dict(fake.hits)
    # A later read stops at its first request: asking Finesse whether it is in service.
    assert fails(src) == f"Finesse {fake.url}{SYSTEM_INFO}: not completed: the agent is stopping"
    assert fake.hits == hits


def test_a_failed_sample_raises_the_alert_and_reports_no_zero(
    source: SourceMaker, fake: FakeUccx, tmp_path: Path
) -> None:
    """What the daemon does with the error: LICENSE_COMPUTATION_FAILED, and no usage."""
    rows: list[Any] = []
    store = Store(tmp_path / DB_NAME)
    cfg = CommonConfig.model_validate({"alerts": {"node_id": "uccxpubsu1"}})
    t0 = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
    agent = Agent(
        cfg,
        store,
        None,
        udi=Udi("UCCX", "SN1", "0" * 8 + "-0000-4000-8000-" + "0" * 12),
        emit=rows.extend,
        origin=t0,
    )
    try:
        fake.fail[USERS] = "bomb"
        src = source()
        try:
            src.read()
        except SourceError as exc:
            agent.sample([t0], None, error=str(exc))
        assert [r.mnemonic for r in rows] == ["LICENSE_COMPUTATION_FAILED"]
        assert "XML bomb" in rows[0].lines[0]
        with store.read() as tx:
            (opened,) = tx.open_intervals()
        assert (opened.samples, opened.failures, opened.peaks) == (0, 1, {})
    finally:
        store.close()


# --- TLS and credentials ---------------------------------------------------------------------


def test_tls_is_verified_against_the_ca_bundle_only(
    source: SourceMaker, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without ca_bundle the system store is used; the environment cannot add our CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.ca))
    message = fails(source(ca_bundle=None))
    assert "TLS verification failed (certificate verify failed" in message


def test_a_tls_error_that_is_not_the_certificate_does_not_blame_the_ca_bundle(
    source: SourceMaker,
) -> None:
    """A plain-HTTP server on the port: a TLS failure said as it is, no CA to check."""
    with MisbehavingServer(fixed(200, b""), None) as plain:
        message = fails(source(url=f"https://127.0.0.1:{plain.port}"))
    assert "TLS failed (wrong version number)" in message, message
    assert "ca_bundle" not in message


def test_a_proxy_in_the_environment_is_ignored(
    source: SourceMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    assert len(source().read().agents) == 402


def test_a_wrong_password_never_shows_the_password(
    source: SourceMaker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-" + PASSWORD)
    with caplog.at_level(logging.DEBUG):
        message = fails(source(password_file=wrong))
    assert "HTTP 401 Unauthorized" in message
    out, err = capsys.readouterr()
    for text in (message, out, err, caplog.text):
        assert PASSWORD not in text


def test_the_systemd_credential_is_read(
    source: SourceMaker, tmp_path: Path, fake: FakeUccx
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "uccx-password").write_text(PASSWORD + "\n")
    src = source(password_file=None, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert len(src.read().agents) == 402
    message = fails(source(password_file=None))
    # SystemInfo needs none; the first request that does (the Admin API) says so, once.
    assert message.startswith("no UCCX configuration yet: source.uccx: no password: set ")
    assert "LoadCredential=uccx-password:PATH" in message


def test_an_inline_password_works_and_is_warned_about(
    source: SourceMaker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        src = source(password_file=None, password=PASSWORD)
    assert len(src.read().agents) == 402
    assert "source.uccx.password: a password written in the config file" in caplog.text
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(src.cfg)


def test_finesse_may_have_its_own_account(
    source: SourceMaker, fake: FakeUccx, tmp_path: Path
) -> None:
    other = tmp_path / "finesse-password"
    other.write_text("other")
    message = fails(source(finesse={"user": "finesse-admin", "password_file": str(other)}))
    assert message.startswith(f"Finesse {fake.url}{USERS}: HTTP 401")
    assert "(source.finesse.user)" in message
    # The URL defaults to the UCCX host; given explicitly it is used as is.
    src = source(finesse={"url": fake.url + "/"})
    assert len(src.read().agents) == 402


def test_a_missing_password_file_is_named(source: SourceMaker, tmp_path: Path) -> None:
    message = fails(source(password_file=tmp_path / "nope"))
    assert message.endswith(
        f"source.uccx.password_file {tmp_path / 'nope'}: cannot read the password file: "
        "No such file or directory"
    )


def test_campaigns_are_optional(source: SourceMaker, fake: FakeUccx) -> None:
    fake.fail["/adminapi/campaign"] = "404"
    snap = source().read()
    assert not any(snap.agents.outbound)
    assert any("offers no campaigns" in n for n in snap.notes)


def test_the_factory_builds_a_uccx_source(fake: FakeUccx, pki: Pki, password_file: Path) -> None:
    src = build(settings(fake, pki, password_file))
    assert isinstance(src, Source)
    assert len(src.read().agents) == 402


def test_relative_paths_are_beside_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "ccx-agent.yaml"
    path.write_text(
        "source:\n  kind: uccx\n  uccx:\n    url: https://uccx.example.com\n    user: u\n"
        "    password_file: secrets/pw\n    ca_bundle: ca.pem\n"
        "  finesse:\n    password_file: fpw\n"
    )
    cfg = load(path).source
    assert isinstance(cfg, UccxSource)
    assert cfg.uccx.password_file == tmp_path / "secrets" / "pw"
    assert cfg.uccx.ca_bundle == tmp_path / "ca.pem"
    assert cfg.finesse.password_file == tmp_path / "fpw"
    assert cfg.finesse_url() == "https://uccx.example.com"


# --- safe XML --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (BOMB, "holds a <!DOCTYPE declaration"),
        (b'<Users><!ENTITY x "y"></Users>', "holds a <!ENTITY declaration"),
        ('<?xml version="1.0" encoding="UTF-16"?><Users/>'.encode("utf-16"), "not UTF-8 text"),
        (b"<Users><User></Users>", "not well-formed XML: mismatched tag (line 1, column 15)"),
        (b"", "not well-formed XML: no element found"),
        (b"<users/>", "expected a <Users> document, got <users>"),
    ],
)
def test_unsafe_or_broken_xml_is_refused(body: bytes, expected: str) -> None:
    with pytest.raises(XmlError) as info:
        parse_xml(body, "Users")
    assert str(info.value).startswith(expected)


def test_bad_admin_data_is_named() -> None:
    with pytest.raises(XmlError, match=r"resource\[1\] \(userID 'b'\): type must be 1"):
        uccx_mod.parse_resources(
            b"<resources><resource><userID>a</userID></resource>"
            b"<resource><userID>b</userID><type>9</type></resource></resources>"
        )
    with pytest.raises(XmlError, match=r"csq\[0\] \(name 'X'\): queueType must be VOICE"):
        uccx_mod.parse_csqs(b"<csqs><csq><name>X</name><queueType>FAX</queueType></csq></csqs>")
    with pytest.raises(
        XmlError, match=r"campaign\[0\] \(campaignName 'C'\): dialerType must be DIRECT_PREVIEW"
    ):
        uccx_mod.parse_campaign_list(
            b"<campaigns><campaign><campaignId>1</campaignId><campaignName>C</campaignName>"
            b"<campaignType>AGENT</campaignType><dialerType>PREVIEW</dialerType></campaign>"
            b"</campaigns>"
        )
    with pytest.raises(XmlError, match=r"campaign \(campaignName 'C'\): an assignedCSQs/csq"):
        uccx_mod.parse_campaign(
            b"<campaign><campaignName>C</campaignName><campaignType>AGENT</campaignType>"
            b"<dialerType>PROGRESSIVE</dialerType><typeSpecificInfo><x><assignedCSQs><csq/>"
            b"</assignedCSQs></x></typeSpecificInfo></campaign>"
        )
    with pytest.raises(XmlError, match=r"User\[0\] \(loginId 'a'\): no state"):
        uccx_mod.parse_users(b"<Users><User><loginId>a</loginId></User></Users>")


def test_usage_warns_about_an_inline_password(
    fake: FakeUccx,
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "ccx-agent.yaml"
    path.write_text(
        "source:\n  kind: uccx\n  uccx:\n"
        f"    url: {fake.url}\n    user: {USER}\n    password: '{PASSWORD}'\n"
        f"    ca_bundle: {pki.ca}\n"
    )
    assert main(["--config", str(path), "usage"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: source.uccx.password: a password written in the config")
    assert PASSWORD not in out + err
    assert main(["--config", str(path), "check-config"]) == 0


def test_explain_names_the_campaign_of_an_outbound_agent(source: SourceMaker) -> None:
    """``usage --explain`` over UCCX: the Admin API's campaign and CSQ behind ``outbound``."""
    from ccx_agent.licensing.explain import explain

    snap = source().read()
    assert {c.name for c in snap.campaigns} == {"Renewals", "Collections", "Callbacks"}
    result = compute(snap, LicenseType.FLEX, ALL_FEATURES)
    texts = [e.text for e in explain(snap, result, ALL_FEATURES) if "outbound" in e.text]
    assert any("outbound campaign 'Renewals' via CSQ 'Outbound_RG_CSQ'" in t for t in texts)
    assert any("outbound campaign 'Collections' via CSQ 'Voice_CSQ_" in t for t in texts)
    assert any("outbound campaign 'Callbacks' via CSQ 'Voice_CSQ_" in t for t in texts)
    assert not any("the source marks" in t for t in texts)
