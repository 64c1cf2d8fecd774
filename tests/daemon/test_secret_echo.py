"""An SSM refusal that echoes the ID token it was sent, through the real CLI, a real HTTPS
server signing with the simulator's own CA (so the agent believes it), a real database, a
real daemon and a real syslog listener: the token is scrubbed from every output."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccx_agent.simulator import ca
from ccx_agent.simulator import server as ssm_server
from ccx_agent.ssm import protocol
from ccx_agent.ssm.protocol import ErrorCode, ProtocolError
from tests.daemon.conftest import (
    SECRETS,
    TAG,
    Daemon,
    DatagramListener,
    Sim,
    make_instance,
    syslog_messages,
)
from tests.ssm.servers import MisbehavingServer, Reply


def _cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccx_agent", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_a_refusal_that_echoes_the_id_token_leaves_it_nowhere(sim: Sim, tmp_path: Path) -> None:
    """stderr, the JSON log, the database's alert, syslog (the daemon delivers the stored
    alert) and the support bundle: none holds the token."""
    authority = ca.load(sim.state_dir)
    sim.admin("/admin/licenses", {"tag": TAG, "count": 2, "account": "echo"})
    token = sim.admin("/admin/tokens", {"account": "echo"})["token"]
    SECRETS.add(token)

    def echo(server: MisbehavingServer, raw: bytes) -> Reply:
        request = json.loads(raw)
        sent = request["body"]["token"]
        error = ProtocolError(ErrorCode.TOKEN_UNKNOWN, f"no such registration token {sent!r}")
        envelope = protocol.seal_response(
            request,
            datetime.now(UTC).replace(microsecond=0),
            authority.signing_key,
            authority.signing_cert,
            error=error,
        )
        return Reply(403, protocol.canonical(envelope))

    listener = DatagramListener()
    forger = MisbehavingServer(echo, ssm_server.tls_files(sim.state_dir))
    try:

        def tweak(cfg: dict[str, Any]) -> None:
            cfg["transport"]["url"] = forger.url
            cfg["transport"]["attempts"] = 1

        inst = make_instance(
            tmp_path, sim, f"udp://127.0.0.1:{listener.port}", register=False, tweak=tweak
        )
        done = _cli(inst.config, "--log-level", "debug", "register", "--", token)
        assert token.encode() in forger.received[0]  # SSM got it, and echoed it
        assert done.returncode == 1
        assert "no such registration token '[REDACTED]'" in done.stderr
        alerts = _cli(inst.config, "alerts", "--json")
        assert alerts.returncode == 0, alerts.stderr
        assert "no such registration token '[REDACTED]'" in alerts.stdout
        daemon = Daemon(inst)  # it delivers the stored alert to syslog
        try:
            listener.wait(
                "the refusal in syslog",
                lambda got: any("no such registration" in m for m in syslog_messages(got)),
                timeout=30,
            )
        finally:
            daemon.stop()
        output = tmp_path / "b.tar.gz"
        bundle = _cli(inst.config, "support-bundle", "--output", str(output))
        assert bundle.returncode == 0, bundle.stderr
        with tarfile.open(output) as tar:
            members = [f.read().decode() for m in tar.getmembers() if (f := tar.extractfile(m))]
        outputs = [done.stdout, done.stderr, alerts.stdout, alerts.stderr, bundle.stdout]
        outputs += [daemon.stdout, daemon.stderr, *syslog_messages(listener.snapshot())]
        for text in [*outputs, *members]:
            assert token not in text
    finally:
        forger.stop()
        listener.close()
