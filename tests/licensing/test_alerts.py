"""The alert catalogue and the two line styles (docs/licensing.md §9)."""

import ast
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from ccx_agent.licensing.alerts import (
    CATALOGUE,
    Alert,
    AlertFormat,
    Mnemonic,
    Style,
    human_duration,
    lines,
    mcvd_line,
    ooc_countdown,
    spec_of,
    uc_line,
)

ROOT = Path(__file__).resolve().parents[2]

SEED = AlertFormat(node_id="uccxpubsu1", cluster_id="")

# The three lines of the seed document, byte for byte.
SEED_MCVD_45 = (
    "%MCVD-LIB_LICENSE-1-SYSTEM_TO_ENTER_OOC_STATE: [REPORT_ENTITLE] "
    "com.cisco.smartlicense.util.SmartLicenseUtil This Product Instance will enter Out of "
    "Compliance state because of insufficient licenses.: This Product Instance will enter Out "
    "of Compliance state in =45 minutes"
)
SEED_UC_15 = (
    "%UC_LIB_LICENSE-0-SYSTEM_TO_ENTER_OOC_STATE_SHORTLY: %[The time remaining to enter OOC "
    "state=15 minutes][AppID=Cisco Unified CCX Cluster View Daemon][ClusterID=][NodeID=uccxpubsu1]: "
    "The time required for the Product to be in compliance is about to expire. Else, you will "
    "have to procure more licenses."
)
SEED_UC_OOC = (
    "%UC_LIB_LICENSE-1-SYSTEM_IN_OOC_STATE: %[AppID=Cisco Unified CCX Cluster View Daemon]"
    "[ClusterID=][NodeID=uccxpubsu1]: This Product Instance is currently in Out of Compliance "
    "state because of insufficient licenses."
)
# The MCVD form of the =15 line, also quoted in the seed document.
SEED_MCVD_15 = (
    "%MCVD-LIB_LICENSE-0-SYSTEM_TO_ENTER_OOC_STATE_SHORTLY: [REPORT_ENTITLE] "
    "com.cisco.smartlicense.util.SmartLicenseUtil The time required for the Product to be in "
    "compliance is about to expire. Else, you will have to procure more licenses.: This Product "
    "Instance will enter Out of Compliance state in =15 minutes"
)


def test_seed_mcvd_countdown_line_is_byte_exact():
    alert = ooc_countdown(timedelta(minutes=45), ["flex-premium-seat"], is_last=False)
    assert mcvd_line(alert, SEED) == SEED_MCVD_45


def test_seed_uc_shortly_line_is_byte_exact():
    alert = ooc_countdown(timedelta(minutes=15), ["flex-premium-seat"], is_last=True)
    assert uc_line(alert, SEED) == SEED_UC_15
    assert mcvd_line(alert, SEED) == SEED_MCVD_15


def test_seed_uc_in_ooc_line_is_byte_exact():
    alert = Alert("SYSTEM_IN_OOC_STATE", "flex-premium-seat locked usage=130 entitlement=100")
    assert uc_line(alert, SEED) == SEED_UC_OOC


@pytest.mark.parametrize(
    ("minutes", "text"), [(60, "=60 minutes"), (45, "=45 minutes"), (30, "=30 minutes")]
)
def test_countdown_texts(minutes, text):
    alert = ooc_countdown(timedelta(minutes=minutes), [], is_last=False)
    assert alert.mnemonic == "SYSTEM_TO_ENTER_OOC_STATE"
    assert alert.severity == 1
    assert mcvd_line(alert, SEED).endswith(f"state in {text}")


def test_countdown_follows_a_seconds_scale_interval():
    assert human_duration(timedelta(seconds=8)) == "8 seconds"
    assert human_duration(timedelta(minutes=1)) == "1 minute"
    assert human_duration(timedelta(hours=1)) == "60 minutes"


def test_styles_are_emitted_in_configured_order_and_subset():
    alert = ooc_countdown(timedelta(minutes=45), [], is_last=False)
    assert lines(alert, SEED) == [mcvd_line(alert, SEED), uc_line(alert, SEED)]
    uc_only = AlertFormat(styles=(Style.UC,), node_id="n1")
    assert lines(alert, uc_only) == [uc_line(alert, uc_only)]


def test_catalogue_names_and_severities_are_the_documented_ones():
    expected = {
        "AGENT_READY": 6,
        "AGENT_INIT_FAILED": 2,
        # Ours, in the same style: a job failing for a local reason, and its recovery.
        "AGENT_JOB_FAILED": 3,
        "AGENT_JOB_RECOVERED": 5,
        "REGISTER_SUCCESS": 6,
        "REGISTER_FAILED": 3,
        "DEREGISTER_SUCCESS": 6,
        "DEREGISTER_FAILED": 3,
        "ID_CERT_RENEW_SUCCESS": 6,
        "ID_CERT_RENEW_FAILED": 3,
        "REGISTRATION_EXPIRING_SOON": 4,
        "REGISTRATION_EXPIRED": 1,
        "AUTH_RENEW_SUCCESS": 6,
        "AUTH_RENEW_FAILED": 3,
        "AUTHORIZATION_EXPIRING_SOON": 4,
        "AUTHORIZATION_EXPIRED": 1,
        "EVAL_START": 5,
        "EVAL_EXPIRY_WARNING": 4,
        "EVAL_EXPIRED": 1,
        "SYSTEM_TO_ENTER_OOC_STATE": 1,
        "SYSTEM_TO_ENTER_OOC_STATE_SHORTLY": 0,
        "SYSTEM_IN_OOC_STATE": 1,
        "SYSTEM_BACK_IN_COMPLIANCE": 5,
        "ENFORCEMENT_MODE": 0,
        "ENTITLEMENT_REPORT_FAILED": 3,
        "COMM_FAILED": 3,
        "COMM_RESTORED": 5,
        "LICENSE_COMPUTATION_FAILED": 3,
        "FEATURE_NOT_LICENSED": 4,
        "LICENSE_LIMIT_REACHED": 2,
        "UCCX_ISLAND_MODE": 4,
        "UCCX_ISLAND_MODE_ENDED": 5,
        "SYSTEM_CLOCK_CHANGED": 5,
    }
    assert {name: spec.severity for name, spec in CATALOGUE.items()} == expected


