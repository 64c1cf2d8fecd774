"""``source.kind: uccx``: the UCCX Administration REST API and Finesse, over verified HTTPS.

Two kinds of data with two lifetimes:

* **Configuration** (who has which skills, which CSQ serves which media, which CSQs
  belong to agent-based progressive or predictive campaigns) changes rarely and costs the
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
reading, :mod:`ccx_agent.deadline`), bodies capped at :data:`MAX_BODY` and parsed by
:mod:`ccx_agent.sources.safexml`. Error messages are built here, never copied from an
exception, and every one is scrubbed of the passwords before it leaves this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import requests

from ccx_agent.config import FINESSE_CREDENTIAL, UCCX_CREDENTIAL
from ccx_agent.config import UccxSource as UccxSourceConfig
from ccx_agent.deadline import ABORTED, DeadlineSession, Exchange
from ccx_agent.licensing.snapshot import Snapshot, SnapshotError, parse_snapshot
from ccx_agent.sources import SourceError
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
#: Campaigns whose agents take the ``outbound`` feature (agent-based, dialer-paced).
OUTBOUND_MODES = frozenset({"PROGRESSIVE", "PREDICTIVE"})
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


@dataclass(frozen=True, slots=True)
class User:
    """One Finesse user: who is logged in, in which state."""

    login_id: str
    state: str
    roles: tuple[str, ...]


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


def parse_csqs(body: bytes) -> list[CsqInfo]:
    """``GET /adminapi/csq``: ``<csqs><csq>`` with name, queueType and, for a skill-group
    CSQ, its skills."""
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
        out.append(CsqInfo(name, kind, skills))
    return out


def outbound_campaigns(body: bytes) -> dict[str, tuple[str, ...]]:
    """``GET /adminapi/campaign``: agent-based progressive or predictive campaigns
    (``campaignType`` AGENT, ``dialingMode`` PROGRESSIVE / PREDICTIVE) by name, with their
    CSQs (``csqs/csq@name``). IVR-based and preview campaigns give no ``outbound`` feature."""
    out: dict[str, tuple[str, ...]] = {}
    for i, campaign in enumerate(parse_xml(body, "campaigns").iterfind("campaign")):
        if _text(campaign, "campaignType").upper() != "AGENT":
            continue
        if _text(campaign, "dialingMode").upper() not in OUTBOUND_MODES:
            continue
        name = _text(campaign, "campaignName") or f"campaign[{i}]"
        out[name] = tuple(_names(campaign, "csqs/csq", f"campaign[{i}]"))
    return out


def parse_campaigns(body: bytes) -> frozenset[str]:
    """The CSQs of the campaigns of :func:`outbound_campaigns`: their agents are outbound."""
    return frozenset(q for csqs in outbound_campaigns(body).values() for q in csqs)


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
    An agent serving (by CSQ map or by a skill) a CSQ of an agent-based progressive or
    predictive campaign is ``outbound``.
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


def _status(code: int, reason: str, user_key: str) -> str:
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

    def get(self, path: str, *, missing_ok: bool = False) -> bytes | None:
        """The body of ``GET path`` (at most :data:`MAX_BODY` bytes); ``None`` for a 404
        when ``missing_ok``. Any failure is a :class:`SourceError` naming the URL."""
        url = self.base_url + path
        where = f"{self.what} {url}"
        password = self.password()
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

    def _fetch(self, url: str, password: str, missing_ok: bool, where: str) -> bytes | None:
        with self.session.get(
            url,
            auth=(self.user, password),
            headers={"Accept": "application/xml"},
            timeout=(self.connect_timeout, self.read_timeout),
            stream=True,
            allow_redirects=False,
        ) as response:
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code != 200:
                raise SourceError(
                    f"{where}: {_status(response.status_code, response.reason, self.user_key)}"
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


def _read_password(path: Path, key: str) -> str:
    """The password in ``path``: its first line; a trailing newline is not part of it."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PASSWORD + 1)
    except OSError as exc:
        raise SourceError(
            f"{key} {path}: cannot read the password file: {exc.strerror or type(exc).__name__}"
        ) from None
    if len(raw) > MAX_PASSWORD:
        raise SourceError(f"{key} {path}: larger than {MAX_PASSWORD} bytes: not a password file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{key} {path}: not UTF-8 text") from None
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise SourceError(f"{key} {path}: the password file is empty")
    return password


