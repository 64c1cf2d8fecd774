"""``ccx-agent --config PATH usage [--json]``: consumption now, from the configured source."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ccx_agent.cli.main import main

DATA = Path(__file__).parent / "data" / "snapshots"
CONSOLE_SCRIPT = Path(sys.executable).parent / "ccx-agent"

VOICE_ONLY = {"rule": "standard", "text": "standard: voice CSQs only"}


def _media(csq: str, kind: str, skill: str) -> dict[str, str]:
    return {
        "rule": "premium",
        "text": f"premium: CSQ '{csq}' ({kind}) via skill '{skill}'",
        "feature": kind.lower(),
        "csq": csq,
        "csq_type": kind,
        "skill": skill,
    }


# The contract of `usage --json`: id, tag, features and the reasons of the seat.
MIXED_AGENTS = [
    {"id": "voice1", "tag": "flex-standard-seat", "features": [], "reasons": [VOICE_ONLY]},
    {
        "id": "chat1",
        "tag": "flex-premium-seat",
        "features": ["chat"],
        "reasons": [_media("WebChatCSQ", "CHAT", "WebChat")],
    },
    {
        "id": "mail1",
        "tag": "flex-premium-seat",
        "features": ["email"],
        "reasons": [_media("MailCSQ", "EMAIL", "Mail")],
    },
    {
        "id": "out1",
        "tag": "flex-premium-seat",
        "features": ["outbound"],
        "reasons": [
            {
                "rule": "premium",
                "text": "premium: outbound (the source marks the agent outbound)",
                "feature": "outbound",
            }
        ],
    },
    {
        "id": "sup1",
        "tag": "flex-premium-seat",
        "features": ["chat"],
        "reasons": [
            {"rule": "supervisor", "text": "supervisor"},
            _media("WebChatCSQ", "CHAT", "WebChat"),
        ],
    },
    {
        "id": "new1",
        "tag": "flex-standard-seat",
        "features": [],
        "reasons": [{"rule": "standard", "text": "standard: no skill"}],
    },
]


Config = Callable[..., Path]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    def write(snapshot: Path, license_type: str = "flex", extra: str = "") -> Path:
        path = tmp_path / "ccx-agent.yaml"
        path.write_text(
            f"state_dir: {tmp_path / 'state'}\n"
            f"source:\n  kind: file\n  path: {snapshot}\n"
            f"license:\n  type: {license_type}\n{extra}",
            encoding="utf-8",
        )
        return path

    return write


def usage(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(path), "usage", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("snapshot", ["mixed.json", "mixed.yaml"])
def test_usage_json_shape(
    capsys: pytest.CaptureFixture[str], config: Config, snapshot: str
) -> None:
    code, out, err = usage(capsys, config(DATA / snapshot), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "license_type": "flex",
        "tags": {"flex-standard-seat": 2, "flex-premium-seat": 4, "flex-outbound-port": 4},
        "agents": MIXED_AGENTS,
    }
    assert list(json.loads(out)["tags"]) == [
        "flex-standard-seat",
        "flex-premium-seat",
        "flex-outbound-port",
    ]


@pytest.mark.parametrize(
    ("license_type", "tags"),
    [
        ("flex-hcs", {"hcs-standard-seat": 2, "hcs-premium-seat": 4, "hcs-outbound-port": 4}),
        ("perpetual-premium", {"premium-seat": 6, "premium-outbound-port": 4}),
        ("perpetual-enhanced", {"enhanced-seat": 6}),
        ("nfr", {"nfr-seat": 6}),
    ],
)
def test_usage_json_every_license_type(
    capsys: pytest.CaptureFixture[str], config: Config, license_type: str, tags: dict[str, int]
) -> None:
    code, out, _ = usage(capsys, config(DATA / "mixed.yaml", license_type), "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["license_type"] == license_type
    assert doc["tags"] == tags
    assert [a["id"] for a in doc["agents"]] == [a["id"] for a in MIXED_AGENTS]


def test_usage_json_zeros_for_every_tag(
    capsys: pytest.CaptureFixture[str], config: Config, tmp_path: Path
) -> None:
    snapshot = tmp_path / "empty.json"
    snapshot.write_text('{"agents": []}')
    code, out, _ = usage(capsys, config(snapshot), "--json")
    assert code == 0
    assert json.loads(out) == {
        "license_type": "flex",
        "tags": {"flex-standard-seat": 0, "flex-premium-seat": 0, "flex-outbound-port": 0},
        "agents": [],
    }


def test_usage_json_premium_features_subset(
    capsys: pytest.CaptureFixture[str], config: Config
) -> None:
    path = config(DATA / "mixed.yaml", extra="  premium_features: [chat]\n")
    code, out, _ = usage(capsys, path, "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["tags"] == {"flex-standard-seat": 4, "flex-premium-seat": 2, "flex-outbound-port": 4}
    assert {a["id"]: a["features"] for a in doc["agents"]}["mail1"] == []


def test_usage_text(capsys: pytest.CaptureFixture[str], config: Config) -> None:
    code, out, err = usage(capsys, config(DATA / "mixed.yaml"))
    assert (code, err) == (0, "")
    assert out == (
        "license type: flex\n"
        "  flex-standard-seat        2  CCX Flex Standard Agent\n"
        "  flex-premium-seat         4  CCX Flex Premium Agent\n"
        "  flex-outbound-port        4  CCX Flex Outbound IVR Port\n"
        "logged-in agents and supervisors: 6\n"
    )


def test_usage_text_warns_of_unlicensed_features(
    capsys: pytest.CaptureFixture[str], config: Config
) -> None:
    for args in ((), ("--json",)):
        code, out, err = usage(capsys, config(DATA / "mixed.yaml", "perpetual-enhanced"), *args)
        assert code == 0
        # The warning goes to stderr in both modes: --json output stays clean for scripts.
        assert err == (
            "warning: 4 agent(s) have premium features the license type does not include "
            "(FEATURE_NOT_LICENSED): chat1, mail1, out1, sup1\n"
        )
    code, out, _ = usage(capsys, config(DATA / "mixed.yaml", "perpetual-enhanced"))
    assert out == (
        "license type: perpetual-enhanced\n"
        "  enhanced-seat        6  CCX Enhanced Seat\n"
        "logged-in agents and supervisors: 6\n"
    )


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_broken_snapshot_is_one_error_line(
    capsys: pytest.CaptureFixture[str], config: Config, args: tuple[str, ...]
) -> None:
    snapshot = DATA / "bad-agent.yaml"
    code, out, err = usage(capsys, config(snapshot), *args)
    assert code != 0
    assert out == ""
    assert err == (
        f"error: {snapshot}: agents[1] (id 'a2'): skills: must be a list of strings, got 'Sales'\n"
    )


@pytest.mark.parametrize("name", ["truncated.json", "missing.json"])
def test_unreadable_snapshot_is_one_error_line(
    capsys: pytest.CaptureFixture[str], config: Config, name: str
) -> None:
    code, out, err = usage(capsys, config(DATA / name), "--json")
    assert code != 0 and out == ""
    assert err.startswith(f"error: {DATA / name}") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [(), ("--json",), ("--explain",)])
def test_a_lone_surrogate_in_an_agent_id_is_one_error_line(
    capsys: pytest.CaptureFixture[str], config: Config, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """``"\\ud800"`` decodes to a string no UTF-8 holds: ``usage --explain`` crashed
    printing it. The source refuses it, naming the agent, in one line."""
    snapshot = tmp_path / "s.json"
    snapshot.write_bytes(
        b'{"agents": [{"id": "a1", "state": "READY"}, {"id": "\\ud800", "state": "READY"}]}'
    )
    code, out, err = usage(capsys, config(snapshot), *args)
    assert (code, out) == (1, "")
    assert err == (
        f"error: {snapshot}: agents[1] (id '\\ud800'): id: not valid Unicode text, refused: "
        "'\\ud800' holds a lone UTF-16 surrogate\n"
    )


def test_bad_config_exits_78(capsys: pytest.CaptureFixture[str], config: Config) -> None:
    code, out, err = usage(capsys, config(DATA / "mixed.yaml", "flexx"), "--json")
    assert code == 78 and out == ""
    assert "license.type" in err and "Traceback" not in err


def test_console_script(config: Config) -> None:
    path = config(DATA / "contract.yaml")
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "--config", str(path), "usage", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {
        "license_type": "flex",
        "tags": {"flex-standard-seat": 0, "flex-premium-seat": 1, "flex-outbound-port": 12},
        "agents": [
            {
                "id": "a1",
                "tag": "flex-premium-seat",
                "features": ["chat"],
                "reasons": [_media("ChatCSQ", "CHAT", "Chat")],
            }
        ],
    }


def test_console_script_broken_snapshot(config: Config) -> None:
    path = config(DATA / "truncated.json")
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "--config", str(path), "usage"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"error: {DATA / 'truncated.json'}:4: not valid JSON: "
        "Expecting property name enclosed in double quotes (column 57)\n"
    )


def test_usage_explain_prints_each_seat_and_why(
    capsys: pytest.CaptureFixture[str], config: Config
) -> None:
    code, out, _ = usage(capsys, config(DATA / "mixed.json"), "--explain")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines[-6:]] == [[a["id"], a["tag"]] for a in MIXED_AGENTS]
    assert lines[-5].endswith("premium: CSQ 'WebChatCSQ' (CHAT) via skill 'WebChat'")
    assert lines[-2].endswith("supervisor; premium: CSQ 'WebChatCSQ' (CHAT) via skill 'WebChat'")
    assert lines[-1].endswith("standard: no skill")
