"""The protocol server: one request's bytes in, one signed response out (docs/protocol.md).

:meth:`Simulator.handle` is the whole server side of ``ccx-sl/1``; the HTTPS layer
(:mod:`.server`) only carries bytes to it, and the what-if simulator calls it in process
with its simulated clock. Checks run in the order of docs/protocol.md §4, and every state
change of a request (its nonce included) happens in one transaction, so a refused or
failed request changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ccx_agent.licensing.catalogue import LicenseType, tags_of, unknown_tags
from ccx_agent.licensing.timeutil import iso
from ccx_agent.simulator.admin import Admin, pooled_usage, purchased_view
from ccx_agent.simulator.ca import (
    DEFAULT_ID_LIFETIME,
    Authority,
    create_authority,
    load_or_create,
)
from ccx_agent.simulator.db import DB_NAME, Database, Instance, Tx, token_hash
from ccx_agent.ssm import protocol
from ccx_agent.ssm.port import Udi
from ccx_agent.ssm.protocol import (
    HTTP_STATUS,
    MAX_REPORTS,
    MAX_SKEW,
    ErrorCode,
    MessageType,
    ProtocolError,
    Request,
    cert_to_text,
    check_request,
    counts,
    csr_from_text,
    instant,
    key_fingerprint,
    mapping,
    open_request,
    seal_response,
    text,
)

log = logging.getLogger(__name__)

#: A nonce is remembered this long: any request older than MAX_SKEW is refused as stale
#: anyway, so twice that leaves no window for a replay whatever the two clocks say.
NONCE_MEMORY = 2 * MAX_SKEW

Body = dict[str, Any]


def _refuse(code: ErrorCode, message: str) -> ProtocolError:
    return ProtocolError(code, message)


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message)


def _license_type(value: str) -> LicenseType:
    try:
        return LicenseType(value)
    except ValueError:
        known = ", ".join(t.value for t in LicenseType)
        raise _bad(f"unknown license type {value[:40]!r} (known: {known})") from None


def _check_tags(license_type: LicenseType, usage: Mapping[str, int], where: str) -> None:
    wrong = unknown_tags(license_type, usage)
    if wrong:
        raise _bad(f"{where} has tags that are not {license_type.value} tags: {', '.join(wrong)}")


class Simulator(Admin):
    """An SSM: its CA, its database, and the protocol on top of them."""

    def __init__(
        self,
        authority: Authority,
        db: Database,
        *,
        id_lifetime: timedelta = DEFAULT_ID_LIFETIME,
        new_piid: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(db)
        if id_lifetime <= timedelta(0):
            raise ValueError("the ID certificate lifetime must be positive")
        self.authority = authority
        self.id_lifetime = id_lifetime
        #: Random PIIDs; a what-if run numbers them so that its output is reproducible.
        self.new_piid = new_piid or (lambda: str(uuid.uuid4()))
        self._anchors = [authority.root]
        self._handlers: dict[MessageType, Callable[[Tx, Instance, Request, datetime], Body]] = {
            MessageType.RENEW_ID: self._renew_id,
            MessageType.AUTHORIZE: self._authorize,
            MessageType.REPORT_USAGE: self._report_usage,
            MessageType.DEREGISTER: self._deregister,
        }

    @classmethod
    def open(
        cls, state_dir: Path, now: datetime, *, id_lifetime: timedelta = DEFAULT_ID_LIFETIME
    ) -> Simulator:
        """The simulator of ``state_dir``, its CA and database created on first use."""
        authority = load_or_create(state_dir, now)
        return cls(authority, Database(state_dir / DB_NAME), id_lifetime=id_lifetime)

    @classmethod
    def in_memory(cls, now: datetime, *, id_lifetime: timedelta = DEFAULT_ID_LIFETIME) -> Simulator:
        """A throw-away simulator (new CA, database in memory), for in-process runs."""
        return cls(create_authority(now), Database(None), id_lifetime=id_lifetime)

    @property
    def root(self) -> x509.Certificate:
        """The trust anchor of this simulator's responses and ID certificates."""
        return self.authority.root

    # --- the protocol ---------------------------------------------------------------------

    def handle(
        self, raw: bytes, now: datetime, *, max_age: timedelta | None = None
    ) -> tuple[int, bytes]:
        """Answer one request: ``(HTTP status, signed response envelope)``.

        Every answer is signed, errors included. An unexpected failure is logged here and
        answered ``INTERNAL_ERROR`` without a word about what went wrong. ``max_age``: how
        old a request may be (a request carried on a file, :mod:`ccx_agent.offline`; its
        nonce is then remembered that long, so it is answered once).
        """
        echo = _peek(raw)
        try:
            if echo is None:
                request = open_request(raw, now, self._anchors, max_age=max_age)
            else:  # decoded once: the checks are those of open_request
                request = check_request(echo, now, self._anchors, max_age=max_age)
            body, piid = self._process(request, now, max_age or NONCE_MEMORY)
            return 200, self._seal(echo, now, body=body, piid=piid)
        except ProtocolError as exc:
            return HTTP_STATUS.get(exc.code, 400), self._seal(echo, now, error=exc)
        except Exception:
            log.exception("internal error while handling a request")
            failed = _refuse(ErrorCode.INTERNAL_ERROR, "the server failed; try again later")
            return 500, self._seal(echo, now, error=failed)

    def refusal(self, error: ProtocolError, now: datetime) -> tuple[int, bytes]:
        """A signed error answer to a request that was not even read (too large, say)."""
        return HTTP_STATUS.get(error.code, 400), self._seal(None, now, error=error)

    def _seal(
        self,
        echo: Mapping[str, Any] | None,
        now: datetime,
        *,
        body: Body | None = None,
        piid: str | None = None,
        error: ProtocolError | None = None,
    ) -> bytes:
        envelope = seal_response(
            echo,
            now,
            self.authority.signing_key,
            self.authority.signing_cert,
            body=body,
            error=error,
            piid=piid,
        )
        return protocol.canonical(envelope)

    def _process(
        self, request: Request, now: datetime, memory: timedelta
    ) -> tuple[Body, str | None]:
        piid: str | None
        with self.db.transaction() as tx:
            if tx.nonce_seen(request.nonce):
                raise _refuse(ErrorCode.REPLAYED_NONCE, "this nonce was already used")
            if request.type is MessageType.REGISTER:
                body, piid = self._register(tx, request, now)
            elif request.type is MessageType.PING:
                body, piid = self._ping(tx, request)
            else:
                inst = self._sender(tx, request)
                body = self._handlers[request.type](tx, inst, request, now)
                piid = inst.piid
                tx.touch(piid, now)
            tx.prune_nonces(now - NONCE_MEMORY, now)
            tx.add_nonce(request.nonce, now, keep_until=max(request.sent_at, now) + memory)
        return body, piid

    def _sender(self, tx: Tx, request: Request) -> Instance:
        """The instance a signed request comes from (docs/protocol.md §4.7)."""
        assert request.piid is not None and request.cert is not None
        inst = tx.instance(request.piid)
        if inst is None:
            raise _refuse(ErrorCode.INSTANCE_UNKNOWN, "no instance has this PIID")
        # Our root signed it, but this database never recorded it (a restored or reset
        # database): a certificate we cannot account for is not trusted.
        if tx.certificate_owner(request.cert.serial_number) != inst.piid:
            raise _refuse(
                ErrorCode.UNTRUSTED_CERTIFICATE, "this server has no record of the certificate"
            )
        if not inst.active:
            raise _refuse(ErrorCode.INSTANCE_DEREGISTERED, "the instance was deregistered")
        return inst

    def _entitlement_body(self, tx: Tx, inst: Instance) -> Body:
        """``entitlements`` (the pool less what the account's other active instances last
        reported, never below 0) and ``purchased`` (the account's totals)."""
        tags = tags_of(LicenseType(inst.license_type))
        purchased = tx.purchased(inst.account)
        others = pooled_usage(tx, inst.account, exclude=inst.piid)
        return {
            "entitlements": {t: max(0, purchased.get(t, 0) - others.get(t, 0)) for t in tags},
            "purchased": purchased_view(purchased, tags),
        }

    def _issue(
        self, tx: Tx, csr: x509.CertificateSigningRequest, inst: Instance, now: datetime
    ) -> x509.Certificate:
        udi = Udi(inst.pid, inst.serial, inst.uuid)
        cert = self.authority.issue_id_certificate(csr, inst.piid, udi, now, self.id_lifetime)
        tx.add_certificate(
            cert.serial_number,
            inst.piid,
            cert.public_bytes(serialization.Encoding.DER),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
        )
        return cert

    # REGISTER ---------------------------------------------------------------------------

    def _register(self, tx: Tx, request: Request, now: datetime) -> tuple[Body, str]:
        csr = request.csr
        assert csr is not None
        body = request.body
        token = text(body, "token", "body.")
        udi_doc = mapping(body, "udi", "body.")
        udi = Udi(
            text(udi_doc, "pid", "body.udi."),
            text(udi_doc, "serial", "body.udi."),
            text(udi_doc, "uuid", "body.udi."),
        )
        license_type = _license_type(text(body, "license_type", "body."))
        _check_udi(udi, csr)
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        fingerprint = key_fingerprint(key)
        digest = token_hash(token)
        stored = tx.token(digest)
        if stored is None:
            raise _refuse(ErrorCode.TOKEN_UNKNOWN, "no such registration token")

        existing = tx.active_instance_by_key(fingerprint)
        if existing is not None:
            # A repeated REGISTER (the first answer was lost): the same instance again,
            # the token not used again.
            if existing.account != stored.account:
                raise _bad("this key is registered in another account")
            cert = self._current_certificate(tx, csr, existing, now)
            tx.touch(existing.piid, now)
            return self._registered(tx, existing, cert), existing.piid

        if stored.revoked:
            raise _refuse(ErrorCode.TOKEN_REVOKED, "the registration token was revoked")
        if now >= stored.expires_at:
            raise _refuse(
                ErrorCode.TOKEN_EXPIRED,
                f"the registration token expired at {iso(stored.expires_at)}",
            )
        if stored.used >= stored.uses:
            raise _refuse(ErrorCode.TOKEN_USED_UP, "the registration token has no uses left")

        tx.use_token(digest)
        replaced = tx.deregister_udi(udi.pid, udi.serial, udi.uuid, now)
        inst = Instance(
            self.new_piid(),
            stored.account,
            udi.pid,
            udi.serial,
            udi.uuid,
            fingerprint,
            license_type.value,
            now,
            None,
            now,
        )
        tx.add_instance(inst)
        cert = self._issue(tx, csr, inst, now)
        log.info(
            "registered instance %s in account %s%s",
            inst.piid,
            inst.account,
            f" (replacing {replaced} earlier instance(s) of the same UDI)" if replaced else "",
        )
        return self._registered(tx, inst, cert), inst.piid

    def _current_certificate(
        self, tx: Tx, csr: x509.CertificateSigningRequest, inst: Instance, now: datetime
    ) -> x509.Certificate:
        """The instance's stored certificate, or a new one if it is no longer valid (a
        repeated REGISTER must leave the agent with a usable identity)."""
        der = tx.latest_certificate(inst.piid)
        if der is not None:
            cert = x509.load_der_x509_certificate(der)
            if cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
                return cert
        return self._issue(tx, csr, inst, now)

    def _registered(self, tx: Tx, inst: Instance, cert: x509.Certificate) -> Body:
        return {
            "piid": inst.piid,
            "cert": cert_to_text(cert),
            "chain": [],
            "account": inst.account,
            **self._entitlement_body(tx, inst),
        }

    # the others ---------------------------------------------------------------------------

    def _renew_id(self, tx: Tx, inst: Instance, request: Request, now: datetime) -> Body:
        csr = csr_from_text(request.body.get("csr"))
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        if key_fingerprint(key) != inst.key_fingerprint:
            raise _bad("RENEW_ID must certify the instance's own key (register to change keys)")
        cert = self._issue(tx, csr, inst, now)
        return {"cert": cert_to_text(cert), "chain": []}

    def _authorize(self, tx: Tx, inst: Instance, request: Request, now: datetime) -> Body:
        license_type = _license_type(text(request.body, "license_type", "body."))
        if license_type.value != inst.license_type:
            raise _bad(
                f"the instance is registered as {inst.license_type}, not {license_type.value}; "
                "register again to change the license type"
            )
        _check_tags(license_type, counts(request.body, "usage", "body."), "body.usage")
        return self._entitlement_body(tx, inst)

    def _report_usage(self, tx: Tx, inst: Instance, request: Request, now: datetime) -> Body:
        reports = request.body.get("reports")
        if not isinstance(reports, list):
            raise _refuse(ErrorCode.MALFORMED, "body.reports must be a list")
        if len(reports) > MAX_REPORTS:
            raise _bad(f"at most {MAX_REPORTS} reports in one message, got {len(reports)}")
        license_type = LicenseType(inst.license_type)
        acked: dict[str, tuple[str, str, str, dict[str, int]]] = {}
        for n, item in enumerate(reports):
            where = f"body.reports[{n}]."
            if not isinstance(item, dict):
                raise _refuse(ErrorCode.MALFORMED, f"body.reports[{n}] must be an object")
            report_id = text(item, "id", where)
            start, end = instant(item, "start", where), instant(item, "end", where)
            usage = counts(item, "usage", where)
            if report_id != f"{inst.piid}:{item['start']}":
                raise _bad(f"{where}id is not '<this PIID>:<start>' (another instance's report?)")
            if end <= start:
                raise _bad(f"{where}end is not after its start")
            if end > now + MAX_SKEW:
                raise _bad(f"{where}end is in the future: the interval has not ended")
            _check_tags(license_type, usage, f"{where}usage")
            # The first of repeated ids is stored (a dict keeps the order of first sight).
            acked.setdefault(report_id, (report_id, iso(start), iso(end), usage))
        # Checked all before storing any: one bad report refuses the batch (the
        # transaction would roll back anyway). An id stored before is acknowledged again.
        known = tx.known_reports(list(acked))
        tx.add_reports(inst.piid, [r for rid, r in acked.items() if rid not in known], now)
        return {"acked": list(acked), **self._entitlement_body(tx, inst)}

    def _ping(self, tx: Tx, request: Request) -> tuple[Body, str | None]:
        """PING changes nothing (not even the instance's last contact); signed by an
        instance, the instance must be one this server trusts, as for any other message."""
        if request.piid is None:
            return {"instance": None}, None
        inst = self._sender(tx, request)
        return {"instance": "active", "license_type": inst.license_type}, inst.piid

    def _deregister(self, tx: Tx, inst: Instance, request: Request, now: datetime) -> Body:
        tx.deregister(inst.piid, now)
        log.info("deregistered instance %s", inst.piid)
        return {}


def _check_udi(udi: Udi, csr: x509.CertificateSigningRequest) -> None:
    """The UDI is a real UUID and the CSR names it (docs/protocol.md §3)."""
    try:
        uuid.UUID(udi.uuid)
    except ValueError:
        raise _bad("body.udi.uuid is not a UUID") from None
    subject = csr.subject
    cn = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    sn = subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    if [a.value for a in cn] != [udi.uuid] or [a.value for a in sn] != [udi.serial]:
        raise _bad("the CSR's subject must be CN=<UDI uuid>, serialNumber=<UDI serial>")


def _peek(raw: bytes) -> dict[str, Any] | None:
    """The request as far as it can be read, to echo its type, nonce and PIID in the
    answer (an error answer echoes what it can; nothing in it is trusted)."""
    try:
        return protocol.decode(raw)
    except ProtocolError:
        return None
