"""The agent's messages to SSM without the carrying: build a signed request, check its answer.

Two callers use the same two steps. The online client (:class:`~ccx_agent.ssm.client.SsmClient`)
seals a :class:`Request`, posts it, and hands the answer to :meth:`Messages.check`; a file
exchange (:mod:`ccx_agent.offline.exchange`) writes the sealed request to a file, and
checks the answer it brings back with the same :meth:`Messages.check`. So an answer on a
file passes every check an answer over HTTPS does (docs/protocol.md §4), and a request on
a file is the one the client would have sent.

A :class:`Request` is sealed again for every try (a new nonce each time: the server
refuses a nonce it has seen). Its ``read`` turns a checked answer's body into what the
port returns; an answer that fails a check is :class:`SsmUnreachable` (no usable answer),
a signed refusal :class:`SsmRefused`, and a server error worth another try
:class:`RetryableStatus`, which only a caller that can send again retries.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ccx_agent import secretvalues
from ccx_agent.ssm import protocol
from ccx_agent.ssm.identity import IdentityError, KeyStore, check_issued, make_csr
from ccx_agent.ssm.port import (
    Acknowledged,
    Authorized,
    Credentials,
    IdRenewed,
    Registered,
    SsmError,
    SsmRefused,
    SsmUnreachable,
    Udi,
)
from ccx_agent.ssm.protocol import ErrorCode, MessageType, ProtocolError

#: Server errors worth another try: the request may succeed when sent again.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

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

T = TypeVar("T")


class RetryableStatus(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a PING: ``instance`` is ``"active"`` for a registered instance the
    server trusts, None for an unsigned-by-an-instance PING."""

    instance: str | None
    license_type: str | None


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    """One message, ready to be sealed, and how its checked answer is read."""

    type: MessageType
    body: Mapping[str, Any]
    key: ec.EllipticCurvePrivateKey
    cred: Credentials | None
    cert: x509.Certificate | None
    #: A checked answer's body and PIID, and the time, to what the port returns.
    read: Callable[[Mapping[str, Any], str | None, datetime], T]
    #: A refusal that means the request was already done (a DEREGISTER sent again after
    #: a lost answer): read as an empty answer, not raised.
    done_if_refused: ErrorCode | None = None

    def seal(self, now: datetime) -> dict[str, Any]:
        """The signed envelope, with a new nonce: one per try."""
        return protocol.seal_request(
            self.type,
            self.body,
            now,
            self.key,
            piid=self.cred.piid if self.cred else None,
            cert=self.cert,
        )


def retry_after(headers: Mapping[str, str]) -> float | None:
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


