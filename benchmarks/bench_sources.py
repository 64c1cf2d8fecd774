"""The UCCX source on a 2,000-agent cluster: parsing and consumption against parsing alone.

The baseline (a) is what any reader of these responses must do at least: parse the
Admin API resources, CSQs and campaigns and the Finesse users with the C XML parser
(``ElementTree.fromstring``), nothing else. The subject (b) is the work of the UCCX
source from the same bytes to the per-tag counts: the safe parse (UTF-8 check, DTD
refusal), walking the elements (:func:`parse_resources` ...), building the file-format
configuration, joining the Finesse states, validating the snapshot
(:func:`parse_snapshot`) and counting seats (:func:`compute`). Both are timed in turns
in the same run, so the ratio (b)/(a) is comparable across machines. (c), for
reference, is one sample as the daemon takes it once the configuration is cached: the
Finesse parse, join, validation and count.

The responses are rendered by ``tests/sources/fake_uccx.py`` (the fake server of the
tests), so they have the shapes the tests check.

Run: ``.venv/bin/python -m benchmarks.bench_sources [--agents N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from benchmarks.bench_consumption import _interleaved, _line
from ccx_agent.licensing.catalogue import ALL_FEATURES, LicenseType
from ccx_agent.licensing.consumption import Consumption, compute
from ccx_agent.sources.uccx import (
    CsqInfo,
    configuration,
    outbound_campaigns,
    parse_campaign,
    parse_campaign_list,
    parse_csqs,
    parse_resources,
    parse_users,
    snapshot,
)
from tests.sources.fake_uccx import (
    campaign_bodies,
    campaigns_xml,
    csqs_xml,
    make_cluster,
    resources_xml,
    users_xml,
)

AGENTS = 2_000
REPEAT = 15


def _outbound(details: Sequence[bytes], csqs: Sequence[CsqInfo]) -> frozenset[str]:
    """The CSQs of the outbound campaigns among the campaign ``details``, as the source
    finds them when it refreshes the configuration."""
    found, _ = outbound_campaigns((parse_campaign(b) for b in details), csqs)
    return frozenset(q for names in found.values() for q in names)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_sources")
    p.add_argument("--agents", type=int, default=AGENTS, help=f"default {AGENTS:,}")
    p.add_argument("--repeat", type=int, default=REPEAT, help=f"default {REPEAT}")
    args = p.parse_args(argv)
    cluster = make_cluster(args.agents, seed=20240601)
    resources, csqs = resources_xml(cluster), csqs_xml(cluster)
    campaigns, users = campaigns_xml(cluster), users_xml(cluster)
    details = list(campaign_bodies(cluster).values())
    admin_bytes = len(resources) + len(csqs) + len(campaigns) + sum(map(len, details))

    def baseline() -> object:
        return [ET.fromstring(b) for b in (resources, csqs, campaigns, *details, users)]

    def subject() -> Consumption:
        csq_list = parse_csqs(csqs)
        parse_campaign_list(campaigns)
        config = configuration(parse_resources(resources), csq_list, _outbound(details, csq_list))
        return compute(snapshot(config, parse_users(users)), LicenseType.FLEX, ALL_FEATURES)

    csq_list = parse_csqs(csqs)
    cached = configuration(parse_resources(resources), csq_list, _outbound(details, csq_list))

    def sample() -> Consumption:
        return compute(snapshot(cached, parse_users(users)), LicenseType.FLEX, ALL_FEATURES)

    result = subject()  # also warms up every path before timing
    assert result == sample()
    base, subj, samp = _interleaved((baseline, subject, sample), args.repeat)
    figures = {
        "agents": float(args.agents),
        "admin_bytes": float(admin_bytes),
        "finesse_bytes": float(len(users)),
        "baseline_median_s": statistics.median(base),
        "baseline_min_s": min(base),
        "subject_median_s": statistics.median(subj),
        "subject_min_s": min(subj),
        "sample_median_s": statistics.median(samp),
        "sample_min_s": min(samp),
    }
    figures["ratio_median"] = figures["subject_median_s"] / figures["baseline_median_s"]
    figures["ratio_min"] = figures["subject_min_s"] / figures["baseline_min_s"]
    print(
        f"UCCX source, {args.agents:,} agents ({admin_bytes / 1e6:.1f} MB of Admin API XML, "
        f"{len(users) / 1e6:.1f} MB of Finesse XML, {len(result.agents):,} logged in), "
        f"{args.repeat} repetitions, Python {platform.python_version()}"
    )
    print(f"  tags: {result.tags}")
    print(_line("(a) baseline: ElementTree.fromstring x4", base))
    print(_line("(b) subject: parse+join+validate+compute", subj))
    print(
        f"  {'ratio (b)/(a)':<48} median {figures['ratio_median']:8.2f}   "
        f"   min {figures['ratio_min']:8.2f}"
    )
    print(_line("(c) one sample, configuration cached", samp))
    sys.stdout.flush()
    return figures


if __name__ == "__main__":
    main()
