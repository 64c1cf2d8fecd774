"""The configuration schema (one YAML file) and its loading.

Every timer and threshold of DESIGN §2 is a key here with the design's number as default;
the key names are an interface that operators and scenario files use, so they are kept
exactly as the issues wrote them.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from ccx_agent.durations import Duration, PositiveDuration
from ccx_agent.licensing.alerts import AlertFormat, Style
from ccx_agent.licensing.catalogue import ALL_FEATURES, Feature, LicenseType
from ccx_agent.licensing.compliance import ComplianceRules
from ccx_agent.licensing.lifecycle import Timers
from ccx_agent.yamldoc import Document, DocumentError, Problem, dotted, read_yaml, validate

DEFAULT_PATH = Path("/etc/ccx-agent/ccx-agent.yaml")
ENV_PATH = "CCX_AGENT_CONFIG"


class Section(BaseModel):
    """Unknown keys are errors everywhere: a typo must never silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LicenseConfig(Section):
    type: LicenseType = LicenseType.FLEX
    premium_features: list[Feature] = Field(default_factory=lambda: list(ALL_FEATURES))
    allow_overage: StrictBool = True

    @field_validator("premium_features")
    @classmethod
    def _unique(cls, value: list[Feature]) -> list[Feature]:
        if len(set(value)) != len(value):
            raise ValueError("lists a feature twice")
        return value


class ReportConfig(Section):
    interval: PositiveDuration = timedelta(minutes=15)
    #: Random delay after each interval boundary, so a fleet does not report together.
    jitter: Duration = timedelta(seconds=60)


class SampleConfig(Section):
    interval: PositiveDuration = timedelta(minutes=1)


class ComplianceConfig(Section):
    ooc_threshold: Annotated[StrictInt, Field(ge=1)] = 5
    ooc_period: PositiveDuration = timedelta(days=90)


class EvaluationConfig(Section):
    period: PositiveDuration = timedelta(days=90)
    warning_days: list[Annotated[StrictInt, Field(ge=1)]] = Field(
        default_factory=lambda: [30, 14, 7, 1]
    )
    max_sample_gap: PositiveDuration = timedelta(minutes=15)


class IdCertificateConfig(Section):
    lifetime: PositiveDuration = timedelta(days=365)
    renew_after: PositiveDuration = timedelta(days=180)
    expiry_warning: Duration = timedelta(days=30)
    retry: PositiveDuration = timedelta(hours=1)


class AuthorizationConfig(Section):
    renew_after: PositiveDuration = timedelta(days=30)
    validity: PositiveDuration = timedelta(days=90)
    expiry_warning: Duration = timedelta(days=30)
    grace: Duration = timedelta(days=90)
    retry: PositiveDuration = timedelta(hours=1)


class AlertsConfig(Section):
    styles: list[Style] = Field(default_factory=lambda: [Style.MCVD, Style.UC], min_length=1)
    #: The NodeID of UC lines; empty means this host's short name.
    node_id: str = ""
    cluster_id: str = ""
    app_id: str = "Cisco Unified CCX Cluster View Daemon"
    mcvd_source: str = "com.cisco.smartlicense.util.SmartLicenseUtil"
    repeat: PositiveDuration = timedelta(days=1)

    def format(self) -> AlertFormat:
        node = self.node_id or socket.gethostname().split(".")[0]
        return AlertFormat(tuple(self.styles), node, self.cluster_id, self.app_id, self.mcvd_source)


class ClockConfig(Section):
    jump_threshold: PositiveDuration = timedelta(days=1)


class FileSource(Section):
    kind: Literal["file"]
    path: Path


SourceConfig = Annotated[FileSource, Field(discriminator="kind")]


class CommonConfig(Section):
    """Everything but the agent source: what a scenario's ``config:`` may override."""

    state_dir: Path = Path("/var/lib/ccx-agent")
    license: LicenseConfig = LicenseConfig()
    report: ReportConfig = ReportConfig()
    sample: SampleConfig = SampleConfig()
    compliance: ComplianceConfig = ComplianceConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    id_certificate: IdCertificateConfig = IdCertificateConfig()
    authorization: AuthorizationConfig = AuthorizationConfig()
    alerts: AlertsConfig = AlertsConfig()
    clock: ClockConfig = ClockConfig()

    def timers(self) -> Timers:
        return Timers(
            evaluation_period=self.evaluation.period,
            evaluation_warning_days=tuple(sorted(set(self.evaluation.warning_days), reverse=True)),
            evaluation_max_sample_gap=self.evaluation.max_sample_gap,
            id_cert_lifetime=self.id_certificate.lifetime,
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

    def cross_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Rules that span keys; each names the key an operator should change."""
        out: list[tuple[tuple[str, ...], str]] = []
        if self.sample.interval > self.report.interval:
            out.append((("sample", "interval"), "must not be longer than report.interval"))
        if self.report.jitter >= self.report.interval:
            out.append((("report", "jitter"), "must be shorter than report.interval"))
        if self.id_certificate.renew_after >= self.id_certificate.lifetime:
            out.append(
                (("id_certificate", "renew_after"), "must be shorter than id_certificate.lifetime")
            )
        if self.id_certificate.expiry_warning > self.id_certificate.lifetime:
            out.append(
                (
                    ("id_certificate", "expiry_warning"),
                    "must not be longer than id_certificate.lifetime",
                )
            )
        if self.authorization.renew_after >= self.authorization.validity:
            out.append(
                (("authorization", "renew_after"), "must be shorter than authorization.validity")
            )
        if self.authorization.expiry_warning > self.authorization.validity:
            out.append(
                (
                    ("authorization", "expiry_warning"),
                    "must not be longer than authorization.validity",
                )
            )
        period_days = self.evaluation.period / timedelta(days=1)
        for i, day in enumerate(self.evaluation.warning_days):
            if day >= period_days:
                out.append(
                    (
                        ("evaluation", "warning_days", str(i)),
                        "must be fewer days than evaluation.period",
                    )
                )
        return out


class Config(CommonConfig):
    source: SourceConfig


def default_path() -> Path:
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH)


def check(
    model: type[CommonConfig],
    doc: Document,
    prefix: tuple[str | int, ...] = (),
    data: object = None,
) -> CommonConfig:
    """Validate, then apply the cross-key rules; all problems are reported together."""
    cfg = validate(model, doc, prefix, data)
    cross = cfg.cross_problems()
    if cross:
        problems = []
        for loc, msg in cross:
            full = (*prefix, *(int(p) if p.isdigit() else p for p in loc))
            problems.append(Problem(doc.name, doc.line_of(full), dotted(full), msg))
        raise DocumentError(problems)
    return cfg


def load(path: Path) -> Config:
    """Read and validate a config file; :class:`DocumentError` lists every problem."""
    doc = read_yaml(path)
    cfg = check(Config, doc)
    assert isinstance(cfg, Config)
    return cfg
