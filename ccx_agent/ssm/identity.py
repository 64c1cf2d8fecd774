"""The instance's identity: its private key (a file that never leaves the host), the CSR
that asks for an ID certificate, and the checks on a certificate before it is kept.

Keys live in ``STATE_DIR/keys/`` (0700), one PEM file per key (0600), named by the
SHA-256 fingerprint of the public key. The database holds the ID certificate; the key a
certificate certifies is found by that certificate's fingerprint. So the two never
disagree after a crash: a registration writes its new key file *before* it sends the
REGISTER, and the database switches to the new certificate in one transaction; a key
file that no certificate names is a pending registration's key, reused by the next
attempt (the server then answers the same instance again instead of using the token
twice, docs/protocol.md §5), and removed once a registration succeeds.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from ccx_agent import atomicfile
from ccx_agent.errors import AgentError, LocalError
from ccx_agent.ssm import protocol
from ccx_agent.ssm.port import Udi
from ccx_agent.ssm.protocol import ErrorCode, ProtocolError

KEY_DIR = "keys"

log = structlog.get_logger("ccx_agent.ssm.identity")


class IdentityError(AgentError):
    """The key store or a trust anchor file cannot be used; the message says which file."""


class KeyAccessError(LocalError):
    """A key file or the key directory exists but this process may not use it (a root-owned
    key in the service user's directory, a full disk). Not an SSM error: it must fail the
    job loudly (AGENT_JOB_FAILED), not pass for a refused report."""


def _access(path: Path, what: str, exc: OSError) -> KeyAccessError:
    try:
        st = path.stat()
        owner = f" (owned by uid {st.st_uid}, mode {st.st_mode & 0o777:04o})"
    except OSError:
        owner = ""
    return KeyAccessError(
        f"{path}: cannot {what}{owner}: {exc.strerror or exc}; the state directory and "
        "everything in it must belong to the user the daemon runs as (see 'ccx-agent doctor' "
        "or docs/install.md)"
    )


class KeyStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / KEY_DIR
        self._cache: dict[str, ec.EllipticCurvePrivateKey] = {}

    def _ensure_dir(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
        except OSError as exc:
            raise _access(self.dir, "create the key directory", exc) from None

    def _files(self) -> list[Path]:
        try:
            if not self.dir.is_dir():
                return []
            return sorted(
                (p for p in self.dir.iterdir() if p.suffix == ".pem" and len(p.stem) == 64),
                key=lambda p: p.stat().st_mtime_ns,
            )
        except OSError as exc:
            raise _access(self.dir, "list the key directory", exc) from None

    def _load(self, path: Path) -> ec.EllipticCurvePrivateKey:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IdentityError(f"{path}: the private key is missing") from None
        except OSError as exc:
            raise _access(path, "read the private key", exc) from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as exc:
            raise IdentityError(
                f"{path}: not a usable private key ({type(exc).__name__})"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise IdentityError(f"{path}: not an EC P-256 private key")
        return key

    def key_for(self, cert: x509.Certificate) -> ec.EllipticCurvePrivateKey:
        """The private key an ID certificate certifies."""
        fp = protocol.key_fingerprint(protocol.public_key(cert))
        key = self._cache.get(fp)
        if key is not None:
            return key
        path = self.dir / f"{fp}.pem"
        try:
            present = path.exists()
        except OSError as exc:  # EACCES on the directory: exists() does not swallow it
            raise _access(self.dir, "look into the key directory", exc) from None
        if not present:
            raise IdentityError(
                f"{path}: the private key of the ID certificate is missing; "
                "register again (ccx-agent register TOKEN --force)"
            )
        key = self._cache[fp] = self._load(path)
        return key

    def load(self, fingerprint: str) -> ec.EllipticCurvePrivateKey:
        """The key of ``fingerprint``: a file exchange's REGISTER is answered for the key
        it was made with, which need not be the newest."""
        return self._load(self.dir / f"{fingerprint}.pem")

    def registration_key(self, current: x509.Certificate | None) -> ec.EllipticCurvePrivateKey:
        """A pending registration's key if one is left, else a new key, written first."""
        in_use = None if current is None else protocol.key_fingerprint(protocol.public_key(current))
        for path in reversed(self._files()):
            if path.stem != in_use:
                key = self._load(path)
                self._cache[path.stem] = key
                return key
        return self._create()

    def _create(self) -> ec.EllipticCurvePrivateKey:
        self._ensure_dir()
        key = ec.generate_private_key(ec.SECP256R1())
        fp = protocol.key_fingerprint(key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            # Durable: a key lost to a power cut is the registration lost.
            atomicfile.write_file(self.dir / f"{fp}.pem", pem, mode=0o600, durable=True)
        except OSError as exc:
            raise _access(self.dir, "write a new private key", exc) from None
        self._cache[fp] = key
        return key

    def keep_only(self, cert: x509.Certificate) -> None:
        """After a registration: remove every key but the certificate's."""
        keep = protocol.key_fingerprint(protocol.public_key(cert))
        for path in self._files():
            if path.stem != keep:
                path.unlink(missing_ok=True)
                self._cache.pop(path.stem, None)

    def wipe(self) -> None:
        """Deregistration: no key of this instance survives on the host."""
        for path in self._files():
            with contextlib.suppress(OSError):
                path.unlink()
        for tmp in (
            self.dir.glob(f"{atomicfile.TMP_PREFIX}*{atomicfile.TMP_SUFFIX}")
            if self.dir.is_dir()
            else []
        ):
            tmp.unlink(missing_ok=True)
        self._cache.clear()


def make_csr(key: ec.EllipticCurvePrivateKey, udi: Udi) -> x509.CertificateSigningRequest:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, udi.uuid),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, udi.serial),
        ]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


