"""The alert catalogue (docs/licensing.md §9) and its two line formats, MCVD and UC.

The seed document's three lines must come out byte for byte with the default strings:
operators' existing log searches key on them. Texts of the other alerts are ours, in the
same voice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum


class Style(StrEnum):
    MCVD = "mcvd"
    UC = "uc"


@dataclass(frozen=True, slots=True)
class AlertSpec:
    severity: int
    #: The bracketed operation in an MCVD line, e.g. ``[REPORT_ENTITLE]``.
    context: str
    description: str


class Mnemonic(StrEnum):
    """Every alert name the agent can raise, in the order of docs/licensing.md §9.

    A member is its own spelling (``Mnemonic.AGENT_READY == "AGENT_READY"``), so syslog
    lines, the structured log, the database and ``status --json`` carry the same text as
    before; the enum only lets mypy and a test catch a misspelt or undocumented name.
    A member's name is its value: ``Enum`` hashes a member by its name, so only then does a
    name read back from the database find the same ``marks`` entry as the member.
    """

    AGENT_READY = "AGENT_READY"
    AGENT_INIT_FAILED = "AGENT_INIT_FAILED"
    AGENT_JOB_FAILED = "AGENT_JOB_FAILED"
    AGENT_JOB_RECOVERED = "AGENT_JOB_RECOVERED"
    REGISTER_SUCCESS = "REGISTER_SUCCESS"
    REGISTER_FAILED = "REGISTER_FAILED"
    DEREGISTER_SUCCESS = "DEREGISTER_SUCCESS"
    DEREGISTER_FAILED = "DEREGISTER_FAILED"
    ID_CERT_RENEW_SUCCESS = "ID_CERT_RENEW_SUCCESS"
    ID_CERT_RENEW_FAILED = "ID_CERT_RENEW_FAILED"
    REGISTRATION_EXPIRING_SOON = "REGISTRATION_EXPIRING_SOON"
    REGISTRATION_EXPIRED = "REGISTRATION_EXPIRED"
    AUTH_RENEW_SUCCESS = "AUTH_RENEW_SUCCESS"
    AUTH_RENEW_FAILED = "AUTH_RENEW_FAILED"
    AUTHORIZATION_EXPIRING_SOON = "AUTHORIZATION_EXPIRING_SOON"
    AUTHORIZATION_EXPIRED = "AUTHORIZATION_EXPIRED"
    EVAL_START = "EVAL_START"
    EVAL_EXPIRY_WARNING = "EVAL_EXPIRY_WARNING"
    EVAL_EXPIRED = "EVAL_EXPIRED"
    SYSTEM_TO_ENTER_OOC_STATE = "SYSTEM_TO_ENTER_OOC_STATE"
    SYSTEM_TO_ENTER_OOC_STATE_SHORTLY = "SYSTEM_TO_ENTER_OOC_STATE_SHORTLY"
    SYSTEM_IN_OOC_STATE = "SYSTEM_IN_OOC_STATE"
    SYSTEM_BACK_IN_COMPLIANCE = "SYSTEM_BACK_IN_COMPLIANCE"
    ENFORCEMENT_MODE = "ENFORCEMENT_MODE"
    ENTITLEMENT_REPORT_FAILED = "ENTITLEMENT_REPORT_FAILED"
    COMM_FAILED = "COMM_FAILED"
    COMM_RESTORED = "COMM_RESTORED"
    LICENSE_COMPUTATION_FAILED = "LICENSE_COMPUTATION_FAILED"
    FEATURE_NOT_LICENSED = "FEATURE_NOT_LICENSED"
    LICENSE_LIMIT_REACHED = "LICENSE_LIMIT_REACHED"
    UCCX_ISLAND_MODE = "UCCX_ISLAND_MODE"
    UCCX_ISLAND_MODE_ENDED = "UCCX_ISLAND_MODE_ENDED"
    SYSTEM_CLOCK_CHANGED = "SYSTEM_CLOCK_CHANGED"


_OOC_SOON = (
    "This Product Instance will enter Out of Compliance state because of insufficient licenses."
)
_OOC_SHORTLY = (
    "The time required for the Product to be in compliance is about to expire. "
    "Else, you will have to procure more licenses."
)
_IN_OOC = "This Product Instance is currently in Out of Compliance state because of insufficient licenses."

CATALOGUE: dict[Mnemonic, AlertSpec] = {
    Mnemonic.AGENT_READY: AlertSpec(
        6, "AGENT", "The Smart Licensing agent has started and is ready."
    ),
    Mnemonic.AGENT_INIT_FAILED: AlertSpec(
        2, "AGENT", "The Smart Licensing agent failed to initialize."
    ),
    Mnemonic.AGENT_JOB_FAILED: AlertSpec(
        3,
        "AGENT",
        "A job of the Smart Licensing agent keeps failing; usage may not be recorded or reported.",
    ),
    Mnemonic.AGENT_JOB_RECOVERED: AlertSpec(
        5, "AGENT", "A job of the Smart Licensing agent that kept failing has recovered."
    ),
    Mnemonic.REGISTER_SUCCESS: AlertSpec(
        6, "REGISTER", "This Product Instance is registered with Cisco Smart Software Manager."
    ),
    Mnemonic.REGISTER_FAILED: AlertSpec(
        3,
        "REGISTER",
        "Registration of this Product Instance with Cisco Smart Software Manager failed.",
    ),
    Mnemonic.DEREGISTER_SUCCESS: AlertSpec(
        6, "DEREGISTER", "This Product Instance is deregistered from Cisco Smart Software Manager."
    ),
    Mnemonic.DEREGISTER_FAILED: AlertSpec(
        3,
        "DEREGISTER",
        "Cisco Smart Software Manager could not be told of the deregistration; "
        "the local identity was removed.",
    ),
    Mnemonic.ID_CERT_RENEW_SUCCESS: AlertSpec(
        6, "RENEW_ID", "The ID certificate of this Product Instance was renewed."
    ),
    Mnemonic.ID_CERT_RENEW_FAILED: AlertSpec(
        3, "RENEW_ID", "Renewal of the ID certificate of this Product Instance failed."
    ),
    Mnemonic.REGISTRATION_EXPIRING_SOON: AlertSpec(
        4, "RENEW_ID", "The registration of this Product Instance will expire soon."
    ),
    Mnemonic.REGISTRATION_EXPIRED: AlertSpec(
        1,
        "RENEW_ID",
        "The registration of this Product Instance has expired. Register the Product Instance again.",
    ),
    Mnemonic.AUTH_RENEW_SUCCESS: AlertSpec(
        6, "AUTH_RENEW", "The license authorization of this Product Instance was renewed."
    ),
    Mnemonic.AUTH_RENEW_FAILED: AlertSpec(
        3, "AUTH_RENEW", "Renewal of the license authorization of this Product Instance failed."
    ),
    Mnemonic.AUTHORIZATION_EXPIRING_SOON: AlertSpec(
        4, "AUTH_RENEW", "The license authorization of this Product Instance will expire soon."
    ),
    Mnemonic.AUTHORIZATION_EXPIRED: AlertSpec(
        1,
        "AUTH_RENEW",
        "The license authorization of this Product Instance has expired because it has not "
        "communicated with Cisco Smart Software Manager.",
    ),
    Mnemonic.EVAL_START: AlertSpec(
        5, "EVALUATION", "This Product Instance is using the evaluation period."
    ),
    Mnemonic.EVAL_EXPIRY_WARNING: AlertSpec(
        4,
        "EVALUATION",
        "The evaluation period of this Product Instance will expire soon. "
        "Register the Product Instance with Cisco Smart Software Manager.",
    ),
    Mnemonic.EVAL_EXPIRED: AlertSpec(
        1,
        "EVALUATION",
        "The evaluation period of this Product Instance has expired. "
        "Register the Product Instance with Cisco Smart Software Manager.",
    ),
    Mnemonic.SYSTEM_TO_ENTER_OOC_STATE: AlertSpec(1, "REPORT_ENTITLE", _OOC_SOON),
    Mnemonic.SYSTEM_TO_ENTER_OOC_STATE_SHORTLY: AlertSpec(0, "REPORT_ENTITLE", _OOC_SHORTLY),
    Mnemonic.SYSTEM_IN_OOC_STATE: AlertSpec(1, "REPORT_ENTITLE", _IN_OOC),
    Mnemonic.SYSTEM_BACK_IN_COMPLIANCE: AlertSpec(
        5, "REPORT_ENTITLE", "This Product Instance is back in compliance."
    ),
    Mnemonic.ENFORCEMENT_MODE: AlertSpec(
        0,
        "ENFORCEMENT",
        "This Product Instance is in Enforcement mode. Changes to agents are not synchronized "
        "until the licensing condition is corrected.",
    ),
    Mnemonic.ENTITLEMENT_REPORT_FAILED: AlertSpec(
        3,
        "REPORT_ENTITLE",
        "The license usage report could not be sent; it is kept and will be re-sent.",
    ),
    Mnemonic.COMM_FAILED: AlertSpec(
        3, "COMM", "Communication with Cisco Smart Software Manager failed."
    ),
    Mnemonic.COMM_RESTORED: AlertSpec(
        5, "COMM", "Communication with Cisco Smart Software Manager is restored."
    ),
    Mnemonic.LICENSE_COMPUTATION_FAILED: AlertSpec(
        3,
        "LICENSE_COMPUTE",
        "License consumption could not be computed; no usage was recorded for this sample.",
    ),
    Mnemonic.FEATURE_NOT_LICENSED: AlertSpec(
        4,
        "LICENSE_COMPUTE",
        "Agents are configured with features that the license type of this Product Instance does not include.",
    ),
    Mnemonic.LICENSE_LIMIT_REACHED: AlertSpec(
        2,
        "LICENSE_CONTROL",
        "License usage has reached the purchased quantity; overage is not allowed.",
    ),
    Mnemonic.UCCX_ISLAND_MODE: AlertSpec(
        4,
        "LICENSE_COMPUTE",
        "Both UCCX nodes are in service (island mode); usage counts each agent once across both nodes.",
    ),
    Mnemonic.UCCX_ISLAND_MODE_ENDED: AlertSpec(
        5,
        "LICENSE_COMPUTE",
        "The UCCX nodes agree on one master again; usage is read from it alone.",
    ),
    Mnemonic.SYSTEM_CLOCK_CHANGED: AlertSpec(
        5, "CLOCK", "The system clock changed; licensing timers are computed from the new time."
    ),
}


def spec_of(name: str) -> AlertSpec | None:
    """The catalogue entry of an alert name read back from the database, or None for a
    name this version does not raise (a row written by another version is still shown)."""
    try:
        return CATALOGUE[Mnemonic(name)]
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert instance. ``params`` lead the UC line; ``detail`` ends the MCVD line."""

    mnemonic: Mnemonic
    detail: str
    params: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    #: Extra structured context for the log, never printed in the syslog lines.
    data: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def spec(self) -> AlertSpec:
        return CATALOGUE[self.mnemonic]

    @property
    def severity(self) -> int:
        return self.spec.severity


