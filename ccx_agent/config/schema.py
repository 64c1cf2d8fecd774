"""The configuration schema (one YAML file) and its loading.

Every timer and threshold of the licensing rules (docs/licensing.md) is a key here with the documented number as default;
the key names are an interface that operators and scenario files use, so they are kept
exactly as the issues wrote them. Each key's meaning is written once, here, as its
field's ``description`` (with its type and notes in ``json_schema_extra``, see
:func:`_doc`): ``tools/gen_config.py`` (``make docs``) generates ``config/ccx-agent.yaml``
and the key tables of ``docs/config.md`` from them, and ``tests/test_gen_docs.py`` fails
when either is stale.
"""

from __future__ import annotations

import copy
import difflib
import os
import pwd
import shutil
import socket
import stat
from collections.abc import Callable, Sequence
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TextIO, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from ccx_agent import secretvalues

# Re-exported: where the config is, without this module's schema (:mod:`ccx_agent.config.configpath`).
from ccx_agent.config.configpath import DEFAULT_PATH as DEFAULT_PATH  # noqa: PLC0414 - re-exported
from ccx_agent.config.configpath import DEFAULT_STATE_DIR, serial_number
from ccx_agent.config.configpath import ENV_PATH as ENV_PATH  # noqa: PLC0414
from ccx_agent.config.configpath import default_path as default_path  # noqa: PLC0414
from ccx_agent.config.durations import Duration, PositiveDuration
from ccx_agent.config.yamldoc import (
    EX_CONFIG,
    Document,
    DocumentError,
    Loc,
    Problem,
    dotted,
    one_of,
    read_yaml,
    validate_value,
    value_at,
)
from ccx_agent.licensing.alerts import AlertFormat, Style
from ccx_agent.licensing.catalogue import ALL_FEATURES, Feature, LicenseType
from ccx_agent.licensing.compliance import ComplianceRules
from ccx_agent.licensing.lifecycle import Timers
from ccx_agent.userfiles import kind_of

E = TypeVar("E", bound=StrEnum)
S = TypeVar("S", bound=BaseModel)


def _choice(enum: type[StrEnum], what: str) -> Callable[[object], object]:
    """A before-validator: an unknown name is named, and the valid ones listed."""
    names = [member.value for member in enum]

    def known(value: object) -> object:
        if isinstance(value, str) and value not in names:
            raise ValueError(one_of(names, value, what))
        return value

    return known


def _unique(what: str) -> Callable[[list[E]], list[E]]:
    def once(value: list[E]) -> list[E]:
        for i, item in enumerate(value):
            if item in value[:i]:
                raise ValueError(f"lists {what} {item.value!r} twice")
        return value

    return once


def _usable_path(value: Path) -> Path:
    if str(value) in ("", "."):
        raise ValueError("must be a path, got an empty string ('')")
    if "\x00" in str(value):
        raise ValueError("must not contain a NUL character")
    return value