#: One certificate of a PEM bundle (the tags cryptography reads; an OpenSSL "TRUSTED
#: CERTIFICATE" carries trust settings cryptography cannot parse, so it is skipped).
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN (X509 )?CERTIFICATE-----\r?\n.*?-----END \1?CERTIFICATE-----", re.DOTALL
)


def load_anchors(path: Path | None) -> list[x509.Certificate]:
    """The trust anchors (PEM file) that the server's signing certificate must chain to.

    The file may be the operating system's CA bundle (``transport.ca_bundle`` defaults the
    anchor): it holds roots that are not ours, some of which cryptography objects to (a
    serial number of zero, RFC 5280's rules) with a deprecation warning, and in a later
    release with an error. Each certificate is therefore read on its own and one that
    cannot be read, or draws such a warning, is skipped with a debug line: a stranger's
    root never breaks the log (one JSON object a line) nor, later, the start-up. Only a
    file with no usable certificate at all is an error."""
    if path is None:
        return []
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the trust anchor: {exc.strerror}") from None
    blocks = [m[0] for m in _PEM_CERTIFICATE.finditer(data)]
    if not blocks:
        raise IdentityError(f"{path}: not a PEM file of certificates")
    certs: list[x509.Certificate] = []
    skipped: list[str] = []
    for number, block in enumerate(blocks, 1):
        cert, objection = _read_certificate(block)
        if cert is not None and objection is None:
            certs.append(cert)
            continue
        about = cert.subject.rfc4514_string() if cert is not None else "unreadable"
        log.debug(
            "trust anchor skipped",
            path=str(path),
            certificate=number,
            subject=about,
            reason=objection,
        )
        skipped.append(f"certificate {number} ({about}): {objection}")
    if not certs:
        raise IdentityError(f"{path}: no usable certificate: {'; '.join(skipped)}")
    return certs


def _read_certificate(block: bytes) -> tuple[x509.Certificate | None, str | None]:
    """One PEM certificate, and why it must not be used (None: it may).

    cryptography's objections are deprecation warnings; they are caught here rather than
    printed. ``catch_warnings`` is process-wide for its short span: any other warning
    raised meanwhile (by this or another thread) is passed on unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cert: x509.Certificate | None = x509.load_pem_x509_certificate(block)
            objection = None
        except ValueError as exc:
            cert, objection = None, str(exc) or type(exc).__name__
    for w in caught:
        if issubclass(w.category, CryptographyDeprecationWarning):
            objection = objection or str(w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return cert, objection


def check_issued(
    cert_der: bytes,
    chain: Sequence[bytes],
    key: ec.EllipticCurvePrivateKey,
    piid: str,
    anchors: Sequence[x509.Certificate],
    now: datetime,
) -> x509.Certificate:
    """An issued ID certificate is kept only if it certifies our key, names our PIID,
    chains to the trust anchor and is valid now."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        inter = [x509.load_der_x509_certificate(c) for c in chain]
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED, "the ID certificate is not DER X.509") from None
    if protocol.public_key(cert) != key.public_key():
        raise ProtocolError(
            ErrorCode.UNTRUSTED_CERTIFICATE, "the ID certificate certifies another key"
        )
    if protocol.certificate_piid(cert) != piid:
        raise ProtocolError(ErrorCode.PIID_MISMATCH, "the ID certificate names another PIID")
    protocol.verify_chain(cert, inter, anchors, now, "the issued ID certificate")
    return cert
