"""A fake UCCX + Finesse: a real HTTPS server on loopback, serving the documented XML.

* :func:`make_cluster` builds a cluster that looks like a real one (several hundred
  agents, supervisors, voice / chat / email CSQs of both pool kinds, an agent-based
  progressive campaign, every Finesse state, an agent with no skills, an agent with a
  skill no CSQ uses, a Finesse user the Admin API does not know).
* :func:`resources_xml`, :func:`csqs_xml`, :func:`campaigns_xml`, :func:`users_xml`
  render it as the Admin API and Finesse do; :func:`file_snapshot` writes the same
  cluster in the file format, the reference the UCCX source must agree with.
* :class:`FakeUccx` serves it over TLS with a CA made at test time (:func:`make_pki`,
  into a temporary directory: no key is ever committed), checks basic auth, and can be
  told to fail per path: ``401``, ``403``, ``500``, ``503``, ``302``, ``slow``, ``truncated``,
  ``cut`` (connection closed mid-body), ``bomb``, ``html``, ``empty``, ``404``, ``huge``,
  ``drip`` (the right body, one byte every :data:`DRIP_EVERY` seconds).
* The Admin API's campaigns are served as documented: ``/adminapi/campaign`` lists
  summaries, ``/adminapi/campaign/{id}`` gives each one's ``typeSpecificInfo``.
  Error bodies are the documented ones of ``tests/fixtures/uccx``.
* Each server also answers Finesse's ``GET /finesse/api/SystemInfo``, without asking
  for credentials as Finesse documents, with its
  :attr:`FakeUccx.status` (``IN_SERVICE`` / ``OUT_OF_SERVICE``); out of service, its
  ``/finesse/api/Users`` lists every user logged out (the standby's "nobody here") or
  answers 503 (:attr:`FakeUccx.standby`). :meth:`FakeUccx.go_dark` closes its port and
  :meth:`FakeUccx.come_back` opens the same port again.
* :class:`FakePair` is a two-node cluster of such servers on loopback: the master
  switchable during a test, a node that goes dark, and island mode (both nodes in service
  with different, overlapping agents logged in, :func:`split_brain`).

The benchmark (``benchmarks/bench_sources.py``) renders its 2,000-agent pair from here.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import ipaddress
import random
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as esc
from xml.sax.saxutils import quoteattr

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "https://uccx-pub.example.com"
#: The node names the fake SystemInfo gives (names only: nothing connects to them).
PRIMARY, SECONDARY = "uccx-a.example.com", "uccx-b.example.com"
SYSTEM_INFO = "/finesse/api/SystemInfo"
USERS = "/finesse/api/Users"
#: The corpus of documented payloads (each file names the Cisco page it follows).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "uccx"
#: A ``drip`` answer sends one byte this often: far inside any per-read timeout.
DRIP_EVERY = 0.2

# --- the cluster ------------------------------------------------------------------------------


@dataclass
class Resource:
    id: str
    type: int  # 1 agent, 2 supervisor
    skills: list[str]
    team: str
    rg_csqs: list[str] = field(default_factory=list)  # resource-group CSQs it serves
    state: str | None = "LOGOUT"  # None: Finesse does not list it


@dataclass
class Csq:
    id: int
    name: str
    type: str
    skills: list[str]  # empty: a resource-group CSQ


@dataclass
class Campaign:
    name: str
    type: str  # campaignType: AGENT or IVR
    dialer: str  # dialerType: DIRECT_PREVIEW, PROGRESSIVE, PREDICTIVE
    csqs: list[str]  # the names of its assigned CSQs (none for an IVR campaign)

    @property
    def outbound(self) -> bool:
        """An agent-based campaign: every dialer type is a Premium feature
        (docs/licensing.md, "Features")."""
        return self.type == "AGENT"


@dataclass
class Cluster:
    resources: list[Resource]
    csqs: list[Csq]
    campaigns: list[Campaign]
    #: Finesse users the Admin API does not know: (loginId, state, roles).
    strangers: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def csq_map(self, res: Resource) -> list[str]:
        """The CSQs UCCX lists for a resource with ``withCsqs``: by skill and by group."""
        mine = set(res.skills)
        by_skill = [c.name for c in self.csqs if c.skills and mine & set(c.skills)]
        return by_skill + res.rg_csqs


STATES = [
    "READY",
    "NOT_READY",
    "TALKING",
    "RESERVED",
    "WORK",
    "WORK_READY",
    "HOLD",
    "RESERVED_OUTBOUND",
    "RESERVED_OUTBOUND_PREVIEW",
    "LOGOUT",
]
STATE_WEIGHTS = [25, 15, 25, 3, 5, 5, 4, 2, 1, 15]


def make_cluster(agents: int = 400, seed: int = 7) -> Cluster:
    """A cluster of ``agents`` resources (about 6 % supervisors); every case is present."""
    rng = random.Random(seed)  # test data, not security
    n_skills = max(12, agents // 20)
    skills = [f"Skill_{i:03d}" for i in range(n_skills)]
    csqs: list[Csq] = []
    kinds = ["VOICE"] * 7 + ["CHAT"] * 2 + ["EMAIL"]
    for i in range(max(10, agents // 25)):
        kind = kinds[i % len(kinds)]
        csqs.append(Csq(i + 1, f"{kind.title()}_CSQ_{i:03d}", kind, rng.sample(skills[:-1], 2)))
    # Resource-group CSQs: one email, one voice (the progressive campaign's).
    csqs.append(Csq(len(csqs) + 1, "Email_RG_CSQ", "EMAIL", []))
    csqs.append(Csq(len(csqs) + 1, "Outbound_RG_CSQ", "VOICE", []))
    voice = [c for c in csqs if c.type == "VOICE" and c.skills]
    campaigns = [
        Campaign("Renewals", "AGENT", "PROGRESSIVE", ["Outbound_RG_CSQ"]),
        Campaign("Collections", "AGENT", "PREDICTIVE", [voice[0].name]),
        Campaign("Survey", "IVR", "PREDICTIVE", []),  # IVR: ports, no agent's feature
        Campaign("Callbacks", "AGENT", "DIRECT_PREVIEW", [voice[2].name]),  # premium too
    ]
    teams = [[*rng.sample(skills[:-1], rng.randint(1, 4))] for _ in range(max(2, agents // 30))]
    resources = []
    for i in range(agents):
        team = rng.randrange(len(teams))
        own = list(teams[team])
        if rng.random() < 0.15:
            extra = rng.choice(skills[:-1])
            if extra not in own:
                own.append(extra)
        res = Resource(
            f"agent{i:04d}",
            2 if rng.random() < 0.06 else 1,
            own,
            f"Team_{team:02d}",
            state=rng.choices(STATES, weights=STATE_WEIGHTS)[0],
        )
        if rng.random() < 0.05:
            res.rg_csqs.append("Email_RG_CSQ")
        if rng.random() < 0.05:
            res.rg_csqs.append("Outbound_RG_CSQ")
        resources.append(res)
    # Every state at least once, and the special cases, at fixed places.
    for i, state in enumerate([*STATES, "UNKNOWN"]):
        resources[i].state = state
    resources[20].skills = []  # no skills, logged in
    resources[20].state = "READY"
    resources[21].skills = [skills[-1]]  # a skill no CSQ uses, logged in
    resources[21].state = "TALKING"
    resources[22].state = None  # configured, never seen by Finesse
    resources[23].id = "MixedCase.User"  # Finesse spells it in lower case
    resources[23].state = "READY"
    strangers = [
        ("ghost.agent", "READY", ["Agent"]),
        ("ghost.super", "NOT_READY", ["Agent", "Supervisor"]),
        ("gone.agent", "LOGOUT", ["Agent"]),
    ]
    return Cluster(resources, csqs, campaigns, strangers)


def file_snapshot(cluster: Cluster) -> dict[str, Any]:
    """The same cluster as an operator would write it in the file format."""
    outbound_csqs = {name for c in cluster.campaigns if c.outbound for name in c.csqs}
    agents: list[dict[str, Any]] = []
    for res in cluster.resources:
        agents.append(
            {
                "id": res.id,
                "type": "supervisor" if res.type == 2 else "agent",
                "state": res.state or "LOGOUT",
                # A resource group is written as one more skill, named after its CSQ
                # as the UCCX source names it (so `usage --explain` reads the same).
                "skills": res.skills + [f"csq:{g}" for g in res.rg_csqs],
                "team": res.team,
                "outbound": bool(outbound_csqs & set(cluster.csq_map(res))),
            }
        )
    for login, state, roles in cluster.strangers:
        if state != "LOGOUT":
            kind = "supervisor" if "Supervisor" in roles else "agent"
            agents.append({"id": login, "type": kind, "state": state})
    csqs = [
        {"name": c.name, "type": c.type, "skills": c.skills or [f"csq:{c.name}"]}
        for c in cluster.csqs
    ]
    campaigns = [{"name": c.name, "csqs": c.csqs} for c in cluster.campaigns if c.outbound]
    return {"agents": agents, "csqs": csqs, "campaigns": campaigns}


# --- XML, as the Admin API and Finesse write it ----------------------------------------------


def _skill_map(names: list[str], indent: str) -> str:
    return "".join(
        f"{indent}<skillCompetency>\n"
        f"{indent}  <competencelevel>{5 - i % 5}</competencelevel>\n"
        f"{indent}  <skillNameUriPair name={quoteattr(n)}>"
        f"<refURL>{HOST}/adminapi/skill/{len(n)}</refURL></skillNameUriPair>\n"
        f"{indent}</skillCompetency>\n"
        for i, n in enumerate(names)
    )


def resources_xml(cluster: Cluster) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<resources>\n']
    ids = {c.name: c.id for c in cluster.csqs}
    for i, res in enumerate(cluster.resources):
        csq_map = "".join(
            f"      <csq name={quoteattr(n)}><refURL>{HOST}/adminapi/csq/{ids[n]}</refURL></csq>\n"
            for n in cluster.csq_map(res)
        )
        out.append(
            "  <resource>\n"
            f"    <self>{HOST}/adminapi/resource/{esc(res.id)}</self>\n"
            f"    <userID>{esc(res.id)}</userID>\n"
            f"    <firstName>First{i}</firstName>\n"
            f"    <lastName>Last{i}</lastName>\n"
            f"    <extension>{10000 + i}</extension>\n"
            f"    <alias>{esc(res.id)}</alias>\n"
            f'    <resourceGroup name="RG_{res.team}"><refURL>{HOST}/adminapi/resourceGroup/1'
            "</refURL></resourceGroup>\n"
            f"    <skillMap>\n{_skill_map(res.skills, '      ')}    </skillMap>\n"
            "    <autoAvailable>true</autoAvailable>\n"
            f"    <type>{res.type}</type>\n"
            f"    <team name={quoteattr(res.team)}><refURL>{HOST}/adminapi/team/2</refURL></team>\n"
            "    <primarySupervisorOf/>\n    <secondarySupervisorOf/>\n"
            f"    <csqMap>\n{csq_map}    </csqMap>\n"
            "  </resource>\n"
        )
    out.append("</resources>\n")
    return "".join(out).encode()


def csqs_xml(cluster: Cluster) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<csqs>\n']
    for c in cluster.csqs:
        if c.skills:
            pool = (
                "    <resourcePoolType>SKILL_GROUP</resourcePoolType>\n"
                "    <poolSpecificInfo>\n      <skillGroup>\n"
                f"{_skill_map(c.skills, '        ')}"
                "        <selectionCriteria>Longest Available</selectionCriteria>\n"
                "      </skillGroup>\n    </poolSpecificInfo>\n"
            )
        else:
            pool = (
                "    <resourcePoolType>RESOURCE_GROUP</resourcePoolType>\n"
                "    <poolSpecificInfo>\n      <resourceGroup>\n"
                f'        <resourceGroupNameUriPair name="RG_{c.name}"><refURL>{HOST}'
                "/adminapi/resourceGroup/9</refURL></resourceGroupNameUriPair>\n"
                "        <selectionCriteria>Longest Available</selectionCriteria>\n"
                "      </resourceGroup>\n    </poolSpecificInfo>\n"
            )
        out.append(
            "  <csq>\n"
            f"    <self>{HOST}/adminapi/csq/{c.id}</self>\n"
            f"    <id>{c.id}</id>\n"
            f"    <name>{esc(c.name)}</name>\n"
            f"    <queueType>{c.type}</queueType>\n"
            "    <queueAlgorithm>FIFO</queueAlgorithm>\n"
            "    <autoWork>true</autoWork>\n    <wrapupTime>0</wrapupTime>\n"
            f"{pool}"
            "    <serviceLevel>5</serviceLevel>\n"
            "    <serviceLevelPercentage>70</serviceLevelPercentage>\n"
            "  </csq>\n"
        )
    out.append("</csqs>\n")
    return "".join(out).encode()


CAMPAIGN_ID = 200
#: The ``typeSpecificInfo`` child of each kind of campaign. obPreview, obIvrProgressive and
#: obIvrPredictive are in Cisco's samples; the agent progressive / predictive names are
#: our guess (tests/fixtures/uccx/campaign-201.xml says why the source does not care).
TYPE_SPECIFIC = {
    ("AGENT", "DIRECT_PREVIEW"): "obPreview",
    ("AGENT", "PROGRESSIVE"): "obAgentProgressive",
    ("AGENT", "PREDICTIVE"): "obAgentPredictive",
    ("IVR", "PROGRESSIVE"): "obIvrProgressive",
    ("IVR", "PREDICTIVE"): "obIvrPredictive",
}


def _campaign_head(c: Campaign, i: int, indent: str) -> str:
    return (
        f"{indent}<self>{HOST}/adminapi/campaign/{CAMPAIGN_ID + i}</self>\n"
        f"{indent}<campaignId>{CAMPAIGN_ID + i}</campaignId>\n"
        f"{indent}<campaignName>{esc(c.name)}</campaignName>\n"
        f"{indent}<enabled>true</enabled>\n"
        f"{indent}<description>{esc(c.name)} campaign</description>\n"
        f"{indent}<startTime>08:00</startTime>\n{indent}<endTime>21:00</endTime>\n"
        f"{indent}<timeZone>Central European Time</timeZone>\n"
        f"{indent}<campaignType>{c.type}</campaignType>\n"
        f"{indent}<dialerType>{c.dialer}</dialerType>\n"
        f"{indent}<pendingContacts>0</pendingContacts>\n"
    )


def campaigns_xml(cluster: Cluster) -> bytes:
    """Cisco's "Get List of Campaigns": summaries, without ``typeSpecificInfo``."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<campaigns>\n']
    for i, c in enumerate(cluster.campaigns):
        out.append(f"  <campaign>\n{_campaign_head(c, i, '    ')}  </campaign>\n")
    out.append("</campaigns>\n")
    return "".join(out).encode()