@dataclass(frozen=True, slots=True)
class AlertFormat:
    """The configurable strings of the two line styles (config ``alerts.*``)."""

    styles: tuple[Style, ...] = (Style.MCVD, Style.UC)
    node_id: str = ""
    cluster_id: str = ""
    app_id: str = "Cisco Unified CCX Cluster View Daemon"
    mcvd_source: str = "com.cisco.smartlicense.util.SmartLicenseUtil"


def mcvd_line(alert: Alert, fmt: AlertFormat) -> str:
    spec = alert.spec
    return (
        f"%MCVD-LIB_LICENSE-{spec.severity}-{alert.mnemonic}: [{spec.context}] "
        f"{fmt.mcvd_source} {spec.description}: {alert.detail}"
    )


def uc_line(alert: Alert, fmt: AlertFormat) -> str:
    spec = alert.spec
    params = "".join(f"[{k}={v}]" for k, v in alert.params)
    return (
        f"%UC_LIB_LICENSE-{spec.severity}-{alert.mnemonic}: %{params}[AppID={fmt.app_id}]"
        f"[ClusterID={fmt.cluster_id}][NodeID={fmt.node_id}]: {spec.description}"
    )


def lines(alert: Alert, fmt: AlertFormat) -> list[str]:
    """The alert in every configured style, in the configured order."""
    out = []
    for style in fmt.styles:
        out.append(mcvd_line(alert, fmt) if style is Style.MCVD else uc_line(alert, fmt))
    return out


def human_duration(span: timedelta) -> str:
    """The countdown wording: whole minutes as minutes (as UCCX writes them), else seconds."""
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds % 60 == 0 and seconds > 0:
        minutes = seconds // 60
        return f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


def ooc_countdown(remaining: timedelta, tags: Iterable[str], is_last: bool) -> Alert:
    """SYSTEM_TO_ENTER_OOC_STATE(_SHORTLY): the countdown before irreversible OOC."""
    left = human_duration(remaining)
    return Alert(
        Mnemonic.SYSTEM_TO_ENTER_OOC_STATE_SHORTLY
        if is_last
        else Mnemonic.SYSTEM_TO_ENTER_OOC_STATE,
        f"This Product Instance will enter Out of Compliance state in ={left}",
        params=(("The time remaining to enter OOC state", left),),
        tags=tuple(tags),
    )
