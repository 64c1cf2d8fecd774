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

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
import tenacity
from cryptography import x509

from ccx_agent.net.deadline import ABORTED, Exchange
from ccx_agent.net.http import DeadlineSession, describe
from ccx_agent.ssm import protocol
from ccx_agent.ssm.identity import IdentityError, KeyStore, load_anchors
from ccx_agent.ssm.messages import Messages, Pong, Request, RetryableStatus
from ccx_agent.ssm.port import (
    Acknowledged,
    Authorized,
    Credentials,
    IdRenewed,
    Registered,
    SsmAborted,
    SsmError,
    SsmUnreachable,
    Udi,
)

log = logging.getLogger("ccx_agent.ssm")

T = TypeVar("T")

#: Longest honoured Retry-After, and the longest back-off between two tries.
MAX_RETRY_WAIT = 30.0
#: The shortest back-off: full jitter alone could retry a refused connection at once.
MIN_RETRY_WAIT = 1.0


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


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, TransportError):
        return exc.retryable
    return isinstance(exc, RetryableStatus)


class SsmClient:
    """One exchange per call, each retried only where safe (docs/protocol.md §7).

    The requests are built and their answers checked by :class:`Messages`, as a file
    exchange's are; this class sends them and tries again.
    """

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
        self.messages = Messages(keys, anchors, transport.label)
        #: Seconds, for the retry budget (a test moves it with its ``sleep``).
        self._clock = clock
        self.keys = keys
        self.attempts = attempts
        self.budget = budget
        self._stopped = threading.Event()
        self._sleep = sleep

    # --- one exchange ---------------------------------------------------------------

    def _exchange(self, request: Request[T], now: datetime) -> T:
        type_ = request.type

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            backoff = tenacity.wait_random_exponential(
                multiplier=1, min=MIN_RETRY_WAIT, max=MAX_RETRY_WAIT
            )(state)
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
            answer: T = retrying(self._once, request, now, left)
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
        return answer

    def _once(self, request: Request[T], now: datetime, left: Callable[[], float]) -> T:
        if self._stopped.is_set():
            raise ExchangeAborted(f"{self.transport.label} not tried: the agent is stopping")
        # A new nonce for every try: the server refuses a nonce it has seen.
        sent = request.seal(now)
        # Each try's deadline is capped at what is left of the budget.
        try:
            status, raw, headers = self.transport.post(
                protocol.canonical(sent), now, deadline=max(0.0, left())
            )
        except TransportError as exc:
            if not exc.stale:
                raise
            # Within the same try, on a new connection: not a failure of the server's.
            log.debug("%s: trying a new connection", exc)
            sent = request.seal(now)
            status, raw, headers = self.transport.post(
                protocol.canonical(sent), now, deadline=max(0.0, left())
            )
        return self.messages.check(request, sent, status, raw, headers, now)

    # --- helpers ------------------------------------------------------------------------

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

    # --- the port -----------------------------------------------------------------------

    def register(
        self,
        token: str,
        udi: Udi,
        license_type: str,
        now: datetime,
        current: Credentials | None = None,
    ) -> Registered:
        return self._exchange(self.messages.register(token, udi, license_type, current), now)

    def renew_id(self, cred: Credentials, now: datetime) -> IdRenewed:
        return self._exchange(self.messages.renew_id(cred), now)

    def authorize(
        self, cred: Credentials, license_type: str, usage: Mapping[str, int], now: datetime
    ) -> Authorized:
        return self._exchange(self.messages.authorize(cred, license_type, usage), now)

    def report(
        self, cred: Credentials, reports: Sequence[Mapping[str, Any]], now: datetime
    ) -> Acknowledged:
        return self._exchange(self.messages.report(cred, reports), now)

    def deregister(self, cred: Credentials, now: datetime) -> None:
        self._exchange(self.messages.deregister(cred), now)

    def ping(self, cred: Credentials | None, now: datetime) -> Pong:
        """One PING, which changes nothing on the server (``ccx-agent doctor``).

        Signed with the instance's key when ``cred`` is given (the server then says
        whether it still trusts this instance), else with a throw-away key: the answer
        still proves the server speaks the protocol and signs with a trusted certificate.
        A refusal is :class:`SsmRefused`, no usable answer :class:`SsmUnreachable`.
        """
        return self._exchange(self.messages.ping(cred), now)

    def keep_only(self, cred: Credentials) -> None:
        self.messages.keep_only(cred)

    def forget(self) -> None:
        self.messages.forget()

    def close(self) -> None:
        """Close the transport's kept-alive connections, if it keeps any."""
        close = getattr(self.transport, "close", None)
        if callable(close):
            close()


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
