"""The agent's other peers: the ``source`` (one read, never recorded) and ``syslog``
(a connection; a test line only when asked)."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ccx_agent.cli.doctor import Context, Finding, failed, passed, skipped, warned
from ccx_agent.cli.doctor.network import resolve, watch
from ccx_agent.config import schema as config_mod
from ccx_agent.licensing.consumption import compute
from ccx_agent.sources import SourceError
from ccx_agent.sources.factory import build

NO_CONFIG = "the config does not load (see the config check)"
#: The longest a source read may take here (a command source's program, the UCCX API).
SOURCE_TIMEOUT = timedelta(seconds=10)
#: The text of the line ``--send-test-alert`` sends.
TEST_LINE = (
    "ccx-agent doctor: test line (sent by ccx-agent doctor --send-test-alert); no action needed"
)


# --- source -------------------------------------------------------------------------------


def _bounded(cfg: config_mod.Config, ctx: Context) -> config_mod.SourceConfig:
    """The source with its timeouts cut to what a doctor run may spend."""
    left = timedelta(seconds=max(2.0, ctx.deadline - time.monotonic()))
    cap = min(SOURCE_TIMEOUT, left)
    source = cfg.source
    if isinstance(source, config_mod.UccxSource):
        u = source.uccx
        uccx = u.model_copy(
            update={
                "timeout": min(u.timeout, cap),
                "connect_timeout": min(u.connect_timeout, timedelta(seconds=5), cap),
            }
        )
        return source.model_copy(update={"uccx": uccx})
    if isinstance(source, config_mod.CommandSource):
        return source.model_copy(update={"timeout": min(source.timeout, cap)})
    return source


def _no_password(source: config_mod.UccxSource) -> bool:
    """The password is a systemd credential, which only the service is given."""
    return (
        source.uccx.password_file is None
        and source.uccx.password is None
        and not os.environ.get("CREDENTIALS_DIRECTORY")
    )


def _source_fix(message: str) -> str:
    if "401" in message:
        return (
            "check source.uccx.user and its password (source.uccx.password_file, or the "
            "systemd credential uccx-password); the account must be a UCCX administrator"
        )
    if "403" in message:
        return "give the account the permissions docs/sources.md lists"
    if "TLS verification failed" in message:
        return "put the CA of the UCCX server's certificate in source.uccx.ca_bundle"
    if "cannot connect" in message or "no connection" in message or "within" in message:
        return "check the URL in the config and that this host reaches it (TCP 443 to UCCX)"
    if "password" in message:
        return "check the password file the message names (first line: the password)"
    return "see docs/sources.md for this source kind"


def source(ctx: Context) -> Finding:
    cfg = ctx.cfg
    if cfg is None:
        return skipped("source", NO_CONFIG)
    kind = cfg.source.kind
    if isinstance(cfg.source, config_mod.UccxSource) and _no_password(cfg.source):
        return warned(
            "source",
            f"source.uccx.password_file is not set: the password is the systemd credential "
            f"{config_mod.UCCX_CREDENTIAL!r}, which only the service gets; the source was not read",
            "run the doctor as the service runs: systemd-run --pipe --wait -p User=ccx-agent "
            f"-p LoadCredential={config_mod.UCCX_CREDENTIAL}:/etc/ccx-agent/"
            f"{config_mod.UCCX_CREDENTIAL} /usr/local/bin/ccx-agent doctor",
        )
    reader = build(_bounded(cfg, ctx))
    try:
        snapshot = reader.read()
    except SourceError as exc:
        return failed("source", f"{kind}: {exc}", _source_fix(str(exc)))
    finally:
        close = getattr(reader, "close", None)
        if callable(close):
            close()
    result = compute(snapshot, cfg.license.type, cfg.license.premium_features)
    counts = ", ".join(f"{tag} {n}" for tag, n in result.tags.items())
    what = (
        "UCCX Admin API and Finesse answered" if kind == "uccx" else f"the {kind} source answered"
    )
    finding = f"{what}: {len(result.agents)} agent(s) and supervisor(s) logged in ({counts})"
    if result.unlicensed_agents:
        return warned(
            "source",
            f"{finding}; {len(result.unlicensed_agents)} have premium features the license "
            f"type {cfg.license.type.value} does not include",
            "change license.premium_features or the license type, or those agents' skills "
            "(docs/licensing.md)",
        )
    if snapshot.notes:
        finding += f"; note: {snapshot.notes[0]}" + (
            f" (and {len(snapshot.notes) - 1} more)" if len(snapshot.notes) > 1 else ""
        )
    return passed("source", finding)


# --- syslog -------------------------------------------------------------------------------


def _unix(path: str, timeout: float) -> str:
    """Connect to a local syslog socket as the sink does: datagram first, then stream."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such socket") from None
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path}: not a socket")
    for kind, name in ((socket.SOCK_DGRAM, "datagram"), (socket.SOCK_STREAM, "stream")):
        sock = socket.socket(socket.AF_UNIX, kind)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            if kind == socket.SOCK_STREAM:
                raise
            continue
        sock.close()
        return name
    raise AssertionError("unreachable")  # pragma: no cover