class UccxSource:
    """Reads the configuration now and then, the live state every time (see the module)."""

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
        self._secrets: set[str] = set()
        if cfg.uccx.password is not None:
            self._secrets.add(cfg.uccx.password.get_secret_value())
        for warning in cfg.warnings():
            log.warning("%s", warning)
        u, f = cfg.uccx, cfg.finesse
        connect, read = u.connect_timeout.total_seconds(), u.timeout.total_seconds()
        self.uccx = Endpoint(
            "UCCX Admin API",
            u.url,
            u.user,
            self._uccx_password,
            u.ca_bundle,
            connect,
            read,
            "source.uccx.user",
        )
        own_finesse = f.user is not None or f.password_file is not None
        self.finesse = Endpoint(
            "Finesse",
            cfg.finesse_url(),
            f.user or u.user,
            self._finesse_password if own_finesse else self._uccx_password,
            u.ca_bundle,
            connect,
            read,
            "source.finesse.user" if f.user is not None else "source.uccx.user",
        )

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
            raise SourceError(
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

    def _xml(self, endpoint: Endpoint, path: str, parse: Callable[[bytes], Any]) -> Any:
        body = endpoint.get(path)
        assert body is not None
        try:
            return parse(body)
        except XmlError as exc:
            raise SourceError(f"{endpoint.what} {endpoint.base_url}{path}: {exc}") from None

    def load_configuration(self, now: float) -> Configuration:
        """Read resources, CSQs and (where the API offers them) campaigns."""
        resources = self._xml(self.uccx, RESOURCES_PATH, parse_resources)
        csqs = self._xml(self.uccx, CSQS_PATH, parse_csqs)
        notes: tuple[str, ...] = ()
        body = self.uccx.get(CAMPAIGNS_PATH, missing_ok=True)
        if body is None:
            outbound: frozenset[str] = frozenset()
            campaigns: tuple[dict[str, Any], ...] = ()
            notes = ("the UCCX Admin API offers no campaigns: no agent has the outbound feature",)
        else:
            try:
                found = outbound_campaigns(body)
            except XmlError as exc:
                raise SourceError(
                    f"UCCX Admin API {self.uccx.base_url}{CAMPAIGNS_PATH}: {exc}"
                ) from None
            outbound = frozenset(q for qs in found.values() for q in qs)
            campaigns = tuple({"name": n, "csqs": list(qs)} for n, qs in found.items())
        return dataclasses.replace(
            configuration(resources, csqs, outbound, now), notes=notes, campaigns=campaigns
        )

    def _configuration(self) -> Configuration:
        now = self.clock()
        current = self.config
        if current is not None and now - current.loaded_at < self.refresh:
            return current
        try:
            self.config = self.load_configuration(now)
        except SourceError as exc:
            if current is None:
                raise SourceError(f"no UCCX configuration yet: {exc}") from None
            age = now - current.loaded_at
            message = (
                f"refreshing the UCCX configuration failed, kept the one read {age:.0f}s "
                f"ago (retried at the next sample): {exc}"
            )
            log.warning("%s", self._scrub(message))
            return dataclasses.replace(current, notes=(*current.notes, message))
        if current is None:
            log.info("read the UCCX configuration: %d resources", len(self.config.agents))
        return self.config

    def read(self) -> Snapshot:
        try:
            config = self._configuration()
            users = self._xml(self.finesse, USERS_PATH, parse_users)
            if not users and config.agents:
                raise SourceError(
                    f"Finesse {self.finesse.base_url}{USERS_PATH}: lists no users while the "
                    f"UCCX Admin API has {len(config.agents)}: refusing a sample of zero agents"
                )
            doc, joined = join(config, users)
            try:
                snap = parse_snapshot(doc)
            except SnapshotError as exc:
                raise SourceError(f"UCCX and Finesse data: {exc}") from None
        except SourceError as exc:
            raise SourceError(self._scrub(str(exc))) from None
        for note in joined:
            log.warning("%s", self._scrub(note))
        notes = (*config.notes, *joined, *snap.notes)
        return dataclasses.replace(snap, notes=tuple(self._scrub(n) for n in notes))

    def abort(self) -> None:
        """The daemon is stopping: no read waits on UCCX or Finesse any more."""
        self.uccx.abort()
        self.finesse.abort()

    def close(self) -> None:
        self.uccx.close()
        self.finesse.close()
