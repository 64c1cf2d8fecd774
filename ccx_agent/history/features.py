"""The license feature list (CUIC's "License feature list"), from the core's catalogue.

Nothing here is a second copy of the rules: every fact is read from
:data:`ccx_agent.licensing.catalogue.CATALOGUE`, which :func:`~ccx_agent.licensing.
consumption.compute` and the compliance state machine use, so the list cannot drift from
what the agent does.
"""

from __future__ import annotations

from typing import Any

from ccx_agent.licensing.catalogue import (
    ALL_FEATURES,
    CATALOGUE,
    DISPLAY_NAMES,
    LicenseType,
    TypeTags,
)


def _tag_kinds(tt: TypeTags) -> list[tuple[str, str, str]]:
    """(tag, kind, who takes it) for each tag of a type, in the catalogue's order."""
    out = []
    if tt.premium_seat is None:
        out.append(
            (
                tt.standard_seat,
                "seat",
                "every logged-in agent and supervisor"
                + ("" if tt.premium_features_licensed else " (premium features not licensed)"),
            )
        )
    else:
        out.append((tt.standard_seat, "standard-seat", "agents and supervisors on voice only"))
        out.append(
            (tt.premium_seat, "premium-seat", "agents and supervisors with chat, email or outbound")
        )
    if tt.outbound_port is not None:
        out.append((tt.outbound_port, "outbound-port", "outbound IVR ports in use"))
    return out


def describe(license_type: LicenseType) -> dict[str, Any]:
    """One license type as data: the ``features --json`` entry."""
    tt = CATALOGUE[license_type]
    return {
        "license_type": license_type.value,
        "tags": [
            {"tag": tag, "description": DISPLAY_NAMES.get(tag, ""), "kind": kind, "taken_by": who}
            for tag, kind, who in _tag_kinds(tt)
        ],
        "premium_features": [f.value for f in ALL_FEATURES] if tt.premium_features_licensed else [],
        "can_go_out_of_compliance": tt.compliance_enforced,
    }


def as_json(types: list[LicenseType]) -> dict[str, Any]:
    return {"license_types": [describe(t) for t in types]}


def format_text(types: list[LicenseType]) -> str:
    out: list[str] = []
    for lt in types:
        doc = describe(lt)
        if out:
            out.append("")
        ooc = (
            "can go out of compliance"
            if doc["can_go_out_of_compliance"]
            else "never out of compliance (lab use)"
        )
        out.append(f"{lt.value}: {ooc}")
        rows = [(t["tag"], t["description"], t["taken_by"]) for t in doc["tags"]]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        for tag, desc, who in rows:
            out.append(f"  {tag.ljust(w0)}  {desc.ljust(w1)}  {who}")
        features = ", ".join(doc["premium_features"]) or "none (FEATURE_NOT_LICENSED if used)"
        out.append(f"  premium features: {features}")
    return "\n".join(out)
