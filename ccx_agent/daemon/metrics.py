"""The daemon's Prometheus metrics (docs/monitoring.md lists each one and its meaning).

Two kinds of values, kept apart on purpose:

* **The licensing state** (usage, entitlements, compliance, timers, pending reports) is
  what the jobs committed: after each job the daemon reads the database in a read
  snapshot (:func:`ccx_agent.status.collect`, the very function behind ``status --json``)
  and :meth:`Metrics.refresh` turns that document into ready-made metric families. A
  scrape only hands them out: it never reads the source, talks to SSM or waits for a lock,
  and Prometheus sees exactly what ``status`` says.
* **What this process did** (SSM requests, source reads, alerts, job failures) are
  counters and histograms of :mod:`prometheus_client`, counted where it happens. They
  start at zero with each daemon life, as Prometheus counters do.

Only the daemon imports this module, and only when ``metrics.listen`` is set, so a config
with metrics off does not load :mod:`prometheus_client` at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ccx_agent import __version__
from ccx_agent.licensing.compliance import TagState
from ccx_agent.licensing.lifecycle import Authorization, Enforcement, Registration
from ccx_agent.licensing.timeutil import parse_iso
from ccx_agent.ssm.port import (
    Acknowledged,
    Authorized,
    Credentials,
    IdRenewed,
    Registered,
    SsmError,
    SsmPort,
    SsmUnreachable,
    Udi,
)

# ``_created`` series double every counter for nothing Prometheus needs here.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: The job names of the daemon (``ccx_job_failures_total{task}`` starts at 0 for each;
#: the label is not ``job``, which Prometheus keeps for the scrape job).
JOBS = ("sample", "report", "housekeeping", "heartbeat")
#: ``ccx_ssm_requests_total{type}``: one per message of the protocol.
SSM_TYPES = ("register", "renew_id", "authorize", "report", "deregister")
#: ``ccx_ssm_requests_total{outcome}``: answered and accepted, refused (a signed or HTTP
#: refusal: retrying does not help), unreachable (no usable answer: down, timeout, garbage),
#: error (a fault of this host before or after the exchange, such as an unreadable key).
SSM_OUTCOMES = ("ok", "refused", "unreachable", "error")
#: SSM exchanges include retries with backoff, bounded by a third of the report interval.
SSM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: A file source is read in milliseconds, the UCCX REST API in seconds.
SOURCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _ts(value: str | None) -> float | None:
    return None if value is None else parse_iso(value).timestamp()


def _one_hot(
    name: str, doc: str, label: str, values: Iterable[str], current: str | None
) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, doc, labels=[label])
    for value in values:
        fam.add_metric([value], 1.0 if value == current else 0.0)
    return fam


def _single(name: str, doc: str, value: float | None) -> list[Metric]:
    """A gauge without labels; no sample at all when the value is unknown (an absent
    series, not a made-up zero, as the exporter conventions ask)."""
    if value is None:
        return []
    return [GaugeMetricFamily(name, doc, value=value)]


def state_families(doc: Mapping[str, Any], version: str = __version__) -> list[Metric]:
    """The licensing-state metrics of a ``status`` document (:func:`ccx_agent.status.collect`).

    Pure: the same document always gives the same families, so they can be built once
    after a job and served to every scrape until the next one.
    """
    reg, auth = doc["registration"], doc["authorization"]
    info = GaugeMetricFamily(
        "ccx_info",
        "The agent's version, license type and PIID (empty until registered); always 1.",
        labels=["version", "license_type", "piid"],
    )
    info.add_metric([version, str(doc["license_type"]), str(reg["piid"] or "")], 1.0)
    out: list[Metric] = [info]

    usage = GaugeMetricFamily(
        "ccx_license_usage", "Peak usage of the report interval in progress.", labels=["tag"]
    )
    reported = GaugeMetricFamily(
        "ccx_license_reported",
        "Usage reported for the last closed interval (absent before the first).",
        labels=["tag"],
    )
    entitled = GaugeMetricFamily(
        "ccx_license_entitlement", "Licenses the virtual account holds.", labels=["tag"]
    )
    locked = GaugeMetricFamily(
        "ccx_license_locked_usage",
        "Usage locked in while out of compliance (what is reported); 0 when not locked.",
        labels=["tag"],
    )
    overage = GaugeMetricFamily(
        "ccx_license_overage_intervals",
        "Consecutive overage intervals of the out-of-compliance countdown (its n).",
        labels=["tag"],
    )
    compliance = GaugeMetricFamily(
        "ccx_license_compliance",
        "1 for the tag's compliance state, 0 for the other states.",
        labels=["tag", "state"],
    )
    usage_at = GaugeMetricFamily(
        "ccx_license_usage_timestamp_seconds",
        "When ccx_license_usage was measured: older than the interval in progress in an "
        "outage, when it is the last known usage (absent before the first good sample).",
        labels=["tag"],
    )
    for tag, t in doc["tags"].items():
        usage.add_metric([tag], float(t["usage"]))
        if t.get("usage_at") is not None:
            usage_at.add_metric([tag], float(parse_iso(t["usage_at"]).timestamp()))
        if t["reported"] is not None:
            reported.add_metric([tag], float(t["reported"]))
        entitled.add_metric([tag], float(t["entitlement"]))
        locked.add_metric([tag], float(t["locked"] or 0))
        overage.add_metric([tag], float(t["overage_count"]))
        for state in TagState:
            compliance.add_metric([tag, state.value], 1.0 if t["state"] == state.value else 0.0)
    out += [usage, usage_at, reported, entitled, locked, overage, compliance]

    out.append(
        _one_hot(
            "ccx_registration_state",
            "1 for the registration state, 0 for the others.",
            "state",
            (s.value for s in Registration),
            reg["state"],
        )
    )
    out.append(
        _one_hot(
            "ccx_authorization_state",
            "1 for the authorization state, 0 for the others.",
            "state",
            (s.value for s in Authorization),
            auth["state"],
        )
    )
    reason = doc["enforcement"]
    out.append(
        GaugeMetricFamily(
            "ccx_enforcement", "1 while the instance is in enforcement.", value=1.0 if reason else 0
        )
    )
    out.append(
        _one_hot(
            "ccx_enforcement_reason",
            "1 for the reason of the enforcement (all 0 when not in enforcement).",
            "reason",
            (r.value for r in Enforcement),
            reason,
        )
    )
    out += _single(
        "ccx_id_certificate_expiry_timestamp_seconds",
        "When the ID certificate expires (absent until registered).",
        _ts(reg["certificate_expires_at"]),
    )
    out += _single(
        "ccx_authorization_expiry_timestamp_seconds",
        "When the authorization expires without a renewal (absent until registered).",
        _ts(auth["expires_at"]),
    )
    out += _single(
        "ccx_evaluation_remaining_seconds",
        "Evaluation time left (counted while unregistered and licenses are in use).",
        float(doc["evaluation_seconds_left"]),
    )
    out += _single(
        "ccx_reports_pending", "Usage reports queued and not yet acknowledged.", doc["outbox"]
    )
    out += _single(
        "ccx_last_report_success_timestamp_seconds",
        "When SSM last acknowledged usage reports (absent before the first).",
        _ts(doc.get("last_report_at")),
    )
    out += _single(
        "ccx_last_sample_success_timestamp_seconds",
        "When the source last gave a good sample.",
        _ts(doc["last_sample_at"]),
    )
    sampling = doc.get("sampling") or {}
    out += _single(
        "ccx_source_up",
        "1 while the agent source answers, 0 since its last read failed.",
        1.0 if sampling.get("ok", True) else 0.0,
    )
    out += _single(
        "ccx_source_failing_since_timestamp_seconds",
        "When the source began to fail (absent while it answers).",
        _ts(sampling.get("failing_since")),
    )
    out += _single(
        "ccx_intervals_without_data",
        "Closed report intervals in a row, up to the last, without a good sample (NO_DATA).",
        float(sampling.get("intervals_without_data") or 0),
    )
    return out


class _StateCollector(Collector):
    """Hands out the families built by the last :meth:`Metrics.refresh` (no work)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []
        self.dropped: Callable[[], int] = lambda: 0

    def collect(self) -> Iterable[Metric]:
        yield from self.families
        yield CounterMetricFamily(
            "ccx_syslog_dropped",
            "Alert lines dropped because the syslog queue was full (each is in the journal).",
            value=self.dropped(),
        )

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    """The registry of one daemon; it lives as long as the process (reloads included)."""

    def __init__(self, version: str = __version__) -> None:
        self.version = version
        self.registry = CollectorRegistry(auto_describe=False)
        self._state = _StateCollector()
        self.registry.register(self._state)
        # Memory, CPU, open files and start time of the daemon (process_*), as every
        # exporter has them.
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.ssm_requests = Counter(
            "ccx_ssm_requests",
            "Exchanges with SSM, by message type and outcome.",
            ["type", "outcome"],
            registry=r,
        )
        self.ssm_duration = Histogram(
            "ccx_ssm_request_duration_seconds",
            "How long one exchange with SSM took, retries included.",
            buckets=SSM_BUCKETS,
            registry=r,
        )
        self.source_samples = Counter(
            "ccx_source_samples", "Reads of the agent source, by outcome.", ["outcome"], registry=r
        )
        self.source_duration = Histogram(
            "ccx_source_sample_duration_seconds",
            "How long one read of the agent source took.",
            buckets=SOURCE_BUCKETS,
            registry=r,
        )
        self.alerts = Counter(
            "ccx_alerts",
            "Alerts emitted by this daemon, by mnemonic and syslog severity.",
            ["mnemonic", "severity"],
            registry=r,
        )
        self.job_failures = Counter(
            "ccx_job_failures",
            "Daemon jobs that raised (AGENT_JOB_FAILED counts the streaks).",
            ["task"],
            registry=r,
        )
        # Known label values start at 0, so that rate() and increase() see the first one.
        for type_ in SSM_TYPES:
            for outcome in SSM_OUTCOMES:
                self.ssm_requests.labels(type_, outcome)
        for outcome in ("ok", "error"):
            self.source_samples.labels(outcome)
        for job in JOBS:
            self.job_failures.labels(job)

    def refresh(self, doc: Mapping[str, Any]) -> None:
        """Replace the licensing-state families with those of ``doc`` (one assignment,
        so a scrape running meanwhile sees the old set or the new one, never a mix)."""
        self._state.families = state_families(doc, self.version)

    def syslog_dropped(self, count: Callable[[], int]) -> None:
        """Where ``ccx_syslog_dropped_total`` is read from at scrape time."""
        self._state.dropped = count

    def sampled(self, seconds: float, ok: bool) -> None:
        self.source_samples.labels("ok" if ok else "error").inc()
        self.source_duration.observe(seconds)

    def emitted(self, rows: Sequence[tuple[str, int]]) -> None:
        for mnemonic, severity in rows:
            self.alerts.labels(mnemonic, str(severity)).inc()

    def ssm(self, port: SsmPort) -> CountedSsm:
        return CountedSsm(port, self)


