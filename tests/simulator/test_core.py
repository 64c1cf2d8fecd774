"""The protocol server through Simulator.handle, with requests built like the agent's."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm import protocol
from ccx_agent.ssm.protocol import ErrorCode, MessageType
from tests.simulator.helpers import NOW, Device, report

FLEX_STD = "flex-standard-seat"


def error_of(sim: Simulator, raw: bytes, now=NOW) -> tuple[int, str]:
    status, answer = sim.handle(raw, now)
    doc = json.loads(answer)
    assert doc["status"] == "ERROR"
    return status, doc["error"]["code"]


def test_register_issues_an_id_certificate_for_the_key_and_udi(sim: Simulator) -> None:
    sim.add_licenses(FLEX_STD, 10)
    dev = Device(sim)
    resp = dev.register(sim.create_token(now=NOW))
    assert resp.piid == dev.piid
    body = resp.body
    assert body["account"] == "default"
    assert body["chain"] == []
    assert body["entitlements"] == {FLEX_STD: 10, "flex-premium-seat": 0, "flex-outbound-port": 0}
    assert body["purchased"][FLEX_STD] == 10
    cert = dev.cert
    assert cert is not None
    protocol.verify_chain(cert, [], [sim.root], NOW, "ID certificate")
    assert protocol.certificate_piid(cert) == dev.piid
    assert cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value == (
        dev.udi.serial
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:uuid:{dev.udi.uuid}"]
    assert cert.public_key() == dev.key.public_key()
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)
    [inst] = sim.show(NOW)["instances"]
    assert inst["piid"] == dev.piid
    assert inst["state"] == "active"


def test_repeated_register_with_the_same_key_answers_the_same_instance(sim: Simulator) -> None:
    token = sim.create_token(uses=1, now=NOW)
    dev = Device(sim)
    first = dev.register(token)
    first_cert = dev.cert
    again = dev.register(token, NOW + timedelta(minutes=1))
    assert again.body["piid"] == first.body["piid"]
    assert dev.cert == first_cert
    # The single use was spent once: another device cannot use it.
    status, resp = Device(sim).exchange(Device(sim).register_request(token))
    assert (status, resp.error and resp.error.code) == (403, ErrorCode.TOKEN_USED_UP)
    assert sim.show(NOW)["tokens"] == {"total": 1, "usable": 0}


def test_token_refusals(sim: Simulator) -> None:
    dev = Device(sim)

    def code(token: str, now=NOW) -> tuple[int, ErrorCode | None]:
        status, resp = dev.exchange(dev.register_request(token, now), now)
        return status, resp.error.code if resp.error else None

    assert code("no-such-token") == (403, ErrorCode.TOKEN_UNKNOWN)
    expiring = sim.create_token(expires=timedelta(hours=1), now=NOW)
    assert code(expiring, NOW + timedelta(hours=1)) == (403, ErrorCode.TOKEN_EXPIRED)
    revoked = sim.create_token(now=NOW)
    sim.revoke_token(revoked)
    assert code(revoked) == (403, ErrorCode.TOKEN_REVOKED)
    once = sim.create_token(now=NOW)
    Device(sim).register(once)
    assert code(once) == (403, ErrorCode.TOKEN_USED_UP)
    assert sim.show(NOW)["instances"][0]["piid"] != dev.piid
    assert len(sim.show(NOW)["instances"]) == 1


def test_register_body_rules(sim: Simulator) -> None:
    token = sim.create_token(now=NOW)
    dev = Device(sim)
    status, resp = dev.exchange(dev.register_request(token, license_type="gold"))
    assert (status, resp.error and resp.error.code) == (400, ErrorCode.BAD_REQUEST)
    other = Device(sim)
    wrong_csr = dev.register_request(
        token, csr=json.loads(json.dumps(other.register_request(token)))["body"]["csr"]
    )
    status, answer = sim.handle(json.dumps(wrong_csr).encode(), NOW)
    # The CSR is another key's: the signature no longer matches it.
    assert json.loads(answer)["error"]["code"] == ErrorCode.BAD_SIGNATURE
    bad_udi = dev.register_request(token, udi={"pid": "UCCX", "serial": "X", "uuid": dev.udi.uuid})
    status, resp = dev.exchange(bad_udi)
    assert resp.error is not None and resp.error.code is ErrorCode.BAD_REQUEST
    assert "CSR" in resp.error.message
    # Nothing was used up by the refusals.
    dev.register(token)


def test_a_new_key_for_the_same_udi_replaces_the_earlier_instance(sim: Simulator) -> None:
    token = sim.create_token(uses=2, now=NOW)
    old = Device(sim)
    old.register(token)
    new = Device(sim)
    new.udi = old.udi
    new.register(token)
    assert new.piid != old.piid
    status, resp = old.send(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}})
    assert (status, resp.error and resp.error.code) == (410, ErrorCode.INSTANCE_DEREGISTERED)


def test_replayed_nonce_is_refused_and_changes_nothing(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    envelope = dev.request(
        MessageType.REPORT_USAGE, {"reports": [report(dev.piid, "2026-11-27T11:00:00Z", {})]}
    )
    assert dev.exchange(envelope)[0] == 200
    status, resp = dev.exchange(envelope, NOW + timedelta(seconds=5))
    assert (status, resp.error and resp.error.code) == (409, ErrorCode.REPLAYED_NONCE)
    assert len(sim.reports()) == 1


def test_a_refused_request_does_not_burn_its_nonce(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    bad = dev.request(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {"x": 1}})
    assert dev.exchange(bad)[1].error is not None
    _status, resp = dev.exchange(bad)
    assert resp.error is not None and resp.error.code is ErrorCode.BAD_REQUEST


def test_stale_message(sim: Simulator) -> None:
    dev = Device(sim)
    token = sim.create_token(now=NOW)
    late = dev.register_request(token, NOW - timedelta(minutes=11))
    status, resp = dev.exchange(late, NOW)
    assert (status, resp.error and resp.error.code) == (400, ErrorCode.STALE_MESSAGE)


def test_tampered_requests_are_refused(sim: Simulator) -> None:
    sim.add_licenses(FLEX_STD, 3)
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    envelope = dev.request(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {FLEX_STD: 1}})
    raw = json.dumps(envelope).encode()
    changed = raw.replace(b'"flex-standard-seat": 1', b'"flex-standard-seat": 2')
    assert changed != raw
    assert error_of(sim, changed) == (401, ErrorCode.BAD_SIGNATURE)
    allowed = {
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.MALFORMED,
        ErrorCode.UNSUPPORTED_PROTOCOL,
        ErrorCode.WRONG_VENDOR,
        ErrorCode.UNTRUSTED_CERTIFICATE,
        ErrorCode.STALE_MESSAGE,
        ErrorCode.PIID_MISMATCH,
        ErrorCode.BAD_REQUEST,
    }
    for pos in range(0, len(raw), 7):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x01
        status, answer = sim.handle(bytes(flipped), NOW)
        doc = json.loads(answer)
        if doc["status"] == "OK":
            # A flip in insignificant whitespace or the JSON syntax that still decodes to
            # the same envelope is no tampering with what was signed.
            assert json.loads(bytes(flipped)) == envelope
            continue
        assert 400 <= status < 500
        assert doc["error"]["code"] in allowed, (pos, doc["error"])


def test_certificate_of_another_ca_is_untrusted(sim: Simulator, tmp_path: Path) -> None:
    other = Simulator.in_memory(NOW)
    dev = Device(other)
    dev.register(other.create_token(now=NOW))
    dev.sim = sim
    status, answer = sim.handle(
        json.dumps(
            dev.request(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}})
        ).encode(),
        NOW,
    )
    assert status == 401
    assert json.loads(answer)["error"]["code"] == ErrorCode.UNTRUSTED_CERTIFICATE


def test_certificate_the_server_never_recorded_is_untrusted(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    # Signed by our root, naming a real instance, but not in our records.
    csr = x509.load_der_x509_csr(protocol.unb64(dev.register_request("t")["body"]["csr"], "csr"))
    dev.cert = sim.authority.issue_id_certificate(csr, dev.piid or "", dev.udi, NOW)
    status, resp = dev.send(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}})
    assert (status, resp.error and resp.error.code) == (401, ErrorCode.UNTRUSTED_CERTIFICATE)


def test_expired_id_certificate(state_dir: Path) -> None:
    sim = Simulator.open(state_dir, NOW, id_lifetime=timedelta(days=1))
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    later = NOW + timedelta(days=2)
    status, resp = dev.send(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}}, later)
    assert (status, resp.error and resp.error.code) == (401, ErrorCode.CERTIFICATE_EXPIRED)
    sim.close()


def test_unknown_instance_after_the_database_was_lost(state_dir: Path) -> None:
    sim = Simulator.open(state_dir, NOW)
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    sim.close()
    for name in ("ssm.db", "ssm.db-wal", "ssm.db-shm"):
        (state_dir / name).unlink(missing_ok=True)
    dev.sim = Simulator.open(state_dir, NOW)  # same CA, empty database
    status, resp = dev.send(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}})
    assert (status, resp.error and resp.error.code) == (404, ErrorCode.INSTANCE_UNKNOWN)
    dev.sim.close()


def test_deregister(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    status, resp = dev.send(MessageType.DEREGISTER, {})
    assert (status, resp.status, resp.body) == (200, protocol.Status.OK, {})
    for type_, body in [
        (MessageType.DEREGISTER, {}),
        (MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}}),
    ]:
        status, resp = dev.send(type_, body)
        assert (status, resp.error and resp.error.code) == (410, ErrorCode.INSTANCE_DEREGISTERED)
    assert sim.show(NOW)["instances"][0]["state"] == "deregistered"


def test_reports_are_deduplicated_and_kept_in_arrival_order(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    a, b, c = "2026-11-27T10:00:00Z", "2026-11-27T10:15:00Z", "2026-11-27T10:30:00Z"
    _status, resp = dev.report([(b, {FLEX_STD: 2}), (a, {FLEX_STD: 1})])
    assert resp.body["acked"] == [f"{dev.piid}:{b}", f"{dev.piid}:{a}"]
    _status, resp = dev.report([(a, {FLEX_STD: 9}), (c, {FLEX_STD: 3}), (c, {FLEX_STD: 3})])
    assert resp.body["acked"] == [f"{dev.piid}:{a}", f"{dev.piid}:{c}"]
    stored = sim.reports()
    assert [r["start"] for r in stored] == [b, a, c]
    assert stored[1]["usage"] == {FLEX_STD: 1}  # the first copy is kept
    assert sim.reports(dev.piid) == stored
    assert sim.reports("someone-else") == []
    # The latest report is the latest interval, not the latest arrival.
    assert sim.show(NOW)["instances"][0]["last_report"]["start"] == c


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda r, piid: {**r, "id": f"other:{r['start']}"}, ErrorCode.BAD_REQUEST),
        (lambda r, piid: {**r, "usage": {"premium-seat": 1}}, ErrorCode.BAD_REQUEST),
        (lambda r, piid: {**r, "end": r["start"]}, ErrorCode.BAD_REQUEST),
        (lambda r, piid: {**r, "end": "2026-11-28T00:00:00Z"}, ErrorCode.BAD_REQUEST),
        (lambda r, piid: {**r, "start": "yesterday"}, ErrorCode.MALFORMED),
        (lambda r, piid: {**r, "usage": {FLEX_STD: -1}}, ErrorCode.MALFORMED),
    ],
)
def test_a_bad_report_refuses_the_whole_batch(sim: Simulator, mangle, code) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    good = report(dev.piid, "2026-11-27T10:00:00Z", {FLEX_STD: 1})
    bad = mangle(report(dev.piid, "2026-11-27T10:15:00Z", {FLEX_STD: 1}), dev.piid)
    _status, resp = dev.send(MessageType.REPORT_USAGE, {"reports": [good, bad]})
    assert resp.error is not None and resp.error.code is code
    assert sim.reports() == []


def test_too_many_reports(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    one = report(dev.piid, "2026-11-27T10:00:00Z", {})
    _status, resp = dev.send(
        MessageType.REPORT_USAGE, {"reports": [one] * (protocol.MAX_REPORTS + 1)}
    )
    assert resp.error is not None and resp.error.code is ErrorCode.BAD_REQUEST


def test_entitlements_are_pooled_across_the_instances_of_an_account(sim: Simulator) -> None:
    sim.add_licenses(FLEX_STD, 10)
    token = sim.create_token(uses=2, now=NOW)
    one, two = Device(sim, serial="A1"), Device(sim, serial="B2")
    one.register(token)
    two.register(token)
    _, resp = one.report([("2026-11-27T11:00:00Z", {FLEX_STD: 4})])
    assert resp.body["entitlements"][FLEX_STD] == 10  # its own usage is not subtracted
    authorize = {"license_type": "flex", "usage": {FLEX_STD: 1}}
    assert two.send(MessageType.AUTHORIZE, authorize)[1].body["entitlements"][FLEX_STD] == 6
    _, resp = two.report([("2026-11-27T11:00:00Z", {FLEX_STD: 8})])
    assert resp.body["entitlements"][FLEX_STD] == 6
    assert one.send(MessageType.AUTHORIZE, authorize)[1].body["entitlements"][FLEX_STD] == 2
    # One's newer report counts, not its older one.
    one.report([("2026-11-27T11:15:00Z", {FLEX_STD: 1})])
    assert two.send(MessageType.AUTHORIZE, authorize)[1].body["entitlements"][FLEX_STD] == 9
    # Over-use by the others floors at 0; purchased stays the account's total.
    two.report([("2026-11-27T11:15:00Z", {FLEX_STD: 30})])
    resp = one.send(MessageType.AUTHORIZE, authorize)[1]
    assert resp.body["entitlements"][FLEX_STD] == 0
    assert resp.body["purchased"][FLEX_STD] == 10
    state = sim.show(NOW)["accounts"]["default"]["tags"][FLEX_STD]
    assert state == {"purchased": 10, "usage": 31, "available": 0}
    # A deregistered instance no longer uses the pool.
    two.send(MessageType.DEREGISTER, {})
    assert one.send(MessageType.AUTHORIZE, authorize)[1].body["entitlements"][FLEX_STD] == 10


def test_accounts_do_not_share_licenses(sim: Simulator) -> None:
    sim.add_licenses(FLEX_STD, 5)
    sim.add_licenses(FLEX_STD, 7, account="lab")
    dev = Device(sim)
    resp = dev.register(sim.create_token(account="lab", now=NOW))
    assert resp.body["account"] == "lab"
    assert resp.body["entitlements"][FLEX_STD] == 7


def test_a_purchase_changes_the_next_response(sim: Simulator) -> None:
    dev = Device(sim)
    resp = dev.register(sim.create_token(now=NOW))
    assert resp.body["entitlements"][FLEX_STD] == 0
    authorize = {"license_type": "flex", "usage": {}}
    assert sim.add_licenses(FLEX_STD, 5) == 5
    assert dev.send(MessageType.AUTHORIZE, authorize)[1].body["entitlements"][FLEX_STD] == 5
    assert sim.add_licenses(FLEX_STD, 3) == 8
    _, resp = dev.report([("2026-11-27T11:00:00Z", {FLEX_STD: 2})])
    assert resp.body["entitlements"][FLEX_STD] == 8
    assert sim.remove_licenses(FLEX_STD, 100) == 0
    assert dev.send(MessageType.AUTHORIZE, authorize)[1].body["entitlements"][FLEX_STD] == 0


def test_authorize_rules(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW), license_type="perpetual-enhanced")
    ok = dev.send(MessageType.AUTHORIZE, {"license_type": "perpetual-enhanced", "usage": {}})
    assert ok[1].body["entitlements"] == {"enhanced-seat": 0}
    for body in (
        {"license_type": "flex", "usage": {}},
        {"license_type": "perpetual-enhanced", "usage": {FLEX_STD: 1}},
    ):
        _, resp = dev.send(MessageType.AUTHORIZE, body)
        assert resp.error is not None and resp.error.code is ErrorCode.BAD_REQUEST


def test_renew_id(sim: Simulator) -> None:
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    first = dev.cert
    csr = dev.register_request("t")["body"]["csr"]
    later = NOW + timedelta(days=300)
    status, resp = dev.send(MessageType.RENEW_ID, {"csr": csr}, later)
    assert status == 200 and resp.body["chain"] == []
    renewed = protocol.cert_from_text(resp.body["cert"], "cert")
    assert renewed.serial_number != first.serial_number
    assert renewed.public_key() == dev.key.public_key()
    assert renewed.not_valid_after_utc == later + timedelta(days=365)
    # Either certificate is valid.
    for cert in (first, renewed):
        dev.cert = cert
        assert (
            dev.send(MessageType.AUTHORIZE, {"license_type": "flex", "usage": {}}, later)[0] == 200
        )
    # Another key is refused.
    other = Device(sim)
    other.udi = dev.udi
    other_csr = other.register_request("t")["body"]["csr"]
    status, resp = dev.send(MessageType.RENEW_ID, {"csr": other_csr}, later)
    assert (status, resp.error and resp.error.code) == (400, ErrorCode.BAD_REQUEST)


def test_id_certificate_never_outlives_the_root(state_dir: Path) -> None:
    sim = Simulator.open(state_dir, NOW, id_lifetime=timedelta(days=36500))
    dev = Device(sim)
    dev.register(sim.create_token(now=NOW))
    assert dev.cert is not None
    assert dev.cert.not_valid_after_utc == sim.root.not_valid_after_utc
    sim.close()


def test_unreadable_requests_get_a_signed_error(sim: Simulator) -> None:
    for raw, code, http in [
        (b"not json", ErrorCode.MALFORMED, 400),
        (b"x" * (protocol.MAX_MESSAGE_BYTES + 1), ErrorCode.TOO_LARGE, 413),
        (b'{"a": 1.5}', ErrorCode.MALFORMED, 400),
    ]:
        status, answer = sim.handle(raw, NOW)
        doc = json.loads(answer)
        assert (status, doc["error"]["code"]) == (http, code)
        protocol.check_signature(doc, sim.authority.signing_cert.public_key())


def test_an_unexpected_failure_is_an_internal_error_that_tells_nothing(sim: Simulator) -> None:
    dev = Device(sim)
    envelope = dev.register_request(sim.create_token(now=NOW))
    sim.db.close()  # every database call now fails
    status, resp = dev.exchange(envelope)
    assert status == 500
    assert resp.error is not None and resp.error.code is ErrorCode.INTERNAL_ERROR
    assert "sqlite" not in resp.error.message.lower()


def test_other_instance_key_cannot_act_for_an_instance(sim: Simulator) -> None:
    token = sim.create_token(uses=2, now=NOW)
    one, two = Device(sim, serial="A"), Device(sim, serial="B")
    one.register(token)
    two.register(token)
    # Two's key, one's certificate: the signature does not match the certificate.
    envelope = one.request(MessageType.DEREGISTER, {}, key=two.key)
    status, resp = one.exchange(envelope)
    assert (status, resp.error and resp.error.code) == (401, ErrorCode.BAD_SIGNATURE)
    # Two's certificate under one's PIID.
    envelope = two.request(MessageType.DEREGISTER, {}, piid=one.piid)
    status, resp = two.exchange(envelope)
    assert (status, resp.error and resp.error.code) == (400, ErrorCode.PIID_MISMATCH)


def test_admin_refusals(sim: Simulator) -> None:
    from ccx_agent.simulator.admin import AdminError

    with pytest.raises(AdminError, match="unknown tag"):
        sim.add_licenses("gold-seat", 1)
    with pytest.raises(AdminError, match="no account"):
        sim.create_token(account="nobody", now=NOW)
    with pytest.raises(AdminError, match="no account"):
        sim.remove_licenses(FLEX_STD, 1, account="nobody")
    with pytest.raises(AdminError, match="at least 1"):
        sim.create_token(uses=0, now=NOW)
    with pytest.raises(AdminError, match="no such token"):
        sim.revoke_token("nope")
    with pytest.raises(AdminError):
        sim.add_licenses(FLEX_STD, -1)


def test_tokens_are_stored_only_as_hashes(sim: Simulator, state_dir: Path) -> None:
    token = sim.create_token(now=NOW)
    assert len(token) >= 43  # 32 bytes, url-safe base64
    sim.close()
    data = b"".join(p.read_bytes() for p in state_dir.glob("ssm.db*"))
    assert token.encode() not in data
