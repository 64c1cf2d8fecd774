"""The what-if SSM port: during a scenario's outage it fails exactly as the client would."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ccx_agent.scenario.model import DEFAULT_START
from ccx_agent.scenario.simssm import SCENARIO_TOKEN, UNREACHABLE, ScenarioSsm
from ccx_agent.ssm.port import Credentials, SsmUnreachable, Udi

UDI = Udi("CCX-SIM", "SIM0001", "00000000-0000-4000-8000-000000000001")
NOW = DEFAULT_START


def _registered(tmp_path: Path) -> tuple[ScenarioSsm, Credentials]:
    ssm = ScenarioSsm({"flex-premium-seat": 10}, timedelta(days=365), NOW, tmp_path)
    reg = ssm.register(SCENARIO_TOKEN, UDI, "flex", NOW)
    assert reg.credentials is not None
    return ssm, reg.credentials


CALLS = {
    "renew_id": lambda port, cred, now: port.renew_id(cred, now),
    "authorize": lambda port, cred, now: port.authorize(
        cred, "flex", {"flex-premium-seat": 1}, now
    ),
    "report": lambda port, cred, now: port.report(
        cred,
        [
            {
                "id": f"{cred.piid}:2027-01-04T08:00:00Z",
                "start": "2027-01-04T08:00:00Z",
                "end": "2027-01-04T08:15:00Z",
                "usage": {"flex-premium-seat": 1},
            }
        ],
        now,
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_outage_fails_as_the_client_does_without_building_the_request(
    name: str, tmp_path: Path
) -> None:
    ssm, cred = _registered(tmp_path)
    later = NOW + timedelta(hours=1)
    ssm.reachable = False
    # The reference: the real client through the refusing transport.
    with pytest.raises(SsmUnreachable) as through_client:
        CALLS[name](ssm.client, cred, later)
    with pytest.raises(SsmUnreachable) as through_port:
        CALLS[name](ssm, cred, later)
    assert type(through_port.value) is type(through_client.value)
    assert str(through_port.value) == str(through_client.value) == UNREACHABLE
    # And nothing reached the simulator either way; once reachable, the call goes through.
    assert ssm.reports == {}
    ssm.reachable = True
    CALLS[name](ssm, cred, later)