def campaign_xml(cluster: Cluster, i: int) -> bytes:
    """Cisco's "Get Campaign" of campaign ``i``: its assigned CSQs, each referenced the three
    documented ways in turn (name = id with a refURL as in Cisco's sample, name and
    refURL, name only)."""
    c = cluster.campaigns[i]
    ids = {q.name: q.id for q in cluster.csqs}
    refs = []
    for j, name in enumerate(c.csqs):
        ref = f"<refURL>{HOST}/adminapi/csq/{ids[name]}</refURL>"
        if j % 3 == 0:
            refs.append(f'<csq name="{ids[name]}">{ref}</csq>')
        elif j % 3 == 1:
            refs.append(f"<csq name={quoteattr(name)}>{ref}</csq>")
        else:
            refs.append(f"<csq name={quoteattr(name)}/>")
    assigned = (
        "      <assignedCSQs>\n"
        + "".join(f"        {r}\n" for r in refs)
        + "      </assignedCSQs>\n"
        if c.type == "AGENT"
        else ""
    )
    tag = TYPE_SPECIFIC[(c.type, c.dialer)]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<campaign>\n'
        f"{_campaign_head(c, i, '  ')}  <typeSpecificInfo>\n    <{tag}>\n"
        "      <maxDialAttempts>3</maxDialAttempts>\n"
        f"{assigned}    </{tag}>\n  </typeSpecificInfo>\n</campaign>\n"
    ).encode()


