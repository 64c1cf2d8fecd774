"""The agent's side of a file exchange: export the requests, import the answers.

Both sides use the protocol's two steps as the online client does
(:mod:`ccx_agent.ssm.messages`). An export builds and seals each request with
:class:`~ccx_agent.ssm.messages.Messages` (the same bodies, keys, CSRs and signatures the
client would send), and writes the envelope to the file instead of a socket. An import
reads each answer with :meth:`Messages.check <ccx_agent.ssm.messages.Messages.check>`
(chain, signature, echoed type, nonce and PIID, then the body and any issued certificate),
and applies it through the agent's own jobs (:meth:`Agent.register`,
:meth:`Agent.delivered`, :meth:`Agent.renew_auth`, :meth:`Agent.renew_id`), run against
the answer in hand (:class:`AnswerPort`, given to :meth:`Agent.answering`), so every rule
of the core applies as online, including that an answer is applied only while the
identity it was asked for is still this instance's.

What is added is what a file needs: the nonces of an export are recorded, an answer to a
nonce not recorded is refused, each recorded request is applied at most once (marked in
the transaction that applies it), and only the newest export is answered (an older one's
reports were exported again). A file is checked whole before anything in it is used, so
a bad file changes nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ccx_agent.agent import Agent, Outcome
from ccx_agent.errors import AgentError
from ccx_agent.licensing.timeutil import iso
from ccx_agent.offline import files
from ccx_agent.offline.plan import renew_id_due
from ccx_agent.ssm import protocol
from ccx_agent.ssm.identity import IdentityError, KeyStore
from ccx_agent.ssm.messages import Messages, Request, RetryableStatus
from ccx_agent.ssm.port import (
    Acknowledged,
    Authorized,
    Credentials,
    IdRenewed,
    Registered,
    SsmError,
    SsmRefused,
    Udi,
)
from ccx_agent.ssm.protocol import MAX_REPORTS, MessageType, ProtocolError
from ccx_agent.store.db import ExportRecord, RequestRecord, Tx
from ccx_agent.userfiles import reason

#: What stands for the token in an imported REGISTER (the token itself went on the file).
CARRIED_TOKEN = "(carried on the exchange file)"  # noqa: S105 - a placeholder, not a secret
LAST_EXPORT_SIZE_KEY = "offline_last_export_bytes"
#: Where an imported answer comes from, in the checks' messages.
FILE_LABEL = "the exchange file"

T = TypeVar("T")


class ExchangeError(AgentError):
    """A refused export or import: one line that says why; nothing was changed."""


def cert_digest(cred: Credentials | None) -> str | None:
    return hashlib.sha256(cred.cert).hexdigest() if cred is not None else None


class AnswerPort:
    """The port an import hands the agent's jobs: each call is answered by the answer in
    hand (:attr:`answer`), read by the same checks as an online one (:meth:`Messages.check`).

    A signed refusal is :class:`SsmRefused` as online; an answer that fails a check is
    :class:`~ccx_agent.ssm.port.SsmUnreachable`, which an import turns into a refused
    file (it never reaches the jobs as a communication failure).
    """

    def __init__(self, keys: KeyStore, anchors: list[x509.Certificate]) -> None:
        self.messages = Messages(keys, anchors, FILE_LABEL)
        self.answer: tuple[RequestRecord, bytes] | None = None
        #: The fingerprint of the key the exported REGISTER was made with.
        self.register_key: str | None = None

    def _answered(self, request: Request[T], now: datetime) -> T:
        if self.answer is None:
            raise SsmError("no answer in hand")
        record, raw = self.answer
        if record.type != request.type.value:
            raise SsmError(f"{request.type.value} asked, but the answer is to a {record.type}")
        sent = {"type": record.type, "nonce": record.nonce, "piid": record.piid}
        try:
            return self.messages.check(request, sent, 200, raw, {}, now)
        except RetryableStatus:
            raise SsmRefused(
                protocol.ErrorCode.INTERNAL_ERROR.value,
                "the server failed to answer this request; export again",
            ) from None

    def _registration_key(self) -> ec.EllipticCurvePrivateKey:
        """The key the exported REGISTER was made with (found by fingerprint), not
        whichever is newest."""
        keys = self.messages.keys
        if self.register_key is None:
            raise SsmError("the REGISTER answer has no recorded key")
        path = keys.dir / f"{self.register_key}.pem"
        if not path.is_file():
            raise SsmError(
                f"{path}: the key of the exported REGISTER is gone: export again with a token"
            )
        try:
            return keys.load(self.register_key)
        except IdentityError as exc:
            raise SsmError(str(exc)) from None

    def register(
        self,
        token: str,
        udi: Udi,
        license_type: str,
        now: datetime,
        current: Credentials | None = None,
    ) -> Registered:
        key = self._registration_key()
        request = self.messages.register(token, udi, license_type, current, key=key)
        return self._answered(request, now)

    def renew_id(self, cred: Credentials, now: datetime) -> IdRenewed:
        return self._answered(self.messages.renew_id(cred), now)

    def authorize(
        self, cred: Credentials, license_type: str, usage: Mapping[str, int], now: datetime
    ) -> Authorized:
        return self._answered(self.messages.authorize(cred, license_type, usage), now)

    def report(
        self, cred: Credentials, reports: Sequence[Mapping[str, Any]], now: datetime
    ) -> Acknowledged:
        return self._answered(self.messages.report(cred, reports), now)

    def deregister(self, cred: Credentials, now: datetime) -> None:
        self._answered(self.messages.deregister(cred), now)

    def keep_only(self, cred: Credentials) -> None:
        self.messages.keep_only(cred)

    def forget(self) -> None:
        self.messages.forget()

    def close(self) -> None:
        """A file holds no connection."""


# --- export --------------------------------------------------------------------------


@dataclass
class ExportResult:
    number: int
    export: str
    path: Path
    carries: dict[str, int]
    first_report: str | None = None
    last_report: str | None = None
    size: int = 0

    def lines(self) -> list[str]:
        c = self.carries
        out = [f"export #{self.number} written to {self.path} ({self.size:,} bytes):"]
        if c.get("REGISTER"):
            out.append("  REGISTER with the ID token (the key stays on this host)")
        if c.get("reports"):
            out.append(
                f"  {c['reports']:,} report(s) in {c['REPORT_USAGE']} message(s), intervals "
                f"{self.first_report} to {self.last_report}"
            )
        elif not c.get("REGISTER"):
            out.append("  no pending reports")
        if c.get("AUTHORIZE"):
            out.append("  an authorization renewal")
        if c.get("RENEW_ID"):
            out.append("  an ID certificate renewal")
        if c.get("DEREGISTER"):
            out.append(
                "  the DEREGISTRATION of this instance: SSM releases its licences when it "
                "answers; importing the answer wipes the identity here"
            )
        out.append(
            "carry it to SSM (or 'ccx-agent ssm offline answer'), then bring the answer back "
            "to 'ccx-agent offline import'"
        )
        return out


def export(
    agent: Agent,
    keys: KeyStore,
    path: Path,
    now: datetime,
    *,
    token: str | None = None,
    renew_id: bool = False,
    deregister: bool = False,
) -> ExportResult:
    """Write every request the agent would send now to ``path``, record their nonces.

    The reports are paged from the outbox (:data:`MAX_REPORTS` per message) and each
    envelope is written as it is sealed, so memory does not grow with the outbox. The
    records are committed after the file is complete and before it is put in place: an
    export that fails leaves no file and no record; one that is superseded by a newer
    export is refused at import (its reports are in the newer file too).

    ``deregister``: the pending reports, then a DEREGISTER signed with the current
    identity (no renewal): SSM releases the instance's licences when it answers, and the
    import of that answer wipes the identity here, as an online ``deregister`` does.
    """
    state = agent.state()
    with agent.store.read() as tx:
        cred = tx.credentials()
    ident = state.identity
    if deregister and token is not None:
        raise ExchangeError("--deregister and --token-file: deregister, or register, not both")
    if deregister and (ident is None or cred is None):
        raise ExchangeError("this instance is not registered: there is nothing to deregister")
    if token is not None:
        if not token.strip():
            raise ExchangeError("the ID token is empty")
        if state.registered and ident is not None:
            raise ExchangeError(
                f"already registered as PIID {ident.piid}: an export with a token registers "
                "this instance; export without --token-file to renew and report"
            )
    elif ident is None or cred is None:
        raise ExchangeError(
            "this instance is not registered: export with --token-file FILE to register by file"
        )
    elif not state.registered and not deregister:
        raise ExchangeError(
            f"the registration of PIID {ident.piid} expired: export with --token-file FILE "
            "(a new ID token) to register again"
        )
    export_id = uuid.uuid4().hex
    head = {
        "format": files.FORMAT,
        "kind": files.REQUEST,
        "export": export_id,
        "created_at": iso(now),
        "piid": None if token is not None else (cred.piid if cred else None),
        "udi": {"pid": agent.udi.pid, "serial": agent.udi.serial, "uuid": agent.udi.uuid},
        "license_type": state.license_type.value,
    }
    sealer = Messages(keys, [], FILE_LABEL)
    carries = {"REGISTER": 0, "REPORT_USAGE": 0, "reports": 0, "AUTHORIZE": 0, "RENEW_ID": 0}
    if deregister:
        carries["DEREGISTER"] = 0
    records: list[tuple[str, int, str, str | None, int | None, int | None, str]] = []
    first = last = None
    try:
        writer = files.Writer(path, head)
    except OSError as exc:
        raise ExchangeError(f"{path}: cannot write it: {reason(exc)}") from None
    try:

        def add(
            envelope: dict[str, Any],
            first_seq: int | None = None,
            last_seq: int | None = None,
            **extra: Any,
        ) -> None:
            writer.add(envelope)
            carries[envelope["type"]] += 1
            records.append(
                (
                    envelope["nonce"],
                    len(records),
                    envelope["type"],
                    envelope["piid"],
                    first_seq,
                    last_seq,
                    protocol.canonical(extra).decode(),
                )
            )

        if token is not None:
            lt = state.license_type.value
            envelope = sealer.register(token, agent.udi, lt, cred).seal(now)
            csr = protocol.csr_from_text(envelope["body"]["csr"])
            key = csr.public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)
            add(envelope, key=protocol.key_fingerprint(key))
        else:
            assert cred is not None and ident is not None
            seq = 0
            with agent.store.read() as tx:
                while page := tx.outbox_after(seq, MAX_REPORTS, cred.piid):
                    payloads = [p for _, p in page]
                    add(
                        sealer.report(cred, payloads).seal(now),
                        page[0][0],
                        page[-1][0],
                        reports=len(page),
                    )
                    carries["reports"] += len(page)
                    first = first or str(payloads[0]["start"])
                    last = str(payloads[-1]["start"])
                    seq = page[-1][0]
            if deregister:  # last: the reports before it are acknowledged first
                add(sealer.deregister(cred).seal(now))
            else:
                usage = agent.auth_usage(state)
                lt = state.license_type.value
                add(
                    sealer.authorize(cred, lt, usage).seal(now),
                    tags=sorted(state.tags_in_use),
                )
                if renew_id or renew_id_due(state, now, agent.timers):
                    add(sealer.renew_id(cred).seal(now))
        writer.finish()
        with agent.store.transaction() as tx:
            if cert_digest(tx.credentials()) != cert_digest(cred):
                raise ExchangeError(
                    "the identity changed while the file was written (a registration?): "
                    "export again"
                )
            number = tx.add_export(
                export_id, now, cred.piid if cred else None, cert_digest(cred), carries, records
            )
            tx.set_meta(LAST_EXPORT_SIZE_KEY, str(writer.size))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return ExportResult(number, export_id, path, carries, first, last, writer.size)


# --- import --------------------------------------------------------------------------


@dataclass
class ImportResult:
    changed: bool
    lines: list[str] = field(default_factory=list)


def _refuse(path: Path, message: str) -> NoReturn:
    raise ExchangeError(f"{path}: refused: {message}; nothing was changed")


def _check_seal(sealed_file: files.Sealed, anchors: list[x509.Certificate], now: datetime) -> None:
    """The answer file's seal: signed by a certificate that chains to the trust anchor."""
    seal = sealed_file.seal
    try:
        if set(seal) != {"count", "sha256", "sent_at", "cert", "chain", "signature"}:
            raise ProtocolError(protocol.ErrorCode.MALFORMED, "the seal is not signed")
        cert = protocol.cert_from_text(seal["cert"], "seal.cert")
        chain_field = seal["chain"]
        if not isinstance(chain_field, list) or len(chain_field) > 4:
            raise ProtocolError(protocol.ErrorCode.MALFORMED, "seal.chain is not a short list")
        chain = [protocol.cert_from_text(c, "seal.chain[]") for c in chain_field]
        protocol.check_signature(seal, protocol.public_key(cert))
        protocol.verify_chain(cert, chain, anchors, now, "the answer file's signing certificate")
    except (ProtocolError, ValueError, TypeError) as exc:
        _refuse(sealed_file.path, f"the file's seal does not verify ({exc})")