def _why(exc: Exception) -> str:
    """A check's own message, or the kind of error a library raised on a hostile answer
    (its text may quote the answer, so it is not shown)."""
    if isinstance(exc, ProtocolError):
        return str(exc)
    return f"it cannot be read ({type(exc).__name__})"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class Messages:
    """The requests of the protocol, signed with this instance's keys, and the checks on
    their answers against the trust ``anchors``. ``label`` names where answers come
    from in messages (a URL without credentials, or the exchange file)."""

    def __init__(self, keys: KeyStore, anchors: Sequence[x509.Certificate], label: str) -> None:
        self.keys = keys
        self.anchors = list(anchors)
        self.label = label
        self._signers: dict[bytes, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}

    # --- the answer -------------------------------------------------------------------

    def check(
        self,
        request: Request[T],
        sent: Mapping[str, Any],
        status: int,
        raw: bytes,
        headers: Mapping[str, str],
        now: datetime,
    ) -> T:
        """Every check on one answer to the envelope ``sent`` (docs/protocol.md §4), then
        what it says, read by ``request``."""
        type_ = request.type
        try:
            resp = protocol.open_response(raw, sent, now, self.anchors)
        except (ProtocolError, *BAD_ANSWER) as exc:
            if status in RETRY_STATUS:
                raise RetryableStatus(status, retry_after(headers)) from None
            what = f"HTTP {status}" if status != 200 else "the response"
            raise SsmUnreachable(
                f"{type_.value}: {what} from {self.label} was rejected: {_why(exc)}"
            ) from None
        if resp.error is not None:
            if resp.error.code is ErrorCode.INTERNAL_ERROR or status in RETRY_STATUS:
                raise RetryableStatus(status, retry_after(headers))
            if resp.error.code is request.done_if_refused:
                return request.read({}, None, now)
            raise SsmRefused(resp.error.code.value, resp.error.message)
        if status != 200:
            raise SsmUnreachable(f"{type_.value}: HTTP {status} with an OK envelope")
        return request.read(resp.body, resp.piid, now)

    def _bad(self, type_: MessageType, exc: Exception) -> SsmUnreachable:
        return SsmUnreachable(
            f"{type_.value}: the response from {self.label} was rejected: {_why(exc)}"
        )

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

    # --- the keys -----------------------------------------------------------------------

    def signer(self, cred: Credentials) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The ID certificate and its key, which sign every message of ``cred``."""
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

    def keep_only(self, cred: Credentials) -> None:
        self.keys.keep_only(x509.load_der_x509_certificate(cred.cert))

    def forget(self) -> None:
        self._signers = {}
        self.keys.wipe()

    # --- the requests -------------------------------------------------------------------

    def register(
        self,
        token: str,
        udi: Udi,
        license_type: str,
        current: Credentials | None = None,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Request[Registered]:
        """``key``: the key a REGISTER already sent was made with (a file's), else the
        key store's registration key."""
        secretvalues.remember([token])  # a refusal may echo it
        if key is None:
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
        signing = key

        def read(answer: Mapping[str, Any], envelope_piid: str | None, now: datetime) -> Registered:
            try:
                piid = protocol.text(answer, "piid", "body.")
                if envelope_piid != piid:
                    raise ProtocolError(ErrorCode.PIID_MISMATCH, "body.piid is not the envelope's")
                entitlements = protocol.counts(answer, "entitlements", "body.")
                account = protocol.text(answer, "account", "body.", optional=True)
            except (ProtocolError, *BAD_ANSWER) as exc:
                raise self._bad(MessageType.REGISTER, exc) from None
            cert, chain = self._issued(MessageType.REGISTER, answer, signing, piid, now)
            # Issued "now" for the agent's timers: a server backdates not-before for skew.
            return Registered(
                piid,
                now,
                cert.not_valid_after_utc,
                entitlements,
                Credentials(piid, _der(cert), chain, account),
            )

        return Request(MessageType.REGISTER, body, key, None, None, read)

    def renew_id(self, cred: Credentials) -> Request[IdRenewed]:
        cert, key = self.signer(cred)
        csr = make_csr_for(key, cert)
        body = {"csr": protocol.b64(csr.public_bytes(serialization.Encoding.DER))}

        def read(answer: Mapping[str, Any], _piid: str | None, now: datetime) -> IdRenewed:
            new, chain = self._issued(MessageType.RENEW_ID, answer, key, cred.piid, now)
            return IdRenewed(
                now, new.not_valid_after_utc, Credentials(cred.piid, _der(new), chain, cred.account)
            )

        return Request(MessageType.RENEW_ID, body, key, cred, cert, read)

    def authorize(
        self, cred: Credentials, license_type: str, usage: Mapping[str, int]
    ) -> Request[Authorized]:
        cert, key = self.signer(cred)
        body = {"license_type": license_type, "usage": dict(usage)}

        def read(answer: Mapping[str, Any], _piid: str | None, _now: datetime) -> Authorized:
            try:
                return Authorized(protocol.counts(answer, "entitlements", "body."))
            except (ProtocolError, *BAD_ANSWER) as exc:
                raise self._bad(MessageType.AUTHORIZE, exc) from None

        return Request(MessageType.AUTHORIZE, body, key, cred, cert, read)

    def report(
        self, cred: Credentials, reports: Sequence[Mapping[str, Any]]
    ) -> Request[Acknowledged]:
        cert, key = self.signer(cred)
        body = {"reports": [dict(r) for r in reports]}

        def read(answer: Mapping[str, Any], _piid: str | None, _now: datetime) -> Acknowledged:
            try:
                acked = answer.get("acked")
                if not isinstance(acked, list) or not all(isinstance(a, str) for a in acked):
                    raise ProtocolError(ErrorCode.MALFORMED, "body.acked must be a list of ids")
                sent = {str(r["id"]) for r in reports}
                return Acknowledged(
                    [a for a in acked if a in sent],
                    protocol.counts(answer, "entitlements", "body."),
                )
            except (ProtocolError, *BAD_ANSWER) as exc:
                raise self._bad(MessageType.REPORT_USAGE, exc) from None

        return Request(MessageType.REPORT_USAGE, body, key, cred, cert, read)

    def deregister(self, cred: Credentials) -> Request[None]:
        cert, key = self.signer(cred)

        def read(_answer: Mapping[str, Any], _piid: str | None, _now: datetime) -> None:
            return None

        # Sent again after a lost answer: the server already did it.
        return Request(
            MessageType.DEREGISTER,
            {},
            key,
            cred,
            cert,
            read,
            done_if_refused=ErrorCode.INSTANCE_DEREGISTERED,
        )

    def ping(self, cred: Credentials | None) -> Request[Pong]:
        """Signed with the instance's key when ``cred`` is given, else with a throw-away
        key (see :meth:`SsmClient.ping <ccx_agent.ssm.client.SsmClient.ping>`)."""
        if cred is None:
            key = ec.generate_private_key(ec.SECP256R1())
            body: dict[str, Any] = {"key": protocol.public_key_text(key.public_key())}
            cert = None
        else:
            cert, key = self.signer(cred)
            body = {}

        def read(answer: Mapping[str, Any], _piid: str | None, _now: datetime) -> Pong:
            try:
                instance = answer.get("instance")
                license_type = answer.get("license_type")
                if instance is not None and not isinstance(instance, str):
                    raise ProtocolError(ErrorCode.MALFORMED, "body.instance must be a string")
                if license_type is not None and not isinstance(license_type, str):
                    raise ProtocolError(ErrorCode.MALFORMED, "body.license_type must be a string")
            except (ProtocolError, *BAD_ANSWER) as exc:
                raise self._bad(MessageType.PING, exc) from None
            return Pong(instance, license_type)

        return Request(MessageType.PING, body, key, cred, cert, read)


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
