"""The key store: one 0600 file per key in a 0700 directory, crash-safe registration keys."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from ccx_agent.simulator.ca import create_authority
from ccx_agent.ssm import protocol
from ccx_agent.ssm.identity import IdentityError, KeyStore, check_issued, load_anchors, make_csr
from ccx_agent.ssm.port import Udi
from ccx_agent.ssm.protocol import ErrorCode, ProtocolError

NOW = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
UDI = Udi("UCCX", "SN1", "00000000-0000-4000-8000-000000000001")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_private_files(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    key = keys.registration_key(None)
    (path,) = (tmp_path / "keys").glob("*.pem")
    assert _mode(tmp_path / "keys") == 0o700
    assert _mode(path) == 0o600
    assert path.stem == protocol.key_fingerprint(key.public_key())


def test_a_pending_key_is_reused_until_a_registration_succeeds(tmp_path: Path) -> None:
    ca = create_authority(NOW)
    first = KeyStore(tmp_path).registration_key(None)
    # A new process (another `register` after a lost answer) finds the same key.
    again = KeyStore(tmp_path).registration_key(None)
    assert again.public_key() == first.public_key()
    cert = ca.issue_id_certificate(make_csr(first, UDI), "piid-1", UDI, NOW)
    # Re-registering over a live identity needs a key other than the certificate's.
    other = KeyStore(tmp_path).registration_key(cert)
    assert other.public_key() != first.public_key()
    keys = KeyStore(tmp_path)
    keys.keep_only(cert)
    assert [p.stem for p in (tmp_path / "keys").glob("*.pem")] == [
        protocol.key_fingerprint(first.public_key())
    ]
    assert keys.key_for(cert).public_key() == first.public_key()
    keys.wipe()
    assert list((tmp_path / "keys").iterdir()) == []
    with pytest.raises(IdentityError, match="register again"):
        KeyStore(tmp_path).key_for(cert)


def test_a_corrupt_key_file_is_named(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    keys.registration_key(None)
    (path,) = (tmp_path / "keys").glob("*.pem")
    path.write_text("garbage")
    with pytest.raises(IdentityError, match=str(path)):
        KeyStore(tmp_path).registration_key(None)


def test_an_issued_certificate_is_checked_before_it_is_kept(tmp_path: Path) -> None:
    ca, other = create_authority(NOW), create_authority(NOW)
    key = KeyStore(tmp_path).registration_key(None)
    csr = make_csr(key, UDI)
    good = ca.issue_id_certificate(csr, "piid-1", UDI, NOW)
    der = good.public_bytes(serialization.Encoding.DER)
    assert check_issued(der, (), key, "piid-1", [ca.root], NOW) == good
    cases = [
        (der, key, "piid-2", [ca.root], NOW, ErrorCode.PIID_MISMATCH),
        (
            der,
            KeyStore(tmp_path / "x").registration_key(None),
            "piid-1",
            [ca.root],
            NOW,
            ErrorCode.UNTRUSTED_CERTIFICATE,
        ),
        (der, key, "piid-1", [other.root], NOW, ErrorCode.UNTRUSTED_CERTIFICATE),
        (der, key, "piid-1", [ca.root], NOW + timedelta(days=366), ErrorCode.CERTIFICATE_EXPIRED),
        (b"junk", key, "piid-1", [ca.root], NOW, ErrorCode.MALFORMED),
    ]
    for cert_der, k, piid, anchors, now, code in cases:
        with pytest.raises(ProtocolError) as info:
            check_issued(cert_der, (), k, piid, anchors, now)
        assert info.value.code is code


def test_trust_anchor_files(tmp_path: Path) -> None:
    ca = create_authority(NOW)
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ca.root.public_bytes(serialization.Encoding.PEM))
    assert load_anchors(pem) == [ca.root]
    assert load_anchors(None) == []
    with pytest.raises(IdentityError, match="cannot read"):
        load_anchors(tmp_path / "missing.pem")
    (tmp_path / "bad.pem").write_text("not pem")
    with pytest.raises(IdentityError, match="not a PEM file"):
        load_anchors(tmp_path / "bad.pem")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(IdentityError, match="cannot create the key directory"):
            KeyStore(tmp_path).registration_key(None)
    finally:
        tmp_path.chmod(0o700)


# --- a CA bundle with certificates that are not ours -----------------------------------

#: A serial number that appears once in a certificate's DER: patched to make it invalid.
_SERIAL = 0x5A5A5A5A5A5A5A5A


def _stranger_root(first_serial_byte: int) -> bytes:
    """A self-signed root whose serial number is patched in its DER to be negative (a
    first byte of 0x80 or more), which RFC 5280 forbids and cryptography's builder refuses
    to make; the broken signature does not matter to a loader."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stranger Root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_SERIAL)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    field = b"\x02\x08" + _SERIAL.to_bytes(8, "big")
    assert der.count(field) == 1
    patched = der.replace(field, b"\x02\x08" + bytes([first_serial_byte]) + field[3:])
    body = base64.encodebytes(patched).decode().replace("\n", "")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n".encode()


def _ours(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    """The warnings caught, but for ResourceWarning: the collector may
    finalise a socket an earlier test on the same worker left open while the block runs,
    and parsing certificates opens nothing."""
    return [w for w in caught if not issubclass(w.category, ResourceWarning)]


def test_the_crafted_roots_draw_cryptographys_deprecation_warning() -> None:
    """The premise of the next test: without care, loading them warns."""
    for first in (0x80, 0xDA):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x509.load_pem_x509_certificates(_stranger_root(first))
        assert [w.category for w in _ours(caught)] == [CryptographyDeprecationWarning]


def test_a_bundle_with_strangers_roots_loads_ours_without_a_warning(tmp_path: Path) -> None:
    ca = create_authority(NOW)
    ours = ca.root.public_bytes(serialization.Encoding.PEM)
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_bytes(
        b"# an OS bundle has comments too\n"
        + _stranger_root(0xDA)
        + ours
        + _stranger_root(0x80)
        + b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_anchors(bundle) == [ca.root]
    assert [str(w.message) for w in _ours(caught)] == []


def test_the_skipped_roots_are_named_at_debug(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        _stranger_root(0xDA) + create_authority(NOW).root.public_bytes(serialization.Encoding.PEM)
    )
    with structlog.testing.capture_logs() as logs:
        load_anchors(bundle)
    assert [(e["log_level"], e["event"], e["certificate"], e["subject"]) for e in logs] == [
        ("debug", "trust anchor skipped", 1, "CN=Stranger Root")
    ]
    assert "serial number" in logs[0]["reason"]


def test_a_file_of_only_unusable_certificates_is_an_error(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(_stranger_root(0x80))
    with pytest.raises(IdentityError, match=r"no usable certificate: certificate 1 \(CN=Str"):
        load_anchors(bundle)


@pytest.mark.skipif(
    not Path("/etc/ssl/certs/ca-certificates.crt").is_file(), reason="no Debian CA bundle here"
)
def test_the_systems_ca_bundle_loads_under_warnings_as_errors() -> None:
    """The real OS bundle (Debian's has roots with a zero serial number) under ``-W
    error``, in a fresh interpreter: no warning at all escapes."""
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            "from ccx_agent.ssm.identity import load_anchors\n"
            "print(len(load_anchors('/etc/ssl/certs/ca-certificates.crt')))",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    # stdout: the (unconfigured) debug lines of the skipped roots, then the count.
    assert int(done.stdout.splitlines()[-1]) > 10
