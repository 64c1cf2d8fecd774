"""What each CLI command does; ``cli.py`` only parses arguments and calls these.

Every command returns its exit status. Bad input is one clear line per problem on stderr,
never a traceback: 78 (EX_CONFIG) for a bad config or scenario, 1 for a failed action.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ccx_agent import checkconfig
from ccx_agent import status as status_mod
from ccx_agent.errors import EX_CONFIG, AgentError
from ccx_agent.instance import Open, client_for, instance_udi, open_store, print_alerts
from ccx_agent.licensing.catalogue import DISPLAY_NAMES
from ccx_agent.store import statedir
from ccx_agent.store.db import Store

if TYPE_CHECKING:
    # The agent (structlog, the SSM client) and the sources only for the commands that
    # use them; the schema (pydantic) and the YAML parser only for those that validate
    # the config: ``status`` imports none of them when the daemon's record of the config
    # applies (:mod:`ccx_agent.checkconfig`).
    from ccx_agent.agent import Agent, Outcome
    from ccx_agent.config import schema as config_mod
    from ccx_agent.config.yamldoc import DocumentError, Problem

EX_FAILED = 1


def _problems(exc: DocumentError, err: TextIO) -> int:
    for problem in exc.problems:
        print(problem, file=err)
    return EX_CONFIG


def check_config(path: Path, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from ccx_agent.config import schema as config_mod  # noqa: PLC0415 - see the imports
    from ccx_agent.config.yamldoc import DocumentError  # noqa: PLC0415

    out, err = out or sys.stdout, err or sys.stderr
    cfg = config_mod.load_or_status(path, err)
    if isinstance(cfg, int):
        return cfg
    # What `run` will need: the files the config names, a usable state directory, and
    # an instance there that this config can run.
    problems = config_mod.runtime_problems(cfg, path) + _instance_problems(cfg, path)
    if problems:
        return _problems(DocumentError(problems), err)
    # Accepted but unwise settings (an inline password): valid, so still OK and exit 0.
    for warning in cfg.source.warnings():
        print(f"warning: {warning}", file=err)
    print("OK", file=out)
    return 0


def _instance_problems(cfg: config_mod.Config, path: Path) -> list[Problem]:
    """What the state directory says against this config, read-only: a lost or damaged
    instance, or a license type other than the registered one (``run`` refuses both)."""
    from ccx_agent.config import schema as config_mod  # noqa: PLC0415 - see the imports

    found = statedir.inspect(cfg.state_dir)
    if found.kind is statedir.Kind.LOST:
        message = statedir.lost_message(cfg.state_dir, found.evidence)
        return [config_mod.key_problem(path, ("state_dir",), message)]
    if found.kind is not statedir.Kind.LIVE:
        return []
    try:
        store = open_store(cfg, Open.READ)
    except AgentError as exc:
        return [config_mod.key_problem(path, ("state_dir",), str(exc))]
    try:
        with store.read() as tx:
            state = tx.load_product()
    except AgentError as exc:
        return [config_mod.key_problem(path, ("state_dir",), str(exc))]
    finally:
        store.close()
    if state is None or state.identity is None or state.license_type is cfg.license.type:
        return []
    return [
        config_mod.key_problem(
            path,
            ("license", "type"),
            f"is {cfg.license.type.value!r} but the instance in {cfg.state_dir} is registered "
            f"as {state.license_type.value!r}: run 'ccx-agent deregister' first, then change "
            "the license type",
        )
    ]


def usage(
    path: Path,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    explain: bool = False,
) -> int:
    from ccx_agent.config import schema as config_mod  # noqa: PLC0415
    from ccx_agent.licensing import explain as why  # noqa: PLC0415 - see the imports
    from ccx_agent.licensing.consumption import compute  # noqa: PLC0415
    from ccx_agent.sources import SourceError  # noqa: PLC0415
    from ccx_agent.sources.factory import build  # noqa: PLC0415

    out, err = out or sys.stdout, err or sys.stderr
    cfg = config_mod.load_or_status(path, err)
    if isinstance(cfg, int):
        return cfg
    for warning in cfg.source.warnings():
        print(f"warning: {warning}", file=err)
    try:
        source = build(cfg.source)
        snapshot = source.read()
    except SourceError as exc:
        print(f"error: {exc}", file=err)
        return EX_FAILED
    result = compute(snapshot, cfg.license.type, cfg.license.premium_features)
    # Warnings go to stderr in both modes, so that --json stays clean for scripts.
    origin = getattr(source, "origin", None)  # the UCCX nodes each part came from
    if origin is not None:
        print(f"note: read from UCCX: {origin.text()}", file=err)
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
    explained = (
        why.explain(snapshot, result, cfg.license.premium_features) if as_json or explain else []
    )
    if as_json:
        json.dump(why.with_reasons(result.as_json(), explained), out, indent=2)
        out.write("\n")
        return 0
    print(f"license type: {result.license_type.value}", file=out)
    width = max(len(t) for t in result.tags)
    for tag, count in result.tags.items():
        print(f"  {tag.ljust(width)}  {count:>7}  {DISPLAY_NAMES.get(tag, '')}", file=out)
    print(f"logged-in agents and supervisors: {len(result.agents)}", file=out)
    if explain:
        for line in why.format_text(explained):
            print(f"  {line}", file=out)
    return 0


def simulate(
    path: Path,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    state_dir: Path | None = None,
) -> int:
    # The what-if machinery (and the simulator it runs in process) only for this command.
    from ccx_agent.config.yamldoc import DocumentError  # noqa: PLC0415
    from ccx_agent.scenario.model import read_scenario  # noqa: PLC0415
    from ccx_agent.scenario.runner import format_text, run  # noqa: PLC0415

    out, err = out or sys.stdout, err or sys.stderr
    try:
        loaded = read_scenario(path)
    except DocumentError as exc:
        return _problems(exc, err)
    if state_dir is not None:
        from ccx_agent.history import simstate  # noqa: PLC0415

        problem = simstate.prepare(state_dir)
        if problem:
            print(f"error: {problem}", file=err)
            return EX_FAILED
    result = run(loaded, state_dir)
    if state_dir is not None:
        simstate.finish(state_dir)
    if as_json:
        # Compact: a 400-day run has 38,400 intervals, and scripts read it, not people.
        out.write(json.dumps(result.as_json(), separators=(",", ":")) + "\n")
    else:
        print(format_text(result), file=out)
    return 0


# --- the instance: register, renew, deregister, status --------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _open(cfg: config_mod.Config, mode: Open, err: TextIO) -> Store | int:
    """The state database for a command; an exit status with one line said when it
    cannot be opened."""
    try:
        return open_store(cfg, mode)
    except AgentError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_status


def _with_agent(
    path: Path,
    action: Callable[[Agent, datetime], Outcome],
    out: TextIO | None,
    err: TextIO | None,
    *,
    needs_transport: bool = True,
    mode: Open = Open.WRITE,
    check: Callable[[Agent], str | None] | None = None,
) -> int:
    from ccx_agent.agent import Agent  # noqa: PLC0415
    from ccx_agent.config import schema as config_mod  # noqa: PLC0415 - see the imports

    out, err = out or sys.stdout, err or sys.stderr
    cfg = config_mod.load_or_status(path, err)
    if isinstance(cfg, int):
        return cfg
    if needs_transport and cfg.transport.url is None:
        print(
            f"error: transport.url is not set in {path}: the agent does not know where SSM is",
            file=err,
        )
        return EX_FAILED
    store = _open(cfg, mode, err)
    if isinstance(store, int):
        return store
    try:
        client = client_for(cfg)
        agent = Agent(
            cfg,
            store,
            client,
            udi=instance_udi(store, cfg),
            emit=print_alerts(store, err),
            delivers_alerts=False,
        )
        refusal = check(agent) if check is not None else None
        if refusal is not None:
            print(f"error: {refusal}", file=err)
            return EX_FAILED
        outcome = action(agent, _now())
    except AgentError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_status
    finally:
        store.close()
    print(outcome.message, file=out if outcome.ok else err)
    return 0 if outcome.ok else EX_FAILED


def register(
    path: Path, token: str, force: bool, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    return _with_agent(
        path, lambda a, now: a.register(token, now, force=force), out, err, mode=Open.CREATE
    )


def _registered(agent: Agent) -> str | None:
    """Renewing an instance that was never registered helps nobody: say so, raise nothing."""
    if agent.state().identity is None:
        return "this instance is not registered: run 'ccx-agent register TOKEN' first"
    return None


#: ``deregister``: the identity was wiped here, but SSM was not told (it still counts the
#: instance's licences as in use until they are released there).
EX_NOT_TOLD = 3


def deregister(path: Path, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Works without a transport too: the local identity is wiped all the same. When SSM
    was not told, that is said with the way to release the licences, and the exit status
    is :data:`EX_NOT_TOLD`: a script must not take it for a clean deregistration."""
    from ccx_agent.agent import Outcome  # noqa: PLC0415 - see the imports

    told: list[bool] = []

    def act(agent: Agent, now: datetime) -> Outcome:
        piid = agent.state().identity
        outcome = agent.deregister(now)
        told.append(outcome.server_told)
        if not outcome.ok or outcome.server_told:
            return outcome
        name = piid.piid if piid is not None else "?"
        how = (
            # transport.mode offline: no client at all.
            "an air-gapped instance tells SSM by file: 'ccx-agent offline export "
            "--deregister' before 'deregister' next time (docs/offline.md)"
            if agent.ssm is None
            else "running 'ccx-agent deregister' again cannot help: the identity is gone"
        )
        return Outcome(
            False,
            f"{outcome.message}\nSSM still counts the licences of PIID {name} as in use: release "
            f"them by removing the product instance {name} in SSM (Product Instances); {how}",
        )

    code = _with_agent(path, act, out, err, needs_transport=False, check=_registered)
    return EX_NOT_TOLD if told == [False] else code