def _one_line(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must be one line of text, without control characters")
    return value


#: A file or directory path; empty (which would mean the working directory) is refused.
ConfigPath = Annotated[Path, AfterValidator(_usable_path)]
#: Text that goes into a syslog line, so it must stay on one line.
LogText = Annotated[str, AfterValidator(_one_line)]


def _doc(
    kind: str,
    *,
    note: str | None = None,
    shown: str | None = None,
    written: str | None = None,
    example: str | None = None,
) -> JsonDict:
    """What the reference says of a key besides its ``description``: ``kind`` (the type
    column of docs/config.md), a ``note`` that follows its default (``""`` *(the system
    trust store)*), the default ``shown`` in words when it has none to write, the default
    as ``written`` in the example file when its shortest spelling reads worse (``60s``),
    and the ``example`` value of a required key. ``tools/gen_config.py`` writes
    ``config/ccx-agent.yaml`` and the key tables of ``docs/config.md`` from these and the
    descriptions, so each is written once, here."""
    extra: JsonDict = {"kind": kind}
    for name, value in (
        ("note", note),
        ("shown", shown),
        ("written", written),
        ("example", example),
    ):
        if value is not None:
            extra[name] = value
    return extra


class Section(BaseModel):
    """Unknown keys are errors everywhere: a typo must never silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LicenseConfig(Section):
    type: Annotated[LicenseType, BeforeValidator(_choice(LicenseType, "license type"))] = Field(
        LicenseType.FLEX,
        description="The license family; it selects the entitlement tags "
        "([licensing.md](licensing.md) §1). Changing it requires the instance to be "
        "deregistered first.",
        json_schema_extra=_doc("one of " + ", ".join(f"`{t.value}`" for t in LicenseType)),
    )
    premium_features: Annotated[
        list[Annotated[Feature, BeforeValidator(_choice(Feature, "premium feature"))]],
        AfterValidator(_unique("the premium feature")),
    ] = Field(
        default_factory=lambda: list(ALL_FEATURES),
        description="Features that make a Flex / HCS agent consume a premium seat instead "
        "of a standard one: `chat` (a skill serving a CHAT CSQ), `email` (an EMAIL CSQ), "
        "`outbound` (assigned to an agent-based campaign: direct preview, progressive or "
        "predictive). Under "
        "`perpetual-enhanced`, an agent with one of them still takes one `enhanced-seat` and "
        "is flagged `FEATURE_NOT_LICENSED` (`usage` prints the warning; the daemon raises "
        "the alert, at most once per `alerts.repeat` while it lasts). An empty list means "
        "no feature is premium.",
        json_schema_extra=_doc(
            "list of " + ", ".join(f"`{f.value}`" for f in Feature) + ", each at most once"
        ),
    )
    allow_overage: StrictBool = Field(
        True,
        description="`true`: usage may exceed the entitlement (overage, then out of "
        "compliance). `false` is License Control: `LICENSE_LIMIT_REACHED` is raised (while "
        "registered, at most once per `alerts.repeat` for as long as the excess lasts) when "
        "a report shows more in use than bought, and the admission check (`ccx-agent "
        "admit`) denies one more login. The agent cannot stop a login by itself; the "
        "overage countdown still runs, as the server still counts what is used.",
        json_schema_extra=_doc("boolean"),
    )


POSITIVE = _doc("positive duration")
DURATION = _doc("duration")
#: Said of every failed renewal's wait.
RETRY = "Wait after a failed renewal before the next try."


class ReportConfig(Section):
    interval: PositiveDuration = Field(
        timedelta(minutes=15),
        description="The usage interval: one report per interval, aligned to the wall "
        "clock (UTC :00/:15/:30/:45 with the default). It is also the unit of the "
        "out-of-compliance countdown (`(threshold − n) × interval`).",
        json_schema_extra=POSITIVE,
    )
    jitter: Duration = Field(
        timedelta(seconds=60),
        description="Largest random delay after an interval boundary before reporting, so "
        "that a fleet of instances does not reach the server at the same moment. `0s` "
        "disables it. Must be shorter than `report.interval`. The daemon (`ccx-agent run`) "
        "reports at each boundary plus a random delay up to this; `simulate` reports "
        "exactly at the boundaries.",
        json_schema_extra=_doc("duration", written="60s"),
    )


class SampleConfig(Section):
    interval: PositiveDuration = Field(
        timedelta(minutes=1),
        description="How often the source is read. The usage of an interval is the peak "
        "(maximum) of its samples. Must not be longer than `report.interval`.",
        json_schema_extra=POSITIVE,
    )


class ComplianceConfig(Section):
    ooc_threshold: Annotated[StrictInt, Field(ge=1)] = Field(
        5,
        description="Consecutive overage intervals after which a tag is "
        "`OUT_OF_COMPLIANCE`; before that (n = 1 to threshold − 1) it is `OVERAGE`, which "
        "one compliant interval clears. At least 1.",
        json_schema_extra=_doc("integer ≥ 1"),
    )
    ooc_period: PositiveDuration = Field(
        timedelta(days=90),
        description="How long a tag may stay out of compliance before `ENFORCEMENT`.",
        json_schema_extra=POSITIVE,
    )


class EvaluationConfig(Section):
    period: PositiveDuration = Field(
        timedelta(days=90),
        description="The evaluation period. It is cumulative: it counts down only while "
        "the instance is unregistered (or its registration expired) and some license is in "
        "use.",
        json_schema_extra=POSITIVE,
    )
    warning_days: list[Annotated[StrictInt, Field(ge=1)]] = Field(
        default_factory=lambda: [30, 14, 7, 1],
        description="`EVAL_EXPIRY_WARNING` is raised when this many whole days of "
        "evaluation are left. Each is at least 1 and fewer days than `evaluation.period`; "
        "order does not matter, and a day listed twice counts once.",
        json_schema_extra=_doc("list of integers ≥ 1"),
    )
    max_sample_gap: PositiveDuration = Field(
        timedelta(minutes=15),
        description="A gap between two samples longer than this (the agent was stopped, "
        "the host was suspended) is charged to the evaluation as this much, never more.",
        json_schema_extra=POSITIVE,
    )


class IdCertificateConfig(Section):
    lifetime: PositiveDuration = Field(
        timedelta(days=365),
        description="Validity of the ID certificate from its issue; at expiry, "
        "`REGISTRATION_EXPIRED`.",
        json_schema_extra=POSITIVE,
    )
    renew_after: PositiveDuration = Field(
        timedelta(days=180),
        description="The certificate is renewed this long after its issue. Must be shorter "
        "than `id_certificate.lifetime`.",
        json_schema_extra=POSITIVE,
    )
    expiry_warning: Duration = Field(
        timedelta(days=30),
        description="`REGISTRATION_EXPIRING_SOON` is raised, then repeated every "
        "`alerts.repeat`, from this long before expiry. Must not be longer than "
        "`id_certificate.lifetime`.",
        json_schema_extra=DURATION,
    )
    retry: PositiveDuration = Field(
        timedelta(hours=1), description=RETRY, json_schema_extra=POSITIVE
    )


class AuthorizationConfig(Section):
    renew_after: PositiveDuration = Field(
        timedelta(days=30),
        description="The authorization is renewed this long after the last success (and "
        "as soon as a tag that was never authorized comes into use; on demand with "
        "`ccx-agent renew auth`). Must be shorter than `authorization.validity`.",
        json_schema_extra=POSITIVE,
    )
    validity: PositiveDuration = Field(
        timedelta(days=90),
        description="An authorization is valid this long after the last success; then "
        "`AUTHORIZATION_EXPIRED`.",
        json_schema_extra=POSITIVE,
    )
    expiry_warning: Duration = Field(
        timedelta(days=30),
        description="`AUTHORIZATION_EXPIRING_SOON` is raised, then repeated every "
        "`alerts.repeat`, from this long before the authorization expires (day 60 with the "
        "defaults). Must not be longer than `authorization.validity`.",
        json_schema_extra=DURATION,
    )
    grace: Duration = Field(
        timedelta(days=90),
        description="How long an expired authorization is tolerated before enforcement.",
        json_schema_extra=DURATION,
    )
    retry: PositiveDuration = Field(
        timedelta(hours=1), description=RETRY, json_schema_extra=POSITIVE
    )


def _some_style(value: list[Style]) -> list[Style]:
    if not value:
        raise ValueError(f"must name at least one style: {', '.join(s.value for s in Style)}")
    return value


def _blank_is_none(value: object) -> object:
    """``""`` (the example file's way of saying "not set") and null both mean unset."""
    return None if value == "" else value


class SyslogFormat(StrEnum):
    RFC3164 = "rfc3164"
    RFC5424 = "rfc5424"


class Facility(StrEnum):
    """Syslog facilities by name (RFC 5424 §6.2.1); the code is the position."""

    KERN = "kern"
    USER = "user"
    MAIL = "mail"
    DAEMON = "daemon"
    AUTH = "auth"
    SYSLOG = "syslog"
    LPR = "lpr"
    NEWS = "news"
    UUCP = "uucp"
    CRON = "cron"
    AUTHPRIV = "authpriv"
    FTP = "ftp"
    NTP = "ntp"
    SECURITY = "security"
    CONSOLE = "console"
    SOLARIS_CRON = "solaris-cron"
    LOCAL0 = "local0"
    LOCAL1 = "local1"
    LOCAL2 = "local2"
    LOCAL3 = "local3"
    LOCAL4 = "local4"
    LOCAL5 = "local5"
    LOCAL6 = "local6"
    LOCAL7 = "local7"

    @property
    def code(self) -> int:
        return list(Facility).index(self)


#: The network schemes of ``alerts.syslog.target``; a path is a local (unix) socket.
SYSLOG_SCHEMES = ("udp", "tcp", "tls")


def _syslog_target(value: str) -> str:
    _one_line(value)
    if value.startswith("/"):
        return value
    parts = urlsplit(value)
    if parts.scheme not in SYSLOG_SCHEMES or "://" not in value:
        raise ValueError(
            "must be a socket path like /dev/log, or udp://HOST:PORT, tcp://HOST:PORT or "
            f"tls://HOST:PORT, got {value!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port number") from None
    if not parts.hostname or port is None:
        raise ValueError(f"must name a host and a port ({parts.scheme}://HOST:PORT)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"must be just {parts.scheme}://HOST:PORT, got {value!r}")
    return value


class SyslogConfig(Section):
    """Where the alert lines go, and how they are framed (docs/alerts.md)."""

    target: Annotated[str, AfterValidator(_syslog_target)] = Field(
        "/dev/log",
        description="Where the daemon sends the alert lines: `/dev/log` (the local syslog "
        "daemon, or any other unix socket path), `udp://HOST:PORT`, `tcp://HOST:PORT` or "
        "`tls://HOST:PORT`. TCP and TLS use RFC 6587 octet counting; TLS always verifies "
        "the server's certificate and name. An unreachable target never holds up a job: "
        "lines wait in memory and are sent when it is back ([alerts.md](alerts.md)).",
        json_schema_extra=_doc(
            "`/dev/log` or another absolute socket path, `udp://HOST:PORT`, "
            "`tcp://HOST:PORT`, `tls://HOST:PORT`"
        ),
    )
    format: Annotated[SyslogFormat, BeforeValidator(_choice(SyslogFormat, "syslog format"))] = (
        Field(
            SyslogFormat.RFC3164,
            description="The header of each line: `rfc3164`, BSD syslog (`<PRI>Mmm dd "
            "hh:mm:ss HOST ccx-agent[PID]: `; no host name on a local socket, as glibc "
            "writes it), or `rfc5424` (`<PRI>1 TIMESTAMP HOST ccx-agent PID - - `).",
            json_schema_extra=_doc("`rfc3164` or `rfc5424`"),
        )
    )
    facility: Annotated[Facility, BeforeValidator(_choice(Facility, "syslog facility"))] = Field(
        Facility.USER,
        description="The facility of every alert; the severity is the alert's own (0 – 7), "
        "so PRI = facility × 8 + severity.",
        json_schema_extra=_doc(
            "a facility name: `kern`, `user`, `mail`, `daemon`, `auth`, `syslog`, … "
            "`local0` – `local7`"
        ),
    )
    ca_bundle: Annotated[ConfigPath | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="The CA bundle that signs a `tls://` server's certificate. Empty: the "
        "system trust store.",
        json_schema_extra=_doc("path", note="the system trust store"),
    )
    queue: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = Field(
        10000,
        description="Alert lines held in memory while the target is unreachable; beyond it "
        "the oldest are dropped and counted. Every alert is also written to the structured "
        "log (journald).",
        json_schema_extra=_doc("integer 1 – 1,000,000"),
    )


class AlertsConfig(Section):
    styles: Annotated[
        list[Annotated[Style, BeforeValidator(_choice(Style, "alert style"))]],
        AfterValidator(_some_style),
        AfterValidator(_unique("the style")),
    ] = Field(
        default_factory=lambda: [Style.MCVD, Style.UC],
        description="The line formats of the syslog alerts; every alert is written once per "
        "style. At least one; each may be listed once. An `mcvd` line reads "
        "`%MCVD-LIB_LICENSE-<sev>-<MNEMONIC>: [<context>] <source> <description>: "
        "<detail>`, a `uc` line `%UC_LIB_LICENSE-<sev>-<MNEMONIC>: "
        "%[...][AppID=..][ClusterID=..][NodeID=..]: <description>`.",
        json_schema_extra=_doc("non-empty list of `mcvd`, `uc`, each at most once"),
    )
    node_id: LogText = Field(
        "",
        description="`NodeID` of UC-style lines; empty means this host's short name (the "
        'part before the first dot). Quote it if it is all digits (`"1001"`).',
        json_schema_extra=_doc("one-line text", note="the host name"),
    )
    cluster_id: LogText = Field(
        "",
        description="`ClusterID` of UC-style lines.",
        json_schema_extra=_doc("one-line text", note="empty, as on UCCX"),
    )
    app_id: LogText = Field(
        "Cisco Unified CCX Cluster View Daemon",
        description="`AppID` of UC-style lines.",
        json_schema_extra=_doc("one-line text"),
    )
    mcvd_source: LogText = Field(
        "com.cisco.smartlicense.util.SmartLicenseUtil",
        description="The source class named in MCVD-style lines.",
        json_schema_extra=_doc("one-line text"),
    )
    repeat: PositiveDuration = Field(
        timedelta(days=1),
        description="A standing condition (expiring soon, still out of compliance …) is "
        "raised again at most this often; a change of state is always raised at once.",
        json_schema_extra=POSITIVE,
    )
    syslog: SyslogConfig = Field(
        SyslogConfig(),
        description="Where the daemon sends the alert lines, and how they are framed "
        "([alerts.md](alerts.md)).",
    )

    @field_validator("syslog", mode="before")
    @classmethod
    def _empty_syslog(cls, value: object) -> object:
        return {} if value is None else value

    def format(self) -> AlertFormat:
        node = self.node_id or socket.gethostname().split(".")[0]
        return AlertFormat(tuple(self.styles), node, self.cluster_id, self.app_id, self.mcvd_source)


class HistoryConfig(Section):
    retention: PositiveDuration = Field(
        timedelta(days=400),
        description="Closed intervals and delivered alerts older than this are pruned by "
        "the daemon's housekeeping job, in bounded batches (a short write transaction "
        "each). An interval whose report still waits in the outbox, and an alert not yet "
        "delivered to syslog, are never pruned. At least twice `report.interval`. About "
        "17 MiB per year for a 3-tag type ([reports.md](reports.md#retention)).",
        json_schema_extra=_doc("positive duration, at least twice `report.interval`"),
    )


class ClockConfig(Section):
    jump_threshold: PositiveDuration = Field(
        timedelta(days=1),
        description="A wall clock that moves backwards, or forwards by more than this "
        "between two samples, raises `SYSTEM_CLOCK_CHANGED`; the jump is never charged to "
        "the evaluation.",
        json_schema_extra=POSITIVE,
    )


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        _one_line(value)
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            want = " or ".join(f"{s}://" for s in schemes)
            raise ValueError(f"must be a URL starting with {want}, got {value!r}")
        if not parts.hostname:
            raise ValueError("must name a host (https://HOST[:PORT]/PATH)")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("has an invalid port number") from None
        return value

    return check


#: TLS is always verified, so an SSM URL is https:// only.
HttpsUrl = Annotated[str, AfterValidator(_url(("https",)))]
ProxyUrl = Annotated[str, AfterValidator(_url(("http", "https", "socks5", "socks5h")))]
OptionalPath = Annotated[ConfigPath | None, BeforeValidator(_blank_is_none)]


class TransportConfig(Section):
    """How the agent reaches SSM or SSM On-Prem (docs/protocol.md)."""

    mode: Literal["online", "offline"] = Field(
        "online",
        description="`online`: the agent talks to SSM at `transport.url`. `offline`: an "
        "air-gapped site ([offline.md](offline.md)). The agent never opens a connection to "
        "SSM (`transport.url` is not used); reports queue as during an outage but raise no "
        "`COMM_FAILED`; no renewal is attempted, the timers and their expiring-soon "
        "warnings run as usual and say that a file exchange is due. Registering, reporting "
        "and renewing are done with `ccx-agent offline export` and `offline import`. "
        "Requires `transport.trust_anchor` (or `ca_bundle`): the answer files are signed.",
        json_schema_extra=_doc("`online` or `offline`"),
    )
    url: Annotated[HttpsUrl | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="The one endpoint every message is POSTed to: the SSM URL, SSM "
        "On-Prem's `https://HOST/Transportgateway/services/DeviceRequestHandler` (or "
        "`/SmartTransport`), or the simulator's URL (`ccx-agent ssm serve` prints it). "
        "`http://` is refused: TLS is always verified. Empty: not configured; `register`, "
        "`renew` and reporting refuse to run (reports stay queued).",
        json_schema_extra=_doc("`https://` URL", note="not configured"),
    )
    ca_bundle: OptionalPath = Field(
        None,
        description="PEM file of the CA(s) the server's TLS certificate is verified "
        "against. Empty: the system trust store. `REQUESTS_CA_BUNDLE` and similar "
        "variables are ignored.",
        json_schema_extra=_doc("path", note="the system trust store"),
    )
    trust_anchor: OptionalPath = Field(
        None,
        description="PEM file of the root the server's signing certificate must chain to: "
        "every response is signed. Empty: `transport.ca_bundle`; one of the two is "
        "required when `transport.url` is set. For the simulator both are its `ca.pem`.",
        json_schema_extra=_doc("path", note="`transport.ca_bundle`"),
    )
    proxy: Annotated[ProxyUrl | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="HTTP(S) proxy URL for every request, e.g. "
        "`http://proxy.example.com:3128`. Empty: no proxy (`HTTPS_PROXY` and similar "
        "variables are ignored).",
        json_schema_extra=_doc("`http://`, `https://`, `socks5://` URL", note="no proxy"),
    )
    timeout: PositiveDuration = Field(
        timedelta(seconds=30),
        description="Deadline of each request as a whole: connect, TLS handshake, request "
        "and the response's last byte. Enforced while reading: a server that drips its "
        "answer is cut at it.",
        json_schema_extra=POSITIVE,
    )
    connect_timeout: PositiveDuration = Field(
        timedelta(seconds=10),
        description="Longest wait to establish a connection (within `timeout`).",
        json_schema_extra=POSITIVE,
    )
    attempts: Annotated[StrictInt, Field(ge=1, le=10)] = Field(
        3,
        description="Tries per message when a retry is safe (connection refused or reset, "
        "timeout, HTTP 429 or 5xx), with exponential backoff and jitter (1–30 s, "
        "`Retry-After` honoured up to 30 s); all tries of one message end within a third "
        "of `report.interval` (at most 5 minutes, at least one `timeout`).",
        json_schema_extra=_doc("integer 1–10"),
    )

    def anchor(self) -> Path | None:
        return self.trust_anchor or self.ca_bundle


def _listen(value: str) -> str:
    """``HOST:PORT`` (``[ADDR]:PORT`` for IPv6); port 0 takes any free port (tests)."""
    _one_line(value)
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT (like 127.0.0.1:9725), got {value!r}")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(f"an IPv6 address is written [ADDR]:PORT, got {value!r}")
    elif ":" in host:
        raise ValueError(f"an IPv6 address is written [ADDR]:PORT, got {value!r}")
    return value


def listen_address(value: str) -> tuple[str, int]:
    """The (host, port) of a validated ``metrics.listen``."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsTlsConfig(Section):
    """The metrics endpoint over HTTPS: both files or neither."""

    cert: OptionalPath = Field(
        None,
        description="PEM certificate (with its chain) served by the endpoint; with "
        "`metrics.tls.key`, both or neither. Relative paths are beside the config file.",
        json_schema_extra=_doc("path", note="plain HTTP"),
    )
    key: OptionalPath = Field(
        None,
        description="The certificate's private key (PEM, unencrypted; keep it 0600).",
        json_schema_extra=_doc("path", note="plain HTTP"),
    )

    @model_validator(mode="after")
    def _both(self) -> Self:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both cert and key, or neither (plain HTTP)")
        return self


class MetricsConfig(Section):
    """The Prometheus endpoint of ``ccx-agent run`` (docs/monitoring.md)."""

    listen: Annotated[
        Annotated[str, AfterValidator(_listen)] | None, BeforeValidator(_blank_is_none)
    ] = Field(
        "127.0.0.1:9725",
        description="Where the endpoint listens, `HOST:PORT` (`[ADDR]:PORT` for IPv6); "
        "`null` turns it off (and "
        "`prometheus_client` is then never imported). Port `0` takes any free port, named "
        "by the log line `metrics listening`. A port that is taken at start is one line "
        "and exit 78.",
        json_schema_extra=_doc("`HOST:PORT` (`[ADDR]:PORT` for IPv6), or `null`"),
    )
    tls: MetricsTlsConfig = Field(
        MetricsTlsConfig(),
        description="HTTPS instead of plain HTTP: a PEM certificate (chain) and its private "
        "key, both or neither.",
    )
    basic_auth_file: OptionalPath = Field(
        None,
        description="HTTP basic auth: one `user:hash` line per user, the hash bcrypt "
        "(`$2b$…`, as made by `htpasswd -nbBC 10 USER PASSWORD`) or SHA-256 in hex "
        "(`printf %s PASSWORD | sha256sum`). `#` comments and blank lines are ignored. "
        "Applies to `/metrics` and `/healthz`. Never a password in the config file.",
        json_schema_extra=_doc("path", note="no authentication"),
    )

    @field_validator("tls", mode="before")
    @classmethod
    def _empty_tls(cls, value: object) -> object:
        return {} if value is None else value


class MonitoringConfig(Section):
    """Thresholds of ``ccx-agent status --check``."""

    stale_after: PositiveDuration = Field(
        timedelta(hours=1),
        description="`ccx-agent status --check` says CRITICAL when a registered instance "
        "has delivered no report for longer than this.",
        json_schema_extra=POSITIVE,
    )


class IdentityConfig(Section):
    """The UDI's product id and serial number; its UUID is created once and kept in the
    state database."""

    pid: LogText = Field("UCCX", description="Product id.", json_schema_extra=_doc("text"))
    serial: LogText = Field(
        "",
        description="Serial number. Empty: this host's name.",
        json_schema_extra=_doc("text", note="the host name"),
    )

    def serial_number(self) -> str:
        return serial_number(self.serial)


class SourceSection(Section):
    """What every source config has: warnings about accepted but unwise settings."""

    def warnings(self) -> list[str]:
        """Said by ``usage`` on stderr and logged by the source; never holds a secret."""
        return []

    def anchored(self, base: Path) -> Self:
        """This source with its relative paths made relative to ``base`` (the config
        file's directory); the same object when there is none."""
        return self


def _beside(model: S, base: Path, keys: Sequence[str]) -> S:
    """``model`` with each relative path among ``keys`` put under ``base``."""
    update = {
        key: base / value
        for key in keys
        if isinstance(value := getattr(model, key), Path) and not value.is_absolute()
    }
    return model.model_copy(update=update) if update else model


class FileSource(SourceSection):
    kind: Literal["file"] = Field(
        description="a JSON or YAML snapshot of agents (state, skills, team/type), CSQs "
        "(queueType, skills) and optional port counts, read again at each sample"
    )
    path: ConfigPath = Field(
        description="The snapshot file.",
        json_schema_extra=_doc("path", example="/etc/ccx-agent/agents.json"),
    )

    def anchored(self, base: Path) -> Self:
        return _beside(self, base, ("path",))


def _no_userinfo(value: str) -> str:
    """Credentials in a URL end up in logs and error messages: they have their own keys."""
    if "@" in urlsplit(value).netloc:
        raise ValueError("must not hold a user name or password: use user and password_file")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


SourceUrl = Annotated[HttpsUrl, AfterValidator(_no_userinfo)]
UserName = Annotated[LogText, AfterValidator(_not_blank)]
#: The systemd credential read when ``source.uccx.password_file`` is not set.
UCCX_CREDENTIAL = "uccx-password"
#: The systemd credential read when ``source.finesse.user`` is set without a password file.
FINESSE_CREDENTIAL = "finesse-password"


def _node_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{(parts.hostname or '').lower()}:{parts.port or 443}"


def _pair(value: list[str]) -> list[str]:
    """One or two nodes (a UCCX cluster is a publisher and at most one subscriber), each
    named once: the same node twice would read it twice as if it were the other."""
    if not value:
        raise ValueError("must not be empty: give one or two nodes (publisher, subscriber)")
    if len(value) > 2:
        raise ValueError(
            f"lists {len(value)} nodes: a UCCX cluster has one or two (publisher, subscriber)"
        )
    if len(value) == 2 and _node_key(value[0]) == _node_key(value[1]):
        raise ValueError(f"names the same node twice ({value[0]!r}, {value[1]!r})")
    return value


#: ``source.uccx.nodes`` / ``source.finesse.nodes``: the HA pair (docs/sources.md).
NodeList = Annotated[list[SourceUrl], AfterValidator(_pair)]


class UccxSettings(Section):
    """The UCCX Administration REST API: who is configured for what (docs/sources.md)."""

    url: Annotated[SourceUrl | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="The UCCX node whose Administration API (`/adminapi/...`) is read. No "
        "user name or password in the URL.",
        json_schema_extra=_doc(
            "`https://HOST[:PORT]` URL", shown="— (this or `nodes` is required)"
        ),
    )
    nodes: Annotated[NodeList | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="The HA pair (publisher, subscriber), instead of `url`: agents are read "
        "from the node whose Finesse says `IN_SERVICE`, the configuration from that node "
        "too (else the other), a failover is followed within a sample, and in island mode "
        "both are read and each agent counted once "
        "([sources.md](sources.md#two-nodes-high-availability)). The same credentials, CA "
        "bundle and timeouts for both.",
        json_schema_extra=_doc(
            "list of one or two `https://` URLs", shown="— (this or `url` is required)"
        ),
    )
    user: UserName = Field(
        description="The account, used with HTTP basic auth.",
        json_schema_extra=_doc("one-line text"),
    )
    password_file: OptionalPath = Field(
        None,
        description="A file holding the password (its first line; mode 0600). Unset: the "
        "systemd credential `$CREDENTIALS_DIRECTORY/uccx-password`. Read again at each "
        "request, so a new password needs no restart.",
        json_schema_extra=_doc("path", shown="unset"),
    )
    password: Annotated[SecretStr | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="The password itself: accepted, with a warning (`usage` prints it on "
        "stderr; the source logs it), as a password belongs in a file only root can read. "
        "Not together with `password_file`.",
        json_schema_extra=_doc("text", shown="unset"),
    )
    ca_bundle: OptionalPath = Field(
        None,
        description="PEM file of the CA(s) the UCCX and Finesse certificates are verified "
        "against. TLS is always verified; `REQUESTS_CA_BUNDLE` and proxy variables are "
        "ignored.",
        json_schema_extra=_doc("path", shown="unset (the system trust store)"),
    )
    timeout: PositiveDuration = Field(
        timedelta(seconds=30),
        description="Longest wait for a response once connected (for Finesse too); a whole "
        "response must arrive within `connect_timeout + timeout` (enforced while reading: a "
        "server that drips its answer is cut at that deadline).",
        json_schema_extra=POSITIVE,
    )
    connect_timeout: PositiveDuration = Field(
        timedelta(seconds=10),
        description="Longest wait to connect (for Finesse too).",
        json_schema_extra=POSITIVE,
    )
    config_refresh: PositiveDuration = Field(
        timedelta(minutes=5),
        description="How often the configuration (resources, CSQs, campaigns) is read "
        "again; it is also read on start. When a refresh fails, the last good configuration "
        "is kept (and logged) and the refresh is tried again at the next sample.",
        json_schema_extra=POSITIVE,
    )

    @model_validator(mode="after")
    def _one_password(self) -> UccxSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password_file or password, not both (keep password_file)")
        if self.url is not None and self.nodes is not None:
            raise ValueError("give url (one node) or nodes (the HA pair), not both")
        if self.url is None and self.nodes is None:
            raise ValueError("give url (one node) or nodes (the HA pair): one of the two")
        return self

    def node_urls(self) -> list[str]:
        """The UCCX nodes, in the order written."""
        return list(self.nodes) if self.nodes is not None else [self.url or ""]


class FinesseSettings(Section):
    """Finesse, for who is logged in; by default the UCCX host and credentials."""

    url: Annotated[SourceUrl | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="The Finesse server whose `/finesse/api/Users` gives who is logged in, "
        "read at every sample.",
        json_schema_extra=_doc(
            "`https://` URL", shown="the scheme, host and port of `source.uccx.url`"
        ),
    )
    nodes: Annotated[NodeList | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="The Finesse of each UCCX node, in the same order (as many as "
        "`source.uccx.nodes`: `check-config` says so); instead of `source.finesse.url`.",
        json_schema_extra=_doc(
            "list of one or two `https://` URLs",
            shown="the scheme, host and port of each of `source.uccx.nodes`",
        ),
    )
    user: Annotated[UserName | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="A separate Finesse account.",
        json_schema_extra=_doc("one-line text", shown="`source.uccx.user`"),
    )
    password_file: OptionalPath = Field(
        None,
        description="Its password file. When `source.finesse.user` is set without it, the "
        "systemd credential `finesse-password` is used if present, else the UCCX password.",
        json_schema_extra=_doc("path", shown="the UCCX password"),
    )

    @model_validator(mode="after")
    def _one_address(self) -> FinesseSettings:
        if self.url is not None and self.nodes is not None:
            raise ValueError("give url (one node) or nodes (the HA pair), not both")
        return self


class UccxSource(SourceSection):
    kind: Literal["uccx"] = Field(
        description="the UCCX Administration REST API and Finesse, over verified HTTPS"
    )
    uccx: UccxSettings
    finesse: FinesseSettings = FinesseSettings()

    @field_validator("finesse", mode="before")
    @classmethod
    def _empty_finesse(cls, value: object) -> object:
        return {} if value is None else value

    def anchored(self, base: Path) -> Self:
        uccx = _beside(self.uccx, base, ("password_file", "ca_bundle"))
        finesse = _beside(self.finesse, base, ("password_file",))
        if uccx is self.uccx and finesse is self.finesse:
            return self
        return self.model_copy(update={"uccx": uccx, "finesse": finesse})

    def finesse_url(self) -> str:
        """Finesse runs on the UCCX node: the UCCX scheme, host and port by default."""
        return self.finesse_urls()[0]

    def finesse_urls(self) -> list[str]:
        """The Finesse of each UCCX node, in the order of :meth:`UccxSettings.node_urls`:
        ``source.finesse.nodes`` or ``url`` if given, else each UCCX node's scheme, host
        and port (Finesse runs on the UCCX node)."""
        if self.finesse.nodes is not None:
            return list(self.finesse.nodes)
        if self.finesse.url is not None:
            return [self.finesse.url]
        out = []
        for url in self.uccx.node_urls():
            parts = urlsplit(url)
            out.append(f"{parts.scheme}://{parts.netloc}")
        return out

    def node_problem(self) -> tuple[tuple[str, ...], tuple[str, ...], str] | None:
        """Finesse node *i* runs on UCCX node *i*: as many of one as of the other, or the
        key to change, the key it is held to and why (a rule of ``check-config``)."""
        uccx, finesse = len(self.uccx.node_urls()), len(self.finesse_urls())
        if uccx == finesse:
            return None
        key = "nodes" if self.finesse.nodes is not None else "url"
        return (
            ("source", "finesse", key),
            ("source", "uccx", "nodes" if self.uccx.nodes is not None else "url"),
            f"names {finesse} Finesse node(s) for {uccx} UCCX node(s): give one Finesse per "
            "UCCX node, in the same order, in source.finesse.nodes (or leave it unset: "
            "the UCCX hosts)",
        )

    def warnings(self) -> list[str]:
        if self.uccx.password is None:
            return []
        return [
            "source.uccx.password: a password written in the config file is readable by "
            "whoever can read the file; move it to source.uccx.password_file (mode 0600) "
            f"or the systemd credential {UCCX_CREDENTIAL!r}"
        ]


def _argv0(value: str) -> str:
    if not value or "\x00" in value:
        raise ValueError("must be a non-empty program name or path, without NUL characters")
    return value


def _argument(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _program_first(value: list[str]) -> list[str]:
    _argv0(value[0])
    return value


class CommandSource(SourceSection):
    """A program (run without a shell) that prints a snapshot in the file format."""

    kind: Literal["command"] = Field(description="a program that prints a snapshot")
    command: Annotated[
        list[Annotated[str, AfterValidator(_argument)]],
        Field(min_length=1),
        AfterValidator(_program_first),
    ] = Field(
        description="The program and its arguments, run without a shell "
        "(`[/usr/local/bin/snap, --all]`); it prints a snapshot in the file format (JSON "
        "or YAML) on stdout. A bare name is looked up on `PATH`; a relative path "
        "(`bin/snap`, `./snap`) is beside the config file.",
        json_schema_extra=_doc("non-empty list of text"),
    )
    timeout: PositiveDuration = Field(
        timedelta(seconds=30),
        description="The program is killed (with the processes it started) when it has not "
        "finished by then.",
        json_schema_extra=POSITIVE,
    )
    max_output_mb: Annotated[StrictInt, Field(ge=1, le=4096)] = Field(
        256,
        description="Output beyond this many MiB is refused and the program killed.",
        json_schema_extra=_doc("integer 1 – 4096"),
    )

    def anchored(self, base: Path) -> Self:
        """A relative program path (``bin/snap``, ``./snap``) is beside the config file;
        a bare name (``snap``) is looked up on PATH, and arguments are left alone."""
        program = self.command[0]
        if "/" not in program or Path(program).is_absolute():
            return self
        # Absolute: ``Path(".") / "./snap"`` is ``snap``, which exec would look up on PATH
        # (a config given as a relative --config).
        anchored = str((base / program).absolute())
        return self.model_copy(update={"command": [anchored, *self.command[1:]]})


def _increasing(steps: list[ScriptStep]) -> list[ScriptStep]:
    if steps[0].at != timedelta(0):
        raise ValueError("the first step must be at 0s (what the source shows from the start)")
    for i in range(1, len(steps)):
        if steps[i].at <= steps[i - 1].at:
            raise ValueError(f"step {i} must come after step {i - 1} (at must increase)")
    return steps


Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]


class ScriptStep(Section):
    """What the scripted source shows from ``at`` (time since the source started) on."""

    at: Duration = Field(
        timedelta(0), description="When the step starts.", json_schema_extra=DURATION
    )
    agents: Count = Field(
        0,
        description="Logged-in agents with a voice skill only (a standard seat on flex).",
        json_schema_extra=_doc("integer ≥ 0"),
    )
    premium_agents: Count = Field(
        0,
        description="Logged-in agents with a chat skill (a premium seat on flex / flex-hcs; "
        "`FEATURE_NOT_LICENSED` on perpetual-enhanced).",
        json_schema_extra=_doc("integer ≥ 0"),
    )
    supervisors: Count = Field(
        0, description="Logged-in supervisors.", json_schema_extra=_doc("integer ≥ 0")
    )
    outbound_ports: Count = Field(
        0, description="Outbound IVR ports in use.", json_schema_extra=_doc("integer ≥ 0")
    )
    fail: StrictBool = Field(
        False,
        description="The source fails during the step (`LICENSE_COMPUTATION_FAILED`), as a "
        "broken one would.",
        json_schema_extra=_doc("boolean"),
    )


class ScriptedSource(SourceSection):
    """Synthetic agents that follow a timeline: the demo's source, and load tests'."""

    kind: Literal["scripted"] = Field(
        description="synthetic agents that follow a timeline (the demo, load tests)"
    )
    steps: Annotated[list[ScriptStep], Field(min_length=1), AfterValidator(_increasing)] = Field(
        description="Each step holds from its `at` until the next one's; the first is "
        "`at: 0s`, and `at` increases. Time counts from when the daemon started (by a clock "
        "that never jumps).",
        json_schema_extra=_doc("non-empty list of steps"),
    )
    repeat_after: Annotated[PositiveDuration | None, BeforeValidator(_blank_is_none)] = Field(
        None,
        description="Start the script over this long after the start.",
        json_schema_extra=_doc(
            "positive duration, longer than the last `at`", shown="unset (the last step holds)"
        ),
    )

    @model_validator(mode="after")
    def _repeat_after_last(self) -> Self:
        if self.repeat_after is not None and self.repeat_after <= self.steps[-1].at:
            raise ValueError("repeat_after must be longer than the last step's at")
        return self


SourceConfig = Annotated[
    FileSource | UccxSource | CommandSource | ScriptedSource, Field(discriminator="kind")
]


class CommonConfig(Section):
    """Everything but the agent source: what a scenario's ``config:`` may override."""

    state_dir: ConfigPath = Field(
        DEFAULT_STATE_DIR,
        description="The agent's state: the SQLite database (identity, registration, "
        "authorization, evaluation time used, compliance per tag, interval history, the "
        "outbox of unsent reports, the alert log) and the private key. Keep it on "
        "persistent storage and back it up.",
        json_schema_extra=_doc("path"),
    )
    license: LicenseConfig = LicenseConfig()
    report: ReportConfig = ReportConfig()
    sample: SampleConfig = SampleConfig()
    compliance: ComplianceConfig = ComplianceConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    id_certificate: IdCertificateConfig = IdCertificateConfig()
    authorization: AuthorizationConfig = AuthorizationConfig()
    alerts: AlertsConfig = AlertsConfig()
    clock: ClockConfig = ClockConfig()
    history: HistoryConfig = Field(
        HistoryConfig(),
        description="The history that `ccx-agent report` and `ccx-agent alerts` read "
        "([reports.md](reports.md)).",
    )

    @field_validator(
        "license",
        "report",
        "sample",
        "compliance",
        "evaluation",
        "id_certificate",
        "authorization",
        "alerts",
        "clock",
        "history",
        mode="before",
    )
    @classmethod
    def _empty_section(cls, value: object) -> object:
        """A section whose keys are all commented out (``report:`` alone) is all defaults."""
        return {} if value is None else value

    def timers(self) -> Timers:
        return Timers(
            evaluation_period=self.evaluation.period,
            evaluation_warning_days=tuple(sorted(set(self.evaluation.warning_days), reverse=True)),
            evaluation_max_sample_gap=self.evaluation.max_sample_gap,
            id_cert_renew_after=self.id_certificate.renew_after,
            id_cert_expiry_warning=self.id_certificate.expiry_warning,
            id_cert_retry=self.id_certificate.retry,
            auth_renew_after=self.authorization.renew_after,
            auth_validity=self.authorization.validity,
            auth_expiry_warning=self.authorization.expiry_warning,
            auth_grace=self.authorization.grace,
            auth_retry=self.authorization.retry,
            alert_repeat=self.alerts.repeat,
            clock_jump=self.clock.jump_threshold,
        )

    def rules(self) -> ComplianceRules:
        return ComplianceRules(
            self.compliance.ooc_threshold, self.report.interval, self.compliance.ooc_period
        )

    def cross_rules(self) -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
        """Rules that span keys, broken here: (key to change, the key it is held to, why)."""
        out: list[tuple[tuple[str, ...], tuple[str, ...], str]] = []

        def rule(broken: bool, key: str, other: str, msg: str) -> None:
            if broken:
                out.append((tuple(key.split(".")), tuple(other.split(".")), f"{msg} {other}"))

        rule(
            self.sample.interval > self.report.interval,
            "sample.interval",
            "report.interval",
            "must not be longer than",
        )
        rule(
            self.report.jitter >= self.report.interval,
            "report.jitter",
            "report.interval",
            "must be shorter than",
        )
        rule(
            self.id_certificate.renew_after >= self.id_certificate.lifetime,
            "id_certificate.renew_after",
            "id_certificate.lifetime",
            "must be shorter than",
        )
        rule(
            self.id_certificate.expiry_warning > self.id_certificate.lifetime,
            "id_certificate.expiry_warning",
            "id_certificate.lifetime",
            "must not be longer than",
        )
        rule(
            self.authorization.renew_after >= self.authorization.validity,
            "authorization.renew_after",
            "authorization.validity",
            "must be shorter than",
        )
        rule(
            self.authorization.expiry_warning > self.authorization.validity,
            "authorization.expiry_warning",
            "authorization.validity",
            "must not be longer than",
        )
        rule(
            self.history.retention < self.report.interval * 2,
            "history.retention",
            "report.interval",
            "must be at least twice",
        )
        period_days = self.evaluation.period / timedelta(days=1)
        for i, day in enumerate(self.evaluation.warning_days):
            rule(
                day >= period_days,
                f"evaluation.warning_days.{i}",
                "evaluation.period",
                "must be fewer days than",
            )
        return out


class Config(CommonConfig):
    transport: TransportConfig = Field(
        TransportConfig(),
        description="How the agent reaches Cisco SSM or SSM On-Prem (the wire format: "
        "[protocol.md](protocol.md)).",
    )
    identity: IdentityConfig = Field(
        IdentityConfig(),
        description="The UDI (unique device identifier) this instance registers with. Its "
        "UUID is created on first use and kept in the state database.",
    )
    metrics: MetricsConfig = Field(
        MetricsConfig(),
        description="The Prometheus endpoint of `ccx-agent run`: `/metrics` and `/healthz` "
        "([monitoring.md](monitoring.md)). Reloaded on SIGHUP; a port that is taken keeps "
        "the old listener.",
    )
    monitoring: MonitoringConfig = Field(
        MonitoringConfig(),
        description="Thresholds of `ccx-agent status --check` (the Nagios-style check; "
        "[monitoring.md](monitoring.md)).",
    )
    source: SourceConfig = Field(
        description="Where the agents come from. Required: there is no default.",
        json_schema_extra=_doc(
            ", ".join(f"`{k}`" for k in ("file", "uccx", "command")) + " or `scripted`",
            shown="— (required)",
        ),
    )

    @field_validator("transport", "identity", "metrics", "monitoring", mode="before")
    @classmethod
    def _empty_own_section(cls, value: object) -> object:
        return {} if value is None else value

    def cross_rules(self) -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
        out = super().cross_rules()
        t = self.transport
        if t.url is not None and t.anchor() is None and t.mode == "online":
            out.append(
                (
                    ("transport", "trust_anchor"),
                    ("transport", "url"),
                    "must be set (or transport.ca_bundle) when transport.url is set: the "
                    "server's signing certificate must chain to it",
                )
            )
        if t.mode == "offline" and t.anchor() is None:
            out.append(
                (
                    ("transport", "trust_anchor"),
                    ("transport", "mode"),
                    "must be set (or transport.ca_bundle) when transport.mode is offline: the "
                    "answer files must be signed by a certificate that chains to it",
                )
            )
        if isinstance(self.source, UccxSource) and (nodes := self.source.node_problem()):
            out.append(nodes)
        return out

    @field_validator("source", mode="before")
    @classmethod
    def _empty_source(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("source", mode="wrap")
    @classmethod
    def _source_errors(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        """Word source errors as the operator wrote the keys.

        pydantic puts the union's tag in each error's location, and with ``kind: uccx``
        that tag is also a key (``source.uccx.uccx.user``); an unknown key would be
        matched against the first kind's keys only. So the tag is dropped here, and an
        unknown key is named against the keys of the kind that was given.
        """
        try:
            return handler(value)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(
                exc.title, [_source_error(e, value) for e in exc.errors()]
            ) from None


_SOURCE_KINDS: dict[str, type[SourceSection]] = {
    "file": FileSource,
    "uccx": UccxSource,
    "command": CommandSource,
    "scripted": ScriptedSource,
}


def _source_error(err: ErrorDetails, value: object) -> InitErrorDetails:
    """One error of the ``source`` union, its tag dropped and an unknown key reworded."""
    loc = tuple(err["loc"])
    kind = value.get("kind") if isinstance(value, dict) else None
    model = _SOURCE_KINDS.get(kind) if isinstance(kind, str) else None
    if model is not None and loc[:1] == (kind,):
        loc = loc[1:]
    need = {
        "uccx": "at least uccx.url (or uccx.nodes) and uccx.user",
        "command": "the program to run",
    }
    kind_of_error: str | PydanticCustomError = err["type"]
    if err["type"] not in _CORE_ERROR_TYPES:
        # An error type of pydantic itself (``path_type``), not of pydantic-core: it can
        # only be raised again as a custom error of the same name and message.
        # Without a context, so that the message is taken as written (not a template).
        kind_of_error = PydanticCustomError(err["type"], err["msg"])
    out: InitErrorDetails = {"type": kind_of_error, "loc": loc, "input": err["input"]}
    if "ctx" in err and isinstance(kind_of_error, str):
        out["ctx"] = err["ctx"]
    if err["type"] == "missing" and loc == (kind,) and kind in need:
        # Said at ``source`` itself: yamldoc would drop a location of ``source.uccx``
        # that is not in the file, mistaking the key for the union's tag.
        out = {
            "type": PydanticCustomError(
                "value_error", f"required key {kind!r} is missing (kind: {kind} needs {need[kind]})"
            ),
            "loc": (),
            "input": err["input"],
        }
    elif err["type"] == "extra_forbidden" and model is not None and loc:
        out = {
            "type": PydanticCustomError("value_error", _unknown_source_key(model, loc)),
            "loc": loc,
            "input": err["input"],
        }
    return out


#: The error types :meth:`ValidationError.from_exception_data` knows by name.
_CORE_ERROR_TYPES = frozenset(get_args(ErrorType))


def _unknown_source_key(model: type[BaseModel], loc: Loc) -> str:
    here: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(here, type) and issubclass(here, BaseModel)):
            return "unknown key"
        field = here.model_fields.get(str(part))
        here = field.annotation if field is not None else None
    if not (isinstance(here, type) and issubclass(here, BaseModel)):
        return "unknown key"
    siblings = list(here.model_fields)
    near = difflib.get_close_matches(str(loc[-1]), siblings, n=1)
    if near:
        return f"unknown key (did you mean '{near[0]}'?)"
    return f"unknown key (known keys here: {', '.join(siblings)})"


def _drop(data: dict[Any, Any], loc: Loc) -> Loc:
    """Remove the deepest mapping key on ``loc`` from ``data``; return its path."""
    parent: dict[Any, Any] | None = None
    last: Any = None
    here: Any = data
    path: list[Any] = []
    for part in loc:
        if not (isinstance(here, dict) and part in here):
            break
        parent, last, here = here, part, here[part]
        path.append(part)
    if parent is not None:
        del parent[last]
    return tuple(path)


def _rest(value: object, bad: Sequence[Loc]) -> tuple[CommonConfig | None, list[Loc]]:
    """The configuration without its invalid keys (they take their defaults), if valid."""
    if not isinstance(value, dict):
        return None, []
    rest = copy.deepcopy(value)
    dropped = [_drop(rest, loc) for loc in bad]
    rest = {k: v for k, v in rest.items() if k in CommonConfig.model_fields}
    try:
        return CommonConfig.model_validate(rest), [d for d in dropped if d]
    except ValidationError:
        return None, []


def _related(a: Loc, b: Loc) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def check(
    model: type[CommonConfig],
    doc: Document,
    prefix: Loc = (),
    data: object = None,
) -> CommonConfig:
    """Validate, then apply the cross-key rules; all problems are reported together.

    When some keys are invalid, the cross-key rules still run on the rest of the file
    (the invalid keys at their defaults), except the rules that involve an invalid key:
    an operator sees every problem in one run, and none that is only an echo of another.
    """
    value = value_at(doc.data, prefix) if data is None else data
    outcome = validate_value(model, doc, prefix, value)
    problems = list(outcome.problems)
    cfg: CommonConfig | None = outcome.value
    skip: list[Loc] = []
    if cfg is None:
        cfg, skip = _rest(value, outcome.locs)
    if cfg is not None:
        for key, other, msg in cfg.cross_rules():
            if any(_related(key, bad) or _related(other, bad) for bad in skip):
                continue
            full = (*prefix, *(int(p) if p.isdigit() else p for p in key))
            problems.append(Problem(doc.name, doc.line_of(full), dotted(full), msg))
    if problems or outcome.value is None:
        raise DocumentError(sorted(problems, key=lambda p: p.line))
    return outcome.value


def load(path: Path) -> Config:
    """Read and validate a config file; :class:`DocumentError` lists every problem."""
    path = Path(path)
    try:
        missing = not path.exists() and not path.is_symlink()
    except OSError:
        missing = False
    if missing:
        hint = f"no such file (give the config file with --config PATH or ${ENV_PATH})"
        raise DocumentError([Problem(str(path), 1, "(file)", hint)])
    doc = read_yaml(path, keep_going=True)
    try:
        cfg = check(Config, doc)
    except DocumentError as exc:
        raise DocumentError(sorted(doc.problems + exc.problems, key=lambda p: p.line)) from None
    if doc.problems:
        raise DocumentError(doc.problems)
    assert isinstance(cfg, Config)
    cfg = _anchor(cfg, path.parent)
    # Whatever this process prints from now on (a log line, an error, an alert) must not
    # show a secret the config names, wherever it turns up.
    secretvalues.remember(
        [*secretvalues.in_document(cfg.model_dump()), *secretvalues.in_credentials()]
    )
    return cfg


def load_or_status(path: Path, err: TextIO) -> Config | int:
    """:func:`load` for a command: the config, or its problems said on ``err``, one a line
    (the file, the line, the key: what to fix), and :data:`EX_CONFIG` to exit with. Every
    command says a bad config the same way, so that a script or an operator reads it once."""
    try:
        return load(path)
    except DocumentError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return EX_CONFIG


def _anchor(cfg: Config, base: Path) -> Config:
    """Relative paths mean "beside the config file", not the daemon's working directory
    (which is ``/`` under systemd)."""
    updates: dict[str, object] = {}
    if not cfg.state_dir.is_absolute():
        updates["state_dir"] = base / cfg.state_dir
    transport = {
        key: base / value
        for key in ("ca_bundle", "trust_anchor")
        if (value := getattr(cfg.transport, key)) is not None and not value.is_absolute()
    }
    if transport:
        updates["transport"] = cfg.transport.model_copy(update=transport)
    syslog = cfg.alerts.syslog
    if syslog.ca_bundle is not None and not syslog.ca_bundle.is_absolute():
        updates["alerts"] = cfg.alerts.model_copy(
            update={"syslog": syslog.model_copy(update={"ca_bundle": base / syslog.ca_bundle})}
        )
    metrics = _anchored_metrics(cfg.metrics, base)
    if metrics is not cfg.metrics:
        updates["metrics"] = metrics
    source = cfg.source.anchored(base)
    if source is not cfg.source:
        updates["source"] = source
    return cfg.model_copy(update=updates) if updates else cfg


def _anchored_metrics(metrics: MetricsConfig, base: Path) -> MetricsConfig:
    tls = _beside(metrics.tls, base, ("cert", "key"))
    out = _beside(metrics, base, ("basic_auth_file",))
    if tls is not metrics.tls:
        out = out.model_copy(update={"tls": tls})
    return out


# --- what `run` will need: the files the config names, the state directory ---------------


def _user() -> str:
    """This process's user, as a message names it (``uid 998 (ccx-agent)``)."""
    uid = os.geteuid()
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _can(path: Path, mode: int) -> bool:
    """Whether this process may access ``path`` (its effective ids where the OS can say)."""
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)  # pragma: no cover - Linux supports effective ids


def _file_problem(path: Path, executable: bool = False) -> str | None:
    """Why ``path`` cannot be used as a file this config names, or None if it can.

    A regular file only: a FIFO would block the reader, a device never ends, a directory
    is not a PEM file or a snapshot. Nothing is opened, so checking never blocks.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{path}: no such file"
    except NotADirectoryError:
        return f"{path}: no such file (a part of the path is not a directory)"
    except PermissionError:
        return f"{path}: cannot be reached by {_user()} (permission denied on a directory)"
    except OSError as exc:
        return f"{path}: cannot be checked: {exc.strerror or type(exc).__name__}"
    if not stat.S_ISREG(mode):
        return f"{path}: {kind_of(mode)}, not a regular file"
    if not _can(path, os.R_OK):
        return f"{path}: not readable by {_user()}"
    if executable and not _can(path, os.X_OK):
        return f"{path}: not executable by {_user()}"
    return None


def _program_problem(program: str) -> str | None:
    """A program given with a ``/`` must be an executable file; a bare name must be found
    on PATH (this process's PATH: the daemon's, under systemd, may differ)."""
    if "/" in program:
        return _file_problem(Path(program), executable=True)
    if shutil.which(program) is None:
        return f"program {program!r} not found on PATH ({os.environ.get('PATH', '')})"
    return None


def _state_dir_problem(state_dir: Path) -> str | None:
    """A state directory that exists must be a directory this user can write; one that
    does not exist is left alone (``run`` creates it; a check never does)."""
    try:
        mode = state_dir.stat().st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return f"{state_dir}: a part of the path is not a directory"
    except PermissionError:
        return f"{state_dir}: cannot be reached by {_user()} (permission denied on a directory)"
    except OSError as exc:
        return f"{state_dir}: cannot be checked: {exc.strerror or type(exc).__name__}"
    if not stat.S_ISDIR(mode):
        return f"{state_dir}: {kind_of(mode)}, not a directory"
    if not _can(state_dir, os.W_OK | os.X_OK):
        return f"{state_dir}: not writable by {_user()}"
    return None


def named_files(cfg: Config) -> list[tuple[Loc, Path]]:
    """Every file the config names that the agent reads, with its key."""
    files: list[tuple[Loc, Path | None]] = [
        (("transport", "ca_bundle"), cfg.transport.ca_bundle),
        (("transport", "trust_anchor"), cfg.transport.trust_anchor),
        (("alerts", "syslog", "ca_bundle"), cfg.alerts.syslog.ca_bundle),
    ]
    if cfg.metrics.listen is not None:
        files += [
            (("metrics", "tls", "cert"), cfg.metrics.tls.cert),
            (("metrics", "tls", "key"), cfg.metrics.tls.key),
            (("metrics", "basic_auth_file"), cfg.metrics.basic_auth_file),
        ]
    source = cfg.source
    if isinstance(source, FileSource):
        files.append((("source", "path"), source.path))
    elif isinstance(source, UccxSource):
        files += [
            (("source", "uccx", "password_file"), source.uccx.password_file),
            (("source", "uccx", "ca_bundle"), source.uccx.ca_bundle),
            (("source", "finesse", "password_file"), source.finesse.password_file),
        ]
    return [(key, path) for key, path in files if path is not None]


def file_problems(cfg: Config, doc: Document) -> list[Problem]:
    """The files ``cfg`` names that this user cannot use, and a state directory it cannot
    write, as ``PATH:LINE: key: message`` problems (``doc`` gives the lines)."""
    found: list[tuple[Loc, str | None]] = [
        (key, _file_problem(path)) for key, path in named_files(cfg)
    ]
    if isinstance(cfg.source, CommandSource):
        found.append((("source", "command", 0), _program_problem(cfg.source.command[0])))
    found.append((("state_dir",), _state_dir_problem(cfg.state_dir)))
    return [
        Problem(doc.name, doc.line_of(key), dotted(key), message)
        for key, message in found
        if message is not None
    ]


def key_problem(path: Path, key: Loc, message: str) -> Problem:
    """A ``PATH:LINE: key: message`` problem about a key of a config already loaded."""
    try:
        doc = read_yaml(path, keep_going=True)
    except DocumentError:
        return Problem(str(path), 1, dotted(key), message)
    return Problem(doc.name, doc.line_of(key), dotted(key), message)


def runtime_problems(cfg: Config, path: Path) -> list[Problem]:
    """What ``run`` will need that is not there: ``check-config`` and the daemon's start
    both call this after :func:`load`, so that a config that checks OK starts.

    ``path`` is the config file ``cfg`` was loaded from, read again for the lines of the
    keys. Today: :func:`file_problems`. Add here what else a start needs (the problems
    are sorted by line).
    """
    try:
        doc = read_yaml(path, keep_going=True)
    except DocumentError:  # changed since it was loaded: name the keys at line 1
        doc = Document(str(path), {}, {(): 1})
    return sorted(file_problems(cfg, doc), key=lambda p: p.line)
