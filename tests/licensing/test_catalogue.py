"""License types and their tags, exactly as the table of docs/licensing.md §1."""

import pytest

from ccx_agent.licensing.catalogue import (
    ALL_FEATURES,
    ALL_TAGS,
    CATALOGUE,
    DISPLAY_NAMES,
    Feature,
    LicenseType,
    tags_of,
    unknown_tags,
)

# docs/licensing.md §1: seat tags, then other tags, per license.type.
TABLE = {
    "flex": ("flex-standard-seat", "flex-premium-seat", "flex-outbound-port"),
    "flex-hcs": ("hcs-standard-seat", "hcs-premium-seat", "hcs-outbound-port"),
    "perpetual-premium": ("premium-seat", "premium-outbound-port"),
    "perpetual-enhanced": ("enhanced-seat",),
    "nfr": ("nfr-seat",),
}


def test_license_types_are_exactly_the_table() -> None:
    assert [t.value for t in LicenseType] == list(TABLE)
    assert set(CATALOGUE) == set(LicenseType)


@pytest.mark.parametrize(("name", "tags"), TABLE.items())
def test_tags_of_each_type(name: str, tags: tuple[str, ...]) -> None:
    assert tags_of(LicenseType(name)) == tags
    assert CATALOGUE[LicenseType(name)].all == tags


@pytest.mark.parametrize(
    ("name", "standard", "premium", "outbound"),
    [
        ("flex", "flex-standard-seat", "flex-premium-seat", "flex-outbound-port"),
        ("flex-hcs", "hcs-standard-seat", "hcs-premium-seat", "hcs-outbound-port"),
        ("perpetual-premium", "premium-seat", None, "premium-outbound-port"),
        ("perpetual-enhanced", "enhanced-seat", None, None),
        ("nfr", "nfr-seat", None, None),
    ],
)
def test_roles_of_each_tag(
    name: str, standard: str, premium: str | None, outbound: str | None
) -> None:
    tt = CATALOGUE[LicenseType(name)]
    assert (tt.standard_seat, tt.premium_seat, tt.outbound_port) == (standard, premium, outbound)


def test_only_enhanced_cannot_serve_premium_features() -> None:
    assert [t.value for t, tt in CATALOGUE.items() if not tt.premium_features_licensed] == [
        "perpetual-enhanced"
    ]


def test_only_nfr_is_never_out_of_compliance() -> None:
    assert [t.value for t, tt in CATALOGUE.items() if not tt.compliance_enforced] == ["nfr"]


def test_all_tags_and_display_names() -> None:
    every = {tag for tags in TABLE.values() for tag in tags}
    assert every == ALL_TAGS
    assert set(DISPLAY_NAMES) == ALL_TAGS
    assert all(DISPLAY_NAMES.values())
    # No tag belongs to two types.
    assert sum(len(tags) for tags in TABLE.values()) == len(ALL_TAGS)


def test_features() -> None:
    assert ALL_FEATURES == (Feature.CHAT, Feature.EMAIL, Feature.OUTBOUND)
    assert [f.value for f in Feature] == ["chat", "email", "outbound"]


def test_unknown_tags() -> None:
    assert unknown_tags(LicenseType.FLEX, ["flex-premium-seat", "flex-outbound-port"]) == []
    assert unknown_tags(LicenseType.FLEX, ["premium-seat", "flex-standard-seat", "nope"]) == [
        "premium-seat",
        "nope",
    ]
    assert unknown_tags(LicenseType.NFR, []) == []
