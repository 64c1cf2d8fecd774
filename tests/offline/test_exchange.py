"""The file exchange between two rooms: real files, the real simulator (its HTTPS code,
``Simulator.handle``, and its SQLite file), a real agent store and key directory; the
clock is injected. Every refusal is checked to leave every table and key file as it was.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from ccx_agent.licensing.lifecycle import Authorization, Registration
from ccx_agent.licensing.timeutil import iso
from ccx_agent.offline import files
from ccx_agent.offline.answer import AnswerError
from ccx_agent.offline.exchange import ExchangeError
from ccx_agent.ssm import protocol
from tests.offline.site import PREMIUM, STANDARD, START, STEP, Site

DAY = timedelta(days=1)
USAGE = {STANDARD: 4, PREMIUM: 1}


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Site(tmp_path)
    yield s
    s.close()


def mnemonics(site: Site) -> Counter[str]:
    return Counter(r.mnemonic for r in site.emitted)


def test_register_by_file_then_every_report_is_delivered_once(site: Site) -> None:
    result = site.register()
    state = site.agent.state()
    assert state.registration is Registration.REGISTERED and state.identity is not None
    piid = state.identity.piid
    assert any(f"PIID {piid}" in line for line in result.lines)
    assert [i["piid"] for i in site.sim.show(site.now)["instances"]] == [piid]
    # The key stayed on the host: one key file, the one the certificate names.
    assert len(list((site.dir / "keys").glob("*.pem"))) == 1
    assert mnemonics(site)["REGISTER_SUCCESS"] == 1

    site.live(DAY, USAGE)
    pending = site.outbox()
    assert len(pending) == 96 and all(p.startswith(f"{piid}:") for p in pending)
    result = site.exchange()
    assert site.outbox() == []
    assert "  reports acknowledged: 96" in result.lines
    site.live(2 * DAY, USAGE)
    site.exchange()
    ids = [r["id"] for r in site.sim.reports()]
    assert len(ids) == 3 * 96 and len(set(ids)) == len(ids)
    assert site.outbox() == []
    assert state.authorization is not Authorization.AUTHORIZATION_EXPIRED
    # The request file holds no private key; the REGISTER carries the token as online.
    request = (site.usb / "site-request-1.json").read_text()
    assert "PRIVATE KEY" not in request and '"token":' in request
    assert (site.usb / "site-request-1.json").stat().st_mode & 0o777 == 0o600


def test_importing_the_same_answer_twice_changes_nothing(site: Site) -> None:
    site.register()
    site.live(DAY, USAGE)
    response = site.answer(site.export())
    first = site.import_(response)
    assert first.changed
    before = site.snapshot()
    again = site.import_(response)
    assert not again.changed
    assert again.lines == [
        f"the answer to export #2 was already imported ({iso(site.now)}): nothing changed"
    ]
    assert site.snapshot() == before


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    old = data[offset]
    # Another printable character of the same class: JSON stays well-formed where it can.
    data[offset] = old + 1 if chr(old) not in '9fzZ"{}[],:' else (old - 1 if old != 34 else 39)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where",
    ["head", "envelope", "signature in an envelope", "seal digest", "seal signature", "truncated"],
)
def test_a_changed_answer_file_is_refused_whole(site: Site, where: str) -> None:
    site.register()
    site.live(DAY, USAGE)
    response = site.answer(site.export())
    text = response.read_bytes()
    lines = text.split(b"\n")
    second = len(lines[0]) + 1  # where the first envelope starts
    offsets = {
        "head": text.index(b'"answered_at":"') + 20,
        "envelope": second + lines[1].index(b'"acked":["') + 12,
        "signature in an envelope": second + lines[1].index(b'"signature":"') + 20,
        "seal digest": text.index(b'"sha256":"') + 15,
        "seal signature": text.rindex(b'"signature":"') + 20,
    }
    before = site.snapshot()
    if where == "truncated":
        response.write_bytes(text[: len(text) // 2])
    else:
        _flip(response, offsets[where])
    with pytest.raises(ExchangeError) as refused:
        site.import_(response)
    message = str(refused.value)
    assert "refused" in message and message.endswith("nothing was changed")
    assert "\n" not in message
    assert site.snapshot() == before
    assert len(site.outbox()) == 96


def test_an_answer_for_another_instance_is_refused(site: Site, tmp_path: Path) -> None:
    other = Site(tmp_path, "other", sim=site.sim, serial="FCH0000OTHR")
    try:
        site.register()
        other.register()
        other.live(DAY, USAGE)
        foreign = other.answer(other.export())
        before = site.snapshot()
        with pytest.raises(ExchangeError, match="never made"):
            site.import_(foreign)
        assert site.snapshot() == before
    finally:
        other.close()


def test_an_answer_to_an_older_export_is_refused_the_newer_one_delivers(site: Site) -> None:
    site.register()
    site.live(DAY, USAGE)
    old = site.answer(site.export())  # answered, but the stick was left behind
    site.live(DAY, USAGE)
    new = site.answer(site.export())  # the same reports again, and a day more
    before = site.snapshot()
    with pytest.raises(ExchangeError, match=r"stale: it answers export #2 .* superseded by"):
        site.import_(old)
    assert site.snapshot() == before
    site.import_(new)
    ids = [r["id"] for r in site.sim.reports()]
    assert len(ids) == 2 * 96 and len(set(ids)) == len(ids)  # each once, the server de-duplicated
    assert site.outbox() == []


def test_a_replayed_answer_is_refused_after_a_newer_export(site: Site) -> None:
    site.register()
    site.live(DAY, USAGE)
    old = site.answer(site.export())
    site.import_(old)
    site.live(DAY, USAGE)
    site.export()
    before = site.snapshot()
    with pytest.raises(ExchangeError, match="replayed: the answer to export #2 was imported"):
        site.import_(old)
    assert site.snapshot() == before


def _reseal(site: Site, response: Path, change: dict[str, object]) -> None:
    """Rewrite answer 1 with ``change`` and sign it and the file again with the server's
    own key: only the nonce check can catch what this makes."""
    authority = site.sim.authority
    sealed = files.check(response, files.RESPONSE)
    envelopes = [protocol.decode(raw) for raw in files.envelopes(sealed)]
    envelopes[0] = protocol.sign({**envelopes[0], **change}, authority.signing_key)
    writer = files.Writer(response, sealed.head)
    for env in envelopes:
        writer.add(env)
    seal = {**writer.seal(), **{k: sealed.seal[k] for k in ("sent_at", "cert", "chain")}}
    writer.finish(protocol.sign(seal, authority.signing_key))
    writer.commit()


def test_a_signed_answer_to_a_nonce_never_recorded_is_refused(site: Site) -> None:
    site.register()
    site.live(DAY, USAGE)
    response = site.answer(site.export())
    _reseal(site, response, {"nonce": protocol.new_nonce()})
    before = site.snapshot()
    with pytest.raises(ExchangeError, match=r"answer 1 answers no request of export #2"):
        site.import_(response)
    assert site.snapshot() == before


def test_a_signed_answer_naming_another_piid_is_refused(site: Site) -> None:
    site.register()
    site.live(DAY, USAGE)
    response = site.answer(site.export())
    _reseal(site, response, {"piid": "00000000-0000-4000-8000-00000000dead"})
    before = site.snapshot()
    with pytest.raises(ExchangeError, match="PIID_MISMATCH"):
        site.import_(response)
    assert site.snapshot() == before


def test_an_answer_for_an_identity_since_replaced_is_refused(site: Site) -> None:
    site.register()
    site.live(DAY, USAGE)
    response = site.answer(site.export())
    site.agent.deregister(site.now)  # the local identity is wiped meanwhile
    before = site.snapshot()
    with pytest.raises(ExchangeError, match="another identity"):
        site.import_(response)
    assert site.snapshot() == before


def test_the_simulator_answers_a_request_file_once_and_not_when_too_old(site: Site) -> None:
    site.register()
    site.live(DAY, USAGE)
    request = site.export()
    site.answer(request)
    with pytest.raises(AnswerError, match="already answered at"):
        site.answer(request)
    site.live(DAY, USAGE)
    old = site.export()
    site.now += timedelta(days=31)
    with pytest.raises(AnswerError, match="more than 30 days ago: export a new one"):
        site.answer(old)
    # Nothing was written for a refused request file.
    assert not old.with_name(old.name.replace("request", "response")).exists()


def test_import_refuses_the_request_file_and_garbage(site: Site, tmp_path: Path) -> None:
    site.register()
    request = site.export()
    with pytest.raises(ExchangeError, match="request file, not a response file"):
        site.import_(request)
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": "world"}\n')
    with pytest.raises(ExchangeError, match="not a ccx-agent exchange file"):
        site.import_(junk)


def test_offline_no_comm_failed_and_the_warnings_say_an_exchange_is_due(site: Site) -> None:
    site.register()
    for _ in range(13):  # 65 days, housekeeping every 5 days
        site.live(5 * DAY, USAGE)
    seen = mnemonics(site)
    assert seen["COMM_FAILED"] == 0 and seen["AUTH_RENEW_FAILED"] == 0
    assert seen["ENTITLEMENT_REPORT_FAILED"] == 0
    warning = [r for r in site.emitted if r.mnemonic == "AUTHORIZATION_EXPIRING_SOON"]
    assert warning and "a file exchange is due" in warning[0].detail
    assert "a file exchange is due" in warning[0].lines[0]
    assert len(site.outbox()) == 65 * 96
    # One exchange renews the authorization: no more warnings after it.
    site.exchange()
    site.emitted.clear()
    site.live(5 * DAY, USAGE)
    assert mnemonics(site)["AUTHORIZATION_EXPIRING_SOON"] == 0


def test_an_id_renewal_rides_along_when_due_or_asked(site: Site) -> None:
    site.register()
    site.live(DAY, USAGE)
    site.exchange()
    assert site.sim.show(site.now)["instances"][0]["cert_expires_at"] == iso(
        START + timedelta(days=365)
    )
    site.exchange(renew_id=True)
    assert mnemonics(site)["ID_CERT_RENEW_SUCCESS"] == 1
    ident = site.agent.state().identity
    assert ident is not None and ident.cert_issued_at == site.now


def _year_of_reports(site: Site, n: int) -> None:
    ident = site.agent.state().identity
    assert ident is not None
    start = site.now - n * STEP
    rows = []
    for i in range(n):
        s = start + i * STEP
        rid = f"{ident.piid}:{iso(s)}"
        payload = {"id": rid, "start": iso(s), "end": iso(s + STEP), "usage": {STANDARD: 3}}
        rows.append((rid, ident.piid, s, payload))
    with site.store.transaction() as tx:
        tx.enqueue_many(rows, site.now)


def _export_peak(site: Site, path: Path) -> tuple[int, float]:
    tracemalloc.start()
    began = time.perf_counter()
    from ccx_agent.offline.exchange import export

    export(site.agent, site.keys, path, site.now)
    took = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, took


def test_a_year_of_pending_reports_is_streamed_and_delivered_once(tmp_path: Path) -> None:
    small, large = Site(tmp_path, "small"), Site(tmp_path, "large", serial="FCH0000LRGE")
    try:
        for s, n in ((small, 3_504), (large, 35_040)):
            s.register()
            _year_of_reports(s, n)
        small_peak, _ = _export_peak(small, tmp_path / "small.json")
        large_peak, took = _export_peak(large, tmp_path / "large.json")
        # Memory does not grow with the outbox: ten times the reports, not ten times the peak.
        assert large_peak < 2 * small_peak, (small_peak, large_peak)
        head = json.loads((tmp_path / "large.json").read_text())
        assert head["seal"]["count"] == 37  # 35 full messages, a partial one, AUTHORIZE
        response = large.answer(tmp_path / "large.json")
        result = large.import_(response)
        assert "  reports acknowledged: 35,040" in result.lines
        assert large.outbox() == []
        ids = [r["id"] for r in large.sim.reports(large.agent.state().identity.piid)]  # type: ignore[union-attr]
        assert len(ids) == 35_040 == len(set(ids))
        print(f"export of 35,040 reports: {took:.2f} s, peak {large_peak / 1e6:.1f} MB")
    finally:
        small.close()
        large.close()


def test_deregister_by_file_delivers_the_pending_reports_first(site: Site) -> None:
    """The last trip of an instance: its day of reports, then its deregistration. SSM
    stores every report, then releases the instance; here the outbox empties and the
    identity goes, with DEREGISTER_SUCCESS."""
    site.register()
    piid = site.agent.state().identity.piid  # type: ignore[union-attr]
    site.live(DAY, USAGE)
    assert len(site.outbox()) == 96
    result = site.exchange(deregister=True)
    assert site.answered.by_type == {"REPORT_USAGE": 1, "DEREGISTER": 1}
    assert "  reports acknowledged: 96" in result.lines
    assert f"  deregistered PIID {piid}: SSM released its licences" in result.lines
    assert len(site.sim.reports()) == 96
    assert [i["state"] for i in site.sim.show(site.now)["instances"]] == ["deregistered"]
    state = site.agent.state()
    assert state.identity is None and state.registration is Registration.UNREGISTERED
    assert site.outbox() == []
    assert list((site.dir / "keys").glob("*.pem")) == []
    assert mnemonics(site)["DEREGISTER_SUCCESS"] == 1


def test_an_export_cannot_both_register_and_deregister(site: Site) -> None:
    with pytest.raises(ExchangeError, match="nothing to deregister"):
        site.export(deregister=True)
    with pytest.raises(ExchangeError, match="deregister, or register, not both"):
        site.export(deregister=True, token=site.token())