def _network(ctx: Context, scheme: str, host: str, port: int) -> str:
    timeout = max(ctx.timeout(), 0.5)
    if scheme == "udp":
        found = resolve(host, port, timeout)
        return (
            f"resolves to {', '.join(str(a[0]) for _, a in found)} (UDP has no connection: "
            "--send-test-alert sends a line to look for at the collector)"
        )
    sock = socket.create_connection((host, port), timeout=timeout)
    watch(sock)  # a TLS handshake that drips is cut at the check's deadline
    try:
        if scheme == "tls":
            assert ctx.cfg is not None
            bundle = ctx.cfg.alerts.syslog.ca_bundle
            context = ssl.create_default_context(cafile=str(bundle) if bundle else None)
            sock.settimeout(max(ctx.timeout(), 0.5))
            sock = context.wrap_socket(sock, server_hostname=host)
            return f"accepts a TLS connection ({sock.version()}) that verifies"
        return "accepts a TCP connection"
    finally:
        sock.close()


def _send_test(ctx: Context) -> str | None:
    """Send one test line through the alert sink itself; None when it went out."""
    from ccx_agent.daemon.syslog import SyslogSink  # noqa: PLC0415

    assert ctx.cfg is not None
    sink = SyslogSink(ctx.cfg.alerts.syslog)
    sink.start()
    try:
        sink.send(6, TEST_LINE, datetime.now(UTC))
        if sink.flush(max(ctx.timeout(), 1.0)):
            return None
        return str(sink.stats().get("last_error") or "not sent within the timeout")
    finally:
        sink.close(1.0)


def syslog(ctx: Context) -> Finding:
    cfg = ctx.cfg
    if cfg is None:
        return skipped("syslog", NO_CONFIG)
    target = cfg.alerts.syslog.target
    fix = (
        f"start the syslog server or collector at {target}, open the way to it, or correct "
        "alerts.syslog.target (alerts wait in memory meanwhile, alerts.syslog.queue)"
    )
    try:
        if target.startswith("/"):
            said = f"accepts connections (a unix {_unix(target, max(ctx.timeout(), 0.5))} socket)"
        else:
            parts = urlsplit(target)
            assert parts.hostname is not None and parts.port is not None  # validated
            said = _network(ctx, parts.scheme, parts.hostname, parts.port)
    except ssl.SSLCertVerificationError as exc:
        return failed(
            "syslog",
            f"{target}: the TLS certificate does not verify ({exc.verify_message})",
            "put the CA of the syslog server's certificate in alerts.syslog.ca_bundle",
        )
    except (OSError, TimeoutError) as exc:
        return failed("syslog", f"{target}: {_why(exc)}", fix)
    finding = f"{target} {said}"
    if ctx.send_test_alert:
        problem = _send_test(ctx)
        if problem is not None:
            return failed("syslog", f"{finding}, but the test line was not sent: {problem}", fix)
        finding += "; a test line was sent"
    return passed("syslog", finding)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused (nothing listens there)"
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout (a firewall dropping packets, or a host down)"
    if isinstance(exc, socket.gaierror):
        return f"does not resolve ({exc.strerror})"
    text: Any = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return str(text)
