"""License Control: the admission check (docs/licensing.md §4, allow_overage: false)."""

from dataclasses import replace
from datetime import UTC, datetime

from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.control import admit
from ccx_agent.licensing.lifecycle import Identity, ProductState, Registration

T0 = datetime(2027, 1, 4, tzinfo=UTC)
REGISTERED = replace(
    ProductState(LicenseType.FLEX),
    identity=Identity("p", T0, T0, T0),
    registration=Registration.REGISTERED,
    entitlements={"flex-standard-seat": 10},
)


def test_license_control_allows_up_to_the_entitlement_and_no_further():
    assert admit(REGISTERED, "flex-standard-seat", 9, allow_overage=False).allowed
    denied = admit(REGISTERED, "flex-standard-seat", 10, allow_overage=False)
    assert not denied.allowed
    assert "license limit reached" in denied.reason and "10 of 10" in denied.reason


def test_unbought_tag_is_denied_under_license_control():
    assert not admit(REGISTERED, "flex-premium-seat", 0, allow_overage=False).allowed


def test_overage_allowed_admits_beyond_the_entitlement():
    assert admit(REGISTERED, "flex-standard-seat", 500, allow_overage=True).allowed


def test_evaluation_has_no_limit():
    state = ProductState(LicenseType.FLEX)
    assert admit(state, "flex-standard-seat", 10_000, allow_overage=False).allowed


def test_a_tag_of_another_license_type_is_refused():
    decision = admit(REGISTERED, "premium-seat", 0, allow_overage=True)
    assert not decision.allowed and "not a tag of license type flex" in decision.reason


def test_several_seats_at_once_fit_only_all_together():
    assert admit(REGISTERED, "flex-standard-seat", 7, allow_overage=False, count=3).allowed
    denied = admit(REGISTERED, "flex-standard-seat", 8, allow_overage=False, count=3)
    assert not denied.allowed and denied.over == 1
    assert denied.reason == (
        "license limit reached: 8 of 10 flex-standard-seat in use, 3 more asked"
    )


def test_with_overage_allowed_the_answer_says_by_how_much():
    decision = admit(REGISTERED, "flex-standard-seat", 9, allow_overage=True, count=3)
    assert decision.allowed and decision.over == 2
    assert decision.reason == "overage is allowed: 12 of 10 flex-standard-seat, 2 over"
