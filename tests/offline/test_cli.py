"""The admin's two rooms as commands: every step is the real ``ccx-agent`` in a
subprocess, on real files (config, state database, keys, the simulator's state and CA,
the files carried between the rooms)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ccx_agent.simulator.ca import ca_path
from ccx_agent.simulator.core import Simulator
from ccx_agent.store.db import DB_NAME, Store

REPO = Path(__file__).resolve().parents[2]
AGENTS = REPO / "tests" / "data" / "snapshots" / "mixed.json"


def ccx(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCX_AGENT")}
    return subprocess.run(
        [sys.executable, "-m", "ccx_agent", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
        check=False,
    )


@pytest.fixture
def rooms(tmp_path: Path) -> dict[str, Path]:
    ssm = tmp_path / "ssm"
    Simulator.open(ssm, datetime.now(UTC)).close()  # its CA and database, as 'serve' makes them
    assert (
        ccx("ssm", "--state-dir", ssm, "license", "add", "flex-standard-seat", "10").returncode == 0
    )
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"source: {{kind: file, path: {AGENTS}}}\n"
        "transport:\n"
        "  mode: offline\n"
        f"  trust_anchor: {ca_path(ssm)}\n",
        encoding="utf-8",
    )
    usb = tmp_path / "usb"
    usb.mkdir()
    return {"ssm": ssm, "config": config, "usb": usb, "tmp": tmp_path}


def test_register_report_and_renew_by_file_with_the_real_commands(rooms: dict[str, Path]) -> None:
    ssm, config, usb = rooms["ssm"], rooms["config"], rooms["usb"]
    token = ccx("ssm", "--state-dir", ssm, "token", "create").stdout.strip()
    token_file = rooms["tmp"] / "token"
    token_file.write_text(token + "\n")

    # Room 1: the agent writes the request to the stick.
    done = ccx("--config", config, "offline", "export", "--output", usb / "req1.json", "--token-file", token_file)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "export #1 written" in done.stdout and "REGISTER" in done.stdout
    assert token not in done.stdout + done.stderr
    # Room 2: the SSM answers it.
    done = ccx("ssm", "--state-dir", ssm, "offline", "answer", usb / "req1.json", "--output", usb / "resp1.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 request(s) answered (1 REGISTER)" in done.stdout
    # Room 1: the answer is imported; a second time changes nothing and says so.
    done = ccx("--config", config, "offline", "import", usb / "resp1.json")
    assert done.returncode == 0, done.stderr
    assert "imported the answer to export #1" in done.stdout and "registered: PIID" in done.stdout
    assert "alert: " in done.stderr and "REGISTER_SUCCESS" in done.stderr
    again = ccx("--config", config, "offline", "import", usb / "resp1.json")
    assert again.returncode == 0 and "already imported" in again.stdout, again.stderr

    status = json.loads(ccx("--config", config, "status", "--json").stdout)
    assert status["registration"]["state"] == "REGISTERED"
    assert status["transport"] == {"mode": "offline"}
    ex = status["file_exchange"]
    assert ex["last_import"]["number"] == 1 and ex["awaiting_answer"] is False
    assert ex["next_export"]["authorize"] is True and ex["next_export"]["register"] is False
    text = ccx("--config", config, "status").stdout
    assert "Transport mode:           offline" in text
    assert "Next export carries:    authorization renewal" in text

    # The next trip renews the authorization (and the ID certificate, asked for).
    done = ccx("--config", config, "offline", "export", "--output", usb / "req2.json.gz", "--renew-id")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "an ID certificate renewal" in done.stdout
    assert (usb / "req2.json.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip, as the name asks
    done = ccx("ssm", "--state-dir", ssm, "offline", "answer", usb / "req2.json.gz", "--output", usb / "resp2.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    # A tampered copy is refused with one line, and nothing changes.
    bad = usb / "resp2-tampered.json"
    data = bytearray((usb / "resp2.json").read_bytes())
    at = data.index(b'"entitlements":{"flex-outbound-port":') + 36
    data[at] = ord("7") if data[at] != ord("7") else ord("8")
    bad.write_bytes(bytes(data))
    db = rooms["tmp"] / "state" / "ccx-agent.db"
    before = db.read_bytes()
    done = ccx("--config", config, "offline", "import", bad)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "refused" in done.stderr and "Traceback" not in done.stderr
    assert db.read_bytes() == before
    done = ccx("--config", config, "offline", "import", usb / "resp2.json")
    assert done.returncode == 0, done.stderr
    assert "authorization: Authorized until" in done.stdout
    assert "ID certificate: The new ID certificate expires at" in done.stdout


def test_the_commands_refuse_what_they_cannot_do_with_one_line(rooms: dict[str, Path]) -> None:
    config, usb = rooms["config"], rooms["usb"]
    # No instance yet, and no token to make one.
    done = ccx("--config", config, "offline", "export", "--output", usb / "x.json")
    assert done.returncode == 1 and "no state database" in done.stderr
    # An instance that is not registered, and no token: nothing to export.
    Store(rooms["tmp"] / "state" / DB_NAME).close()
    done = ccx("--config", config, "offline", "export", "--output", usb / "x.json")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "register by file" in done.stderr and not (usb / "x.json").exists()
    assert not list(usb.iterdir())  # not even a partial file
    # A request file answered by nobody cannot be imported.
    missing = ccx("--config", config, "offline", "import", usb / "nothing.json")
    assert missing.returncode == 1 and "cannot read it" in missing.stderr
    # A bad mode is a config problem: the file, the line, the key; exit 78.
    text = config.read_text().replace("mode: offline", "mode: sideways")
    config.write_text(text)
    done = ccx("--config", config, "offline", "export", "--output", usb / "x.json")
    assert done.returncode == 78
    assert done.stderr.startswith(f"{config}:4: transport.mode:"), done.stderr


def test_export_reads_the_token_from_standard_input_and_says_the_files_size(
    rooms: dict[str, Path],
) -> None:
    """``--token-file -`` is standard input, as for ``register`` (it opened a file named
    ``-``); the size printed is the file's (it was the uncompressed bytes without the seal)."""
    ssm, config, usb = rooms["ssm"], rooms["config"], rooms["usb"]
    token = ccx("ssm", "--state-dir", ssm, "token", "create").stdout.strip()
    for name in ("req.json", "req.json.gz"):
        request = usb / name
        done = subprocess.run(
            [sys.executable, "-m", "ccx_agent", "--config", str(config), "offline", "export",
             "--output", str(request), "--token-file", "-"],
            input=token + "\n", capture_output=True, text=True, timeout=120, cwd=usb, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"written to {request} ({request.stat().st_size:,} bytes)" in done.stdout
        assert token not in done.stdout + done.stderr
    assert sorted(p.name for p in usb.iterdir()) == ["req.json", "req.json.gz"]
    # An empty token is bad input, as a missing file is: exit 1, one line.
    done = ccx("--config", config, "offline", "export", "--output", usb / "x.json", "--token-file", usb / "none")  # fmt: skip
    assert (done.returncode, done.stderr.count("\n")) == (1, 1)
    (usb / "empty").write_text("\n")
    done = ccx("--config", config, "offline", "export", "--output", usb / "x.json", "--token-file", usb / "empty")  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        f"error: the token from {usb / 'empty'} is empty\n",
    )


