"""What each CLI command does; ``cli.py`` only parses arguments and calls these.

Every command returns its exit status. Bad input is one clear line per problem on stderr,
never a traceback: 78 (EX_CONFIG) for a bad config or scenario, 1 for a failed action.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ccx_agent import config as config_mod
from ccx_agent import status as status_mod
from ccx_agent.agent import Agent, LicenseTypeChanged, Outcome
from ccx_agent.instance import client_for, instance_udi, open_store
from ccx_agent.licensing.catalogue import DISPLAY_NAMES
from ccx_agent.licensing.consumption import compute
from ccx_agent.sources import SourceError
from ccx_agent.sources.factory import build
from ccx_agent.ssm.port import SsmError
from ccx_agent.store import AlertRow, Store, StoreError
from ccx_agent.yamldoc import EX_CONFIG, DocumentError

EX_FAILED = 1


def _problems(exc: DocumentError, err: TextIO) -> int:
    for problem in exc.problems:
        print(problem, file=err)
    return EX_CONFIG


def check_config(path: Path, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        cfg = config_mod.load(path)
    except DocumentError as exc:
        return _problems(exc, err)
    # What `run` will need: the files the config names, a usable state directory.
    problems = config_mod.runtime_problems(cfg, path)
    if problems:
        return _problems(DocumentError(problems), err)
    # Accepted but unwise settings (an inline password): valid, so still OK and exit 0.
    for warning in cfg.source.warnings():
        print(f"warning: {warning}", file=err)
    print("OK", file=out)
    return 0


def usage(path: Path, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        cfg = config_mod.load(path)
    except DocumentError as exc:
        return _problems(exc, err)
    for warning in cfg.source.warnings():
        print(f"warning: {warning}", file=err)
    try:
        snapshot = build(cfg.source).read()
    except SourceError as exc:
        print(f"error: {exc}", file=err)
        return EX_FAILED
    result = compute(snapshot, cfg.license.type, cfg.license.premium_features)
    # Warnings go to stderr in both modes, so that --json stays clean for scripts.
    for note in snapshot.notes:
        print(f"note: {note}", file=err)
    if result.unlicensed_agents:
        shown = ", ".join(result.unlicensed_agents[:10])
        more = len(result.unlicensed_agents) - 10
        print(
            f"warning: {len(result.unlicensed_agents)} agent(s) have premium features the "
            f"license type does not include (FEATURE_NOT_LICENSED): {shown}"
            + (f" and {more} more" if more > 0 else ""),
            file=err,
        )
    if as_json:
        json.dump(result.as_json(), out, indent=2)
        out.write("\n")
        return 0
    print(f"license type: {result.license_type.value}", file=out)
    width = max(len(t) for t in result.tags)
    for tag, count in result.tags.items():
        print(f"  {tag.ljust(width)}  {count:>7}  {DISPLAY_NAMES.get(tag, '')}", file=out)
    print(f"logged-in agents and supervisors: {len(result.agents)}", file=out)
    return 0


def simulate(
    path: Path, as_json: bool, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    # The what-if machinery (and the simulator it runs in process) only for this command.
    from ccx_agent.scenario.model import read_scenario  # noqa: PLC0415
    from ccx_agent.scenario.runner import format_text, run  # noqa: PLC0415

    out, err = out or sys.stdout, err or sys.stderr
    try:
        loaded = read_scenario(path)
    except DocumentError as exc:
        return _problems(exc, err)
    result = run(loaded)
    if as_json:
        # Compact: a 400-day run has 38,400 intervals, and scripts read it, not people.
        out.write(json.dumps(result.as_json(), separators=(",", ":")) + "\n")
    else:
        print(format_text(result), file=out)
    return 0


# --- the instance: register, renew, deregister, status --------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _print_alerts(store: Store, err: TextIO) -> Callable[[Sequence[AlertRow]], None]:
    """Show the alerts this command raises; they stay pending in the database for the
    daemon to deliver to syslog (a command's alerts must reach syslog too)."""
    with store.read() as tx:
        seen = tx.last_alert_id()

    def emit(rows: Sequence[AlertRow]) -> None:
        nonlocal seen
        for row in rows:
            if row.id > seen:
                for line in row.lines:
                    print(f"alert: {line}", file=err)
        seen = max([seen, *(row.id for row in rows)])

    return emit


def _with_agent(
    path: Path,
    action: Callable[[Agent, datetime], Outcome],
    out: TextIO | None,
    err: TextIO | None,
    *,
    needs_transport: bool = True,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        cfg = config_mod.load(path)
    except DocumentError as exc:
        return _problems(exc, err)
    if needs_transport and cfg.transport.url is None:
        print(
            f"error: transport.url is not set in {path}: the agent does not know where SSM is",
            file=err,
        )
        return EX_FAILED
    try:
        client = client_for(cfg)
        store = open_store(cfg)
    except (SsmError, StoreError, OSError) as exc:
        print(f"error: {exc}", file=err)
        return EX_FAILED
    try:
        agent = Agent(
            cfg,
            store,
            client,
            udi=instance_udi(store, cfg),
            emit=_print_alerts(store, err),
            delivers_alerts=False,
        )
        outcome = action(agent, _now())
    except LicenseTypeChanged as exc:
        print(f"error: {exc}", file=err)
        return EX_FAILED
    finally:
        store.close()
    print(outcome.message, file=out if outcome.ok else err)
    return 0 if outcome.ok else EX_FAILED


def register(
    path: Path, token: str, force: bool, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    return _with_agent(path, lambda a, now: a.register(token, now, force=force), out, err)


def deregister(path: Path, out: TextIO | None = None, err: TextIO | None = None) -> int:
    # Works without a transport too: the local identity is wiped all the same.
    return _with_agent(path, lambda a, now: a.deregister(now), out, err, needs_transport=False)


def renew(path: Path, what: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    def act(agent: Agent, now: datetime) -> Outcome:
        outcome = agent.renew_id(now) if what == "id" else agent.renew_auth(now)
        label = "ID certificate" if what == "id" else "authorization"
        if outcome.ok:
            return Outcome(True, f"{label} renewed: {outcome.message}")
        return Outcome(False, f"{label} renewal failed: {outcome.message}")

    return _with_agent(path, act, out, err)


def status(path: Path, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        cfg = config_mod.load(path)
    except DocumentError as exc:
        return _problems(exc, err)
    try:
        store = open_store(cfg)
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=err)
        return EX_FAILED
    try:
        doc = status_mod.collect(
            cfg,
            store,
            _now(),
            {"pid": cfg.identity.pid, "serial": cfg.identity.serial_number()},
        )
    finally:
        store.close()
    if as_json:
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        print(status_mod.format_text(doc), file=out)
    return 0
