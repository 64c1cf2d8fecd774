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

Every try has a wall-clock deadline, ``transport.timeout`` or what is left of the retry
budget if less, for all of it: connect, TLS, request and the streamed answer
(:mod:`ccx_agent.net.deadline`), so a server that drips its answer cannot hold a job
longer than that. The messages go through the agent's one HTTP client
(:mod:`ccx_agent.net.http`), directly or through ``transport.proxy``.
"""

from __future__ import annotations

import email.utils
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
import tenacity
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ccx_agent import secretvalues
from ccx_agent.net.deadline import ABORTED, Exchange
from ccx_agent.net.http import DeadlineSession, describe
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

    def __init__(self, message: str, *, retryable: bool = True, stale: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        #: The request failed on a connection kept alive from an earlier exchange before
        #: any answer came (the server had dropped it unseen): worth sending again at
        #: once on a new connection, sealed again (the server may have seen its nonce).
        self.stale = stale


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

    def post(
        self, body: bytes, now: datetime, *, deadline: float | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """Send one envelope; (HTTP status, response body, headers) or TransportError.
        ``deadline``: the seconds left for it, when less than the transport's own."""
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


class HttpTransport:
    """HTTPS POSTs with verified TLS, a deadline for each whole exchange and a cap on the
    response size, on the agent's one HTTP client (:mod:`ccx_agent.net.http`).

    ``timeout`` bounds everything from connecting to the answer's last byte (the connect,
    TLS handshake included, is also bounded by ``connect_timeout``); :meth:`abort` cuts
    an exchange in flight from another thread and every later one.

    One connection is kept alive between messages. A server drops an idle one long
    before the next report; urllib3 notices one that was closed before reusing it, and a
    request that fails on a reused connection before any answer came (closed or reset
    unseen) is a ``stale`` :class:`TransportError`, which :class:`SsmClient` seals again
    and sends at once on a new connection, in the same try: every message is idempotent
    (docs/protocol.md §5).

    No environment variable is read: ``HTTPS_PROXY``, ``REQUESTS_CA_BUNDLE`` or a
    ``.netrc`` must not silently change where the agent's messages go or which CA it
    trusts (the session has ``trust_env`` off).
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
        self.connect = min(connect_timeout.total_seconds(), self.total)
        self.session = DeadlineSession()
        self.session.trust_env = False
        self.session.verify = str(ca_bundle) if ca_bundle is not None else system_ca_file()
        if proxy:
            self.session.proxies = {"https": proxy, "http": proxy}
        # No compression: the size cap applies to the bytes that come, not to what a
        # small compressed answer expands to.
        self.session.headers.update(
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Accept-Encoding": "identity",
            }
        )
        #: Said at the first exchange, as a communication failure that is not retried.
        self._unusable = _unreadable_ca(ca_bundle)

    def post(
        self, body: bytes, now: datetime, *, deadline: float | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """One POST within ``timeout``, or within ``deadline`` seconds when that is
        shorter (what is left of the client's retry budget)."""
        seconds = self.total if deadline is None else max(0.01, min(self.total, deadline))
        with self.session.exchange(seconds) as exchange:
            self._check(exchange, seconds)
            if self._unusable is not None:
                raise self._unusable
            try:
                answer = self._post(body, exchange, seconds)
            except TransportError:
                self._check(exchange, seconds)
                raise
            except (requests.RequestException, OSError) as exc:
                # Whatever the library made of a connection that was shut down under it,
                # the reason is the deadline or the stop.
                self._check(exchange, seconds)
                raise self._failure(exc) from None
            # A cut connection can look like the end of an answer without a length.
            self._check(exchange, seconds)
            return answer

    def _post(
        self, body: bytes, exchange: Exchange, seconds: float
    ) -> tuple[int, bytes, Mapping[str, str]]:
        try:
            resp = self.session.post(
                self.url,
                data=body,
                timeout=(min(self.connect, seconds), seconds),
                stream=True,
                allow_redirects=False,
            )
        except requests.ConnectionError as exc:
            if exchange.reused and exchange.cancelled is None:
                failure = describe(exc)
                if failure.kind == "connection":
                    raise TransportError(
                        f"the kept-alive connection to {self.label} failed: {failure.detail}",
                        stale=True,
                    ) from None
            raise
        with resp:
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

    def _check(self, exchange: Exchange, seconds: float) -> None:
        if exchange.cancelled == ABORTED:
            raise ExchangeAborted(
                f"the exchange with {self.label} was cut short: the agent is stopping"
            )
        if exchange.cancelled is not None:
            raise TransportError(
                f"{self.label} did not answer within the timeout "
                f"({seconds:.3g} s for the whole exchange)"
            )

    def _failure(self, exc: BaseException) -> TransportError:
        failure = describe(exc)
        if failure.kind == "verify":
            return TransportError(
                f"TLS verification of {self.label} failed (check transport.ca_bundle): "
                f"{failure.detail}",
                retryable=False,
            )
        if failure.kind == "connect_timeout":
            return TransportError(f"no connection to {self.label} within the timeout")
        if failure.kind == "read_timeout":
            return TransportError(f"{self.label} did not answer within the timeout")
        if failure.kind == "proxy":
            return TransportError(
                f"the proxy refused the connection to {self.label}: {failure.detail}"
            )
        if failure.kind == "short":
            return TransportError(f"the answer from {self.label} was cut short: {failure.detail}")
        if failure.kind == "tls":
            return TransportError(f"TLS with {self.label} failed: {failure.detail}")
        return TransportError(f"cannot reach {self.label}: {failure.detail}")

    def abort(self) -> None:
        """Cut the exchange in flight, if any, and refuse every later one (from any thread)."""
        self.session.abort()

    def close(self) -> None:
        self.session.close()


def _unreadable_ca(ca_bundle: Path | None) -> TransportError | None:
    """Why ``ca_bundle`` cannot serve as the trusted CAs, if it cannot."""
    if ca_bundle is None:
        return None
    try:
        ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        return TransportError(
            f"transport.ca_bundle {ca_bundle} cannot be read: "
            f"{getattr(exc, 'strerror', None) or type(exc).__name__}",
            retryable=False,
        )
    return None


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        #: Seconds, for the retry budget (a test moves it with its ``sleep``).
        self._clock = clock
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

        budget = self.budget.total_seconds()
        started = self._clock()

        def left() -> float:
            return budget - (self._clock() - started)

        class OutOfBudget(tenacity.stop.stop_base):
            """tenacity's ``stop_before_delay`` on the client's clock: no try starts
            once its back-off would take it past the budget."""

            def __call__(self, state: tenacity.RetryCallState) -> bool:
                return state.upcoming_sleep >= left()

        kwargs: dict[str, Any] = {"sleep": self._sleep or self._wait}
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts) | OutOfBudget(),
            wait=wait,
            retry=tenacity.retry_if_exception(_worth_retrying),
            before_sleep=before_sleep,
            reraise=True,
            **kwargs,
        )
        try:
            return retrying(self._once, type_, body, now, key, cred, cert, left)
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
        left: Callable[[], float],
    ) -> _Answer:
        if self._stopped.is_set():
            raise ExchangeAborted(f"{self.transport.label} not tried: the agent is stopping")
        # A new nonce for every try: the server refuses a nonce it has seen.
        request = protocol.seal_request(
            type_, body, now, key, piid=cred.piid if cred else None, cert=cert
        )
        # Each try's deadline is capped at what is left of the budget.
        try:
            status, raw, headers = self.transport.post(
                protocol.canonical(request), now, deadline=max(0.0, left())
            )
        except TransportError as exc:
            if not exc.stale:
                raise
            # Within the same try, on a new connection: not a failure of the server's.
            log.debug("%s: trying a new connection", exc)
            request = protocol.seal_request(
                type_, body, now, key, piid=cred.piid if cred else None, cert=cert
            )
            status, raw, headers = self.transport.post(
                protocol.canonical(request), now, deadline=max(0.0, left())
            )
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
    # All tries of one exchange end well before the next report is due; the first try
    # gets its whole timeout even with a report interval of seconds (a test's).
    budget = max(min(report_interval / 3, timedelta(minutes=5)), timeout)
    return SsmClient(transport, KeyStore(state_dir), anchors, attempts=attempts, budget=budget)