def renew(path: Path, what: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from ccx_agent.agent import Outcome  # noqa: PLC0415 - see the imports

    def act(agent: Agent, now: datetime) -> Outcome:
        outcome = agent.renew_id(now) if what == "id" else agent.renew_auth(now)
        label = "ID certificate" if what == "id" else "authorization"
        if outcome.ok:
            return Outcome(True, f"{label} renewed: {outcome.message}")
        return Outcome(False, f"{label} renewal failed: {outcome.message}")

    return _with_agent(path, act, out, err, check=_registered)


def status(
    path: Path,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    record: bool = True,
) -> int:
    """``record``: the config may be the daemon's record of it (:mod:`ccx_agent.checkconfig`)."""
    out, err = out or sys.stdout, err or sys.stderr
    cfg = checkconfig.load(path, err, record=record)
    if isinstance(cfg, int):
        return cfg
    try:
        store = open_store(cfg, Open.READ)
    except statedir.NoDatabase as exc:
        if as_json:
            doc = {"state": "no-database", "path": str(statedir.db_path(cfg.state_dir))}
            json.dump(doc, out, indent=2)
            out.write("\n")
        print(f"error: {exc}", file=err)
        return EX_FAILED
    except AgentError as exc:
        if as_json:
            json.dump({"state": "unusable", "error": str(exc)}, out, indent=2)
            out.write("\n")
        print(f"error: {exc}", file=err)
        return exc.exit_status
    try:
        doc = status_mod.collect(
            cfg,
            store,
            _now(),
            {"pid": cfg.identity.pid, "serial": cfg.identity.serial_number()},
            daemon_pid=statedir.lock_holder(cfg.state_dir),
        )
    except checkconfig.NotRecorded:
        # A key the record does not carry: answer as if there were no record.
        return status(path, as_json, out, err, record=False)
    finally:
        store.close()
    if as_json:
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        print(status_mod.format_text(doc), file=out)
    return 0