def _export_of(tx: Tx, sealed_file: files.Sealed) -> ExportRecord:
    path = sealed_file.path
    export_id = sealed_file.head.get("export")
    record = tx.export(export_id) if isinstance(export_id, str) else None
    if record is None:
        _refuse(
            path,
            "it answers an export this instance never made (a file of another instance?)",
        )
    latest = tx.latest_export()
    assert latest is not None
    if latest.number != record.number:
        made = f"export #{latest.number} of {iso(latest.created_at)}"
        if record.imported_at is not None:
            _refuse(
                path,
                f"replayed: the answer to export #{record.number} was imported on "
                f"{iso(record.imported_at)} and {made} has been made since",
            )
        _refuse(
            path,
            f"stale: it answers export #{record.number} of {iso(record.created_at)}, "
            f"superseded by {made} which carries its reports again: import the answer to "
            f"export #{latest.number}",
        )
    return record


def import_answers(
    agent: Agent,
    keys: KeyStore,
    anchors: list[x509.Certificate],
    path: Path,
    now: datetime,
) -> ImportResult:
    """Check the whole answer file, then apply each answer not applied yet, in order."""
    try:
        sealed_file = files.check(path, files.RESPONSE)
    except files.FileError as exc:
        _refuse(exc.path, exc.reason)
    _check_seal(sealed_file, anchors, now)
    client = AnswerPort(keys, anchors)
    with agent.store.read() as tx:
        record = _export_of(tx, sealed_file)
        expected = tx.export_requests(record.number)
        cred = tx.credentials()
    if sealed_file.count != expected:
        _refuse(
            path,
            f"it holds {sealed_file.count} answer(s) but export #{record.number} carried "
            f"{expected} request(s)",
        )
    # Pass 1: every answer is read and checked; nothing is applied.
    todo = 0
    seen: set[str] = set()
    try:
        for n, raw in enumerate(files.envelopes(sealed_file), start=1):
            request = _request_of(agent, raw, record, seen, path, n)
            if request.applied_at is not None:
                continue  # applied before: the seal vouches for it, nothing to check again
            todo += 1
            if cert_digest(cred) != record.cert_sha256 or (
                cred is not None and cred.piid != record.piid
            ):
                _refuse(
                    path,
                    f"export #{record.number} was made for another identity than this "
                    "instance's now (registered again, or deregistered, since): export again",
                )
            try:
                _answer(agent, client, request, raw, now, cred, apply=False)
            except SsmRefused:
                pass  # a signed refusal is an answer too: applied as online
            except SsmError as exc:
                _refuse(path, f"answer {n} ({request.type}): {exc}")
    except files.FileError as exc:
        _refuse(exc.path, exc.reason)
    if todo == 0:
        when = iso(record.imported_at) if record.imported_at else "earlier"
        return ImportResult(
            False,
            [
                f"the answer to export #{record.number} was already imported ({when}): nothing changed"
            ],
        )
    # Pass 2: apply, each answer in the transaction that records it as applied. The
    # agent's jobs ask their port; for this import the port is the file.
    lines: list[str] = []
    try:
        for raw in files.envelopes(sealed_file):
            request = _request_of(agent, raw, record, set(), path, 0)
            if request.applied_at is not None:
                continue
            nonce = request.nonce

            def mark(tx: Tx, nonce: str = nonce) -> None:
                tx.request_applied(nonce, now)

            with agent.answering(client, mark):
                with agent.store.read() as tx:
                    cred = tx.credentials()
                lines.append(_answer(agent, client, request, raw, now, cred, apply=True))
    except files.FileError as exc:
        raise ExchangeError(
            f"{exc}: the answers read before were applied; import the file again"
        ) from None
    with agent.store.transaction() as tx:
        tx.export_imported(record.number, now)
    summary = _summary(lines)
    return ImportResult(True, [f"imported the answer to export #{record.number}:", *summary])


