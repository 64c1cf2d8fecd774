"""The wire protocol between the agent and SSM, used by both sides (docs/protocol.md).

Cisco's format is not public, so this is the project's own, faithful to Smart Licensing's
security model: one HTTPS endpoint, JSON envelopes, every message signed (ECDSA P-256 /
SHA-256 over a canonical JSON form), every response bound to its request by an echoed
nonce, PIID and vendor. Everything here is pure: time comes in as ``now`` and keys and
certificates as arguments, so the simulator can run in process on a simulated clock.

A receiver never trusts a field before the whole envelope passed its checks; every
failed check raises :class:`ProtocolError` whose ``code`` is one of :class:`ErrorCode` and
whose message says what was wrong, never what a secret was.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from ccx_agent.licensing.timeutil import iso, parse_iso

PROTOCOL = "ccx-sl/1"
VENDOR = "cisco"
#: Requests larger than this are refused unread; responses likewise by the client.
MAX_MESSAGE_BYTES = 1024 * 1024
#: How far a request's ``sent_at`` may be from the receiver's clock (and how long a nonce
#: is remembered to refuse a replay).
MAX_SKEW = timedelta(minutes=10)
#: Longest accepted token, nonce, id … (a bound on what a peer can make us store).
MAX_TEXT = 256
#: Most reports in one REPORT_USAGE message.
MAX_REPORTS = 1000
#: Deepest nesting of arrays and objects a message may have (the protocol needs 5): a
#: deeper one is refused before it is parsed, so that no peer can make a receiver recurse.
MAX_DEPTH = 32
#: Largest count (license, usage): beyond it a number is no count, and would not even fit
#: a database integer at some point.
MAX_COUNT = 2**31 - 1

_ECDSA = ec.ECDSA(hashes.SHA256())


class MessageType(StrEnum):
    REGISTER = "REGISTER"
    RENEW_ID = "RENEW_ID"
    AUTHORIZE = "AUTHORIZE"
    REPORT_USAGE = "REPORT_USAGE"
    DEREGISTER = "DEREGISTER"
    #: Changes nothing: proves the server speaks the protocol and, signed by a registered
    #: instance, that it still trusts it (``ccx-agent doctor``).
    PING = "PING"


class Status(StrEnum):
    OK = "OK"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    """Why a message was refused. The first group is about the envelope; any receiver
    (agent or server) raises them. The second group only the server sends."""

    MALFORMED = "MALFORMED"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_PROTOCOL = "UNSUPPORTED_PROTOCOL"
    WRONG_VENDOR = "WRONG_VENDOR"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNTRUSTED_CERTIFICATE = "UNTRUSTED_CERTIFICATE"
    CERTIFICATE_EXPIRED = "CERTIFICATE_EXPIRED"
    PIID_MISMATCH = "PIID_MISMATCH"
    NONCE_MISMATCH = "NONCE_MISMATCH"
    STALE_MESSAGE = "STALE_MESSAGE"
    REPLAYED_NONCE = "REPLAYED_NONCE"
    # --- server decisions ---
    TOKEN_UNKNOWN = "TOKEN_UNKNOWN"  # noqa: S105 - an error code, not a secret
    TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105 - an error code, not a secret
    TOKEN_USED_UP = "TOKEN_USED_UP"  # noqa: S105 - an error code, not a secret
    TOKEN_REVOKED = "TOKEN_REVOKED"  # noqa: S105 - an error code, not a secret
    INSTANCE_UNKNOWN = "INSTANCE_UNKNOWN"
    INSTANCE_DEREGISTERED = "INSTANCE_DEREGISTERED"
    BAD_REQUEST = "BAD_REQUEST"
    INTERNAL_ERROR = "INTERNAL_ERROR"


#: HTTP status the server answers each error with (the body is a signed envelope anyway).
HTTP_STATUS: Mapping[ErrorCode, int] = {
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.INSTANCE_UNKNOWN: 404,
    ErrorCode.INSTANCE_DEREGISTERED: 410,
    ErrorCode.TOKEN_UNKNOWN: 403,
    ErrorCode.TOKEN_EXPIRED: 403,
    ErrorCode.TOKEN_USED_UP: 403,
    ErrorCode.TOKEN_REVOKED: 403,
    ErrorCode.BAD_SIGNATURE: 401,
    ErrorCode.UNTRUSTED_CERTIFICATE: 401,
    ErrorCode.CERTIFICATE_EXPIRED: 401,
    ErrorCode.REPLAYED_NONCE: 409,
}


class ProtocolError(Exception):
    """A message failed a check (or the server refused a request, for server codes)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


