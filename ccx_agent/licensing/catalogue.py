"""License types and the entitlement tags each one consumes (docs/licensing.md §1).

Tags are the project's own stable ids: they appear in the config, in scenario files, in
the database and on the wire, so they never change spelling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class LicenseType(StrEnum):
    FLEX = "flex"
    FLEX_HCS = "flex-hcs"
    PERPETUAL_PREMIUM = "perpetual-premium"
    PERPETUAL_ENHANCED = "perpetual-enhanced"
    NFR = "nfr"


class Feature(StrEnum):
    """Premium features: an agent with any of them needs a premium seat (flex / HCS)."""

    CHAT = "chat"
    EMAIL = "email"
    OUTBOUND = "outbound"


ALL_FEATURES: tuple[Feature, ...] = (Feature.CHAT, Feature.EMAIL, Feature.OUTBOUND)


@dataclass(frozen=True)
class TypeTags:
    """The tags of one license type. ``premium_seat`` is None where every seat is alike."""

    standard_seat: str
    premium_seat: str | None
    outbound_port: str | None
    #: Perpetual Enhanced has no premium seat: a premium feature is a licensing error.
    premium_features_licensed: bool
    #: NFR (lab use) is never out of compliance.
    compliance_enforced: bool

    @property
    def all(self) -> tuple[str, ...]:
        tags = [self.standard_seat]
        if self.premium_seat is not None:
            tags.append(self.premium_seat)
        if self.outbound_port is not None:
            tags.append(self.outbound_port)
        return tuple(tags)


CATALOGUE: dict[LicenseType, TypeTags] = {
    LicenseType.FLEX: TypeTags(
        "flex-standard-seat", "flex-premium-seat", "flex-outbound-port", True, True
    ),
    LicenseType.FLEX_HCS: TypeTags(
        "hcs-standard-seat", "hcs-premium-seat", "hcs-outbound-port", True, True
    ),
    LicenseType.PERPETUAL_PREMIUM: TypeTags(
        "premium-seat", None, "premium-outbound-port", True, True
    ),
    LicenseType.PERPETUAL_ENHANCED: TypeTags("enhanced-seat", None, None, False, True),
    LicenseType.NFR: TypeTags("nfr-seat", None, None, True, False),
}

DISPLAY_NAMES: dict[str, str] = {
    "flex-standard-seat": "CCX Flex Standard Agent",
    "flex-premium-seat": "CCX Flex Premium Agent",
    "flex-outbound-port": "CCX Flex Outbound IVR Port",
    "hcs-standard-seat": "CCX HCS Standard Agent",
    "hcs-premium-seat": "CCX HCS Premium Agent",
    "hcs-outbound-port": "CCX HCS Outbound IVR Port",
    "premium-seat": "CCX Premium Seat",
    "premium-outbound-port": "CCX Premium Outbound IVR Port",
    "enhanced-seat": "CCX Enhanced Seat",
    "nfr-seat": "CCX NFR Seat (lab use)",
}

ALL_TAGS: frozenset[str] = frozenset(t for tt in CATALOGUE.values() for t in tt.all)


def tags_of(license_type: LicenseType) -> tuple[str, ...]:
    """Every tag of a license type, in a stable display order."""
    return CATALOGUE[license_type].all


def unknown_tags(license_type: LicenseType, tags: Iterable[str]) -> list[str]:
    """Names of ``tags`` that do not belong to ``license_type`` (empty when all do)."""
    valid = set(tags_of(license_type))
    return [t for t in tags if t not in valid]
