"""The commands admins reach for: ``sync`` (report now), ``admit`` (License Control for
provisioning scripts), and the safe ways to hand ``register`` a token and to confirm a
``deregister``. :mod:`ccx_agent.cli.commands` has the instance commands these build on."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

from ccx_agent import status as status_mod
from ccx_agent.cli import commands
from ccx_agent.cli.commands import _now, _with_agent
from ccx_agent.config import schema as config_mod
from ccx_agent.config.yamldoc import DocumentError, one_of
from ccx_agent.errors import EX_FAILED, EX_USAGE, AgentError
from ccx_agent.instance import Open, open_store
from ccx_agent.licensing import lifecycle
from ccx_agent.licensing.catalogue import CATALOGUE, tags_of
from ccx_agent.licensing.control import admit as admission
from ccx_agent.licensing.lifecycle import ProductState
from ccx_agent.store import statedir

# ``register``'s token is read as ``offline import`` reads it: in the lower userfiles.
from ccx_agent.userfiles import MAX_TOKEN_BYTES as MAX_TOKEN_BYTES  # noqa: PLC0414
from ccx_agent.userfiles import TokenError as TokenError  # noqa: PLC0414
from ccx_agent.userfiles import read_token as read_token  # noqa: PLC0414

if TYPE_CHECKING:
    from ccx_agent.agent import Agent, Outcome


# --- sync ---------------------------------------------------------------------------------


def sync(path: Path, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Close the finished intervals and send every pending report now.

    The same two steps as the daemon's report job (``close_intervals`` then ``flush``),
    with the outbox's back-off ignored. Beside a running daemon both may close and send:
    closing is one ``BEGIN IMMEDIATE`` transaction that starts after the last closed
    interval, so the second finds nothing to close, and SSM acknowledges a report id it
    already has without counting it again.
    """

    from ccx_agent.agent import Outcome  # noqa: PLC0415 - the agent only where it runs

    def act(agent: Agent, now: datetime) -> Outcome:
        closed = agent.close_intervals(now)
        sent = agent.flush(now, force=True)
        with agent.store.read() as tx:
            left = tx.outbox_count()
        state = agent.state()
        said = f"{len(closed)} interval(s) closed, {sent} report(s) delivered"
        if state.identity is None:
            return Outcome(True, f"{said}; not registered: nothing is reported until then")
        if left:
            why = state.last_comm_error or "see 'ccx-agent status'"
            return Outcome(False, f"{said}, {left} still pending: {why}")
        return Outcome(True, f"{said}, none pending")

    return _with_agent(path, act, out, err)


# --- admit --------------------------------------------------------------------------------


def _stale(tag: dict[str, Any], sampling: dict[str, Any]) -> str:
    """What ``admit`` adds when the usage it decided on is not current (an outage)."""
    at = tag.get("usage_at")
    text = f"; in use is the last known usage, measured at {at}" if at else "; no usage known"
    failing = sampling.get("failing_since")
    if failing:
        text += f" (the source has been failing since {failing})"
    else:
        text += f" (no usage in the last {sampling.get('intervals_without_data', 0)} interval(s))"
    return text


def admit(
    path: Path,
    tag: str | None,
    count: int,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """May ``count`` more seats of ``tag`` be taken now? Exit 0 yes, 1 no.

    In use: what ``status`` shows (the current interval's peak, else the last closed
    interval's usage); the entitlement: the last one SSM sent. Read-only.
    """
    out, err = out or sys.stdout, err or sys.stderr
    cfg = config_mod.load_or_status(path, err)
    if isinstance(cfg, int):
        return cfg
    lt = cfg.license.type
    chosen = tag or CATALOGUE[lt].standard_seat
    if chosen not in tags_of(lt):
        print(f"error: --tag: {one_of(list(tags_of(lt)), chosen, f'{lt.value} tag')}", file=err)
        return EX_USAGE
    if count < 1:
        print(f"error: --count must be 1 or more, got {count}", file=err)
        return EX_USAGE
    at = now or _now()
    try:
        store = open_store(cfg, Open.READ)
    except AgentError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_status
    try:
        with store.read() as tx:
            stored = tx.load_product()
        doc = status_mod.collect(cfg, store, at)
    finally:
        store.close()
    state: ProductState = lifecycle.derive(stored or ProductState(lt), at, cfg.timers())
    shown = doc["tags"][chosen]
    in_use = int(shown["usage"])
    # In an outage the usage is the last known one: said, with when it was measured.
    current = bool(shown.get("usage_current", True))
    sampling = doc.get("sampling") or {}
    entitled = state.entitlements.get(chosen, 0)
    allow = cfg.license.allow_overage
    decision = admission(state, chosen, in_use, allow_overage=allow, count=count)
    registered = state.identity is not None and state.registered
    if as_json:
        json.dump(
            {
                "allowed": decision.allowed,
                "tag": chosen,
                "count": count,
                "in_use": in_use,
                "entitlement": entitled if registered else None,
                "over": decision.over,
                "allow_overage": allow,
                "registered": registered,
                "reason": decision.reason,
                "usage_at": shown.get("usage_at"),
                "usage_current": current,
                "source_failing_since": sampling.get("failing_since"),
            },
            out,
            indent=2,
        )
        out.write("\n")
    else:
        limit = f"{entitled} entitled" if registered else "no limit in evaluation"
        verdict = "yes" if decision.allowed else "no"
        print(
            f"{verdict}: {count} more {chosen}: {in_use} in use + {count} = "
            f"{in_use + count}, {limit}"
            + (f", {decision.over} over" if decision.over else "")
            + f" (license.allow_overage: {str(allow).lower()})"
            + ("" if current else _stale(shown, sampling)),
            file=out,
        )
    return 0 if decision.allowed else EX_FAILED


# --- register's token, deregister's confirmation ------------------------------------------


def register(path: Path, token: str | None, token_file: str | None, force: bool) -> int:
    """``register``: the token from where the command line says, then the exchange."""
    try:
        secret = read_token(token, token_file)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    return commands.register(path, secret, force)


def deregister(path: Path, yes: bool) -> int:
    """``deregister``: asked first on a terminal (:func:`confirm_deregister`)."""
    if not confirm_deregister(path, yes):
        print("not deregistered", file=sys.stderr)
        return EX_FAILED
    return commands.deregister(path)


def confirm_deregister(
    path: Path,
    yes: bool,
    stdin: IO[str] | None = None,
    out: TextIO | None = None,
) -> bool:
    """Whether to go on: always with ``--yes`` or when not on a terminal (scripts keep
    working); on a terminal, only when the operator answers yes."""
    stdin, out = stdin or sys.stdin, out or sys.stderr
    if yes or not stdin.isatty():
        return True
    piid = _registered_piid(path)
    who = f"instance {piid}" if piid else "this instance"
    out.write(
        f"Deregister {who} from SSM and delete its ID certificate and private key? A new "
        "registration will need a new ID token. [y/N] "
    )
    out.flush()
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _registered_piid(path: Path) -> str | None:
    try:
        cfg = config_mod.load(path)
        store = open_store(cfg, Open.READ)
    except (DocumentError, AgentError, statedir.NoDatabase):
        return None
    try:
        with store.read() as tx:
            cred = tx.credentials()
        return cred.piid if cred else None
    except AgentError:
        return None
    finally:
        store.close()
