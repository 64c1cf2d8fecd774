"""The key store: one 0600 file per key in a 0700 directory, crash-safe registration keys."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

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
