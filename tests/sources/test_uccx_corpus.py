"""The UCCX source over the documented corpus (``tests/fixtures/uccx``).

Every file of the corpus follows a page of Cisco's developer documentation (its top
comment names it): element names, casing, nesting and enums as documented, values ours.
Each parser reads each file it may meet; then a real HTTPS server on loopback serves the
corpus and ``ccx-agent usage`` must give the counts the corpus implies, for every license
type. The corpus's cluster, by hand:

========== ============================ ================================= ==============
user       Finesse state                configured for                    seat (flex)
========== ============================ ================================= ==============
alice      READY                        Sales (VOICE)                     standard
bob        NOT_READY (a ReasonCode)     Chat (CHAT)                       premium: chat
carol      TALKING                      Email (EMAIL, NONINTERACTIVE)     premium: email
dave       RESERVED_OUTBOUND            resource group of Renewals_RG,    premium:
                                        agent progressive "Renewals"      outbound
erin       HOLD                         Collections, agent predictive     premium:
                                        "Collections" (CSQ by name only)  outbound
frank      RESERVED_OUTBOUND_PREVIEW    Callback, agent direct preview    premium:
                                        "Callbacks" (CSQ id in name)      outbound
gina       WORK                         Survey (IVR campaigns: no CSQs)   standard
hank       WORK_READY                   nothing                           standard
Sam.Super  RESERVED (as "sam.super")    supervisor, Sales                 standard
ivan       LOGOUT                       Sales                             none
temp.agent READY                        unknown to the Admin API          standard
zoe        UNKNOWN                      unknown to the Admin API          none
========== ============================ ================================= ==============
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccx_agent.cli.main import main
from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import compute
from ccx_agent.sources import SourceError
from ccx_agent.sources.cluster import parse_system_info
from ccx_agent.sources.safexml import XmlError, parse_xml
from ccx_agent.sources.uccx import (
    CsqRef,
    UccxSource,
    outbound_campaigns,
    parse_campaign,
    parse_campaign_list,
    parse_csqs,
    parse_resources,
    parse_users,
)
from tests.sources.fake_uccx import (
    FIXTURES,
    SYSTEM_INFO,
    USERS,
    FakeUccx,
    Pki,
    make_cluster,
    make_pki,
    serve_corpus,
)
from tests.sources.test_uccx import PASSWORD, USER, Clock, settings

CAMPAIGNS = "/adminapi/campaign"


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --- the corpus itself -------------------------------------------------------------------------


def test_every_file_is_a_documented_shape_and_says_which() -> None:
    files = sorted(FIXTURES.glob("*.xml"))
    assert len(files) == 14
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text.startswith('<?xml version="1.0" encoding="UTF-8"'), path.name
        assert "https://developer.cisco.com/docs/" in text.split("-->", 1)[0], path.name
        parse_xml(text.encode(), _root(text))


def _root(text: str) -> str:
    body = text.split("-->", 1)[1]
    return body.split("<", 1)[1].split(">", 1)[0].split()[0].rstrip("/")


# --- every parser over every file ------------------------------------------------------------


def test_resources() -> None:
    got = {r.id: r for r in parse_resources(read("resources.xml"))}
    assert list(got) == [
        "alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "Sam.Super", "ivan",
    ]  # fmt: skip
    # Whitespace around every value, as the documented pretty-printed sample has it.
    assert got["alice"].skills == ("Sales",) and got["alice"].team == "Inbound"
    assert got["alice"].csqs == ("Sales_Voice",)
    assert got["dave"].skills == () and got["dave"].csqs == ("Renewals_RG",)
    assert got["hank"].skills == () and got["hank"].csqs == ()
    assert got["Sam.Super"].type == "supervisor"
    assert {r.type for n, r in got.items() if n != "Sam.Super"} == {"agent"}


def test_csqs() -> None:
    got = [(c.id, c.name, c.type, c.skills) for c in parse_csqs(read("csqs.xml"))]
    assert got == [
        ("1", "Sales_Voice", "VOICE", ("Sales",)),
        ("2", "Support_Chat", "CHAT", ("Chat",)),
        ("3", "Billing_Email", "EMAIL", ("Email",)),
        ("4", "Renewals_RG", "VOICE", ()),  # a resource-group CSQ
        ("5", "Callback_Voice", "VOICE", ("Callback",)),
        ("6", "Collections_Voice", "VOICE", ("Collections",)),
        ("7", "Survey_Voice", "VOICE", ("Survey",)),
    ]


def test_the_campaign_list_gives_summaries() -> None:
    got = parse_campaign_list(read("campaigns.xml"))
    assert [(c.id, c.name, c.type, c.dialer, c.csqs) for c in got] == [
        ("200", "Callbacks", "AGENT", "DIRECT_PREVIEW", None),
        ("201", "Renewals", "AGENT", "PROGRESSIVE", None),
        ("202", "Collections", "AGENT", "PREDICTIVE", None),
        ("203", "Reminders_IVR", "IVR", "PROGRESSIVE", None),
        ("204", "Survey_IVR", "IVR", "PREDICTIVE", None),
    ]
    assert [c.outbound for c in got] == [True, True, True, False, False]


@pytest.mark.parametrize(
    ("name", "refs"),
    [
        ("campaign-200.xml", (CsqRef("5", "5"),)),  # Cisco's sample: the id in name
        ("campaign-201.xml", (CsqRef("Renewals_RG", "4"),)),
        ("campaign-202.xml", (CsqRef("Collections_Voice", ""),)),  # no refURL
        ("campaign-203.xml", ()),  # IVR: a trigger, no CSQs
        ("campaign-204.xml", ()),
    ],
)
def test_each_campaign(name: str, refs: tuple[CsqRef, ...]) -> None:
    assert parse_campaign(read(name)).csqs == refs


def test_campaign_csqs_are_matched_by_refurl_id_then_by_name() -> None:
    csqs = parse_csqs(read("csqs.xml"))
    detailed = [parse_campaign(p.read_bytes()) for p in sorted(FIXTURES.glob("campaign-*.xml"))]
    found, notes = outbound_campaigns(detailed, csqs)
    assert found == {
        "Callbacks": ("Callback_Voice",),
        "Renewals": ("Renewals_RG",),
        "Collections": ("Collections_Voice",),
    }
    assert notes == []
    # A refURL wins over a name that would match another CSQ; an unknown one is noted.
    odd = parse_campaign(read("campaign-201.xml").replace(b"adminapi/csq/4", b"adminapi/csq/99"))
    found, notes = outbound_campaigns([odd], csqs)
    assert found == {"Renewals": ()}
    assert notes == [
        "campaign 'Renewals': assigned CSQ (refURL id '99') is not in the CSQ list: "
        "no agent is outbound through it"
    ]


#: The user states of "User API Parameters" (https://developer.cisco.com/docs/finesse/user-api-parameters).
USER_STATES = {
    "LOGOUT", "NOT_READY", "READY", "RESERVED", "RESERVED_OUTBOUND",
    "RESERVED_OUTBOUND_PREVIEW", "TALKING", "HOLD", "WORK", "WORK_READY", "UNKNOWN",
}  # fmt: skip


def test_users_every_documented_state() -> None:
    got = {u.login_id: u for u in parse_users(read("users.xml"))}
    assert {u.state for u in got.values()} == USER_STATES
    assert len(got) == 12
    assert got["sam.super"].roles == ("Agent", "Supervisor")
    assert got["bob"].state == "NOT_READY"  # beside its ReasonCode


def test_system_info() -> None:
    up = parse_system_info(read("systeminfo-in-service.xml"))
    down = parse_system_info(read("systeminfo-out-of-service.xml"))
    assert (up.status, up.in_service, up.primary, up.secondary) == (
        "IN_SERVICE", True, "uccx-a.example.com", "uccx-b.example.com",
    )  # fmt: skip
    assert (down.in_service, down.reason) == (False, "Finesse is not the master node")


@pytest.mark.parametrize(
    ("name", "root"),
    [
        ("error-401-finesse.xml", "ApiErrors"),
        ("error-503-finesse.xml", "ApiErrors"),
        ("error-404-adminapi.xml", "apiError"),
    ],
)
def test_an_error_body_is_never_read_as_data(name: str, root: str) -> None:
    assert parse_xml(read(name), root).tag == root
    for parse, expected in ((parse_users, "Users"), (parse_csqs, "csqs")):
        with pytest.raises(XmlError, match=f"expected a <{expected}> document, got <{root}>"):
            parse(read(name))


# --- the corpus served over HTTPS -----------------------------------------------------------

#: What ``usage --json`` gives for the corpus, per license type (see the module's table).
EXPECTED = {
    LicenseType.FLEX: {
        "flex-standard-seat": 5, "flex-premium-seat": 5, "flex-outbound-port": 0,
    },
    LicenseType.FLEX_HCS: {
        "hcs-standard-seat": 5, "hcs-premium-seat": 5, "hcs-outbound-port": 0,
    },
    LicenseType.PERPETUAL_PREMIUM: {"premium-seat": 10, "premium-outbound-port": 0},
    LicenseType.PERPETUAL_ENHANCED: {"enhanced-seat": 10},
    LicenseType.NFR: {"nfr-seat": 10},
}  # fmt: skip
OUTBOUND = {"dave": "Renewals", "erin": "Collections", "frank": "Callbacks"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def fake(pki: Pki) -> Iterator[FakeUccx]:
    with FakeUccx(make_cluster(40), pki, USER, PASSWORD) as server:
        yield serve_corpus(server)


@pytest.fixture
def config(fake: FakeUccx, pki: Pki, tmp_path: Path) -> Path:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "pw").chmod(0o600)
    path = tmp_path / "ccx-agent.yaml"
    path.write_text(
        "source:\n  kind: uccx\n  uccx:\n"
        f"    url: {fake.url}\n    user: {USER}\n    password_file: pw\n"
        f"    ca_bundle: {pki.ca}\n"
    )
    return path


def usage(
    config: Path, license_type: LicenseType, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[str, str]:
    text = config.read_text()
    if "license:" not in text:
        text += "license:\n  type: flex\n"
    text = text.split("license:")[0] + f"license:\n  type: {license_type.value}\n"
    config.write_text(text)
    assert main(["--config", str(config), "usage", *args]) == 0
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    return out, err


@pytest.mark.parametrize("license_type", list(LicenseType))
def test_usage_json_gives_what_the_corpus_implies(
    config: Path, license_type: LicenseType, capsys: pytest.CaptureFixture[str]
) -> None:
    out, err = usage(config, license_type, capsys, "--json")
    doc = json.loads(out)
    assert doc["license_type"] == license_type.value
    assert doc["tags"] == EXPECTED[license_type]
    agents = {a["id"]: a for a in doc["agents"]}
    assert set(agents) == {
        "alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "Sam.Super",
        "temp.agent",
    }  # fmt: skip
    assert {i for i, a in agents.items() if "outbound" in a["features"]} == set(OUTBOUND)
    assert agents["bob"]["features"] == ["chat"] and agents["carol"]["features"] == ["email"]
    assert "'temp.agent'" in err  # logged in to Finesse, unknown to the Admin API
    if license_type is LicenseType.PERPETUAL_ENHANCED:
        assert "FEATURE_NOT_LICENSED" in err


def test_usage_explain_names_the_campaign_that_made_an_agent_premium(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = usage(config, LicenseType.FLEX, capsys, "--explain")
    lines = out.splitlines()
    for agent, campaign in OUTBOUND.items():
        mine = [line for line in lines if agent in line]
        assert any(f"outbound campaign '{campaign}' via CSQ" in line for line in mine), mine
    assert "Reminders_IVR" not in out and "Survey_IVR" not in out


def source(fake: FakeUccx, pki: Pki, tmp_path: Path) -> UccxSource:
    (tmp_path / "pw").write_text(PASSWORD)
    return UccxSource(settings(fake, pki, tmp_path / "pw", timeout="2s"), Clock(), environ={})


def test_the_agent_campaigns_are_read_one_by_one_the_ivr_ones_never(
    fake: FakeUccx, pki: Pki, tmp_path: Path
) -> None:
    source(fake, pki, tmp_path).read()
    assert [fake.hits.get(f"{CAMPAIGNS}/{i}", 0) for i in range(200, 205)] == [1, 1, 1, 0, 0]


def test_system_info_is_asked_without_credentials(fake: FakeUccx, pki: Pki, tmp_path: Path) -> None:
    source(fake, pki, tmp_path).read()
    assert fake.auth_by_path[SYSTEM_INFO] == [""]
    assert all(a.startswith("Basic ") for a in fake.auth_by_path[USERS])


def test_finesse_out_of_service_answers_503_and_is_not_read(
    fake: FakeUccx, pki: Pki, tmp_path: Path
) -> None:
    src = source(fake, pki, tmp_path)
    fake.status = "OUT_OF_SERVICE"
    with pytest.raises(SourceError, match="is OUT_OF_SERVICE \\(Finesse is not the master node\\)"):
        src.read()
    assert USERS not in fake.hits  # a standby is never asked who is logged in


def test_finesse_that_goes_out_of_service_within_a_sample_says_so(
    fake: FakeUccx, pki: Pki, tmp_path: Path
) -> None:
    src = source(fake, pki, tmp_path)
    fake.fail[USERS] = "503"  # SystemInfo said IN_SERVICE a moment before
    with pytest.raises(SourceError) as info:
        src.read()
    assert str(info.value) == (
        f"Finesse {fake.url}{USERS}: HTTP 503 Service Unavailable: Finesse is out of service "
        "(it answers its usual operations so while its SystemInfo says OUT_OF_SERVICE)"
    )


def test_a_release_without_campaigns(fake: FakeUccx, pki: Pki, tmp_path: Path) -> None:
    fake.fail[CAMPAIGNS] = "404"  # the documented apiError body, HTTP 404
    snap = source(fake, pki, tmp_path).read()
    assert not any(snap.agents.outbound)
    assert any("/adminapi/campaign answered 404" in n for n in snap.notes)
    result = compute(snap, LicenseType.FLEX, ALL_FEATURES)
    assert result.tags["flex-premium-seat"] == 2  # chat and email only


def test_a_campaign_deleted_between_the_list_and_its_read(
    fake: FakeUccx, pki: Pki, tmp_path: Path
) -> None:
    fake.fail[f"{CAMPAIGNS}/201"] = "404"
    snap = source(fake, pki, tmp_path).read()
    assert [c.name for c in snap.campaigns] == ["Callbacks", "Collections"]
    assert any(f"campaign 'Renewals': {CAMPAIGNS}/201 answered 404" in n for n in snap.notes)
    by_id = dict(zip(snap.agents.ids, snap.agents.outbound, strict=True))
    assert (by_id["dave"], by_id["erin"], by_id["frank"]) == (False, True, True)


def test_a_list_that_carries_the_campaigns_details_is_used_as_is(
    fake: FakeUccx, pki: Pki, tmp_path: Path
) -> None:
    """Should a release list campaigns in full, no campaign is read again."""
    details = [read(f"campaign-{i}.xml").split(b"-->", 1)[1] for i in range(200, 205)]
    fake.bodies[CAMPAIGNS] = b"<campaigns>" + b"".join(details) + b"</campaigns>"
    snap = source(fake, pki, tmp_path).read()
    assert not any(fake.hits.get(f"{CAMPAIGNS}/{i}") for i in range(200, 205))
    assert [c.name for c in snap.campaigns] == ["Callbacks", "Renewals", "Collections"]
    result = compute(snap, LicenseType.FLEX, ALL_FEATURES)
    assert result.tags == EXPECTED[LicenseType.FLEX]