def campaign_bodies(cluster: Cluster) -> dict[str, bytes]:
    """``/adminapi/campaign/{id}`` of every campaign."""
    return {
        f"/adminapi/campaign/{CAMPAIGN_ID + i}": campaign_xml(cluster, i)
        for i in range(len(cluster.campaigns))
    }


def users_xml(cluster: Cluster, *, nobody: bool = False) -> bytes:
    """Finesse's ``<Users>``; ``nobody``: every user logged out (a standby's answer)."""
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Users>\n']
    users = [
        (r.id.lower(), r.state, ["Agent", "Supervisor"] if r.type == 2 else ["Agent"])
        for r in cluster.resources
        if r.state is not None
    ]
    for i, (login, listed, roles) in enumerate([*users, *cluster.strangers]):
        state = "LOGOUT" if nobody else listed
        role_xml = "".join(f"<role>{r}</role>" for r in roles)
        out.append(
            "  <User>\n"
            f"    <uri>/finesse/api/User/{esc(login)}</uri>\n"
            f"    <loginId>{esc(login)}</loginId>\n"
            f"    <loginName>{esc(login)}</loginName>\n"
            f"    <firstName>First{i}</firstName>\n    <lastName>Last{i}</lastName>\n"
            f"    <extension>{10000 + i}</extension>\n"
            f"    <state>{state}</state>\n"
            f"    <roles>{role_xml}</roles>\n"
            "    <teamId>2</teamId>\n    <teamName>Team</teamName>\n"
            "  </User>\n"
        )
    out.append("</Users>\n")
    return "".join(out).encode()


