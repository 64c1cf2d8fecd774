"""The simulator's certificate authority: a root, a response-signing certificate, a TLS
server certificate, and the ID certificates it issues to product instances.

Everything is created once, on first start, in the state directory, and reused after:
agents registered with the simulator hold ID certificates of this root and point
``transport.ca_bundle`` at ``DIR/ca.pem``, so a new root on every start would orphan them.
Creation takes ``now`` so that an in-process simulator on a simulated clock gets
certificates valid on that clock.

Layout (the private keys never leave ``DIR/private``, and are never logged)::

    DIR/ca.pem            root certificate (public; what agents trust)
    DIR/signing.pem       response-signing certificate
    DIR/tls.pem           TLS server certificate (localhost, 127.0.0.1, ::1)
    DIR/private/          0700
        root.key signing.key tls.key   0600, PKCS#8 PEM
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ccx_agent import atomicfile
from ccx_agent.ssm.port import Udi
from ccx_agent.ssm.protocol import MAX_SKEW

#: Validity of the root, signing and TLS certificates: long enough for any lab, and
#: back-dated a day so that an agent whose clock is a little behind still accepts them.
AUTHORITY_VALIDITY = timedelta(days=20 * 365)
BACKDATE = timedelta(days=1)
DEFAULT_ID_LIFETIME = timedelta(days=365)

CA_PEM = "ca.pem"
SIGNING_PEM = "signing.pem"
TLS_PEM = "tls.pem"
PRIVATE_DIR = "private"
_KEYS = ("root.key", "signing.key", "tls.key")
_LOCK = ".ca.lock"


class CaError(Exception):
    """The CA files in the state directory cannot be used (incomplete, unreadable …)."""


@dataclass(frozen=True)
class Authority:
    """The simulator's keys and certificates. ``root`` is the only trust anchor it accepts
    for ID certificates, and the one agents must trust for its responses."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    signing_cert: x509.Certificate
    signing_key: ec.EllipticCurvePrivateKey
    tls_cert: x509.Certificate
    tls_key: ec.EllipticCurvePrivateKey

    def issue_id_certificate(
        self,
        csr: x509.CertificateSigningRequest,
        piid: str,
        udi: Udi,
        now: datetime,
        lifetime: timedelta = DEFAULT_ID_LIFETIME,
    ) -> x509.Certificate:
        """An ID certificate for the CSR's key (docs/protocol.md §3), issued by the root
        itself (so a response's ``chain`` is ``[]``).

        Back-dated by the protocol's clock tolerance, so an agent whose clock is a few
        minutes behind ours accepts it at once; never valid beyond the root.
        """
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("an ID certificate is only issued to an EC key")
        start = max(now - MAX_SKEW, self.root.not_valid_before_utc)
        end = min(now + lifetime, self.root.not_valid_after_utc)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, piid),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, udi.serial),
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.root.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"urn:uuid:{uuid.UUID(udi.uuid)}")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(self._aki(), critical=False)
            .sign(self.root_key, hashes.SHA256())
        )

    def _aki(self) -> x509.AuthorityKeyIdentifier:
        ski = self.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _usage(*, digital_signature: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ccx-agent SSM simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_authority(now: datetime) -> Authority:
    """New keys and certificates valid from ``now`` - 1 day to ``now`` + 20 years.

    The root meets the Web PKI CA profile (``protocol.verify_chain`` requires it). Its
    name carries a random suffix so that two simulators' roots are never confused.
    """
    start, end = now - BACKDATE, now + AUTHORITY_VALIDITY
    root_key = _new_key()
    root_name = _name(f"SSM simulator root CA {uuid.uuid4().hex[:12]}")
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski)

    def leaf(
        name: str, key: ec.EllipticCurvePrivateKey, *extra: tuple[x509.ExtensionType, bool]
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(aki, critical=False)
        )
        for ext, critical in extra:
            builder = builder.add_extension(ext, critical)
        return builder.sign(root_key, hashes.SHA256())

    signing_key, tls_key = _new_key(), _new_key()
    signing = leaf(
        "SSM simulator response signing", signing_key, (_usage(digital_signature=True), True)
    )
    tls = leaf(
        "localhost",
        tls_key,
        (_usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            False,
        ),
    )
    return Authority(root, root_key, signing, signing_key, tls, tls_key)


# --- files ------------------------------------------------------------------------------


def ca_path(state_dir: Path) -> Path:
    return state_dir / CA_PEM


def tls_files(state_dir: Path) -> tuple[Path, Path]:
    """(certificate, key) of the TLS server, for ``SSLContext.load_cert_chain``."""
    return state_dir / TLS_PEM, state_dir / PRIVATE_DIR / "tls.key"


def load_or_create(state_dir: Path, now: datetime) -> Authority:
    """The authority of ``state_dir``, created there on first use.

    ``ca.pem`` is written last: its presence means the set is complete. Creation holds
    a lock, so a server and an admin command starting at once do not make two roots.
    """
    ensure_state_dir(state_dir)
    with _locked(state_dir / _LOCK):
        if ca_path(state_dir).exists():
            return load(state_dir)
        authority = create_authority(now)
        save(authority, state_dir)
        return authority


def ensure_state_dir(state_dir: Path) -> None:
    """The state directory itself stays readable (``ca.pem`` is public); secrets in it
    are 0600 files and the ``private`` subdirectory is 0700."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)


def save(authority: Authority, state_dir: Path) -> None:
    private = state_dir / PRIVATE_DIR
    private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)
    keys = (authority.root_key, authority.signing_key, authority.tls_key)
    for name, key in zip(_KEYS, keys, strict=True):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_file(private / name, pem, 0o600)
    write_file(state_dir / SIGNING_PEM, _pem(authority.signing_cert), 0o644)
    write_file(state_dir / TLS_PEM, _pem(authority.tls_cert), 0o644)
    write_file(state_dir / CA_PEM, _pem(authority.root), 0o644)


def load(state_dir: Path) -> Authority:
    try:
        certs = [
            x509.load_pem_x509_certificate((state_dir / n).read_bytes())
            for n in (CA_PEM, SIGNING_PEM, TLS_PEM)
        ]
        keys = [_load_key(state_dir / PRIVATE_DIR / n) for n in _KEYS]
    except (OSError, ValueError) as exc:
        raise CaError(
            f"{state_dir}: the simulator's CA files are incomplete or unreadable "
            f"({type(exc).__name__}); restore them or start with a new state directory"
        ) from None
    return Authority(certs[0], keys[0], certs[1], keys[1], certs[2], keys[2])


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC key")
    return key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """The simulator's files (CA keys and certificates, the admin token), durably: agents
    pin this CA, so one lost to a power cut and made anew would be refused by them all."""
    atomicfile.write_file(path, data, mode=mode, durable=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