class CountedSsm:
    """An :class:`~ccx_agent.ssm.port.SsmPort` that counts and times each exchange of the
    port it wraps; everything else (its transport, for closing) is the wrapped port's."""

    def __init__(self, port: SsmPort, metrics: Metrics) -> None:
        self.port = port
        self._m = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self.port, name)

    def _count(self, type_: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = call()
        except SsmUnreachable:
            outcome = "unreachable"
            raise
        except SsmError:
            outcome = "refused"
            raise
        else:
            outcome = "ok"
            return result
        finally:
            self._m.ssm_duration.observe(time.perf_counter() - started)
            self._m.ssm_requests.labels(type_, outcome).inc()

    def register(
        self,
        token: str,
        udi: Udi,
        license_type: str,
        now: datetime,
        current: Credentials | None = None,
    ) -> Registered:
        result: Registered = self._count(
            "register", lambda: self.port.register(token, udi, license_type, now, current)
        )
        return result

    def renew_id(self, cred: Credentials, now: datetime) -> IdRenewed:
        result: IdRenewed = self._count("renew_id", lambda: self.port.renew_id(cred, now))
        return result

    def authorize(
        self, cred: Credentials, license_type: str, usage: Mapping[str, int], now: datetime
    ) -> Authorized:
        result: Authorized = self._count(
            "authorize", lambda: self.port.authorize(cred, license_type, usage, now)
        )
        return result

    def report(
        self, cred: Credentials, reports: Sequence[Mapping[str, Any]], now: datetime
    ) -> Acknowledged:
        result: Acknowledged = self._count("report", lambda: self.port.report(cred, reports, now))
        return result

    def deregister(self, cred: Credentials, now: datetime) -> None:
        self._count("deregister", lambda: self.port.deregister(cred, now))

    def keep_only(self, cred: Credentials) -> None:
        self.port.keep_only(cred)

    def forget(self) -> None:
        self.port.forget()

    def close(self) -> None:
        self.port.close()