def system_info_xml(status: str, reason: str = "") -> bytes:
    """Finesse's documented ``<SystemInfo>`` (the parts a client reads, and some others)."""
    why = f"  <statusReason>{esc(reason)}</statusReason>\n" if reason else ""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<SystemInfo>\n'
        "  <currentTimestamp>2027-01-04T08:00:00.000Z</currentTimestamp>\n"
        "  <deploymentType>UCCX</deploymentType>\n"
        f"  <primaryNode><host>{PRIMARY}</host><httpsPort>8445</httpsPort></primaryNode>\n"
        f"  <secondaryNode><host>{SECONDARY}</host><httpsPort>8445</httpsPort></secondaryNode>\n"
        f"  <status>{status}</status>\n{why}"
        "  <systemAuthMode>NON_SSO</systemAuthMode>\n"
        "  <timezoneOffset>0</timezoneOffset>\n"
        f"  <uri>{SYSTEM_INFO}</uri>\n"
        "  <xmppDomain>uccx-a.example.com</xmppDomain>\n"
        "</SystemInfo>\n"
    ).encode()


def corpus() -> dict[str, bytes]:
    """The documented corpus (tests/fixtures/uccx) by the path the Admin API and Finesse
    serve each file at."""
    out = {
        "/adminapi/resource?withCsqs": (FIXTURES / "resources.xml").read_bytes(),
        "/adminapi/csq": (FIXTURES / "csqs.xml").read_bytes(),
        "/adminapi/campaign": (FIXTURES / "campaigns.xml").read_bytes(),
        USERS: (FIXTURES / "users.xml").read_bytes(),
    }
    for path in sorted(FIXTURES.glob("campaign-*.xml")):
        out[f"/adminapi/campaign/{path.stem.split('-', 1)[1]}"] = path.read_bytes()
    return out


