"""``source.kind: uccx``: the UCCX Administration REST API and Finesse, over verified HTTPS.

Two kinds of data with two lifetimes:

* **Configuration** (who has which skills, which CSQ serves which media, which CSQs
  belong to agent-based outbound campaigns) changes rarely and costs the
  most to read: it is read on the first sample and again every ``config_refresh``. When a
  refresh fails, the last good configuration is kept (logged, and noted in the snapshot):
  skills seldom change, and a UCCX Administration restart must not fail every sample.
* **Live state** (who is logged in) is read from Finesse at every sample. When that read
  fails the sample fails (:class:`SourceError`, LICENSE_COMPUTATION_FAILED): a sample of
  zero agents would under-report usage.

Both are joined into the document of the file format and validated by
:func:`parse_snapshot`, so consumption from UCCX is by construction what the same cluster
written as a file snapshot gives. An agent logged in to Finesse but unknown to the Admin
API is counted (no skills: a standard or base seat) and noted, never dropped.

Security: basic auth over TLS that is always verified (``ca_bundle`` or the system trust
store; ``REQUESTS_CA_BUNDLE`` and proxy variables are ignored), no redirects followed,
explicit connect and read timeouts and a deadline for each whole request (enforced while
reading, :mod:`ccx_agent.net.deadline`), bodies capped at :data:`MAX_BODY` and parsed by
:mod:`ccx_agent.sources.safexml`. Error messages are built here, never copied from an
exception, and every one is scrubbed of the passwords before it leaves this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote
from xml.etree.ElementTree import Element

import requests

from ccx_agent.config.schema import FINESSE_CREDENTIAL, UCCX_CREDENTIAL
from ccx_agent.config.schema import UccxSource as UccxSourceConfig
from ccx_agent.licensing.snapshot import Snapshot, SnapshotError, parse_snapshot
from ccx_agent.net.deadline import ABORTED, Exchange
from ccx_agent.net.http import DeadlineSession, describe
from ccx_agent.sources import SourceError
from ccx_agent.sources.cluster import (
    IN_SERVICE,
    SYSTEM_INFO_PATH,
    Origin,
    Probe,
    User,
    Watch,
    config_order,
    parse_system_info,
    union,
)
from ccx_agent.sources.safexml import XmlError, parse_xml

log = logging.getLogger(__name__)

#: A response body larger than this is refused (a 400-agent UCCX answers in well under 1 MB).
MAX_BODY = 64 * 1024 * 1024
#: A password file larger than this is not a password file.
MAX_PASSWORD = 4096
RESOURCES_PATH = "/adminapi/resource?withCsqs"
CSQS_PATH = "/adminapi/csq"
CAMPAIGNS_PATH = "/adminapi/campaign"
USERS_PATH = "/finesse/api/Users"
#: Admin API resource ``type``: 1 agent, 2 supervisor.
RESOURCE_TYPES = {"1": "agent", "2": "supervisor"}
CSQ_TYPES = frozenset({"VOICE", "CHAT", "EMAIL"})
#: The ``dialerType`` of the ``campaignType`` AGENT campaigns whose agents take the
#: ``outbound`` feature: all three. Direct preview is a Premium feature too (Cisco's
#: licensing requirements for Outbound, docs/licensing.md, "Features"); IVR campaigns
#: take outbound ports, not an agent's feature.
OUTBOUND_DIALERS = frozenset({"DIRECT_PREVIEW", "PROGRESSIVE", "PREDICTIVE"})
#: The skill that stands for "serves this resource-group CSQ" (such a CSQ has no skills).
CSQ_SKILL_PREFIX = "csq:"


# --- parsing (no I/O: the benchmark and the tests call these directly) --------------------


@dataclass(frozen=True, slots=True)
class Resource:
    """One Admin API resource (agent or supervisor) as configured."""

    id: str
    type: str
    skills: tuple[str, ...]
    team: str | None
    csqs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CsqInfo:
    name: str
    type: str
    #: The skills of a skill-group CSQ; empty for a resource-group CSQ.
    skills: tuple[str, ...]
    #: Its ``<id>`` (else the id at the end of its ``<self>``): what a campaign's
    #: ``assignedCSQs/csq/refURL`` ends with.
    id: str = ""


@dataclass(frozen=True, slots=True)
class CsqRef:
    """One ``assignedCSQs/csq`` of a campaign: its ``name`` attribute and the id at the
    end of its ``refURL`` (empty when it has none)."""

    name: str
    ref_id: str


@dataclass(frozen=True, slots=True)
class Campaign:
    """One Admin API campaign, as far as licensing cares."""

    id: str
    name: str
    #: ``campaignType``: AGENT or IVR.
    type: str
    #: ``dialerType``: DIRECT_PREVIEW, PROGRESSIVE or PREDICTIVE.
    dialer: str
    #: Its ``typeSpecificInfo/*/assignedCSQs/csq``; ``None`` when it has no
    #: ``typeSpecificInfo`` (the summaries of "Get List of Campaigns").
    csqs: tuple[CsqRef, ...] | None

    @property
    def outbound(self) -> bool:
        """Its agents take the ``outbound`` feature (:data:`OUTBOUND_DIALERS`)."""
        return self.type == "AGENT" and self.dialer in OUTBOUND_DIALERS


@dataclass(frozen=True)
class Configuration:
    """The slow-changing half of a snapshot, in the file format, ready to be joined."""

    #: One file-format agent per resource, ``state`` left out (Finesse gives it).
    agents: tuple[dict[str, Any], ...]
    csqs: tuple[dict[str, Any], ...]
    #: ``casefold(userID)`` to its index in ``agents``: Finesse's loginId joins userID.
    index: Mapping[str, int]
    notes: tuple[str, ...] = ()
    #: When it was read (the source's clock).
    loaded_at: float = 0.0
    #: The outbound campaigns in the file format, to explain ``outbound`` (usage --explain).
    campaigns: tuple[dict[str, Any], ...] = ()
    #: The Admin API base URL it was read from.
    read_from: str = ""


def _names(parent: Element, path: str, where: str) -> tuple[str, ...]:
    out = []
    for element in parent.iterfind(path):
        name = (element.get("name") or "").strip()
        if not name:
            raise XmlError(f"{where}: a {path.rsplit('/', 1)[-1]} without a name")
        out.append(name)
    return tuple(out)


def _text(element: Element, tag: str) -> str:
    return (element.findtext(tag) or "").strip()


def parse_resources(body: bytes) -> list[Resource]:
    """``GET /adminapi/resource?withCsqs``: ``<resources><resource>...``."""
    out = []
    for i, res in enumerate(parse_xml(body, "resources").iterfind("resource")):
        user_id = _text(res, "userID")
        if not user_id:
            raise XmlError(f"resource[{i}]: no userID")
        where = f"resource[{i}] (userID {user_id!r})"
        raw_type = _text(res, "type") or "1"
        kind = RESOURCE_TYPES.get(raw_type)
        if kind is None:
            raise XmlError(f"{where}: type must be 1 (agent) or 2 (supervisor), got {raw_type!r}")
        team = res.find("team")
        out.append(
            Resource(
                user_id,
                kind,
                _names(res, "skillMap/skillCompetency/skillNameUriPair", where),
                (team.get("name") or None) if team is not None else None,
                _names(res, "csqMap/csq", where),
            )
        )
    return out


def _last_segment(url: str) -> str:
    return url.strip().rstrip("/").rsplit("/", 1)[-1]


def parse_csqs(body: bytes) -> list[CsqInfo]:
    """``GET /adminapi/csq``: ``<csqs><csq>`` with id, name, queueType and, for a
    skill-group CSQ, its skills."""
    out = []
    for i, csq in enumerate(parse_xml(body, "csqs").iterfind("csq")):
        name = _text(csq, "name")
        if not name:
            raise XmlError(f"csq[{i}]: no name")
        where = f"csq[{i}] (name {name!r})"
        kind = _text(csq, "queueType").upper()
        if kind not in CSQ_TYPES:
            raise XmlError(f"{where}: queueType must be VOICE, CHAT or EMAIL, got {kind!r}")
        skills = _names(csq, "poolSpecificInfo/skillGroup/skillCompetency/skillNameUriPair", where)
        ident = _text(csq, "id") or _last_segment(_text(csq, "self"))
        out.append(CsqInfo(name, kind, skills, ident))
    return out


def _campaign(element: Element, where: str) -> Campaign:
    ident = _text(element, "campaignId") or _last_segment(_text(element, "self"))
    name = _text(element, "campaignName")
    if not name:
        raise XmlError(f"{where}: no campaignName")
    where = f"{where} (campaignName {name!r})"
    kind = _text(element, "campaignType").upper()
    if kind not in ("AGENT", "IVR"):
        raise XmlError(f"{where}: campaignType must be AGENT or IVR, got {kind!r}")
    dialer = _text(element, "dialerType").upper()
    if dialer not in OUTBOUND_DIALERS:
        raise XmlError(
            f"{where}: dialerType must be DIRECT_PREVIEW, PROGRESSIVE or PREDICTIVE, got {dialer!r}"
        )
    csqs: tuple[CsqRef, ...] | None = None
    info = element.find("typeSpecificInfo")
    if info is not None:
        refs = []
        # Whatever the child is called (obPreview, obIvrProgressive, ...): the CSQs are
        # the same element in every kind that has them.
        for csq in info.iterfind("*/assignedCSQs/csq"):
            ref_name = (csq.get("name") or "").strip()
            ref_id = _last_segment(csq.findtext("refURL") or "")
            if not ref_name and not ref_id:
                raise XmlError(f"{where}: an assignedCSQs/csq without a name or a refURL")
            refs.append(CsqRef(ref_name, ref_id))
        csqs = tuple(refs)
    if not ident and csqs is None:
        raise XmlError(f"{where}: no campaignId")
    return Campaign(ident, name, kind, dialer, csqs)


def parse_campaign_list(body: bytes) -> list[Campaign]:
    """``GET /adminapi/campaign``: ``<campaigns><campaign>``. The documented list gives
    summaries (no ``typeSpecificInfo``): their CSQs come from :func:`parse_campaign`."""
    root = parse_xml(body, "campaigns")
    return [_campaign(c, f"campaign[{i}]") for i, c in enumerate(root.iterfind("campaign"))]


def parse_campaign(body: bytes) -> Campaign:
    """``GET /adminapi/campaign/{id}``: one ``<campaign>`` with its ``typeSpecificInfo``."""
    return _campaign(parse_xml(body, "campaign"), "campaign")


def outbound_campaigns(
    campaigns: Iterable[Campaign], csqs: Sequence[CsqInfo]
) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """The campaigns whose agents are outbound (:attr:`Campaign.outbound`), by name, with
    the names of their CSQs, and a note for each assigned CSQ that matches none.

    An assigned CSQ is matched by the id at the end of its ``refURL`` against the CSQ's
    ``<id>`` (or ``<self>``); by its ``name`` only when it has no ``refURL``: first as a
    CSQ name, then as an id (Cisco's "Get Campaign" sample puts the id in ``name``).
    """
    names = {c.name for c in csqs}
    by_id = {c.id: c.name for c in csqs if c.id}
    out: dict[str, tuple[str, ...]] = {}
    notes: list[str] = []
    for campaign in campaigns:
        if not campaign.outbound or campaign.csqs is None:
            continue
        found: list[str] = []
        for ref in campaign.csqs:
            if ref.ref_id:
                name = by_id.get(ref.ref_id)
            else:
                name = ref.name if ref.name in names else by_id.get(ref.name)
            if name is None:
                shown = f"refURL id {ref.ref_id!r}" if ref.ref_id else f"name {ref.name!r}"
                notes.append(
                    f"campaign {campaign.name!r}: assigned CSQ ({shown}) is not in the CSQ "
                    "list: no agent is outbound through it"
                )
            elif name not in found:
                found.append(name)
        out[campaign.name] = tuple(found)
    return out, notes


def parse_users(body: bytes) -> list[User]:
    """Finesse ``GET /finesse/api/Users``: ``<Users><User>`` with loginId, state, roles."""
    out = []
    for i, user in enumerate(parse_xml(body, "Users").iterfind("User")):
        login_id = _text(user, "loginId")
        if not login_id:
            raise XmlError(f"User[{i}]: no loginId")
        state = _text(user, "state").upper()
        if not state:
            raise XmlError(f"User[{i}] (loginId {login_id!r}): no state")
        roles = tuple((r.text or "").strip() for r in user.iterfind("roles/role"))
        out.append(User(login_id, state, roles))
    return out


def configuration(
    resources: Iterable[Resource],
    csqs: Iterable[CsqInfo],
    outbound_csqs: frozenset[str] = frozenset(),
    loaded_at: float = 0.0,
) -> Configuration:
    """Resources and CSQs in the file format.

    An agent's skills are its skill map, plus ``csq:NAME`` for each resource-group CSQ of
    its CSQ map (that CSQ gets the same one skill), so the skill rule of
    :func:`~ccx_agent.licensing.consumption.compute` sees the media of both kinds of CSQ.
    An agent serving (by CSQ map or by a skill) a CSQ of an agent-based campaign
    (:data:`OUTBOUND_DIALERS`) is ``outbound``.
    """
    csq_list = list(csqs)
    by_name = {c.name: c for c in csq_list}
    skill_csqs: dict[str, set[str]] = {}
    for c in csq_list:
        for skill in c.skills:
            skill_csqs.setdefault(skill, set()).add(c.name)
    outbound_skills = {s for s, names in skill_csqs.items() if names & outbound_csqs}
    grouped: set[str] = set()  # resource-group CSQs some agent serves
    agents: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for res in resources:
        skills = list(res.skills)
        for name in res.csqs:
            found = by_name.get(name)
            if found is not None and not found.skills:
                skills.append(CSQ_SKILL_PREFIX + name)
                grouped.add(name)
        agent: dict[str, Any] = {"id": res.id, "type": res.type, "skills": skills}
        if res.team is not None:
            agent["team"] = res.team
        if outbound_csqs and (
            not outbound_csqs.isdisjoint(res.csqs) or not outbound_skills.isdisjoint(res.skills)
        ):
            agent["outbound"] = True
        index.setdefault(res.id.casefold(), len(agents))
        agents.append(agent)
    out_csqs = tuple(
        {
            "name": c.name,
            "type": c.type,
            "skills": list(c.skills) or ([CSQ_SKILL_PREFIX + c.name] if c.name in grouped else []),
        }
        for c in csq_list
    )
    return Configuration(tuple(agents), out_csqs, index, loaded_at=loaded_at)


def join(config: Configuration, users: Iterable[User]) -> tuple[dict[str, Any], list[str]]:
    """The file-format document of this instant, and notes on what was odd.

    A configured agent Finesse does not list is logged out. A Finesse user logged in but
    unknown to the Admin API is added with no skills (a standard or base seat) and noted.
    """
    states: list[str | None] = [None] * len(config.agents)
    extra: list[dict[str, Any]] = []
    unknown: list[str] = []
    for user in users:
        i = config.index.get(user.login_id.casefold())
        if i is not None:
            states[i] = user.state
        elif user.state not in ("LOGOUT", "UNKNOWN"):
            kind = "supervisor" if "Supervisor" in user.roles else "agent"
            extra.append({"id": user.login_id, "type": kind, "state": user.state})
            unknown.append(user.login_id)
    agents = [
        {**agent, "state": state or "LOGOUT"}
        for agent, state in zip(config.agents, states, strict=True)
    ]
    notes = []
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        notes.append(
            f"{len(unknown)} user(s) logged in to Finesse but unknown to the UCCX Admin API, "
            f"counted with no skills (standard seat): {shown}{more}"
        )
    doc: dict[str, Any] = {"agents": agents + extra, "csqs": list(config.csqs)}
    if config.campaigns:
        doc["campaigns"] = list(config.campaigns)
    return doc, notes


def snapshot(config: Configuration, users: Iterable[User]) -> Snapshot:
    """Join, then validate as any file snapshot is; notes of both kept."""
    doc, notes = join(config, users)
    snap = parse_snapshot(doc)
    return dataclasses.replace(snap, notes=(*config.notes, *notes, *snap.notes))


# --- HTTP -----------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:g}s"


_SSL_REASON = re.compile(r"\[SSL[^\]]*\]\s*([^()]+?)\s*\(_ssl")
_SOCKET_REASONS = (
    "Connection refused",
    "Name or service not known",
    "No route to host",
    "Network is unreachable",
    "Connection reset by peer",
    "Temporary failure in name resolution",
)


def _reason(exc: requests.RequestException, connect: float, read: float) -> str:
    """A short reason of our own words for a failed request (exception text is not shown:
    it is long, and we do not want to vouch for what it may carry)."""
    text = str(exc)
    failure = describe(exc)
    if failure.kind == "tls":
        # Not the certificate (a plain-HTTP server on the port, an alert): no CA to fix.
        return f"TLS failed ({failure.detail})"
    if isinstance(exc, requests.exceptions.SSLError):
        m = _SSL_REASON.search(text)
        detail = m.group(1) if m else "the server's certificate was not accepted"
        return (
            f"TLS verification failed ({detail}): is the server's CA in "
            "source.uccx.ca_bundle, and the host name in its certificate?"
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection within {_seconds(connect)} (source.uccx.connect_timeout)"
    if isinstance(exc, requests.exceptions.ReadTimeout) or "timed out" in text:
        return f"no response within {_seconds(read)} (source.uccx.timeout)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "the response was cut short (connection closed before its end)"
    for reason in _SOCKET_REASONS:
        if reason in text:
            return f"cannot connect: {reason.lower()}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect, or the connection broke"
    return f"request failed ({type(exc).__name__})"


def _status(code: int, reason: str, user_key: str, what: str = "") -> str:
    if code == 503 and what == "Finesse":
        return (
            "HTTP 503 Service Unavailable: Finesse is out of service (it answers its usual "
            "operations so while its SystemInfo says OUT_OF_SERVICE)"
        )
    if code == 401:
        return f"HTTP 401 Unauthorized: the user name or password was refused ({user_key})"
    if code == 403:
        return (
            "HTTP 403 Forbidden: the account may not read this (docs/sources.md lists the "
            "permissions it needs)"
        )
    if 300 <= code < 400:
        return f"HTTP {code} redirect, not followed: give the final address in the URL"
    return f"HTTP {code} {reason}".rstrip()


class Endpoint:
    """One server (UCCX or Finesse): its base URL, credentials and one HTTPS session."""

    def __init__(
        self,
        what: str,
        base_url: str,
        user: str,
        password: Callable[[], str],
        ca_bundle: Path | None,
        connect_timeout: float,
        read_timeout: float,
        user_key: str,
    ) -> None:
        self.what = what
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.password = password
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_key = user_key
        self.session = DeadlineSession()
        # Only the configured CA and no proxy: the environment cannot weaken either.
        self.session.trust_env = False
        self.session.verify = str(ca_bundle) if ca_bundle is not None else True

    def get(self, path: str, *, missing_ok: bool = False, auth: bool = True) -> bytes | None:
        """The body of ``GET path`` (at most :data:`MAX_BODY` bytes); ``None`` for a 404
        when ``missing_ok``. Any failure is a :class:`SourceError` naming the URL.
        ``auth=False`` sends no credentials (Finesse's SystemInfo needs none: a password
        is not sent where it is not asked for)."""
        url = self.base_url + path
        where = f"{self.what} {url}"
        password = self.password() if auth else None
        with self.session.exchange(self.connect_timeout + self.read_timeout) as exchange:
            self._check(exchange, where)
            try:
                body = self._fetch(url, password, missing_ok, where)
            except (requests.RequestException, OSError) as exc:
                # A connection shut down by the deadline or the stop: say which.
                self._check(exchange, where)
                reason = (
                    _reason(exc, self.connect_timeout, self.read_timeout)
                    if isinstance(exc, requests.RequestException)
                    else "cannot connect, or the connection broke"
                )
                raise SourceError(f"{where}: {reason}") from None
            except SourceError:
                self._check(exchange, where)
                raise
            # A cut connection can look like the end of a body without a length.
            self._check(exchange, where)
        return body

    def _check(self, exchange: Exchange, where: str) -> None:
        if exchange.cancelled == ABORTED:
            raise SourceError(f"{where}: not completed: the agent is stopping")
        if exchange.cancelled is not None:
            # A server trickling bytes would never trip the per-read timeout.
            raise SourceError(
                f"{where}: response not complete within "
                f"{_seconds(self.connect_timeout + self.read_timeout)} "
                "(source.uccx.connect_timeout + source.uccx.timeout)"
            )

    def _fetch(self, url: str, password: str | None, missing_ok: bool, where: str) -> bytes | None:
        with self.session.get(
            url,
            auth=(self.user, password) if password is not None else None,
            headers={"Accept": "application/xml"},
            timeout=(self.connect_timeout, self.read_timeout),
            stream=True,
            allow_redirects=False,
        ) as response:
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code != 200:
                raise SourceError(
                    f"{where}: "
                    + _status(response.status_code, response.reason, self.user_key, self.what)
                )
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > MAX_BODY:
                raise SourceError(f"{where}: response larger than {MAX_BODY} bytes, refused")
            chunks = []
            size = 0
            for chunk in response.iter_content(chunk_size=256 * 1024):
                size += len(chunk)
                if size > MAX_BODY:
                    raise SourceError(f"{where}: response larger than {MAX_BODY} bytes, refused")
                chunks.append(chunk)
        return b"".join(chunks)

    def abort(self) -> None:
        """Cut the request in flight and refuse later ones (from any thread)."""
        self.session.abort()

    def close(self) -> None:
        self.session.close()


class CredentialError(SourceError):
    """A password that cannot be had: the same for every node, so asking the other node
    would only say it twice."""


def _read_password(path: Path, key: str) -> str:
    """The password in ``path``: its first line; a trailing newline is not part of it."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PASSWORD + 1)
    except OSError as exc:
        raise CredentialError(
            f"{key} {path}: cannot read the password file: {exc.strerror or type(exc).__name__}"
        ) from None
    if len(raw) > MAX_PASSWORD:
        raise CredentialError(
            f"{key} {path}: larger than {MAX_PASSWORD} bytes: not a password file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"{key} {path}: not UTF-8 text") from None
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise CredentialError(f"{key} {path}: the password file is empty")
    return password


@dataclass(frozen=True)
class Node:
    """One UCCX node: its Administration API and its Finesse."""

    admin: Endpoint
    finesse: Endpoint


@dataclass(frozen=True)
class LiveState:
    """Who is logged in, and from which nodes it was read."""

    users: list[User]
    nodes: tuple[int, ...]
    island: bool = False
    failed_over: bool = False
    notes: tuple[str, ...] = ()


T = TypeVar("T")


class UccxSource:
    """Reads the configuration now and then, the live state every time (see the module),
    from whichever node of the cluster is master (:mod:`ccx_agent.sources.cluster`)."""

    def __init__(
        self,
        cfg: UccxSourceConfig,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.environ = os.environ if environ is None else environ
        self.refresh = cfg.uccx.config_refresh.total_seconds()
        self.config: Configuration | None = None
        #: Where the last good sample's parts came from (``status``, ``usage``).
        self.origin: Origin | None = None
        self.watch = Watch()
        self._kept = False
        self._stopping = False
        self._pool: ThreadPoolExecutor | None = None
        self._secrets: set[str] = set()
        if cfg.uccx.password is not None:
            self._secrets.add(cfg.uccx.password.get_secret_value())
        problem = cfg.node_problem()
        if problem is not None:
            raise SourceError(f"{'.'.join(problem[0])}: {problem[2]}")
        for warning in cfg.warnings():
            log.warning("%s", warning)
        u, f = cfg.uccx, cfg.finesse
        connect, read = u.connect_timeout.total_seconds(), u.timeout.total_seconds()
        own_finesse = f.user is not None or f.password_file is not None
        self.nodes = [
            Node(
                Endpoint(
                    "UCCX Admin API",
                    admin_url,
                    u.user,
                    self._uccx_password,
                    u.ca_bundle,
                    connect,
                    read,
                    "source.uccx.user",
                ),
                Endpoint(
                    "Finesse",
                    finesse_url,
                    f.user or u.user,
                    self._finesse_password if own_finesse else self._uccx_password,
                    u.ca_bundle,
                    connect,
                    read,
                    "source.finesse.user" if f.user is not None else "source.uccx.user",
                ),
            )
            for admin_url, finesse_url in zip(u.node_urls(), cfg.finesse_urls(), strict=True)
        ]

    # -- credentials -----------------------------------------------------------------------

    def _credential(self, name: str) -> Path | None:
        directory = self.environ.get("CREDENTIALS_DIRECTORY")
        return Path(directory) / name if directory else None

    def _remember(self, password: str) -> str:
        self._secrets.add(password)
        return password

    def _uccx_password(self) -> str:
        u = self.cfg.uccx
        if u.password_file is not None:
            return self._remember(_read_password(u.password_file, "source.uccx.password_file"))
        if u.password is not None:
            return self._remember(u.password.get_secret_value())
        credential = self._credential(UCCX_CREDENTIAL)
        if credential is None:
            raise CredentialError(
                "source.uccx: no password: set source.uccx.password_file, or run under "
                f"systemd with LoadCredential={UCCX_CREDENTIAL}:PATH"
            )
        return self._remember(_read_password(credential, "systemd credential"))

    def _finesse_password(self) -> str:
        f = self.cfg.finesse
        if f.password_file is not None:
            return self._remember(_read_password(f.password_file, "source.finesse.password_file"))
        credential = self._credential(FINESSE_CREDENTIAL)
        if credential is not None and credential.exists():
            return self._remember(_read_password(credential, "systemd credential"))
        return self._uccx_password()

    def _scrub(self, message: str) -> str:
        """The message without any password in it, whatever produced it."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret:
                message = message.replace(secret, "********")
        return message

    # -- reading -----------------------------------------------------------------------------

    def _xml(
        self,
        endpoint: Endpoint,
        path: str,
        parse: Callable[[bytes], Any],
        body: bytes | None = None,
        auth: bool = True,
    ) -> Any:
        if body is None:
            body = endpoint.get(path, auth=auth)
        assert body is not None
        try:
            return parse(body)
        except XmlError as exc:
            raise SourceError(f"{endpoint.what} {endpoint.base_url}{path}: {exc}") from None

    def _each(self, job: Callable[[int], T], nodes: Sequence[int]) -> list[T]:
        """``job`` for each node, both at once when there are two: a node that is down
        costs one timeout per sample, not one more after the other node's answer."""
        if len(nodes) < 2:
            return [job(i) for i in nodes]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self.nodes), thread_name_prefix="uccx-node")
        return list(self._pool.map(job, nodes))

    def _probe(self, i: int) -> Probe:
        """What node ``i``'s Finesse says of itself (a failure is an answer too)."""
        finesse = self.nodes[i].finesse
        try:
            info = self._xml(finesse, SYSTEM_INFO_PATH, parse_system_info, auth=False)
        except CredentialError:
            raise
        except SourceError as exc:
            return Probe(i, finesse.base_url, error=str(exc))
        return Probe(i, finesse.base_url, info=info)

    def load_configuration(self, now: float, node: int = 0) -> Configuration:
        """Read resources, CSQs and (where the API offers them) campaigns from ``node``."""
        admin = self.nodes[node].admin
        resources = self._xml(admin, RESOURCES_PATH, parse_resources)
        csqs = self._xml(admin, CSQS_PATH, parse_csqs)
        notes: list[str] = []
        found: dict[str, tuple[str, ...]] = {}
        body = admin.get(CAMPAIGNS_PATH, missing_ok=True)
        if body is None:
            notes.append(
                "the UCCX Admin API offers no campaigns (/adminapi/campaign answered 404): "
                "no agent has the outbound feature"
            )
        else:
            listed: list[Campaign] = self._xml(admin, CAMPAIGNS_PATH, parse_campaign_list, body)
            detailed = []
            for campaign in listed:
                if not campaign.outbound:
                    continue
                if campaign.csqs is None:  # a summary: its CSQs are in Get Campaign
                    path = f"{CAMPAIGNS_PATH}/{quote(campaign.id, safe='')}"
                    one = admin.get(path, missing_ok=True)
                    if one is None:
                        notes.append(
                            f"campaign {campaign.name!r}: {path} answered 404 (deleted since "
                            "it was listed?): skipped until the next refresh"
                        )
                        continue
                    detailed.append(self._xml(admin, path, parse_campaign, one))
                else:
                    detailed.append(campaign)
            found, unmatched = outbound_campaigns(detailed, csqs)
            notes.extend(unmatched)
        outbound = frozenset(q for qs in found.values() for q in qs)
        campaigns = tuple({"name": n, "csqs": list(qs)} for n, qs in found.items())
        return dataclasses.replace(
            configuration(resources, csqs, outbound, now),
            notes=tuple(notes),
            campaigns=campaigns,
            read_from=admin.base_url,
        )

    def _configuration(self, order: Sequence[int]) -> Configuration:
        """The configuration, read again every ``config_refresh`` from the first node of
        ``order`` that answers; the last good one kept when none does."""
        now = self.clock()
        current = self.config
        self._kept = False
        if current is not None and now - current.loaded_at < self.refresh:
            return current
        errors: list[str] = []
        loaded: Configuration | None = None
        for i in order:
            try:
                loaded = self.load_configuration(now, i)
                break
            except CredentialError as exc:  # the same on every node
                errors = [str(exc)]
                break
            except SourceError as exc:
                errors.append(str(exc))
                if self._stopping:
                    break
        if loaded is None:
            if current is None:
                raise SourceError(f"no UCCX configuration yet: {'; '.join(errors)}") from None
            age = now - current.loaded_at
            message = (
                f"refreshing the UCCX configuration failed, kept the one read {age:.0f}s "
                f"ago (retried at the next sample): {'; '.join(errors)}"
            )
            log.warning("%s", self._scrub(message))
            self._kept = True
            return dataclasses.replace(current, notes=(*current.notes, message))
        self.config = loaded
        if current is None:
            log.info("read the UCCX configuration: %d resources", len(self.config.agents))
        if errors:
            log.warning(
                "%s",
                self._scrub(
                    f"the UCCX configuration was read from {self.config.read_from} after "
                    f"another node failed: {'; '.join(errors)}"
                ),
            )
        return self.config

    def _users(self, i: int, config: Configuration) -> list[User]:
        finesse = self.nodes[i].finesse
        users: list[User] = self._xml(finesse, USERS_PATH, parse_users)
        if not users and config.agents:
            raise SourceError(
                f"Finesse {finesse.base_url}{USERS_PATH}: lists no users while the "
                f"UCCX Admin API has {len(config.agents)}: refusing a sample of zero agents"
            )
        return users

    def _try_users(self, i: int, config: Configuration) -> tuple[list[User] | None, str]:
        try:
            return self._users(i, config), ""
        except CredentialError:
            raise
        except SourceError as exc:
            return None, str(exc)

    def _nobody(self, errors: Sequence[str]) -> SourceError:
        """The sample fails: no node could be read for agents (never a zero sample)."""
        if len(self.nodes) == 1:
            return SourceError("; ".join(errors))
        return SourceError("no UCCX node could be read for agents: " + "; ".join(errors))

    def _why_not(self, probe: Probe) -> str:
        why = probe.why_not()
        if len(self.nodes) == 1 and probe.info is not None and not probe.in_service:
            hosts = [h for h in (probe.info.primary, probe.info.secondary) if h]
            if len(hosts) == 2:
                why += (
                    f"; Finesse names the cluster's nodes {hosts[0]} and {hosts[1]}: "
                    "list both in source.uccx.nodes"
                )
        return why

    def _live_state(self, config: Configuration, probes: Sequence[Probe]) -> LiveState:
        """Who is logged in: from the Finesse in service; from the other one when that
        one fails within this sample and the other now says IN_SERVICE; from both, each
        user once, in island mode."""
        live = [p.node for p in probes if p.in_service]
        if len(live) > 1:
            got = self._each(lambda i: self._try_users(i, config), live)
            read = [
                (i, found) for i, (found, _) in zip(live, got, strict=True) if found is not None
            ]
            errors = [error for found, error in got if found is None]
            if not read:
                raise self._nobody(errors)
            merged, _twice = union(found for _, found in read)
            notes = tuple(
                f"island mode: {error}; counted from "
                f"{' and '.join(self.nodes[i].finesse.base_url for i, _ in read)} only"
                for error in errors
            )
            return LiveState(merged, tuple(i for i, _ in read), True, bool(errors), notes)
        if not live:
            raise self._nobody([self._why_not(p) for p in probes])
        first = live[0]
        users, error = self._try_users(first, config)
        if users is not None:
            return LiveState(users, (first,))
        errors = [error]
        others = [p.node for p in probes if p.node != first]
        if self._stopping:
            others = []
        for again in self._each(self._probe, others):
            if not again.in_service:
                errors.append(self._why_not(again))
                continue
            users, other_error = self._try_users(again.node, config)
            if users is None:
                errors.append(other_error)
                continue
            note = (
                f"failover: {error}; read Finesse {again.url} instead, which now says {IN_SERVICE}"
            )
            log.warning("%s", self._scrub(note))
            return LiveState(users, (again.node,), failed_over=True, notes=(note,))
        raise self._nobody(errors)

    def read(self) -> Snapshot:
        try:
            probes = self._each(self._probe, range(len(self.nodes)))
            if not any(p.in_service for p in probes):
                raise self._nobody([self._why_not(p) for p in probes])
            config = self._configuration(config_order(probes))
            state = self._live_state(config, probes)
            doc, joined = join(config, state.users)
            try:
                snap = parse_snapshot(doc)
            except SnapshotError as exc:
                raise SourceError(f"UCCX and Finesse data: {exc}") from None
        except SourceError as exc:
            raise SourceError(self._scrub(str(exc))) from None
        origin = Origin(
            config.read_from,
            tuple(self.nodes[i].finesse.base_url for i in state.nodes),
            island=state.island,
            configuration_kept=self._kept,
            failed_over=state.failed_over,
        )
        for level, message in self.watch.observe(origin):
            log.log(level, "%s", message)
        self.origin = origin
        for note in joined:
            log.warning("%s", self._scrub(note))
        notes = (*config.notes, *state.notes, *joined, *snap.notes)
        return dataclasses.replace(snap, notes=tuple(self._scrub(n) for n in notes))

    def abort(self) -> None:
        """The daemon is stopping: no read waits on UCCX or Finesse any more."""
        self._stopping = True
        for node in self.nodes:
            node.admin.abort()
            node.finesse.abort()

    def close(self) -> None:
        for node in self.nodes:
            node.admin.close()
            node.finesse.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
