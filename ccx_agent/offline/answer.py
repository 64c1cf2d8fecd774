"""The SSM's side of a file exchange: ``ccx-agent ssm --state-dir DIR offline answer``.

Each request of the file goes through :meth:`Simulator.handle`, the code that answers
the HTTPS endpoint, with one difference a file needs: a request may be up to
:data:`MAX_REQUEST_AGE` old (it was carried from another room), and its nonce is then
remembered as long, so a request file is answered once. The answers are written, as
they come, to one file sealed and signed with the simulator's signing key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ccx_agent.licensing.timeutil import iso
from ccx_agent.offline import files
from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm import protocol
from ccx_agent.ssm.protocol import ProtocolError
from ccx_agent.userfiles import reason

#: The oldest request file answered: older, the agent must export again.
MAX_REQUEST_AGE = timedelta(days=30)


class AnswerError(Exception):
    """A request file that is not answered: one line why; no answer file is written."""


@dataclass(frozen=True, slots=True)
class Answered:
    path: Path
    count: int
    by_type: dict[str, int]
    refused: dict[str, int]

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(self.by_type.items())) or "nothing"
        out = [f"{self.count} request(s) answered ({kinds}) into {self.path}"]
        for code, n in sorted(self.refused.items()):
            out.append(f"  {n} refused: {code}")
        return out


def answer(simulator: Simulator, request: Path, output: Path, now: datetime) -> Answered:
    """Answer every request of ``request`` into ``output`` (written whole, or not at all)."""
    try:
        sealed = files.check(request, files.REQUEST)
    except files.FileError as exc:
        raise AnswerError(str(exc)) from None
    try:
        created = protocol.instant(sealed.head, "created_at", "head.")
    except ProtocolError as exc:
        raise AnswerError(f"{request}: {exc.message}") from None
    if now - created > MAX_REQUEST_AGE:
        raise AnswerError(
            f"{request}: made at {iso(created)}, more than {MAX_REQUEST_AGE.days} days ago: "
            "export a new one"
        )
    _not_answered(simulator, sealed)
    export = sealed.head.get("export")
    head = {
        "format": files.FORMAT,
        "kind": files.RESPONSE,
        "export": export if isinstance(export, str) else None,
        "piid": sealed.head.get("piid"),
        "answered_at": iso(now),
    }
    by_type: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    try:
        writer = files.Writer(output, head)
    except OSError as exc:
        raise AnswerError(f"{output}: cannot write it: {reason(exc)}") from None
    try:
        for raw in files.envelopes(sealed):
            _, body = simulator.handle(raw, now, max_age=MAX_REQUEST_AGE)
            answer_doc = protocol.decode(body)
            by_type[str(answer_doc.get("type"))] += 1
            if answer_doc.get("status") == protocol.Status.ERROR.value:
                refused[str((answer_doc.get("error") or {}).get("code"))] += 1
            writer.add(answer_doc)
        authority = simulator.authority
        seal = {
            **writer.seal(),
            "sent_at": iso(now),
            "cert": protocol.cert_to_text(authority.signing_cert),
            "chain": [],
        }
        writer.finish(protocol.sign(seal, authority.signing_key))
        writer.commit()
    except files.FileError as exc:
        writer.abort()
        raise AnswerError(str(exc)) from None
    except BaseException:
        writer.abort()
        raise
    return Answered(output, writer.count, dict(by_type), dict(refused))


def _not_answered(simulator: Simulator, sealed: files.Sealed) -> None:
    """A request file answered before is refused whole (its answer is the one to carry
    back), rather than answered again with a REPLAYED_NONCE per request."""
    for raw in files.envelopes(sealed):
        try:
            nonce = protocol.decode(raw).get("nonce")
        except ProtocolError:
            return  # handle() answers what it cannot read with a signed MALFORMED
        if isinstance(nonce, str):
            with simulator.db.read() as tx:
                seen = tx.nonce_seen_at(nonce)
            if seen is not None:
                raise AnswerError(
                    f"{sealed.path}: already answered at {iso(seen)}: carry that answer back "
                    "to the agent, or export a new file"
                )
        return