def test_every_alert_renders_on_one_line():
    for name in CATALOGUE:
        for line in lines(Alert(name, "detail"), SEED):
            assert "\n" not in line
            assert line.startswith(("%MCVD-LIB_LICENSE-", "%UC_LIB_LICENSE-"))
            assert f"-{CATALOGUE[name].severity}-{name}: " in line


def test_countdown_names_its_tags_outside_the_seed_lines():
    """The countdown's tags travel with the alert (to the structured log and the
    database, docs/alerts.md); its syslog lines stay the seed's, with or without them."""
    tags = ["flex-premium-seat", "flex-standard-seat"]
    for is_last, seed in ((False, [SEED_MCVD_45]), (True, [SEED_MCVD_15, SEED_UC_15])):
        left = timedelta(minutes=15 if is_last else 45)
        alert = ooc_countdown(left, tags, is_last=is_last)
        assert alert.tags == tuple(tags)
        rendered = lines(alert, SEED)
        assert rendered == lines(ooc_countdown(left, [], is_last=is_last), SEED)
        assert all(line in rendered for line in seed)
        assert not [line for line in rendered for tag in tags if tag in line]


# --- the mnemonics are an enum (issue 17) ---------------------------------------------


def test_a_mnemonic_is_written_as_its_own_name_everywhere():
    """The enum changed no spelling: a member formats, serializes and compares as the
    name operators' searches, the database and ``status --json`` already hold."""
    for m in Mnemonic:
        assert m.value == m.name
        assert f"{m}" == str(m) == m.name
        assert json.dumps({m: [m]}) == f'{{"{m.name}": ["{m.name}"]}}'
        assert m == m.name and hash(m) == hash(m.name)
        assert lines(Alert(m, "d"), SEED) == [
            f"%MCVD-LIB_LICENSE-{CATALOGUE[m].severity}-{m.name}: [{CATALOGUE[m].context}] "
            f"com.cisco.smartlicense.util.SmartLicenseUtil {CATALOGUE[m].description}: d",
            f"%UC_LIB_LICENSE-{CATALOGUE[m].severity}-{m.name}: %[AppID=Cisco Unified CCX "
            f"Cluster View Daemon][ClusterID=][NodeID=uccxpubsu1]: {CATALOGUE[m].description}",
        ]


def _documented() -> dict[str, tuple[int, str]]:
    """``{mnemonic: (severity, context)}`` of the table in docs/licensing.md §9."""
    text = (ROOT / "docs" / "licensing.md").read_text()
    section = text.split("\n## 9. Alerts", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d) \| `\[([A-Z_]+)\]` \|", section, re.M)
    assert len(rows) == len({name for name, _, _ in rows}), "a mnemonic is listed twice"
    return {name: (int(sev), context) for name, sev, context in rows}


def test_every_member_is_in_the_catalogue_and_documented_and_nothing_else():
    documented = _documented()
    assert set(CATALOGUE) == set(Mnemonic)
    assert list(CATALOGUE) == list(Mnemonic), "the catalogue follows the enum's order"
    assert documented == {m.value: (s.severity, s.context) for m, s in CATALOGUE.items()}
    assert list(documented) == [m.value for m in Mnemonic], "docs list them in enum order"


def test_a_name_from_another_version_has_no_spec_but_is_not_an_error():
    assert spec_of("SYSTEM_IN_OOC_STATE") is CATALOGUE[Mnemonic.SYSTEM_IN_OOC_STATE]
    assert spec_of("AGENT_WENT_FISHING") is None


def _raised(expr: ast.expr, where: str, unknown: list[str]) -> set[str]:
    """The member names an ``Alert(...)`` mnemonic argument can take."""
    if (
        isinstance(expr, ast.Attribute)
        and isinstance(expr.value, ast.Name)
        and expr.value.id == "Mnemonic"
    ):
        return {expr.attr}
    if isinstance(expr, ast.IfExp):
        return _raised(expr.body, where, unknown) | _raised(expr.orelse, where, unknown)
    unknown.append(f"{where}: {ast.unparse(expr)}")
    return set()


def test_every_alert_the_code_raises_is_a_member_and_every_member_is_raised():
    """Read from the source of the package: each ``Alert(...)`` names its mnemonic as a
    ``Mnemonic`` member (not a string, not a value computed at run time, which no test
    could vouch for), that member exists, and no member is left that nothing raises."""
    raised: dict[str, list[str]] = {}
    unknown: list[str] = []
    for path in sorted((ROOT / "ccx_agent").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name != "Alert":
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            args = [node.args[0]] if node.args else []
            args += [k.value for k in node.keywords if k.arg == "mnemonic"]
            assert len(args) == 1, where
            for member in _raised(args[0], where, unknown):
                raised.setdefault(member, []).append(where)
    assert unknown == []
    assert sorted(set(raised) - set(Mnemonic.__members__)) == []
    assert sorted(set(Mnemonic.__members__) - set(raised)) == []
