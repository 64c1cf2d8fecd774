"""The shared protocol module: canonical form, signatures, chains, envelope checks."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ccx_agent.simulator.ca import create_authority
from ccx_agent.ssm import protocol
from ccx_agent.ssm.identity import make_csr
from ccx_agent.ssm.port import Udi
from ccx_agent.ssm.protocol import ErrorCode, MessageType, ProtocolError

NOW = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
UDI = Udi("UCCX", "SN1", "00000000-0000-4000-8000-000000000001")


@pytest.fixture(scope="module")
def ca():  # type: ignore[no-untyped-def]
    return create_authority(NOW)


@pytest.fixture(scope="module")
def other_ca():  # type: ignore[no-untyped-def]
    return create_authority(NOW)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _register(key: ec.EllipticCurvePrivateKey) -> dict[str, object]:
    csr = make_csr(key, UDI)
    body = {
        "token": "t",
        "csr": protocol.b64(csr.public_bytes(serialization.Encoding.DER)),
        "udi": {"pid": UDI.pid, "serial": UDI.serial, "uuid": UDI.uuid},
        "license_type": "flex",
    }
    return protocol.seal_request(MessageType.REGISTER, body, NOW, key)


def test_canonical_form_is_sorted_compact_utf8() -> None:
    assert (
        protocol.canonical({"b": 1, "a": ["é", None, True]})
        == '{"a":["é",null,true],"b":1}'.encode()
    )


def test_floats_have_no_canonical_form() -> None:
    with pytest.raises(TypeError):
        protocol.canonical({"a": {"b": [1.5]}})


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[1]", ErrorCode.MALFORMED),
        (b'{"a": 1, "a": 2}', ErrorCode.MALFORMED),
        (b'{"a": 1.5}', ErrorCode.MALFORMED),
        (b'{"a": NaN}', ErrorCode.MALFORMED),
        (b"\xff\xfe", ErrorCode.MALFORMED),
        (b" " * (protocol.MAX_MESSAGE_BYTES + 1), ErrorCode.TOO_LARGE),
        (b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}", ErrorCode.MALFORMED),
        (b'{"a":' + b"{" * 400_000, ErrorCode.MALFORMED),
        (b'{"a":1' + b"0" * 5000 + b"}", ErrorCode.MALFORMED),
    ],
)
def test_decode_refuses(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.decode(raw)
    assert info.value.code is code


def _nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_decode_allows_32_levels_and_refuses_33_before_parsing() -> None:
    assert protocol.decode(_nested(protocol.MAX_DEPTH))["a"]
    with pytest.raises(ProtocolError, match="nested deeper than 32 levels"):
        protocol.decode(_nested(protocol.MAX_DEPTH + 1))


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = '{"a":"' + "[{" * 1000 + r'\\","b":"\"[["}'
    doc = protocol.decode(text.encode())
    assert doc["a"].startswith("[{[{") and doc["b"] == '"[['


@pytest.mark.parametrize(
    "text",
    ['"' * 1_000_000, '"\\' * 500_000, '"' + '\\"' * 500_000, "[" * 1_000_000],
)
def test_the_depth_of_any_text_is_measured_in_linear_time(text: str) -> None:
    """No input makes the depth scan quadratic (a 1 MiB message, the most a peer can send,
    is measured in well under a second even on a loaded machine)."""
    started = time.monotonic()
    protocol._depth(text)
    assert time.monotonic() - started < 1.0


def test_a_register_opens_and_its_signature_is_the_csr_key() -> None:
    key = _key()
    req = protocol.open_request(protocol.canonical(_register(key)), NOW, [])
    assert req.type is MessageType.REGISTER and req.csr is not None
    assert req.csr.public_key() == key.public_key()


@pytest.mark.parametrize("field", ["nonce", "sent_at", "token"])
def test_any_change_to_a_signed_request_breaks_the_signature(field: str) -> None:
    env = _register(_key())
    if field == "token":
        env["body"] = {**env["body"], "token": "u"}  # type: ignore[dict-item]
    else:
        env[field] = "2027-01-04T08:00:01Z" if field == "sent_at" else "ab" * 16
    with pytest.raises(ProtocolError) as info:
        protocol.open_request(protocol.canonical(env), NOW, [])
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_a_register_signed_by_another_key_is_refused() -> None:
    env = _register(_key())
    env = protocol.sign(env, _key())
    with pytest.raises(ProtocolError) as info:
        protocol.open_request(protocol.canonical(env), NOW, [])
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_a_stale_request_is_refused() -> None:
    raw = protocol.canonical(_register(_key()))
    with pytest.raises(ProtocolError) as info:
        protocol.open_request(raw, NOW + timedelta(minutes=11), [])
    assert info.value.code is ErrorCode.STALE_MESSAGE


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"protocol": "ccx-sl/2"}, ErrorCode.UNSUPPORTED_PROTOCOL),
        ({"vendor": "acme"}, ErrorCode.WRONG_VENDOR),
        ({"type": "HELLO"}, ErrorCode.MALFORMED),
        ({"extra": 1}, ErrorCode.MALFORMED),
        ({"body": []}, ErrorCode.MALFORMED),
    ],
)
def test_envelope_fields_are_checked(change: dict[str, object], code: ErrorCode) -> None:
    env = {**_register(_key()), **change}
    with pytest.raises(ProtocolError) as info:
        protocol.open_request(protocol.canonical(env), NOW, [])
    assert info.value.code is code


def _response(ca, request, **kw):  # type: ignore[no-untyped-def]
    return protocol.canonical(
        protocol.seal_response(request, NOW, ca.signing_key, ca.signing_cert, **kw)
    )


def test_a_response_is_checked_against_its_request(ca, other_ca) -> None:  # type: ignore[no-untyped-def]
    request = _register(_key())
    raw = _response(ca, request, body={"x": 1}, piid="p1")
    resp = protocol.open_response(raw, request, NOW, [ca.root])
    assert resp.body == {"x": 1} and resp.piid == "p1"
    # Another CA's signing certificate is not trusted.
    with pytest.raises(ProtocolError) as info:
        protocol.open_response(_response(other_ca, request), request, NOW, [ca.root])
    assert info.value.code is ErrorCode.UNTRUSTED_CERTIFICATE
    # The answer to another request (another nonce) is refused.
    other = _register(_key())
    with pytest.raises(ProtocolError) as info:
        protocol.open_response(raw, other, NOW, [ca.root])
    assert info.value.code is ErrorCode.NONCE_MISMATCH
    # No trust anchor, no trust.
    with pytest.raises(ProtocolError) as info:
        protocol.open_response(raw, request, NOW, [])
    assert info.value.code is ErrorCode.UNTRUSTED_CERTIFICATE


def test_every_byte_of_a_response_matters(ca) -> None:  # type: ignore[no-untyped-def]
    request = _register(_key())
    raw = bytearray(_response(ca, request, body={"entitlements": {"a": 10}}, piid="p1"))
    i = raw.index(b'"a":10') + 5
    raw[i : i + 1] = b"9"
    with pytest.raises(ProtocolError) as info:
        protocol.open_response(bytes(raw), request, NOW, [ca.root])
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_a_response_for_another_instance_is_refused(ca) -> None:  # type: ignore[no-untyped-def]
    request = {**_register(_key()), "piid": "mine", "type": "AUTHORIZE"}
    raw = _response(ca, request, piid="theirs")
    with pytest.raises(ProtocolError) as info:
        protocol.open_response(raw, request, NOW, [ca.root])
    assert info.value.code is ErrorCode.PIID_MISMATCH


def test_an_expired_signing_certificate_is_refused(ca) -> None:  # type: ignore[no-untyped-def]
    request = _register(_key())
    raw = _response(ca, request)
    later = ca.signing_cert.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(ProtocolError) as info:
        protocol.open_response(raw, request, later, [ca.root])
    assert info.value.code is ErrorCode.CERTIFICATE_EXPIRED


def test_an_error_answer_is_verified_and_carried(ca) -> None:  # type: ignore[no-untyped-def]
    request = _register(_key())
    err = ProtocolError(ErrorCode.TOKEN_EXPIRED, "the token expired")
    resp = protocol.open_response(_response(ca, request, error=err), request, NOW, [ca.root])
    assert resp.error is not None and resp.error.code is ErrorCode.TOKEN_EXPIRED
    # A forged error (signed by someone else) is not believed.
    forged = json.loads(_response(ca, request, error=err))
    forged = protocol.sign({**forged, "cert": protocol.cert_to_text(ca.signing_cert)}, _key())
    with pytest.raises(ProtocolError) as info:
        protocol.open_response(protocol.canonical(forged), request, NOW, [ca.root])
    assert info.value.code is ErrorCode.BAD_SIGNATURE
