"""The way to SSM, one layer at a time: ``dns``, ``tcp``, ``tls``, ``clock``, ``ssm``.

Cisco's own troubleshooting list for Smart Licensing, in order: the host resolves, the
port is open (directly or through ``transport.proxy``'s CONNECT), the certificate
verifies against the configured CA (on failure the certificate the server actually
presented is named, and a TLS-intercepting proxy is recognised), the clocks agree (the
server's ``Date`` header), and the server speaks the protocol and trusts this instance
(one PING, which changes nothing). Each layer that fails makes the ones above it SKIP.
Every operation waits at most :data:`~ccx_agent.cli.doctor.NET_TIMEOUT_S`.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from ccx_agent import __version__
from ccx_agent.cli import doctor as _doctor
from ccx_agent.cli.doctor import (
    CHECK_BUDGET_S,
    Context,
    Finding,
    Result,
    failed,
    passed,
    skipped,
    warned,
)
from ccx_agent.net import deadline
from ccx_agent.net.http import DeadlineSession, describe
from ccx_agent.ssm.client import build as build_client
from ccx_agent.ssm.client import system_ca_file
from ccx_agent.ssm.identity import IdentityError, KeyAccessError
from ccx_agent.ssm.port import SsmError, SsmRefused

#: Clock skew against the server: a WARN beyond the first, a FAIL beyond the second.
SKEW_WARN = timedelta(minutes=5)
SKEW_FAIL = timedelta(hours=1)
#: Most addresses of one name tried by the tcp check.
MAX_ADDRESSES = 3
#: Most bytes of an HTTP answer's head read for its Date header.
MAX_HEAD = 64 * 1024
#: Words in a certificate issuer's name that betray a TLS-inspecting proxy or firewall.
_INTERCEPTORS = re.compile(
    r"(?i)zscaler|fortinet|fortigate|palo ?alto|blue ?coat|symantec web|netskope|"
    r"forcepoint|websense|sophos|mcafee web|check ?point|umbrella|squid|proxy|"
    r"inspection|intercept|decrypt|ssl ?visibility|barracuda|cisco wsa|ironport"
)


class ProxyRefused(Exception):
    """The proxy answered CONNECT with something other than 200."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    path: str

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    assert parts.hostname is not None  # validated by the config
    default = 443 if parts.scheme in ("https", "") else 80
    if parts.scheme.startswith("socks"):
        default = 1080
    return Endpoint(parts.hostname, parts.port or default, parts.path or "/")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(host: str, port: int, timeout: float) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` within ``timeout`` (it has no timeout of its own): the
    (family, sockaddr) pairs of ``host``, or :class:`socket.gaierror` / TimeoutError."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["found"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, name="doctor-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    seen: list[tuple[Any, ...]] = []
    for family, _, _, _, addr in box["found"]:
        if (family, addr) not in seen:
            seen.append((family, addr))
    return seen


def _ssm(ctx: Context) -> tuple[Endpoint, Endpoint | None] | str:
    """SSM's endpoint and the proxy's, or why the network checks do not apply."""
    cfg = ctx.cfg
    if cfg is None:
        return "the config does not load (see the config check)"
    if cfg.transport.url is None:
        return "transport.url is not set: this instance never talks to SSM (evaluation only)"
    proxy = _endpoint(cfg.transport.proxy) if cfg.transport.proxy else None
    return _endpoint(cfg.transport.url), proxy


def _proxy_scheme(ctx: Context) -> str:
    assert ctx.cfg is not None and ctx.cfg.transport.proxy is not None
    return urlsplit(ctx.cfg.transport.proxy).scheme


def _after(ctx: Context, check: str, *needed: str) -> Finding | None:
    """Why ``check`` does not run: a SKIP naming the first of ``needed`` that did not
    pass, or a WARN when the network checks' time budget is spent (what it would have
    checked is unknown, which is not a pass)."""
    for name in needed:
        if ctx.result(name) not in (Result.PASS, Result.WARN):
            return skipped(check, f"the {name} check did not pass")
    if ctx.timeout() <= 0:
        return warned(
            check,
            f"not run: the network checks' time budget ({_doctor.NETWORK_BUDGET_S:g} s) was spent "
            "by the checks before it",
            "see the checks above: something on the way answers slowly; run "
            "ccx-agent doctor again once it is fixed",
        )
    return None


def _cut() -> bool:
    """Whether the check's deadline cut its connection (the run's bound, not a timeout
    of one operation): a server or proxy that drips its answer, or holds it."""
    exchange = deadline.current()
    return exchange is not None and exchange.cancelled is not None


def watch(sock: socket.socket) -> None:
    """Let the check's deadline cut ``sock`` (see doctor.CHECK_BUDGET_S)."""
    exchange = deadline.current()
    if exchange is not None:
        exchange.watch(sock)


# --- dns ----------------------------------------------------------------------------------


def dns(ctx: Context) -> Finding:
    where = _ssm(ctx)
    if isinstance(where, str):
        return skipped("dns", where)
    ssm, proxy = where
    fix = (
        f"check the host name in transport.url and this host's resolver "
        f"(getent hosts {ssm.host}; /etc/resolv.conf)"
    )
    if _is_address(ssm.host) and proxy is None:
        return passed("dns", f"{ssm.host} is an address: nothing to resolve")
    try:
        found = resolve(ssm.host, ssm.port, ctx.timeout())
    except (OSError, TimeoutError) as exc:
        reason = _dns_reason(exc)
        if proxy is not None:
            # Through a proxy, the proxy resolves SSM's name: only the proxy's must resolve.
            return _proxy_dns(ctx, proxy, f"{ssm.host} does not resolve here ({reason})")
        return failed("dns", f"{ssm.host} does not resolve ({reason})", fix)
    shown = ", ".join(_address(addr) for _, addr in found)
    if proxy is not None:
        return _proxy_dns(ctx, proxy, f"{ssm.host} resolves to {shown}")
    return passed("dns", f"{ssm.host} resolves to {shown}")


def _proxy_dns(ctx: Context, proxy: Endpoint, said: str) -> Finding:
    if _is_address(proxy.host):
        return passed("dns", f"{said}; the proxy {proxy.host} is an address")
    try:
        found = resolve(proxy.host, proxy.port, ctx.timeout())
    except (OSError, TimeoutError) as exc:
        return failed(
            "dns",
            f"{said}; the proxy {proxy.host} does not resolve ({_dns_reason(exc)})",
            f"check transport.proxy and this host's resolver (getent hosts {proxy.host})",
        )
    shown = ", ".join(_address(addr) for _, addr in found)
    return passed("dns", f"{said}; the proxy {proxy.host} resolves to {shown}")


def _dns_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"the resolver did not answer: {exc}"
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    return str(exc)


def _address(addr: tuple[Any, ...]) -> str:
    return str(addr[0])


# --- tcp ----------------------------------------------------------------------------------


def _connect(host: str, port: int, timeout: float) -> tuple[socket.socket, tuple[Any, ...]]:
    """A TCP connection to the first of ``host``'s addresses that accepts one."""
    deadline = time.monotonic() + timeout
    errors: list[BaseException] = []
    for family, addr in resolve(host, port, timeout)[:MAX_ADDRESSES]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(left)
        watch(sock)
        try:
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        return sock, addr
    if errors:
        raise errors[0]
    raise TimeoutError(f"no connection within {timeout:g} s")


def _tunnel(sock: socket.socket, target: Endpoint, timeout: float) -> None:
    """Ask an HTTP proxy on ``sock`` for a tunnel to ``target`` (``CONNECT``)."""
    sock.settimeout(timeout)
    host = f"[{target.host}]" if ":" in target.host else target.host
    request = f"CONNECT {host}:{target.port} HTTP/1.1\r\nHost: {host}:{target.port}\r\n\r\n"
    sock.sendall(request.encode("ascii"))
    head = _read_head(sock)
    status = head.split(b"\r\n", 1)[0].decode("latin-1").strip()
    parts = status.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        raise ProxyRefused(status or "no answer")


def _read_head(sock: socket.socket | ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_HEAD:
            break
    return data


def open_to_ssm(ctx: Context, ssm: Endpoint, proxy: Endpoint | None) -> socket.socket:
    """A TCP connection that leads to SSM: direct, or a proxy's CONNECT tunnel."""
    if proxy is None:
        sock, _ = _connect(ssm.host, ssm.port, ctx.timeout())
        return sock
    sock, _ = _connect(proxy.host, proxy.port, ctx.timeout())
    try:
        _tunnel(sock, ssm, ctx.timeout())
    except BaseException:
        sock.close()
        raise
    return sock


def tcp(ctx: Context) -> Finding:
    where = _ssm(ctx)
    if isinstance(where, str):
        return skipped("tcp", where)
    ssm, proxy = where
    not_run = _after(ctx, "tcp", "dns")
    if not_run:
        return not_run
    if proxy is not None and _proxy_scheme(ctx) != "http":
        return _socks_or_tls_proxy(ctx, proxy)
    started = time.monotonic()
    try:
        sock = open_to_ssm(ctx, ssm, proxy)
    except ProxyRefused as exc:
        return failed(
            "tcp",
            f"the proxy {proxy.label if proxy else ''} refused CONNECT to {ssm.label}: {exc}",
            f"allow CONNECT to {ssm.label} on the proxy (or correct transport.proxy)",
        )
    except (OSError, TimeoutError) as exc:
        target = f"the proxy {proxy.label}" if proxy else ssm.label
        return failed("tcp", f"{target}: {_tcp_reason(exc, ctx)}", _tcp_fix(exc, ssm, proxy))
    took = (time.monotonic() - started) * 1000
    with sock:
        peer = sock.getpeername()
    how = f"through the proxy {proxy.label} (CONNECT answered 200)" if proxy else f"at {peer[0]}"
    return passed("tcp", f"{ssm.label} accepts connections {how} ({took:.0f} ms)")


def _socks_or_tls_proxy(ctx: Context, proxy: Endpoint) -> Finding:
    """A SOCKS or HTTPS proxy: only that it accepts a connection is checked."""
    try:
        sock, _ = _connect(proxy.host, proxy.port, ctx.timeout())
    except (OSError, TimeoutError) as exc:
        return failed(
            "tcp",
            f"the proxy {proxy.label}: {_tcp_reason(exc, ctx)}",
            "check transport.proxy, and that the proxy runs",
        )
    sock.close()
    return passed(
        "tcp",
        f"the {_proxy_scheme(ctx)} proxy {proxy.label} accepts connections "
        "(the way beyond it is checked by the ssm check)",
    )


def _tcp_reason(exc: BaseException, ctx: Context) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused (nothing listens on that port)"
    if isinstance(exc, TimeoutError):
        return (
            "no answer to the connection within the timeout (a firewall dropping the "
            "packets, or a host that is down)"
        )
    if isinstance(exc, socket.gaierror):
        return f"does not resolve ({exc.strerror})"
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _tcp_fix(exc: BaseException, ssm: Endpoint, proxy: Endpoint | None) -> str:
    if proxy is not None:
        return f"check transport.proxy ({proxy.label}) and that the proxy runs"
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"check the port in transport.url, and that SSM (or SSM On-Prem) listens on {ssm.label}"
        )
    return (
        f"open outbound TCP {ssm.port} to {ssm.host} in every firewall on the way, or set "
        "transport.proxy"
    )


# --- tls ----------------------------------------------------------------------------------


def _context(ctx: Context) -> ssl.SSLContext:
    """Verification as the SSM client does it: transport.ca_bundle, else the system's."""
    assert ctx.cfg is not None
    bundle = ctx.cfg.transport.ca_bundle
    cafile = str(bundle) if bundle is not None else system_ca_file()
    context = ssl.create_default_context(cafile=cafile if isinstance(cafile, str) else None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _bundle_name(ctx: Context) -> str:
    assert ctx.cfg is not None
    bundle = ctx.cfg.transport.ca_bundle
    return f"transport.ca_bundle ({bundle})" if bundle else "the system's CA store"


def handshake(ctx: Context, ssm: Endpoint, proxy: Endpoint | None) -> ssl.SSLSocket:
    sock = open_to_ssm(ctx, ssm, proxy)
    try:
        sock.settimeout(ctx.timeout())
        return _context(ctx).wrap_socket(sock, server_hostname=ssm.host)
    except BaseException:
        sock.close()
        raise


def presented(ctx: Context, ssm: Endpoint, proxy: Endpoint | None) -> x509.Certificate | None:
    """The certificate the server presents, unverified: only to name it in the finding
    (nothing is sent over this connection)."""
    try:
        sock = open_to_ssm(ctx, ssm, proxy)
    except (OSError, TimeoutError, ProxyRefused):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to show the certificate, never to trust it
    try:
        sock.settimeout(max(ctx.timeout(), 1.0))
        with context.wrap_socket(sock, server_hostname=ssm.host) as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        sock.close()
        return None
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _looks_intercepted(ctx: Context, ssm: Endpoint, cert: x509.Certificate) -> bool:
    issuer = cert.issuer.rfc4514_string()
    if _INTERCEPTORS.search(issuer):
        return True
    # Cisco's own SSM hosts have certificates from Cisco's or a public CA's root; any
    # other issuer of a certificate for them is something on the path re-signing them.
    cisco = ssm.host.endswith(".cisco.com")
    return cisco and not re.search(
        r"(?i)cisco|identrust|digicert|quovadis|hydrantid|let's encrypt|sectigo", issuer
    )


def tls(ctx: Context) -> Finding:
    where = _ssm(ctx)
    if isinstance(where, str):
        return skipped("tls", where)
    ssm, proxy = where
    not_run = _after(ctx, "tls", "tcp")
    if not_run:
        return not_run
    if proxy is not None and _proxy_scheme(ctx) != "http":
        return skipped("tls", f"a {_proxy_scheme(ctx)} proxy: the ssm check goes through it")
    unusable = _unreadable_ca(ctx)
    if unusable is not None:
        return unusable
    try:
        with handshake(ctx, ssm, proxy) as sock:
            version = sock.version()
            der = sock.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        return _verify_failed(ctx, ssm, proxy, exc)
    except (OSError, ProxyRefused) as exc:
        return _handshake_failed(ssm, exc)
    subject = ""
    if der:
        cert = x509.load_der_x509_certificate(der)
        subject = f": subject '{cert.subject.rfc4514_string()}', issuer '{_issuer(cert)}'"
    return passed("tls", f"{version} with {ssm.host} verifies against {_bundle_name(ctx)}{subject}")


def _handshake_failed(ssm: Endpoint, exc: BaseException) -> Finding:
    if isinstance(exc, TimeoutError) or _cut():
        within = f"within {CHECK_BUDGET_S:g} s" if _cut() else "within the timeout"
        return failed(
            "tls",
            f"{ssm.label} accepted the connection but did not complete a TLS handshake "
            f"{within} (a silent port, or something holding the connection)",
            "check the port in transport.url, and any proxy or filter between this host and SSM",
        )
    if isinstance(exc, ssl.SSLError):
        return failed(
            "tls",
            f"{ssm.label}: the TLS handshake failed ({exc.reason or exc}): is it an HTTPS port?",
            "check the scheme and port in transport.url (SSM speaks HTTPS, usually on 443)",
        )
    return failed(
        "tls",
        f"{ssm.label}: the connection broke during the TLS handshake ({exc})",
        "check the port in transport.url, and any proxy or filter on the way",
    )


def _unreadable_ca(ctx: Context) -> Finding | None:
    """A ``transport.ca_bundle`` that cannot be read fails the handshake before a byte is
    sent: said as what it is, not as a connection broken during the handshake."""
    assert ctx.cfg is not None
    ca = ctx.cfg.transport.ca_bundle
    if ca is None:
        return None
    try:
        with open(ca, "rb"):
            return None
    except OSError as exc:
        return failed(
            "tls",
            f"transport.ca_bundle {ca} cannot be read ({exc.strerror or exc}): the server's "
            "certificate cannot be verified, so no handshake was tried",
            "create the file, or correct transport.ca_bundle (the files check names the line)",
        )


def _issuer(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string()


def _verify_failed(
    ctx: Context, ssm: Endpoint, proxy: Endpoint | None, exc: ssl.SSLCertVerificationError
) -> Finding:
    reason = exc.verify_message or exc.reason or str(exc)
    cert = presented(ctx, ssm, proxy)
    shown = ""
    if cert is not None:
        shown = (
            f"; the server presented subject '{cert.subject.rfc4514_string()}', issued by "
            f"'{_issuer(cert)}'"
        )
    finding = f"the certificate of {ssm.host} does not verify against {_bundle_name(ctx)}: {reason}{shown}"
    if exc.verify_code == 62 or "hostname mismatch" in reason.lower():
        return failed(
            "tls",
            finding,
            "use in transport.url a host name that the server's certificate names",
        )
    if cert is not None and _looks_intercepted(ctx, ssm, cert):
        return failed(
            "tls",
            finding + "; this looks like a TLS-intercepting proxy or firewall re-signing "
            "the connection",
            f"exempt {ssm.host} from TLS inspection on the proxy/firewall (Smart "
            "Licensing's messages are signed and must reach SSM unaltered), or, if policy "
            "requires inspection, add the inspecting CA to transport.ca_bundle",
        )
    if "expired" in reason.lower():
        return failed(
            "tls",
            finding,
            "the server's certificate is out of date: renew it on the server (or check "
            "this host's clock: see the clock check)",
        )
    return failed(
        "tls",
        finding,
        "put the CA that issued the server's certificate (the issuer above) in "
        "transport.ca_bundle; for Cisco SSM, the current Cisco root (field notice FN72323: "
        "the root changed in 2023)",
    )


# --- clock --------------------------------------------------------------------------------


def server_date(ctx: Context) -> tuple[datetime, datetime]:
    """The server's ``Date`` header and this host's clock at the middle of the exchange:
    one GET with the agent's own HTTP client (:mod:`ccx_agent.net.http`), verified and
    routed as the SSM client's messages are (``transport.ca_bundle``, ``transport.proxy``,
    no environment variable), inside the check's deadline. Only the head is read."""
    assert ctx.cfg is not None
    transport = ctx.cfg.transport
    url = transport.url
    assert url is not None  # _ssm() said so
    bundle = transport.ca_bundle
    with DeadlineSession() as session:
        session.trust_env = False
        session.verify = str(bundle) if bundle is not None else system_ca_file()
        if transport.proxy:
            session.proxies = {"https": transport.proxy, "http": transport.proxy}
        before = time.time()
        with session.get(
            url,
            headers={
                "User-Agent": f"ccx-agent-doctor/{__version__}",
                "Accept": "application/json",
                "Connection": "close",
            },
            timeout=max(0.01, ctx.timeout()),
            stream=True,
            allow_redirects=False,
        ) as resp:
            after = time.time()
            value = resp.headers.get("Date")
    if value is None:
        raise ValueError("the answer has no Date header")
    when = email.utils.parsedate_to_datetime(value.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when, datetime.fromtimestamp((before + after) / 2, UTC)


def clock(ctx: Context) -> Finding:
    where = _ssm(ctx)
    if isinstance(where, str):
        return skipped("clock", where)
    ssm, _proxy = where
    not_run = _after(ctx, "clock", "tls")
    if not_run:
        return not_run
    try:
        theirs, ours = server_date(ctx)
    except (OSError, ValueError, TypeError) as exc:
        if _cut():
            return warned(
                "clock",
                f"{ssm.host} did not send the head of its answer within {CHECK_BUDGET_S:g} s "
                "(a server or proxy that drips it, or holds it): its Date header is unknown",
                "check any proxy or filter between this host and SSM; compare this host's "
                "clock with a time source by hand: timedatectl; chronyc tracking",
            )
        why = describe(exc).detail if isinstance(exc, OSError) else str(exc)
        return warned(
            "clock",
            f"could not read {ssm.host}'s Date header ({why})",
            "compare this host's clock with a time source by hand: timedatectl; chronyc tracking",
        )
    skew = ours - theirs
    size = abs(skew)
    way = "ahead of" if skew > timedelta(0) else "behind"
    finding = f"this host's clock is {_duration(size)} {way} {ssm.host}'s (its Date header)"
    if size <= timedelta(seconds=2):
        return passed("clock", f"this host's clock agrees with {ssm.host}'s (within 2 s)")
    fix = (
        "set the clock right and keep it synchronised: timedatectl set-ntp true; "
        "chronyc tracking (SSM refuses messages more than 10 min off)"
    )
    if size > SKEW_FAIL:
        return failed("clock", finding, fix)
    if size > SKEW_WARN:
        return warned("clock", finding, fix)
    return passed("clock", finding)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# --- ssm ----------------------------------------------------------------------------------

#: A refusal's fix, by protocol error code.
_REFUSAL_FIX = {
    "STALE_MESSAGE": "set this host's clock right (see the clock check): timedatectl set-ntp true",
    "INSTANCE_UNKNOWN": "the server does not know this instance: register again "
    "(ccx-agent register --force --token-file FILE)",
    "INSTANCE_DEREGISTERED": "the instance was deregistered on the server: register again "
    "(ccx-agent register --force --token-file FILE)",
    "UNTRUSTED_CERTIFICATE": "the server no longer trusts this instance's certificate: register "
    "again (ccx-agent register --force --token-file FILE)",
    "CERTIFICATE_EXPIRED": "the ID certificate expired: register again "
    "(ccx-agent register --force --token-file FILE)",
}


def ssm(ctx: Context) -> Finding:
    where = _ssm(ctx)
    if isinstance(where, str):
        return skipped("ssm", where)
    ssm_at, _ = where
    not_run = _after(ctx, "ssm", "tcp")
    if not_run:
        return not_run
    if ctx.result("tls") is Result.FAIL:
        return skipped("ssm", "the tls check did not pass")
    cfg = ctx.cfg
    assert cfg is not None and cfg.transport.url is not None
    t = cfg.transport
    timeout = timedelta(seconds=max(1.0, ctx.deadline - time.monotonic()))
    try:
        client = build_client(
            t.url,
            cfg.state_dir,
            ca_bundle=t.ca_bundle,
            trust_anchor=t.trust_anchor,
            proxy=t.proxy,
            timeout=min(t.timeout, timeout, timedelta(seconds=10)),
            connect_timeout=min(t.connect_timeout, timedelta(seconds=5)),
            attempts=1,
        )
    except SsmError as exc:
        return failed("ssm", str(exc), "see the files check (transport.trust_anchor)")
    assert client is not None
    cred = ctx.credentials
    try:
        pong = client.ping(cred, datetime.now(UTC))
    except SsmRefused as exc:
        fix = _REFUSAL_FIX.get(exc.code, "see docs/protocol.md, 'Error codes'")
        return failed("ssm", f"{ssm_at.host} refused a signed PING: {exc}", fix)
    except KeyAccessError:
        # The files check has said it, with the fix: a check that cannot start is a SKIP.
        return skipped("ssm", "this instance cannot read its private key (see the files check)")
    except IdentityError as exc:
        return failed("ssm", f"this instance cannot sign: {exc}", "see the files check")
    except SsmError as exc:
        text = str(exc)
        if "rejected" in text:
            return failed(
                "ssm",
                f"{ssm_at.host} answered, but the answer fails the agent's checks: {text}",
                "transport.trust_anchor (or transport.ca_bundle) must hold the root of the "
                "server's signing certificate; is transport.url an SSM endpoint?",
            )
        return failed("ssm", text, "see the tcp and tls checks")
    finally:
        client.transport.close()  # type: ignore[attr-defined]
    if cred is None:
        return passed(
            "ssm",
            f"{ssm_at.host} speaks ccx-sl/1 and signs with a certificate that chains to the "
            "configured trust anchor; this instance is not registered, so its trust was not "
            "checked",
        )
    return passed(
        "ssm",
        f"{ssm_at.host} answered a signed PING: instance {cred.piid} is {pong.instance} "
        f"({pong.license_type})",
    )


__all__ = ["clock", "dns", "resolve", "ssm", "tcp", "tls", "watch"]
