"""The simulator's CA: created once in the state directory, reused, and Web-PKI clean."""

from __future__ import annotations

import ipaddress
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ccx_agent.simulator import ca
from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm import protocol
from ccx_agent.ssm.port import Udi
from tests.simulator.helpers import NOW, new_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_on_first_start_with_private_modes(state_dir: Path) -> None:
    authority = ca.load_or_create(state_dir, NOW)
    root = x509.load_pem_x509_certificate((state_dir / "ca.pem").read_bytes())
    assert root == authority.root
    private = state_dir / "private"
    assert mode(private) == 0o700
    keys = sorted(p.name for p in private.iterdir())
    assert keys == ["root.key", "signing.key", "tls.key"]
    for key in private.iterdir():
        assert mode(key) == 0o600
    sim = Simulator.open(state_dir, NOW)
    sim.close()
    assert mode(state_dir / "ssm.db") == 0o600
    assert not list(state_dir.glob(".*.tmp"))


def test_reused_after_a_restart(state_dir: Path) -> None:
    first = ca.load_or_create(state_dir, NOW)
    again = ca.load_or_create(state_dir, NOW + timedelta(days=100))
    assert again.root == first.root
    assert again.signing_cert == first.signing_cert
    assert again.tls_cert == first.tls_cert
    assert again.root_key.private_numbers() == first.root_key.private_numbers()


def test_incomplete_state_is_refused_not_replaced(state_dir: Path) -> None:
    ca.load_or_create(state_dir, NOW)
    (state_dir / "private" / "signing.key").unlink()
    with pytest.raises(ca.CaError, match="incomplete or unreadable"):
        ca.load_or_create(state_dir, NOW)


def test_every_certificate_chains_to_the_root(state_dir: Path) -> None:
    a = ca.load_or_create(state_dir, NOW)
    for cert in (a.root, a.signing_cert, a.tls_cert):
        protocol.verify_chain(cert, [], [a.root], NOW, "certificate")
        assert cert.not_valid_before_utc == NOW - timedelta(days=1)
        assert cert.not_valid_after_utc == NOW + timedelta(days=20 * 365)
    key = new_key()
    udi = Udi("UCCX-K9", "FCH1", "0b9b7f5e-6f7b-4a44-9d4c-5b2e3f0a1c2d")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, udi.uuid)]))
        .sign(key, hashes.SHA256())
    )
    cert = a.issue_id_certificate(csr, "piid-1", udi, NOW, timedelta(days=30))
    protocol.verify_chain(cert, [], [a.root], NOW + timedelta(days=29), "ID certificate")
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.verify_chain(cert, [], [a.root], NOW + timedelta(days=31), "ID certificate")
    assert err.value.code is protocol.ErrorCode.CERTIFICATE_EXPIRED
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    other = ca.create_authority(NOW)
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.verify_chain(cert, [], [other.root], NOW, "ID certificate")
    assert err.value.code is protocol.ErrorCode.UNTRUSTED_CERTIFICATE


def test_root_and_tls_profiles(state_dir: Path) -> None:
    a = ca.load_or_create(state_dir, NOW)
    bc = a.root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = a.root.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    a.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    san = a.tls_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    eku = a.tls_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for cert in (a.signing_cert, a.tls_cert):
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)


def test_a_fleet_of_id_certificates_is_verified_once_each(state_dir: Path) -> None:
    """A report's chain check is cached per certificate, and the cache holds a fleet: 1,000
    instances' certificates, each verified again, are all found (an lru_cache(256) verified
    every one again once the fleet passed 256)."""
    a = ca.load_or_create(state_dir, NOW)
    key = new_key()
    udi = Udi("UCCX-K9", "FCH1", "0b9b7f5e-6f7b-4a44-9d4c-5b2e3f0a1c2d")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, udi.uuid)]))
        .sign(key, hashes.SHA256())
    )
    fleet = [a.issue_id_certificate(csr, f"piid-{i}", udi, NOW) for i in range(1000)]
    for cert in fleet:
        protocol.verify_chain(cert, [], [a.root], NOW, "ID certificate")
    before = protocol.CHAIN_CACHE.cache_info()
    for cert in fleet:
        protocol.verify_chain(cert, [], [a.root], NOW, "ID certificate")
    after = protocol.CHAIN_CACHE.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (1000, 0)


def test_certificates_that_fail_cannot_evict_the_fleet(state_dir: Path) -> None:
    """A stranger's certificates (another CA's) go to the failure list: the chains that
    verified stay cached however many arrive."""
    a = ca.load_or_create(state_dir, NOW)
    stranger = ca.create_authority(NOW)
    cache = protocol.ChainCache(maxsize=4, failures=2)
    der = [a.signing_cert.public_bytes(serialization.Encoding.DER)]
    root = (a.root.public_bytes(serialization.Encoding.DER),)
    assert isinstance(cache.window(der[0], (), root), tuple)
    for cert in (stranger.signing_cert, stranger.tls_cert, stranger.root):
        bad = cert.public_bytes(serialization.Encoding.DER)
        assert isinstance(cache.window(bad, (), root), str)
    hits = cache.cache_info().hits
    assert isinstance(cache.window(der[0], (), root), tuple)
    assert cache.cache_info().hits == hits + 1
