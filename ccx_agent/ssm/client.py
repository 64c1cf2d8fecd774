"""The agent's side of the protocol: build and sign requests, carry them, check answers.

:class:`SsmClient` implements :class:`~ccx_agent.ssm.port.SsmPort` over a
:class:`Transport`: :class:`HttpTransport` (HTTPS with ``requests``) for the daemon and the
CLI, or an in-process one that hands the bytes to the simulator (``simulate``). Either way
the same code seals every request and checks every response (docs/protocol.md §4).

Errors are sorted for the jobs: a signed refusal is :class:`SsmRefused` (final for this
attempt); no usable answer, including a response that fails a check or cannot even be
read (too deep, too large, not UTF-8, a number out of range, a field of the wrong type),
is :class:`SsmUnreachable` (a communication failure, retried later); an exchange the
agent cut itself because it is stopping (:meth:`SsmClient.abort`) is :class:`SsmAborted`,
which the jobs record nowhere. Messages name the message type, the host and the reason,
never a token, a password or a URL's credentials.

Every try has a wall-clock deadline, ``transport.timeout``, for all of it: connect, TLS,
request and the streamed answer (:mod:`ccx_agent.deadline`), so a server that drips its
answer cannot hold a job longer than that.

A direct connection is made with the standard library's ``http.client`` on one kept-alive
socket: ``requests`` and ``urllib3`` (sessions, adapters, pools, header merging) cost
about as much again as the whole exchange with a local server (docs/performance.md).
Through a ``transport.proxy`` (HTTP CONNECT, HTTPS or SOCKS proxies), ``requests`` carries
the messages. Both verify TLS the same way and run inside the same deadline.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import logging
import select
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import tenacity
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ccx_agent import deadline, secretvalues
from ccx_agent.deadline import ABORTED, Deadlines, Exchange
from ccx_agent.ssm import protocol
from ccx_agent.ssm.identity import IdentityError, KeyStore, check_issued, load_anchors, make_csr
from ccx_agent.ssm.port import (
    Acknowledged,
    Authorized,
    Credentials,
    IdRenewed,
    Registered,
    SsmAborted,
    SsmError,
    SsmRefused,
    SsmUnreachable,
    Udi,
)
from ccx_agent.ssm.protocol import ErrorCode, MessageType, ProtocolError

if TYPE_CHECKING:
    from ccx_agent.deadline_requests import DeadlineSession

log = logging.getLogger("ccx_agent.ssm")

#: Longest honoured Retry-After, and the longest back-off between two tries.
MAX_RETRY_WAIT = 30.0
#: Server errors worth another try: the request may succeed when sent again.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class TransportError(Exception):
    """The bytes did not make it there and back (refused, reset, timed out …).

    ``retryable`` is False when sending again at once cannot help: the server's TLS
    certificate does not verify, or its answer is refused unread (too large).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ExchangeAborted(TransportError):
    """The agent cut the exchange itself (it is stopping): says nothing about the server."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


#: What reading a hostile answer may raise besides :class:`ProtocolError`, in our code or
#: in a library's (a certificate field that does not parse, a number too large …): every
#: one of them is a bad answer, never a crashed job.
BAD_ANSWER = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    UnicodeError,
)


class RetryableStatus(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class Transport(Protocol):
    #: Where the messages go, safe to print (no credentials).
    label: str

    def post(self, body: bytes, now: datetime) -> tuple[int, bytes, Mapping[str, str]]:
        """Send one envelope; (HTTP status, response body, headers) or TransportError."""
        ...


def safe_url(url: str) -> str:
    """The URL without user:password, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def system_ca_file() -> str | bool:
    """The operating system's CA bundle (``requests`` alone would use certifi's)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    return True


class _ConnectTimeout(TimeoutError):
    """The TCP connect or the TLS handshake did not finish within the connect timeout."""


class _Connection(http.client.HTTPSConnection):
    """One HTTPS connection whose socket the running :class:`~ccx_agent.deadline.Exchange`
    watches from before ``connect`` (so a stop or the deadline cuts a connect, a TLS
    handshake or a read alike).

    The connect and the TLS handshake are bounded by ``connect_timeout``, every later
    socket operation by ``read_timeout`` (the exchange's deadline bounds their sum).
    """

    def __init__(
        self, host: str, port: int, *, context: ssl.SSLContext, connect: float, read: float
    ) -> None:
        super().__init__(host, port, timeout=connect, context=context)
        self.read_timeout = read
        self._create_connection = self._watched

    def _watched(
        self,
        address: tuple[str, int],
        timeout: float | None,
        source_address: tuple[str, int] | None,
    ) -> socket.socket:
        exchange = deadline.current()
        if exchange is None:  # every post runs in an exchange; never reached
            raise TransportError("no exchange is running")
        return deadline.connect(address, timeout, source_address, None, exchange)

    def connect(self) -> None:
        log.debug("new HTTPS connection to %s:%s", self.host, self.port)
        try:
            super().connect()
        except (TimeoutError, ssl.SSLError) as exc:
            if isinstance(exc, ssl.SSLError) and not _timed_out(exc):
                raise
            raise _ConnectTimeout(str(exc)) from None
        assert self.sock is not None
        self.sock.settimeout(self.read_timeout)

    def dropped(self) -> bool:
        """Whether the kept-alive socket was closed by the server (or has unasked-for
        bytes): the next request would fail on it, so a new connection is made instead
        (what ``urllib3`` does before reusing a pooled connection)."""
        if self.sock is None:
            return False
        poller = select.poll()
        try:
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True


def _timed_out(exc: ssl.SSLError) -> bool:
    return "timed out" in str(exc)


def _requests_exceptions() -> Any:
    """``requests.exceptions`` if something imported ``requests`` (a proxy, the UCCX
    source), else None: an error of a library never imported cannot have been raised."""
    return sys.modules.get("requests.exceptions")


#: What a failed exchange raises on the direct path (``requests`` adds its own, if loaded).
_HTTP_ERRORS: tuple[type[BaseException], ...] = (http.client.HTTPException, OSError)


def _requests_errors() -> tuple[type[BaseException], ...]:
    rx = _requests_exceptions()
    return () if rx is None else (rx.RequestException,)


def _is(exc: BaseException, rx: Any, name: str) -> bool:
    return rx is not None and isinstance(exc, getattr(rx, name))


class HttpTransport:
    """HTTPS POSTs with verified TLS, a deadline for each whole exchange and a cap on the
    response size.

    ``timeout`` bounds everything from connecting to the answer's last byte (the connect,
    TLS handshake included, is also bounded by ``connect_timeout``); :meth:`abort` cuts
    an exchange in flight from another thread and every later one.

    No environment variable is read: ``HTTPS_PROXY``, ``REQUESTS_CA_BUNDLE`` or a
    ``.netrc`` must not silently change where the agent's messages go or which CA it
    trusts (the ``requests`` session, used through a proxy, has ``trust_env`` off).
    """

    def __init__(
        self,
        url: str,
        *,
        ca_bundle: Path | None = None,
        proxy: str | None = None,
        timeout: timedelta = timedelta(seconds=30),
        connect_timeout: timedelta = timedelta(seconds=10),
        max_bytes: int = protocol.MAX_MESSAGE_BYTES,
    ) -> None:
        self.url = url
        self.label = safe_url(url)
        self.max_bytes = max_bytes
        self.total = timeout.total_seconds()
        # Per socket operation; the exchange's deadline bounds their sum.
        self.timeout = (min(connect_timeout.total_seconds(), self.total), self.total)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._conn: _Connection | None = None
        self.session: DeadlineSession | None = None
        if proxy:
            # requests only through a proxy: a direct client never imports it.
            from ccx_agent.deadline_requests import DeadlineSession  # noqa: PLC0415

            self.session = DeadlineSession()
            self.session.trust_env = False
            self.session.verify = str(ca_bundle) if ca_bundle is not None else system_ca_file()
            self.session.proxies = {"https": proxy, "http": proxy}
            self.session.headers.update(self.headers)
            self.deadlines: Deadlines | DeadlineSession = self.session
            return
        self.deadlines = Deadlines()
        parts = urlsplit(url)
        self._host = parts.hostname or ""
        # Explicit: http.client would read the last group of an IPv6 address as a port.
        self._port = parts.port or 443
        # One exchange at a time on the one connection (jobs already take turns).
        self._lock = threading.Lock()
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if parts.username is not None or parts.password is not None:
            # As ``requests`` does with credentials in the URL: HTTP Basic.
            user = unquote(parts.username or "")
            secret = unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        self._tls: ssl.SSLContext | TransportError
        try:
            self._tls = _tls_context(ca_bundle)
        except TransportError as exc:
            self._tls = exc

    def post(self, body: bytes, now: datetime) -> tuple[int, bytes, Mapping[str, str]]:
        with self.deadlines.exchange(self.total) as exchange:
            self._check(exchange)
            try:
                answer = self._post(body, exchange)
            except _HTTP_ERRORS + _requests_errors() as exc:
                # Whatever the library made of a connection that was shut down under it,
                # the reason is the deadline or the stop.
                self._drop()
                self._check(exchange)
                raise self._failure(exc) from None
            except TransportError:
                self._drop()
                self._check(exchange)
                raise
            except BaseException:
                self._drop()
                raise
            # A cut connection can look like the end of an answer without a length.
            self._check(exchange)
            return answer

    def _post(self, body: bytes, exchange: Exchange) -> tuple[int, bytes, Mapping[str, str]]:
        if self.session is not None:
            return self._post_requests(body)
        with self._lock:
            return self._post_direct(body, exchange)

    def _post_direct(self, body: bytes, exchange: Exchange) -> tuple[int, bytes, Mapping[str, str]]:
        conn = self._conn
        if conn is not None and conn.dropped():
            conn.close()
        if conn is None:
            if isinstance(self._tls, TransportError):
                raise self._tls
            conn = self._conn = _Connection(
                self._host,
                self._port,
                context=self._tls,
                connect=self.timeout[0],
                read=self.timeout[1],
            )
        if conn.sock is not None:
            exchange.watch(conn.sock)  # kept alive from an earlier exchange
        conn.request("POST", self._target, body, self.headers)
        resp = conn.getresponse()
        data = bytearray()
        try:
            while chunk := resp.read(64 * 1024):
                data += chunk
                if len(data) > self.max_bytes:
                    raise self._too_large()
        except BaseException:
            # The response holds the socket open: closed, the server's writes fail.
            resp.close()
            raise
        return resp.status, bytes(data), dict(resp.getheaders())

    def _post_requests(self, body: bytes) -> tuple[int, bytes, Mapping[str, str]]:
        assert self.session is not None
        with self.session.post(
            self.url, data=body, timeout=self.timeout, stream=True, allow_redirects=False
        ) as resp:
            data = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                data += chunk
                if len(data) > self.max_bytes:
                    raise self._too_large()
            return resp.status_code, bytes(data), dict(resp.headers)

    def _too_large(self) -> TransportError:
        return TransportError(
            f"the response from {self.label} is larger than {self.max_bytes} bytes: refused",
            retryable=False,
        )

    def _drop(self) -> None:
        """After a failed exchange the connection's state is unknown: the next one makes
        a new connection."""
        if self._conn is not None:
            self._conn.close()

    def _check(self, exchange: Exchange) -> None:
        if exchange.cancelled == ABORTED:
            raise ExchangeAborted(
                f"the exchange with {self.label} was cut short: the agent is stopping"
            )
        if exchange.cancelled is not None:
            raise TransportError(
                f"{self.label} did not answer within the timeout "
                f"({self.total:g} s for the whole exchange)"
            )

    def _failure(self, exc: BaseException) -> TransportError:
        rx = _requests_exceptions()
        if isinstance(exc, _ConnectTimeout) or _is(exc, rx, "ConnectTimeout"):
            return TransportError(f"no connection to {self.label} within the timeout")
        if isinstance(exc, ssl.SSLError) or _is(exc, rx, "SSLError"):
            return TransportError(
                f"TLS verification of {self.label} failed (check transport.ca_bundle)",
                retryable=False,
            )
        if isinstance(exc, TimeoutError) or _is(exc, rx, "ReadTimeout"):
            return TransportError(f"{self.label} did not answer within the timeout")
        if _is(exc, rx, "ProxyError"):
            return TransportError(f"the proxy refused the connection to {self.label}")
        if isinstance(exc, OSError) or _is(exc, rx, "ConnectionError"):
            return TransportError(f"cannot reach {self.label}: {_reason(exc)}")
        return TransportError(f"HTTP error with {self.label}: {type(exc).__name__}")

    def abort(self) -> None:
        """Cut the exchange in flight, if any, and refuse every later one (from any thread)."""
        self.deadlines.abort()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        self._drop()


def _tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verified TLS 1.2 or later, the host name checked: against ``ca_bundle``, else the
    operating system's CAs (as :func:`system_ca_file` gives ``requests``)."""
    if ca_bundle is not None:
        try:
            context = ssl.create_default_context(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            # Said at the first exchange, as a communication failure that is not retried.
            raise TransportError(
                f"transport.ca_bundle {ca_bundle} cannot be read: "
                f"{getattr(exc, 'strerror', None) or type(exc).__name__}",
                retryable=False,
            ) from None
    else:
        system = system_ca_file()
        context = ssl.create_default_context(cafile=system if isinstance(system, str) else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _reason(exc: BaseException) -> str:
    """A short cause without the URL that ``requests`` puts in its messages."""
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Connection reset",
        "No route to host",
        "Network is unreachable",
        "Remote end closed",
        "Temporary failure in name resolution",
        "timed out",
    ):
        if marker in text:
            return marker.lower()
    return "connection error"


def _why(exc: Exception) -> str:
    """A check's own message, or the kind of error a library raised on a hostile answer
    (its text may quote the answer, so it is not shown)."""
    if isinstance(exc, ProtocolError):
        return str(exc)
    return f"it cannot be read ({type(exc).__name__})"


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, TransportError):
        return exc.retryable
    return isinstance(exc, RetryableStatus)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a PING: ``instance`` is ``"active"`` for a registered instance the
    server trusts, None for an unsigned-by-an-instance PING."""

    instance: str | None
    license_type: str | None


@dataclass(frozen=True, slots=True)
class _Answer:
    body: dict[str, Any]
    piid: str | None


class SsmClient:
    """One exchange per call, each retried only where safe (docs/protocol.md §7)."""

    def __init__(
        self,
        transport: Transport,
        keys: KeyStore,
        anchors: Sequence[x509.Certificate],
        *,
        attempts: int = 3,
        budget: timedelta = timedelta(minutes=2),
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.transport = transport
        self.keys = keys
        self.anchors = list(anchors)
        self.attempts = attempts
        self.budget = budget
        self._stopped = threading.Event()
        self._sleep = sleep
        self._signers: dict[bytes, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}

    # --- one exchange ---------------------------------------------------------------

    def _exchange(
        self,
        type_: MessageType,
        body: Mapping[str, Any],
        now: datetime,
        key: ec.EllipticCurvePrivateKey,
        *,
        cred: Credentials | None = None,
        cert: x509.Certificate | None = None,
    ) -> _Answer:
        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            backoff = tenacity.wait_random_exponential(multiplier=1, max=MAX_RETRY_WAIT)(state)
            if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
                return min(exc.retry_after, MAX_RETRY_WAIT)
            return backoff

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s to %s failed (try %d of %d): %s; retrying in %.1f s",
                type_.value,
                self.transport.label,
                state.attempt_number,
                self.attempts,
                exc,
                state.upcoming_sleep,
            )

        kwargs: dict[str, Any] = {"sleep": self._sleep or self._wait}
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts)
            | tenacity.stop_after_delay(self.budget.total_seconds()),
            wait=wait,
            retry=tenacity.retry_if_exception(_worth_retrying),
            before_sleep=before_sleep,
            reraise=True,
            **kwargs,
        )
        try:
            return retrying(self._once, type_, body, now, key, cred, cert)
        except ExchangeAborted as exc:
            log.info(
                "%s to %s not completed: the agent is stopping", type_.value, self.transport.label
            )
            raise SsmAborted(f"{type_.value}: {exc}") from None
        except TransportError as exc:
            raise SsmUnreachable(str(exc)) from None
        except RetryableStatus as exc:
            raise SsmUnreachable(
                f"{type_.value}: {self.transport.label} answered {exc} ({self.attempts} tries)"
            ) from None

    def _once(
        self,
        type_: MessageType,
        body: Mapping[str, Any],
        now: datetime,
        key: ec.EllipticCurvePrivateKey,
        cred: Credentials | None,
        cert: x509.Certificate | None,
    ) -> _Answer:
        if self._stopped.is_set():
            raise ExchangeAborted(f"{self.transport.label} not tried: the agent is stopping")
        # A new nonce for every try: the server refuses a nonce it has seen.
        request = protocol.seal_request(
            type_, body, now, key, piid=cred.piid if cred else None, cert=cert
        )
        status, raw, headers = self.transport.post(protocol.canonical(request), now)
        return self._read(type_, request, status, raw, headers, now)

    def _read(
        self,
        type_: MessageType,
        request: Mapping[str, Any],
        status: int,
        raw: bytes,
        headers: Mapping[str, str],
        now: datetime,
    ) -> _Answer:
        """Every check on one answer to ``request`` (docs/protocol.md §4); also how an
        answer carried on a file is read (:mod:`ccx_agent.offline`)."""
        try:
            resp = protocol.open_response(raw, request, now, self.anchors)
        except (ProtocolError, *BAD_ANSWER) as exc:
            if status in RETRY_STATUS:
                raise RetryableStatus(status, _retry_after(headers)) from None
            what = f"HTTP {status}" if status != 200 else "the response"
            raise SsmUnreachable(
                f"{type_.value}: {what} from {self.transport.label} was rejected: {_why(exc)}"
            ) from None
        if resp.error is not None:
            if resp.error.code is ErrorCode.INTERNAL_ERROR or status in RETRY_STATUS:
                raise RetryableStatus(status, _retry_after(headers))
            raise SsmRefused(resp.error.code.value, resp.error.message)
        if status != 200:
            raise SsmUnreachable(f"{type_.value}: HTTP {status} with an OK envelope")
        return _Answer(resp.body, resp.piid)

    # --- helpers ------------------------------------------------------------------------

    def _signer(self, cred: Credentials) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        # The same certificate signs every message for months: parse it and find its key
        # once (a what-if run of a year-long outage makes tens of thousands of attempts).
        known = self._signers.get(cred.cert)
        if known is not None:
            return known
        try:
            cert = x509.load_der_x509_certificate(cred.cert)
            signer = cert, self.keys.key_for(cert)
        except ValueError:
            raise SsmError("the stored ID certificate is unreadable: register again") from None
        except IdentityError as exc:
            raise SsmError(str(exc)) from None
        self._signers = {cred.cert: signer}
        return signer

    def _bad(self, type_: MessageType, exc: Exception) -> SsmUnreachable:
        return SsmUnreachable(
            f"{type_.value}: the response from {self.transport.label} was rejected: {_why(exc)}"
        )

    def _wait(self, seconds: float) -> None:
        """The back-off between two tries, cut short by :meth:`abort`."""
        self._stopped.wait(seconds)

    def abort(self) -> None:
        """Stop talking, from any thread (the daemon's stop): the exchange in flight is
        cut, a back-off ends, and every later call raises :class:`SsmAborted` at once."""
        self._stopped.set()
        abort = getattr(self.transport, "abort", None)
        if callable(abort):
            abort()

    @staticmethod
    def _der(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.DER)

    def _issued(
        self,
        type_: MessageType,
        body: Mapping[str, Any],
        key: ec.EllipticCurvePrivateKey,
        piid: str,
        now: datetime,
    ) -> tuple[x509.Certificate, tuple[bytes, ...]]:
        try:
            der = protocol.unb64(body.get("cert"), "body.cert")
            chain_field = body.get("chain", [])
            if not isinstance(chain_field, list) or len(chain_field) > 4:
                raise ProtocolError(ErrorCode.MALFORMED, "body.chain must be a short list")
            chain = tuple(protocol.unb64(c, "body.chain[]") for c in chain_field)
            cert = check_issued(der, chain, key, piid, self.anchors, now)
            # Read here, not later in a job: a date the library cannot represent is a bad
            # answer too.
            cert.not_valid_after_utc  # noqa: B018
        except (ProtocolError, *BAD_ANSWER) as exc:
            raise self._bad(type_, exc) from None
        return cert, chain

    # --- the port -----------------------------------------------------------------------

    def register(
        self,
        token: str,
        udi: Udi,
        license_type: str,
        now: datetime,
        current: Credentials | None = None,
    ) -> Registered:
        secretvalues.remember([token])  # a refusal may echo it
        try:
            in_use = x509.load_der_x509_certificate(current.cert) if current else None
        except ValueError:
            in_use = None
        try:
            key = self.keys.registration_key(in_use)
        except IdentityError as exc:
            raise SsmError(str(exc)) from None
        csr = make_csr(key, udi)
        body = {
            "token": token,
            "csr": protocol.b64(csr.public_bytes(serialization.Encoding.DER)),
            "udi": {"pid": udi.pid, "serial": udi.serial, "uuid": udi.uuid},
            "license_type": license_type,
        }
        answer = self._exchange(MessageType.REGISTER, body, now, key)
        try:
            piid = protocol.text(answer.body, "piid", "body.")
            if answer.piid != piid:
                raise ProtocolError(ErrorCode.PIID_MISMATCH, "body.piid is not the envelope's")
            entitlements = protocol.counts(answer.body, "entitlements", "body.")
            account = protocol.text(answer.body, "account", "body.", optional=True)
        except (ProtocolError, *BAD_ANSWER) as exc:
            raise self._bad(MessageType.REGISTER, exc) from None
        cert, chain = self._issued(MessageType.REGISTER, answer.body, key, piid, now)
        # Issued "now" for the agent's timers: a server backdates not-before for clock skew.
        return Registered(
            piid,
            now,
            cert.not_valid_after_utc,
            entitlements,
            Credentials(piid, self._der(cert), chain, account),
        )

    def renew_id(self, cred: Credentials, now: datetime) -> IdRenewed:
        cert, key = self._signer(cred)
        csr = make_csr_for(key, cert)
        body = {"csr": protocol.b64(csr.public_bytes(serialization.Encoding.DER))}
        answer = self._exchange(MessageType.RENEW_ID, body, now, key, cred=cred, cert=cert)
        new, chain = self._issued(MessageType.RENEW_ID, answer.body, key, cred.piid, now)
        return IdRenewed(
            now,
            new.not_valid_after_utc,
            Credentials(cred.piid, self._der(new), chain, cred.account),
        )

    def authorize(
        self, cred: Credentials, license_type: str, usage: Mapping[str, int], now: datetime
    ) -> Authorized:
        cert, key = self._signer(cred)
        body = {"license_type": license_type, "usage": dict(usage)}
        answer = self._exchange(MessageType.AUTHORIZE, body, now, key, cred=cred, cert=cert)
        try:
            return Authorized(protocol.counts(answer.body, "entitlements", "body."))
        except (ProtocolError, *BAD_ANSWER) as exc:
            raise self._bad(MessageType.AUTHORIZE, exc) from None

    def report(
        self, cred: Credentials, reports: Sequence[Mapping[str, Any]], now: datetime
    ) -> Acknowledged:
        cert, key = self._signer(cred)
        body = {"reports": [dict(r) for r in reports]}
        answer = self._exchange(MessageType.REPORT_USAGE, body, now, key, cred=cred, cert=cert)
        try:
            acked = answer.body.get("acked")
            if not isinstance(acked, list) or not all(isinstance(a, str) for a in acked):
                raise ProtocolError(ErrorCode.MALFORMED, "body.acked must be a list of ids")
            sent = {str(r["id"]) for r in reports}
            return Acknowledged(
                [a for a in acked if a in sent],
                protocol.counts(answer.body, "entitlements", "body."),
            )
        except (ProtocolError, *BAD_ANSWER) as exc:
            raise self._bad(MessageType.REPORT_USAGE, exc) from None

    def deregister(self, cred: Credentials, now: datetime) -> None:
        cert, key = self._signer(cred)
        try:
            self._exchange(MessageType.DEREGISTER, {}, now, key, cred=cred, cert=cert)
        except SsmRefused as exc:
            # Sent again after a lost answer: the server already did it.
            if exc.code != ErrorCode.INSTANCE_DEREGISTERED.value:
                raise

    def ping(self, cred: Credentials | None, now: datetime) -> Pong:
        """One PING, which changes nothing on the server (``ccx-agent doctor``).

        Signed with the instance's key when ``cred`` is given (the server then says
        whether it still trusts this instance), else with a throw-away key: the answer
        still proves the server speaks the protocol and signs with a trusted certificate.
        A refusal is :class:`SsmRefused`, no usable answer :class:`SsmUnreachable`.
        """
        if cred is None:
            key = ec.generate_private_key(ec.SECP256R1())
            body = {"key": protocol.public_key_text(key.public_key())}
            answer = self._exchange(MessageType.PING, body, now, key)
        else:
            cert, key = self._signer(cred)
            answer = self._exchange(MessageType.PING, {}, now, key, cred=cred, cert=cert)
        try:
            instance = answer.body.get("instance")
            license_type = answer.body.get("license_type")
            if instance is not None and not isinstance(instance, str):
                raise ProtocolError(ErrorCode.MALFORMED, "body.instance must be a string")
            if license_type is not None and not isinstance(license_type, str):
                raise ProtocolError(ErrorCode.MALFORMED, "body.license_type must be a string")
        except (ProtocolError, *BAD_ANSWER) as exc:
            raise self._bad(MessageType.PING, exc) from None
        return Pong(instance, license_type)

    def keep_only(self, cred: Credentials) -> None:
        self.keys.keep_only(x509.load_der_x509_certificate(cred.cert))

    def forget(self) -> None:
        self._signers = {}
        self.keys.wipe()

    def close(self) -> None:
        """Close the transport's kept-alive connections, if it keeps any."""
        close = getattr(self.transport, "close", None)
        if callable(close):
            close()