def serve_corpus(server: FakeUccx) -> FakeUccx:
    """``server`` answers with the corpus instead of its generated cluster."""
    server.bodies = corpus()
    server.system_info = {
        "IN_SERVICE": (FIXTURES / "systeminfo-in-service.xml").read_bytes(),
        "OUT_OF_SERVICE": (FIXTURES / "systeminfo-out-of-service.xml").read_bytes(),
    }
    server._nobody = b""  # out of service, the corpus's Finesse answers 503
    server.standby = "503"
    return server


def split_brain(cluster: Cluster) -> tuple[Cluster, Cluster, Cluster]:
    """Island mode: what node A's Finesse lists, what node B's lists, and the cluster a
    reader of both should see (each agent once).

    Of the logged-in resources, a third is logged in on A only, a third on B only (the
    other node does not list them, or lists them logged out) and a third on both, in
    different states; the strangers are on both.
    """
    a = copy.deepcopy(cluster)
    b = copy.deepcopy(cluster)
    both = copy.deepcopy(cluster)
    for i, res in enumerate(cluster.resources):
        if res.state in (None, "LOGOUT", "UNKNOWN"):
            continue
        if i % 3 == 0:  # on A only
            b.resources[i].state = None if i % 2 else "LOGOUT"
        elif i % 3 == 1:  # on B only
            a.resources[i].state = None if i % 2 else "LOGOUT"
        else:  # on both: A's state wins (the first node named)
            b.resources[i].state = "NOT_READY" if res.state != "NOT_READY" else "READY"
    return a, b, both