def _request_of(
    agent: Agent, raw: bytes, record: ExportRecord, seen: set[str], path: Path, n: int
) -> RequestRecord:
    try:
        envelope = protocol.decode(raw)
    except ProtocolError as exc:
        _refuse(path, f"answer {n} is not an envelope ({exc.message})")
    nonce = envelope.get("nonce")
    with agent.store.read() as tx:
        request = tx.export_request(nonce) if isinstance(nonce, str) else None
    if request is None or request.number != record.number:
        _refuse(path, f"answer {n} answers no request of export #{record.number} (unknown nonce)")
    if nonce in seen:
        _refuse(path, f"answer {n} answers a request twice")
    seen.add(request.nonce)
    return request


def _answer(
    agent: Agent,
    client: AnswerPort,
    request: RequestRecord,
    raw: bytes,
    now: datetime,
    cred: Credentials | None,
    *,
    apply: bool,
) -> str:
    """Read one answer (``apply`` False: check only) or apply it through the agent's jobs;
    a line saying what it did."""
    client.answer = (request, raw)
    try:
        type_ = MessageType(request.type)
        if type_ is MessageType.REGISTER:
            client.register_key = str(request.extra.get("key"))
            if not apply:
                client.register(CARRIED_TOKEN, agent.udi, agent.cfg.license.type.value, now, cred)
                return ""
            # force: the identity the export replaced is still the current one (checked).
            outcome = agent.register(CARRIED_TOKEN, now, force=True)
            return outcome.message if outcome.ok else f"registration failed: {outcome.message}"
        if cred is None:
            raise SsmError("this instance holds no identity")
        if type_ is MessageType.REPORT_USAGE:
            assert request.first_seq is not None and request.last_seq is not None
            with agent.store.read() as tx:
                ids = tx.outbox_ids_between(request.first_seq, request.last_seq, cred.piid)
            try:
                ack = client.report(cred, [{"id": i} for i in ids], now)
            except SsmRefused as exc:
                if apply:
                    agent.report_failed(now, ids, exc)
                raise
            if not apply:
                return ""
            done, _ = agent.delivered(now, cred, ids, Acknowledged(ack.acked, ack.entitlements))
            return f"reports acknowledged: {len(done)}"
        if type_ is MessageType.AUTHORIZE:
            if not apply:
                client.authorize(cred, agent.cfg.license.type.value, {}, now)
                return ""
            tags = frozenset(str(t) for t in request.extra.get("tags", []))
            return _outcome("authorization", agent.renew_auth(now, tags=tags))
        if type_ is MessageType.RENEW_ID:
            if not apply:
                client.renew_id(cred, now)
                return ""
            return _outcome("ID certificate", agent.renew_id(now))
        if type_ is MessageType.DEREGISTER:
            if not apply:
                client.deregister(cred, now)
                return ""
            outcome = agent.deregister(now)
            if not outcome.server_told:  # a refusal other than "already deregistered"
                return f"deregistration refused by SSM: {outcome.message}"
            return f"{outcome.message}: SSM released its licences"
        raise SsmError(f"a {type_.value} is never exported")
    except SsmRefused as exc:
        if apply:
            return f"{request.type} refused by SSM: {exc}"
        raise
    finally:
        client.answer = None


def _outcome(what: str, outcome: Outcome) -> str:
    return f"{what}: {outcome.message}" if outcome.ok else f"{what} not renewed: {outcome.message}"


def _summary(lines: list[str]) -> list[str]:
    """One line per kind of answer: a year of report messages is one line, not 36."""
    acked = 0
    out: list[str] = []
    for line in lines:
        if line.startswith("reports acknowledged: "):
            acked += int(line.rsplit(" ", 1)[1])
        elif line:
            out.append(f"  {line}")
    return [f"  reports acknowledged: {acked:,}", *out]