def make_csr_for(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> x509.CertificateSigningRequest:
    """A renewal's CSR: the same key, the UDI the current certificate was issued for."""
    serial = cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    uuids = [
        u.value
        for ext in cert.extensions
        if isinstance(ext.value, x509.SubjectAlternativeName)
        for u in ext.value
        if isinstance(u, x509.UniformResourceIdentifier)
    ]
    uuid = uuids[0].removeprefix("urn:uuid:") if uuids else protocol.certificate_piid(cert)
    value = serial[0].value if serial else ""
    return make_csr(key, Udi("", value if isinstance(value, str) else value.decode(), uuid))


def build(
    url: str | None,
    state_dir: Path,
    *,
    ca_bundle: Path | None = None,
    trust_anchor: Path | None = None,
    proxy: str | None = None,
    timeout: timedelta = timedelta(seconds=30),
    connect_timeout: timedelta = timedelta(seconds=10),
    attempts: int = 3,
    report_interval: timedelta = timedelta(minutes=15),
) -> SsmClient | None:
    """The client a config describes, or None when no ``transport.url`` is set."""
    if url is None:
        return None
    try:
        anchors = load_anchors(trust_anchor or ca_bundle)
    except IdentityError as exc:
        raise SsmError(str(exc)) from None
    transport = HttpTransport(
        url, ca_bundle=ca_bundle, proxy=proxy, timeout=timeout, connect_timeout=connect_timeout
    )
    # All tries of one exchange end well before the next report is due.
    budget = min(report_interval / 3, timedelta(minutes=5))
    return SsmClient(transport, KeyStore(state_dir), anchors, attempts=attempts, budget=budget)