def _register_by_file(rooms: dict[str, Path]) -> str:
    ssm, config, usb = rooms["ssm"], rooms["config"], rooms["usb"]
    token_file = rooms["tmp"] / "token"
    token_file.write_text(ccx("ssm", "--state-dir", ssm, "token", "create").stdout)
    assert ccx("--config", config, "offline", "export", "--output", usb / "reg.json", "--token-file", token_file).returncode == 0  # fmt: skip
    assert ccx("ssm", "--state-dir", ssm, "offline", "answer", usb / "reg.json", "--output", usb / "reg-answer.json").returncode == 0  # fmt: skip
    done = ccx("--config", config, "offline", "import", usb / "reg-answer.json")
    assert done.returncode == 0, done.stderr
    piid: str = json.loads(ccx("--config", config, "status", "--json").stdout)["registration"][
        "piid"
    ]
    return piid


def _instances(ssm: Path) -> list[dict[str, object]]:
    shown = json.loads(ccx("ssm", "--state-dir", ssm, "show", "--json").stdout)
    instances: list[dict[str, object]] = shown["instances"]
    return instances


def test_deregister_by_file_releases_the_licences_at_ssm(rooms: dict[str, Path]) -> None:
    """An air-gapped instance deregistered as it registered: a request file out (signed
    with its identity), SSM's answer in; SSM has released it, the identity is gone here."""
    ssm, config, usb = rooms["ssm"], rooms["config"], rooms["usb"]
    piid = _register_by_file(rooms)
    done = ccx("--config", config, "offline", "export", "--output", usb / "dereg.json", "--deregister")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the DEREGISTRATION of this instance" in done.stdout
    assert "an authorization renewal" not in done.stdout
    # Exported, not yet answered: still registered on both sides.
    assert [i["state"] for i in _instances(ssm)] == ["active"]
    done = ccx("ssm", "--state-dir", ssm, "offline", "answer", usb / "dereg.json", "--output", usb / "dereg-answer.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 request(s) answered (1 DEREGISTER)" in done.stdout
    assert [i["state"] for i in _instances(ssm)] == ["deregistered"]
    done = ccx("--config", config, "offline", "import", usb / "dereg-answer.json")
    assert done.returncode == 0, done.stderr
    assert f"  deregistered PIID {piid}: SSM released its licences" in done.stdout
    assert "DEREGISTER_SUCCESS" in done.stderr
    status = json.loads(ccx("--config", config, "status", "--json").stdout)
    assert status["registration"]["state"] == "UNREGISTERED"
    assert list((rooms["tmp"] / "state" / "keys").glob("*.pem")) == []
    again = ccx("--config", config, "offline", "import", usb / "dereg-answer.json")
    assert again.returncode == 0 and "already imported" in again.stdout, again.stderr
    # Nothing left to deregister.
    done = ccx("--config", config, "offline", "export", "--output", usb / "x.json", "--deregister")  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "error: this instance is not registered: there is nothing to deregister\n"


def test_deregister_of_an_air_gapped_instance_says_ssm_was_not_told(
    rooms: dict[str, Path],
) -> None:
    """'deregister' wipes the identity here, but nothing reaches SSM: exit 3, and how to
    release the licences, instead of a silent exit 0."""
    ssm, config = rooms["ssm"], rooms["config"]
    piid = _register_by_file(rooms)
    done = ccx("--config", config, "deregister", "--yes")
    assert done.returncode == 3, done.stderr
    assert f"deregistered PIID {piid} locally; the server was not told" in done.stderr
    assert f"removing the product instance {piid} in SSM" in done.stderr
    assert "'ccx-agent offline export --deregister' before 'deregister'" in done.stderr
    assert [i["state"] for i in _instances(ssm)] == ["active"]  # SSM never heard