# --- TLS ----------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate for 127.0.0.1 / localhost, written to ``directory``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Fake UCCX test CA"))
        .issuer_name(_name("Fake UCCX test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


# --- the server ---------------------------------------------------------------------------------

BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    b' <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
    b' <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">\n'
    b' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n'
    b"]>\n<Users><User><loginId>&lol3;</loginId><state>READY</state></User></Users>\n"
)


#: The documented error bodies (tests/fixtures/uccx): Finesse's ApiErrors for 401 and
#: 503, the Admin API's apiError for 404. An Admin API 401 is the web server's own page.
ERROR_401 = (FIXTURES / "error-401-finesse.xml").read_bytes()
ERROR_503 = (FIXTURES / "error-503-finesse.xml").read_bytes()
ERROR_404 = (FIXTURES / "error-404-adminapi.xml").read_bytes()
HTML_401 = b"<html><body>Unauthorized</body></html>"


class FakeUccx:
    """The fake server; use as a context manager. ``fail[path] = mode`` makes it fail."""

    def __init__(self, cluster: Cluster, pki: Pki, user: str, password: str, port: int = 0) -> None:
        self.cluster = cluster
        self.pki = pki
        self.user = user
        self.password = password
        self.fail: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.auth_seen: list[str] = []
        #: The Authorization header of each request, by path ("" when none was sent).
        self.auth_by_path: dict[str, list[str]] = {}
        self.release = threading.Event()  # ends a "slow" answer at once when set
        self.dripping = threading.Event()  # set when a "drip" answer has begun
        #: Per "drip" answer: how many bytes the client took before it hung up.
        self.dripped: list[int] = []
        #: What SystemInfo says: ``IN_SERVICE`` or ``OUT_OF_SERVICE``.
        self.status = "IN_SERVICE"
        self.status_reason = ""
        #: Out of service, ``/finesse/api/Users`` answers ``nobody`` (all logged out) or
        #: ``503`` (what Finesse documents for its usual operations).
        self.standby = "nobody"
        #: SystemInfo bodies by status, in place of :func:`system_info_xml` (the corpus).
        self.system_info: dict[str, bytes] | None = None
        self.bodies = {
            "/adminapi/resource?withCsqs": resources_xml(cluster),
            "/adminapi/csq": csqs_xml(cluster),
            "/adminapi/campaign": campaigns_xml(cluster),
            **campaign_bodies(cluster),
            USERS: users_xml(cluster),
        }
        self._nobody = users_xml(cluster, nobody=True)
        #: Called when a request for the path arrives, before it is answered (a failover
        #: that happens while a sample is being read).
        self.on_hit: dict[str, Callable[[], None]] = {}
        self.dark = False
        self._serve(port)
        self.url = f"https://127.0.0.1:{self.port}"

    def _serve(self, port: int) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pki.cert, self.pki.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeUccx:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        if not self.dark:
            self._stop()

    def _stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def go_dark(self) -> None:
        """The node is down: its port is closed (a connection is refused)."""
        assert not self.dark
        self.dark = True
        self._stop()

    def come_back(self) -> None:
        """The node is up again, on the same port."""
        assert self.dark
        deadline = time.monotonic() + 10
        while True:
            try:
                self._serve(self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.thread.start()
        self.dark = False

    def set_users(self, cluster: Cluster) -> None:
        """Finesse on this node lists ``cluster``'s states from now on."""
        self.bodies[USERS] = users_xml(cluster)

    def _send(self, h: BaseHTTPRequestHandler, code: int, body: bytes, length: int = -1) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(len(body) if length < 0 else length))
        if code == 302:
            h.send_header("Location", "https://elsewhere.example.com/")
        h.end_headers()
        h.wfile.write(body)

    def _drip(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        self.dripping.set()
        sent = 0
        try:
            for i in range(len(body)):
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
                sent += 1
                if self.release.wait(DRIP_EVERY):
                    break
        except OSError:
            h.close_connection = True
        self.dripped.append(sent)

    def _body(self, path: str) -> bytes | None:
        if path == SYSTEM_INFO:
            if self.system_info is not None:
                return self.system_info[self.status]
            return system_info_xml(self.status, self.status_reason)
        if path == USERS and self.status != "IN_SERVICE":
            return self._nobody
        return self.bodies.get(path)

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path
        self.hits[path] = self.hits.get(path, 0) + 1
        hook = self.on_hit.get(path)
        if hook is not None:
            hook()
        auth = h.headers.get("Authorization", "")
        self.auth_seen.append(auth)
        self.auth_by_path.setdefault(path, []).append(auth)
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        mode = self.fail.get(path, "")
        # SystemInfo needs no credentials (Finesse documents it so): any are ignored.
        if mode == "401" or (auth != f"Basic {expected}" and path != SYSTEM_INFO):
            self._send(h, 401, ERROR_401 if path.startswith("/finesse/") else HTML_401)
            return
        if path == USERS and self.status != "IN_SERVICE" and self.standby == "503":
            self._send(h, 503, ERROR_503)
            return
        body = self._body(path)
        if body is None or mode == "404":
            self._send(h, 404, ERROR_404)
            return
        if mode in ("403", "500", "302") or (mode == "503" and not path.startswith("/finesse/")):
            self._send(h, int(mode), b"<apiError><errorMessage>no</errorMessage></apiError>")
        elif mode == "slow":
            self.release.wait(30)
            self._send(h, 200, body)
        elif mode == "truncated":  # a well-formed HTTP answer holding half a document
            self._send(h, 200, body[: len(body) // 2])
        elif mode == "cut":  # the connection closes before Content-Length bytes
            self._send(h, 200, body[: len(body) // 2], length=len(body))
            h.close_connection = True
        elif mode == "bomb":
            self._send(h, 200, BOMB)
        elif mode == "html":
            self._send(h, 200, b"<html><head><title>Login</title></head><body/></html>")
        elif mode == "empty":
            root = re.search(rb"<(\w+)>", body)
            assert root is not None
            self._send(h, 200, b"<" + root.group(1) + b"/>")
        elif mode == "503" and path.startswith("/finesse/"):
            self._send(h, 503, ERROR_503)
        elif mode == "drip":
            self._drip(h, body)
        elif mode == "huge":
            self._send(h, 200, b"", length=1 << 40)
        else:
            self._send(h, 200, body)


class FakePair:
    """A two-node UCCX cluster: two :class:`FakeUccx` on loopback, node 0 master at first.

    Both serve the same configuration (the database is replicated); only the master's
    Finesse is IN_SERVICE. Use as a context manager.
    """

    def __init__(self, cluster: Cluster, pki: Pki, user: str, password: str) -> None:
        self.nodes = [FakeUccx(cluster, pki, user, password) for _ in range(2)]
        self.make_master(0)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def __enter__(self) -> FakePair:
        for node in self.nodes:
            node.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.__exit__(*exc)

    def make_master(self, i: int) -> None:
        """Node ``i`` is master: its Finesse in service, the other's out of service."""
        for j, node in enumerate(self.nodes):
            node.status = "IN_SERVICE" if j == i else "OUT_OF_SERVICE"
            node.status_reason = "" if j == i else "Finesse is not the master node"

    def island(self, a: Cluster, b: Cluster) -> None:
        """Island mode: both nodes in service, node 0 listing ``a``, node 1 ``b``."""
        self.nodes[0].set_users(a)
        self.nodes[1].set_users(b)
        for node in self.nodes:
            node.status, node.status_reason = "IN_SERVICE", ""

    def hits(self, path: str) -> list[int]:
        return [n.hits.get(path, 0) for n in self.nodes]
