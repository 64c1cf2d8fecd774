"""``ccx-agent status --check``: a monitoring-plugins (Nagios, Icinga, Zabbix agent …)
check, for hosts that watch services that way rather than with Prometheus.

One line, ``CCX-LICENSE OK|WARNING|CRITICAL|UNKNOWN - <what> | <perfdata>``, and the
plugin exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. It reads what ``status``
reads (:func:`ccx_agent.status.collect`, a read snapshot of the database), so it never
blocks the daemon nor needs it to run. The thresholds, and why each one, are in
docs/monitoring.md; they are decided by :func:`verdict`, which is pure.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from ccx_agent import checkconfig
from ccx_agent import status as status_mod
from ccx_agent.config.durations import format_duration
from ccx_agent.errors import AgentError
from ccx_agent.instance import Open, open_store
from ccx_agent.licensing.compliance import TagState
from ccx_agent.licensing.lifecycle import Authorization, Registration
from ccx_agent.licensing.timeutil import iso as iso_text
from ccx_agent.licensing.timeutil import parse_iso

if TYPE_CHECKING:
    # The schema only where the config is validated here (see :func:`_recorded`).
    from ccx_agent.config.schema import Config
    from ccx_agent.store.db import Store

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
PREFIX = "CCX-LICENSE"


class Verdict:
    """What is critical, what is a warning, and what an OK line says. A plain class: a
    dataclass costs its making (its methods generated and compiled) at every start of
    the check, which uses none of them."""

    def __init__(self) -> None:
        self.critical: list[str] = []
        self.warning: list[str] = []
        self.ok = ""

    @property
    def code(self) -> int:
        return CRITICAL if self.critical else WARNING if self.warning else OK

    @property
    def what(self) -> str:
        return "; ".join(self.critical + self.warning) or self.ok


def approx(span: timedelta) -> str:
    """A span as a person reads it: days and hours, hours and minutes, or seconds."""
    seconds = max(0, int(span.total_seconds()))
    step = 3600 if seconds >= 86400 else 60 if seconds >= 3600 else 1
    return format_duration(timedelta(seconds=seconds - seconds % step))


def _at(value: str | None) -> datetime | None:
    return None if value is None else parse_iso(value)


def verdict(doc: dict[str, Any], cfg: Config, now: datetime) -> Verdict:
    """What the ``status`` document ``doc`` means for a monitoring system at ``now``."""
    v = Verdict()
    reg, auth = doc["registration"], doc["authorization"]
    registered = reg["state"] == Registration.REGISTERED.value
    threshold = cfg.compliance.ooc_threshold

    for tag, t in doc["tags"].items():
        if t["state"] in (TagState.OUT_OF_COMPLIANCE.value, TagState.ENFORCEMENT.value):
            v.critical.append(
                f"{tag} {t['state']} (locked usage {t['locked']}, entitlement {t['entitlement']})"
            )
        elif t["state"] == TagState.OVERAGE.value:
            v.warning.append(
                f"{tag} countdown {t['overage_count']}/{threshold} (usage {t['usage']}, "
                f"entitlement {t['entitlement']})"
            )
    if doc["enforcement"]:
        v.critical.append(f"enforcement: {doc['enforcement']}")
    if reg["state"] == Registration.REGISTRATION_EXPIRED.value:
        v.critical.append(f"registration expired (ID certificate {reg['certificate_expires_at']})")
    if auth["state"] == Authorization.AUTHORIZATION_EXPIRED.value:
        v.critical.append(f"authorization expired at {auth['expires_at']}")
    if auth["state"] == Authorization.EVALUATION_EXPIRED.value:
        v.critical.append("evaluation period expired: register the instance")

    # Offline (docs/offline.md), reports wait for the next file exchange: neither their
    # age nor their number is a fault; the authorization's expiry warnings say when.
    offline = cfg.transport.mode == "offline"
    if registered:
        last = _at(doc.get("last_report_at")) or _at(reg["registered_at"])
        stale = cfg.monitoring.stale_after
        if last is not None and now - last > stale and not offline:
            v.critical.append(
                f"no report delivered for {approx(now - last)} "
                f"(monitoring.stale_after {format_duration(stale)})"
            )
        cert = _at(reg["certificate_expires_at"])
        if cert is not None and now < cert <= now + cfg.id_certificate.expiry_warning:
            v.warning.append(f"ID certificate expires in {approx(cert - now)}")
        expires = _at(auth["expires_at"])
        if (
            auth["state"] != Authorization.AUTHORIZATION_EXPIRED.value
            and expires is not None
            and now < expires <= now + cfg.authorization.expiry_warning
        ):
            v.warning.append(f"authorization expires in {approx(expires - now)}")
    elif auth["state"] != Authorization.EVALUATION_EXPIRED.value:
        left = timedelta(seconds=doc["evaluation_seconds_left"])
        v.warning.append(f"not registered: evaluation mode, {approx(left)} left")

    if doc["outbox"] and not offline:
        v.warning.append(f"{doc['outbox']} report(s) pending")
    _sampling(v, doc, cfg, now)

    tags = doc["tags"]
    v.ok = f"{reg['state']}, {auth['state']}, {len(tags)} tag(s) in compliance"
    return v


def no_usage_bound(cfg: Config) -> timedelta:
    """How long without a good sample before ``--check`` is CRITICAL: the length of the
    out-of-compliance countdown (``compliance.ooc_threshold`` report intervals). By then an
    overage that began when the source stopped answering would have run its whole
    countdown unseen, so the compliance state shown can no longer be trusted."""
    return cfg.compliance.ooc_threshold * cfg.report.interval


def _sampling(v: Verdict, doc: dict[str, Any], cfg: Config, now: datetime) -> None:
    """A source that fails, or closed intervals without usage: WARNING, CRITICAL past
    :func:`no_usage_bound` without a good sample."""
    s = doc.get("sampling") or {}
    failing = _at(s.get("failing_since"))
    empty = int(s.get("intervals_without_data") or 0)
    if failing is None and not empty:
        return
    since = _at(s.get("last_good_sample_at")) or failing
    what = []
    if failing is not None:
        what.append(f"source failing since {iso_text(failing)}: {s.get('last_error')}")
    if empty:
        what.append(f"no usage in the last {empty} interval(s)")
    bound = no_usage_bound(cfg)
    if since is not None and now - since > bound:
        v.critical.append(
            f"no usage measured for {approx(now - since)} (past {format_duration(bound)}, "
            f"compliance.ooc_threshold x report.interval: compliance can no longer be "
            f"trusted); " + "; ".join(what)
        )
    else:
        last = f" (last good sample {iso_text(since)})" if since is not None else ""
        v.warning.append("; ".join(what) + last)


def perfdata(doc: dict[str, Any]) -> str:
    """Usage and entitlement per tag; usage's warning threshold is the entitlement (above
    it, the countdown starts)."""
    parts = []
    for tag, t in doc["tags"].items():
        parts.append(f"{tag}_usage={t['usage']};{t['entitlement']};;0")
        parts.append(f"{tag}_entitlement={t['entitlement']};;;0")
    return " ".join(parts)


def line(code: int, what: str, perf: str = "") -> str:
    # "|" starts the perfdata: it must not appear in the text before it.
    text = f"{PREFIX} {NAMES[code]} - {what.replace('|', '/')}"
    return f"{text} | {perf}" if perf else text


def _recorded(path: Path) -> tuple[Config, Store] | None:
    """The config as the daemon recorded it for this check, and the database it is in,
    when the file is still the one it validated (:func:`ccx_agent.checkconfig.lookup`)."""
    found = checkconfig.lookup(path)
    if found is None:
        return None
    # Not a Config: the attributes of one that the check reads (checkconfig.KEYS).
    return cast("Config", found[0]), found[1]


def main(
    path: Path,
    now: datetime,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    record: bool = True,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    found = _recorded(path) if record else None
    if found is not None:
        cfg, store = found
    else:
        from ccx_agent.config import schema as config_mod  # noqa: PLC0415 - see _recorded

        loaded = config_mod.load_or_status(path, err)
        if isinstance(loaded, int):
            # A plugin's status is 0-3 whatever goes wrong; the details on stderr.
            print(line(UNKNOWN, f"the config {path} is not valid"), file=out)
            return UNKNOWN
        cfg = loaded
        try:
            store = open_store(cfg, Open.READ)
        except AgentError as exc:  # no database, a lost or damaged one: the line says which
            print(line(UNKNOWN, f"cannot read the state database: {exc}"), file=out)
            return UNKNOWN
        except Exception as exc:  # a permission, an I/O error: still a plugin answer
            print(
                line(UNKNOWN, f"cannot read the state database: {type(exc).__name__}: {exc}"),
                file=out,
            )
            return UNKNOWN
    try:
        doc = status_mod.collect(cfg, store, now)
        v = verdict(doc, cfg, now)
    except checkconfig.NotRecorded:
        # A key the record does not carry: answer as if there were no record.
        return main(path, now, out, err, record=False)
    except Exception as exc:  # a damaged database, a full disk: still a plugin answer
        print(
            line(UNKNOWN, f"cannot read the state database: {type(exc).__name__}: {exc}"), file=out
        )
        return UNKNOWN
    finally:
        store.close()
    print(line(v.code, v.what, perfdata(doc)), file=out)
    return v.code