def _fail(code: ErrorCode, message: str) -> ProtocolError:
    return ProtocolError(code, message)


# --- encoding ---------------------------------------------------------------------------


def canonical(obj: object) -> bytes:
    """The bytes a signature covers: UTF-8 JSON, keys sorted, no whitespace, no floats.

    Floats are refused because their text form is not canonical across implementations;
    every number in this protocol is an integer.
    """
    return json.dumps(
        _no_floats(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


#: Types that need no look inside: the leaves of almost every message.
_LEAVES = frozenset({str, int, bool, type(None)})


def _no_floats(obj: object) -> object:
    """``obj``, after making sure no float hides anywhere in it (a TypeError if one does).

    Every message passes here (a report batch holds hundreds of values): exact built-in
    types are told apart by ``type`` and leaves are skipped without a call; anything else
    (a float, a Mapping that is not a dict, a subclass) takes the general ``isinstance``
    checks.
    """
    leaves = _LEAVES
    kind = type(obj)
    if kind in leaves:
        return obj
    if kind is dict:
        values: Iterable[object] = cast("dict[str, object]", obj).values()
    elif kind is list or kind is tuple:
        values = cast("Sequence[object]", obj)
    elif isinstance(obj, float):
        raise TypeError("floats have no canonical form: use integers")
    elif isinstance(obj, Mapping):
        values = obj.values()
    elif isinstance(obj, list | tuple):
        values = obj
    else:
        return obj
    for value in values:
        if type(value) not in leaves:
            _no_floats(value)
    return obj


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise _fail(ErrorCode.MALFORMED, f"{what} must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _fail(ErrorCode.MALFORMED, f"{what} is not valid base64") from None


def new_nonce() -> str:
    return secrets.token_hex(16)


def cert_to_text(cert: x509.Certificate) -> str:
    return b64(cert.public_bytes(serialization.Encoding.DER))


def cert_from_text(text: object, what: str) -> x509.Certificate:
    der = unb64(text, what)
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise _fail(ErrorCode.MALFORMED, f"{what} is not a DER X.509 certificate") from None


def csr_from_text(text: object) -> x509.CertificateSigningRequest:
    der = unb64(text, "body.csr")
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        raise _fail(ErrorCode.MALFORMED, "body.csr is not a DER certificate request") from None
    try:
        if not csr.is_signature_valid:
            raise _fail(ErrorCode.BAD_SIGNATURE, "the CSR's self-signature does not verify")
        key = csr.public_key()
    except (UnsupportedAlgorithm, ValueError):
        # A key or signature algorithm we cannot even parse (peer-controlled DER).
        raise _fail(ErrorCode.BAD_REQUEST, "the CSR's key must be EC P-256") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise _fail(ErrorCode.BAD_REQUEST, "the CSR's key must be EC P-256")
    return csr


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo: names a key in files and server records."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def decode(raw: bytes, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Bytes to a JSON object, refusing oversized, non-UTF-8, too deep, duplicate-key or
    float input.

    Python's ``json`` has no depth limit of its own (it recurses until RecursionError), so
    the nesting is measured first, on the text without its strings.
    """
    if len(raw) > limit:
        raise _fail(ErrorCode.TOO_LARGE, f"message of {len(raw)} bytes exceeds {limit}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(ErrorCode.MALFORMED, f"not a JSON message: {_short(exc)}") from None
    # Counting brackets is cheap; only a text with enough of them can be too deep.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise _fail(ErrorCode.MALFORMED, f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique,
            parse_float=_refuse_float,
            parse_constant=_refuse_float,
        )
    except (ValueError, RecursionError) as exc:
        raise _fail(ErrorCode.MALFORMED, f"not a JSON message: {_short(exc)}") from None
    if not isinstance(data, dict):
        raise _fail(ErrorCode.MALFORMED, "a message must be a JSON object")
    return data


#: A JSON string, or what is left of an unterminated one: possessive, and never failing
#: once it has started, so removing every string is one linear pass.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings (exact for valid JSON;
    invalid JSON is refused by the parser whatever this says)."""
    steps = (1 if b in "[{" else -1 for b in _BRACKET.findall(_STRING.sub("", text)))
    return max(itertools.accumulate(steps), default=0)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key is given twice")
    return out


def _refuse_float(text: str) -> Any:
    raise ValueError(f"non-integer number {text[:20]!r}")


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# --- field access ---------------------------------------------------------------------


def text(obj: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str:
    value = obj.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise _fail(
            ErrorCode.MALFORMED, f"{where}{key} must be a non-empty string of <= {MAX_TEXT}"
        )
    return value


def mapping(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise _fail(ErrorCode.MALFORMED, f"{where}{key} must be an object")
    return value


def counts(obj: Mapping[str, Any], key: str, where: str) -> dict[str, int]:
    """A ``{tag: count}`` object: non-negative integers under tag names."""
    value = mapping(obj, key, where)
    for tag, n in value.items():
        if not tag or len(tag) > MAX_TEXT:
            raise _fail(ErrorCode.MALFORMED, f"{where}{key} has an invalid tag name")
        if type(n) is not int or not 0 <= n <= MAX_COUNT:
            raise _fail(
                ErrorCode.MALFORMED, f"{where}{key}.{tag[:40]} must be an integer 0-{MAX_COUNT}"
            )
    return dict(value)


def instant(obj: Mapping[str, Any], key: str, where: str) -> datetime:
    value = text(obj, key, where)
    try:
        return parse_iso(value)
    except ValueError:
        raise _fail(ErrorCode.MALFORMED, f"{where}{key} is not an ISO 8601 UTC time") from None


# --- certificates -----------------------------------------------------------------------


def _chain_window(
    leaf_der: bytes, intermediates_der: tuple[bytes, ...], anchors_der: tuple[bytes, ...]
) -> tuple[datetime, datetime] | str:
    """Verify a chain once and return when it is valid (or why it is not).

    Path building is the costly part and does not depend on the time, except through each
    certificate's validity; so it is done once at a time inside every certificate's
    window, and the window is returned for the caller to check ``now`` against.
    """
    leaf = x509.load_der_x509_certificate(leaf_der)
    inter = [x509.load_der_x509_certificate(d) for d in intermediates_der]
    anchors = [x509.load_der_x509_certificate(d) for d in anchors_der]
    every = [leaf, *inter, *anchors]
    start = max(c.not_valid_before_utc for c in every)
    end = min(c.not_valid_after_utc for c in every)
    if start > end:
        return "the certificates of the chain are never valid at the same time"
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(anchors))
        .time(start)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        chain = verifier.verify(leaf, inter)
    except verification.VerificationError as exc:
        return _short(exc)
    # The verified path's own validity (the anchor actually used, not every anchor).
    used = chain.chain
    return (
        max(c.not_valid_before_utc for c in used),
        min(c.not_valid_after_utc for c in used),
    )


class ChainCacheInfo(NamedTuple):
    hits: int
    misses: int
    maxsize: int
    currsize: int


#: Chains that verified, remembered at most: the simulator sees one ID certificate per
#: active instance (two while one renews), so this covers a fleet of some 30,000
#: instances; an entry is about 350 bytes (23 MiB when full).
CHAIN_CACHE_SIZE = 65_536
#: Chains that did not verify, remembered at most (a misconfigured agent retrying).
CHAIN_FAILURES_SIZE = 256


class ChainCache:
    """:func:`_chain_window`'s answers by chain, least recently used dropped first.

    It was an ``lru_cache(256)``: beyond 256 active instances every report verified its
    chain again (+15 % per report). Chains that verified are kept apart from those that
    did not, so a stranger sending made-up certificates can only churn the small
    failure list, never evict the fleet's chains. Keys are SHA-256 digests of the DER
    (not the DER itself: each key would hold a copy of the root). Thread-safe: the
    simulator's workers share it.
    """

    def __init__(self, maxsize: int = CHAIN_CACHE_SIZE, failures: int = CHAIN_FAILURES_SIZE):
        self.maxsize = maxsize
        self._failures_size = failures
        self._ok: OrderedDict[bytes, tuple[datetime, datetime]] = OrderedDict()
        self._bad: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def window(
        self, leaf_der: bytes, intermediates_der: tuple[bytes, ...], anchors_der: tuple[bytes, ...]
    ) -> tuple[datetime, datetime] | str:
        digest = hashlib.sha256()
        for der in (leaf_der, *intermediates_der, b"", *anchors_der):
            digest.update(len(der).to_bytes(4, "big"))
            digest.update(der)
        key = digest.digest()
        with self._lock:
            for known in (self._ok, self._bad):
                found = known.get(key)
                if found is not None:
                    known.move_to_end(key)
                    self._hits += 1
                    return found
            self._misses += 1
        # Verified outside the lock: two threads may verify the same new chain at once,
        # which costs a verification, never a wrong answer.
        result = _chain_window(leaf_der, intermediates_der, anchors_der)
        with self._lock:
            if isinstance(result, str):
                self._bad[key] = result
                if len(self._bad) > self._failures_size:
                    self._bad.popitem(last=False)
            else:
                self._ok[key] = result
                if len(self._ok) > self.maxsize:
                    self._ok.popitem(last=False)
        return result

    def cache_info(self) -> ChainCacheInfo:
        with self._lock:
            return ChainCacheInfo(self._hits, self._misses, self.maxsize, len(self._ok))

    def clear(self) -> None:
        with self._lock:
            self._ok.clear()
            self._bad.clear()
            self._hits = self._misses = 0


#: The process's chain cache (the agent's few chains, or the simulator's fleet).
CHAIN_CACHE = ChainCache()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime,
    what: str,
) -> None:
    """``leaf`` chains to one of ``anchors`` and every certificate on the way is valid now."""
    if not anchors:
        raise _fail(ErrorCode.UNTRUSTED_CERTIFICATE, "no trust anchor is configured")
    window = CHAIN_CACHE.window(
        _der(leaf), tuple(_der(c) for c in intermediates), tuple(_der(c) for c in anchors)
    )
    if isinstance(window, str):
        raise _fail(ErrorCode.UNTRUSTED_CERTIFICATE, f"{what} is not trusted: {window}")
    start, end = window
    if not start <= now <= end:
        raise _fail(
            ErrorCode.CERTIFICATE_EXPIRED,
            f"{what} is not valid at {iso(now)} (valid {iso(start)} to {iso(end)})",
        )


def public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        # An unknown key type or an invalid point in peer-controlled DER.
        raise _fail(
            ErrorCode.UNTRUSTED_CERTIFICATE, "the certificate's key is not EC P-256"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise _fail(ErrorCode.UNTRUSTED_CERTIFICATE, "the certificate's key is not EC P-256")
    return key


def certificate_piid(cert: x509.Certificate) -> str:
    """The PIID an ID certificate was issued to: its subject's common name."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


# --- envelopes --------------------------------------------------------------------------

#: Fields of every envelope; ``signature`` covers the canonical form of all the others.
REQUEST_FIELDS = frozenset(
    {"protocol", "type", "vendor", "piid", "nonce", "sent_at", "body", "cert", "signature"}
)
RESPONSE_FIELDS = frozenset(
    {
        "protocol",
        "type",
        "vendor",
        "piid",
        "nonce",
        "sent_at",
        "status",
        "body",
        "error",
        "cert",
        "chain",
        "signature",
    }
)


def sign(envelope: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """The envelope with its ``signature`` over the canonical form of every other field."""
    unsigned = {k: v for k, v in envelope.items() if k != "signature"}
    return {**unsigned, "signature": b64(key.sign(canonical(unsigned), _ECDSA))}


def check_signature(envelope: Mapping[str, Any], key: ec.EllipticCurvePublicKey) -> None:
    signature = unb64(envelope.get("signature"), "signature")
    unsigned = {k: v for k, v in envelope.items() if k != "signature"}
    try:
        key.verify(signature, canonical(unsigned), _ECDSA)
    except (InvalidSignature, TypeError):
        raise _fail(ErrorCode.BAD_SIGNATURE, "the signature does not verify") from None


def _member(value: object, kind: type[StrEnum]) -> bool:
    """``value`` names a member of ``kind`` (a peer's list or object is no name, and
    must not reach a ``dict`` lookup that raises on the unhashable)."""
    return isinstance(value, str) and value in kind.__members__


def _common(envelope: Mapping[str, Any], fields: frozenset[str]) -> None:
    missing = sorted(fields - {"cert", "chain", "error", "piid"} - envelope.keys())
    if missing:
        raise _fail(ErrorCode.MALFORMED, f"missing field(s): {', '.join(missing)}")
    extra = sorted(envelope.keys() - fields)
    if extra:
        raise _fail(ErrorCode.MALFORMED, f"unknown field(s): {', '.join(extra)}")
    if envelope["protocol"] != PROTOCOL:
        raise _fail(
            ErrorCode.UNSUPPORTED_PROTOCOL,
            f"protocol {str(envelope['protocol'])[:40]!r} is not {PROTOCOL!r}",
        )
    if envelope["vendor"] != VENDOR:
        raise _fail(ErrorCode.WRONG_VENDOR, f"vendor must be {VENDOR!r}")
    if not _member(envelope["type"], MessageType):
        raise _fail(ErrorCode.MALFORMED, f"unknown message type {str(envelope['type'])[:40]!r}")
    text(envelope, "nonce", "")
    instant(envelope, "sent_at", "")
    if not isinstance(envelope["body"], dict):
        raise _fail(ErrorCode.MALFORMED, "body must be an object")
    piid = envelope.get("piid")
    if piid is not None:
        text(envelope, "piid", "")


@dataclass(frozen=True, slots=True)
class Request:
    """A request that passed every envelope check (signature included)."""

    type: MessageType
    piid: str | None
    nonce: str
    sent_at: datetime
    body: dict[str, Any]
    #: The sender's ID certificate (None for REGISTER, which the CSR's key signs).
    cert: x509.Certificate | None
    #: For REGISTER, the CSR the signature was checked against.
    csr: x509.CertificateSigningRequest | None


def seal_request(
    type_: MessageType,
    body: Mapping[str, Any],
    now: datetime,
    key: ec.EllipticCurvePrivateKey,
    *,
    piid: str | None = None,
    cert: x509.Certificate | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """A signed request. REGISTER has no certificate yet: its CSR's key signs it."""
    envelope: dict[str, Any] = {
        "protocol": PROTOCOL,
        "type": type_.value,
        "vendor": VENDOR,
        "piid": piid,
        "nonce": nonce or new_nonce(),
        "sent_at": iso(now),
        "body": dict(body),
        "cert": cert_to_text(cert) if cert is not None else None,
    }
    return sign(envelope, key)


def open_request(
    raw: bytes,
    now: datetime,
    anchors: Sequence[x509.Certificate],
    *,
    max_skew: timedelta = MAX_SKEW,
    max_age: timedelta | None = None,
) -> Request:
    """Every check a server makes before looking a request's sender up.

    Order matters for what a forger learns: structure, then freshness, then signature and
    certificate; the nonce is recorded by the caller only after all of them passed.
    ``max_age`` (default ``max_skew``) is how old a request may be: a request carried on
    a file (docs/offline.md) is answered days after it was made, never one from the future.
    """
    return check_request(decode(raw), now, anchors, max_skew=max_skew, max_age=max_age)


def check_request(
    envelope: dict[str, Any],
    now: datetime,
    anchors: Sequence[x509.Certificate],
    *,
    max_skew: timedelta = MAX_SKEW,
    max_age: timedelta | None = None,
) -> Request:
    """:func:`open_request` of a request already decoded by :func:`decode` (a server that
    decoded it once to echo its nonce need not decode it again)."""
    _common(envelope, REQUEST_FIELDS)
    type_ = MessageType(envelope["type"])
    sent_at = instant(envelope, "sent_at", "")
    oldest = max_skew if max_age is None else max_age
    if sent_at - now > max_skew or now - sent_at > oldest:
        limit = max_skew if sent_at > now else oldest
        raise _fail(
            ErrorCode.STALE_MESSAGE,
            f"sent_at {iso(sent_at)} is more than {int(limit.total_seconds())} s "
            f"from the server's clock ({iso(now)})",
        )
    body: dict[str, Any] = envelope["body"]
    piid = envelope.get("piid")
    if type_ is MessageType.REGISTER:
        if piid is not None or envelope.get("cert") is not None:
            raise _fail(ErrorCode.MALFORMED, "a REGISTER has no piid and no cert")
        csr = csr_from_text(body.get("csr"))
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        check_signature(envelope, key)
        return Request(type_, None, envelope["nonce"], sent_at, body, None, csr)
    if type_ is MessageType.PING and piid is None:
        # An instance not registered yet: signed with a throw-away key it sends along.
        if envelope.get("cert") is not None:
            raise _fail(ErrorCode.MALFORMED, "a PING without a piid has no cert")
        check_signature(envelope, ping_key(body))
        return Request(type_, None, envelope["nonce"], sent_at, body, None, None)
    if piid is None:
        raise _fail(ErrorCode.MALFORMED, f"a {type_.value} must carry the instance's piid")
    cert = cert_from_text(envelope.get("cert"), "cert")
    check_signature(envelope, public_key(cert))
    verify_chain(cert, [], anchors, now, "the ID certificate")
    if certificate_piid(cert) != piid:
        raise _fail(ErrorCode.PIID_MISMATCH, "the piid is not the one the certificate names")
    return Request(type_, piid, envelope["nonce"], sent_at, body, cert, None)


def ping_key(body: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    """The key an unregistered PING is signed with: ``body.key``, a P-256
    SubjectPublicKeyInfo in base64 DER."""
    der = unb64(body.get("key"), "body.key")
    try:
        key = serialization.load_der_public_key(der)
    except (UnsupportedAlgorithm, ValueError):
        raise _fail(ErrorCode.MALFORMED, "body.key is not a DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise _fail(ErrorCode.BAD_REQUEST, "body.key must be an EC P-256 key")
    return key


def public_key_text(key: ec.EllipticCurvePublicKey) -> str:
    """``key`` as ``body.key`` of an unregistered PING carries it."""
    return b64(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@dataclass(frozen=True, slots=True)
class Response:
    """A response that passed every check against the request it answers."""

    status: Status
    body: dict[str, Any]
    error: ProtocolError | None
    sent_at: datetime
    piid: str | None


def seal_response(
    request: Mapping[str, Any] | None,
    now: datetime,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    *,
    body: Mapping[str, Any] | None = None,
    error: ProtocolError | None = None,
    piid: str | None = None,
    chain: Sequence[x509.Certificate] = (),
) -> dict[str, Any]:
    """A signed response echoing ``request``'s type, nonce and PIID (``piid`` overrides:
    a REGISTER response names the PIID it created).

    ``request`` is the raw envelope, possibly unchecked (an error answer to a malformed
    request echoes what it can).
    """
    req = request or {}
    echoed_type = req.get("type") if _member(req.get("type"), MessageType) else None
    echoed_nonce = req.get("nonce") if isinstance(req.get("nonce"), str) else None
    echoed_piid = req.get("piid") if isinstance(req.get("piid"), str) else None
    envelope: dict[str, Any] = {
        "protocol": PROTOCOL,
        "type": echoed_type,
        "vendor": VENDOR,
        "piid": piid if piid is not None else echoed_piid,
        "nonce": echoed_nonce,
        "sent_at": iso(now),
        "status": (Status.ERROR if error else Status.OK).value,
        "body": dict(body or {}),
        "error": {"code": error.code.value, "message": error.message} if error else None,
        "cert": cert_to_text(cert),
        "chain": [cert_to_text(c) for c in chain],
    }
    return sign(envelope, key)


def open_response(
    raw: bytes,
    request: Mapping[str, Any],
    now: datetime,
    anchors: Sequence[x509.Certificate],
) -> Response:
    """Every check the agent makes on a response before believing a word of it.

    The signing certificate must chain to a configured anchor and be valid now; the
    response must echo the request's type, nonce, vendor and (after registration) PIID.
    An error answer is checked the same way: an unsigned "token expired" could be forged
    by anyone on the path. ``now`` is the agent's clock.
    """
    envelope = decode(raw)
    if envelope.get("status") == Status.ERROR.value and envelope.get("nonce") is None:
        # The server could not read the request far enough to echo it; unsigned by any
        # standard we can check against this request, so it is not believed either.
        raise _fail(ErrorCode.NONCE_MISMATCH, "the server could not read the request")
    _common(envelope, RESPONSE_FIELDS)
    cert = cert_from_text(envelope.get("cert"), "cert")
    chain_field = envelope.get("chain", [])
    if not isinstance(chain_field, list) or len(chain_field) > 4:
        raise _fail(ErrorCode.MALFORMED, "chain must be a list of at most 4 certificates")
    chain = [cert_from_text(c, "chain[]") for c in chain_field]
    check_signature(envelope, public_key(cert))
    verify_chain(cert, chain, anchors, now, "the server's signing certificate")
    if envelope["type"] != request["type"]:
        raise _fail(ErrorCode.MALFORMED, "the response answers another message type")
    if envelope["nonce"] != request["nonce"]:
        raise _fail(ErrorCode.NONCE_MISMATCH, "the response does not echo the request's nonce")
    piid = envelope.get("piid")
    if request.get("piid") is not None and piid != request["piid"]:
        raise _fail(ErrorCode.PIID_MISMATCH, "the response names another instance")
    status = envelope.get("status")
    if not _member(status, Status):
        raise _fail(ErrorCode.MALFORMED, "status must be OK or ERROR")
    error = None
    if status == Status.ERROR.value:
        err = mapping(envelope, "error", "")
        code = err.get("code")
        message = err.get("message")
        if not _member(code, ErrorCode) or not isinstance(message, str):
            raise _fail(ErrorCode.MALFORMED, "error must have a known code and a message")
        error = ProtocolError(ErrorCode(str(code)), message[:500])
    return Response(
        Status(str(status)),
        envelope["body"],
        error,
        instant(envelope, "sent_at", ""),
        piid if isinstance(piid, str) else None,
    )
