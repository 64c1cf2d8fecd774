"""The scenario file format of ``ccx-agent simulate`` (validated like the config file)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from ccx_agent.config.durations import Duration, PositiveDuration
from ccx_agent.config.schema import CommonConfig, Section, check
from ccx_agent.config.yamldoc import Document, DocumentError, Problem, dotted, read_yaml, validate
from ccx_agent.licensing.catalogue import LicenseType, unknown_tags

DEFAULT_START = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
Count = Annotated[StrictInt, Field(ge=0)]


class ScenarioEvent(Section):
    """One change of the simulated world; every key given takes effect at ``at``."""

    at: Duration
    usage: dict[str, Count] | None = None
    purchase: dict[str, StrictInt] | None = None
    ssm: Literal["reachable", "unreachable"] | None = None
    #: ``register`` in the file (the attribute name is taken by pydantic's BaseModel).
    register_: Literal[True] | None = Field(default=None, alias="register")
    deregister: Literal[True] | None = None
    #: A file exchange (docs/offline.md): export, the simulator's answer, import.
    exchange: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_thing(self) -> ScenarioEvent:
        if not any(
            v is not None
            for v in (
                self.usage,
                self.purchase,
                self.ssm,
                self.register_,
                self.deregister,
                self.exchange,
            )
        ):
            raise ValueError(
                "an event needs one of usage, purchase, ssm, register, deregister, exchange"
            )
        if self.register_ and self.deregister:
            raise ValueError("an event cannot both register and deregister")
        return self


class Scenario(Section):
    start: datetime = DEFAULT_START
    license_type: LicenseType = LicenseType.FLEX
    registered: StrictBool = True
    #: ``transport.mode: offline``: SSM only by ``exchange`` events (registering at the
    #: start is an exchange too); no job talks to it.
    offline: StrictBool = False
    entitlements: dict[str, Count] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    events: list[ScenarioEvent] = Field(default_factory=list)
    duration: PositiveDuration = timedelta(days=1)

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class LoadedScenario:
    """A validated scenario with its effective configuration."""

    def __init__(self, scenario: Scenario, config: CommonConfig, name: str) -> None:
        self.scenario = scenario
        self.config = config
        self.name = name


def _semantic(sc: Scenario, doc: Document) -> list[Problem]:
    """Checks that need the whole scenario: tags of the license type, event order."""
    problems: list[Problem] = []

    def add(loc: tuple[str | int, ...], msg: str) -> None:
        problems.append(Problem(doc.name, doc.line_of(loc), dotted(loc), msg))

    lt = sc.license_type
    for tag in unknown_tags(lt, sc.entitlements):
        add(("entitlements", tag), f"unknown tag for license type {lt.value!r}")
    previous = timedelta(0)
    for i, ev in enumerate(sc.events):
        for key in ("usage", "purchase"):
            counts = getattr(ev, key)
            for tag in unknown_tags(lt, counts or {}):
                add(("events", i, key, tag), f"unknown tag for license type {lt.value!r}")
        if ev.at < previous:
            add(("events", i, "at"), "events must be in time order")
        if ev.at > sc.duration:
            add(("events", i, "at"), "is after the end of the scenario (duration)")
        previous = max(previous, ev.at)
    cfg_license = sc.config.get("license")
    if isinstance(cfg_license, dict) and "type" in cfg_license and cfg_license["type"] != lt.value:
        add(("config", "license", "type"), "set the license type with the top-level license_type")
    return problems


def load_scenario(doc: Document) -> LoadedScenario:
    """Validate a scenario and its ``config:`` overrides; every problem at once, in line order."""
    problems: list[Problem] = []
    sc: Scenario | None = None
    try:
        sc = validate(Scenario, doc)
    except DocumentError as exc:
        problems += exc.problems
    raw = doc.data if isinstance(doc.data, dict) else {}
    if sc is not None:
        problems += _semantic(sc, doc)
        license_type = sc.license_type.value
    else:
        raw_type = raw.get("license_type")
        valid = {t.value for t in LicenseType}
        license_type = raw_type if raw_type in valid else LicenseType.FLEX.value
    cfg: CommonConfig | None = None
    overrides = raw.get("config", {})
    if isinstance(overrides, dict):
        overrides = dict(overrides)
        lic = overrides.get("license")
        lic = dict(lic) if isinstance(lic, dict) else {}
        lic["type"] = license_type
        overrides["license"] = lic
        try:
            cfg = check(CommonConfig, doc, ("config",), overrides)
        except DocumentError as exc:
            problems += exc.problems
    if problems or sc is None or cfg is None:
        unique = list(dict.fromkeys(problems))
        raise DocumentError(sorted(unique, key=lambda p: p.line))
    return LoadedScenario(sc, cfg, doc.name)


def read_scenario(path: Any) -> LoadedScenario:
    return load_scenario(read_yaml(path))
