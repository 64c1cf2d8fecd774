"""The checks of this host alone: ``config``, ``files``, ``database``, ``daemon`` and
``timers``. They reuse what ``check-config``, ``run`` and ``status`` already check, so
the doctor never disagrees with them."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from ccx_agent import status as status_mod
from ccx_agent.cli.doctor import (
    NET_TIMEOUT_S,
    Context,
    Finding,
    combine,
    failed,
    passed,
    skipped,
    warned,
)
from ccx_agent.config import schema as config_mod
from ccx_agent.config.yamldoc import DocumentError
from ccx_agent.errors import AgentError
from ccx_agent.instance import Open, open_store
from ccx_agent.licensing.timeutil import parse_iso
from ccx_agent.store import statedir
from ccx_agent.store.db import SCHEMA_VERSION

NO_CONFIG = "the config does not load (see the config check)"


# --- config -------------------------------------------------------------------------------


def config(ctx: Context) -> Finding:
    """The file validates: the same problems, worded the same, as ``check-config``."""
    try:
        ctx.cfg = config_mod.load(ctx.path)
    except DocumentError as exc:
        problems = [str(p) for p in exc.problems]
        return failed("config", "; ".join(problems), _config_fix(ctx.path, exc))
    warnings = ctx.cfg.source.warnings()
    if warnings:
        return warned(
            "config",
            f"{ctx.path} is valid, but: " + "; ".join(warnings),
            "move the password to source.uccx.password_file (mode 0640, group ccx-agent) "
            "or a systemd credential (docs/install.md)",
        )
    return passed("config", f"{ctx.path} is valid")


def _config_fix(path: Path, exc: DocumentError) -> str:
    """The file itself (missing, unreadable, not text) needs another fix than its keys."""
    whole = [p.message for p in exc.problems if p.key == "(file)"]
    if whole and "no such file" in whole[0]:
        return f"give the config file with --config PATH (or ${config_mod.ENV_PATH})"
    if whole and "cannot read" in whole[0]:
        me = _owner_name(os.geteuid())
        return (
            f"make {path} readable by {me}, the user the doctor (and the daemon) runs as: "
            f"chgrp {_group_name(os.getegid())} {path} && chmod 0640 {path}"
        )
    if whole:
        return f"save {path} as a UTF-8 YAML config (docs/config.md describes every key)"
    return (
        f"correct the key(s) at the line(s) named in {path}, then "
        "'ccx-agent check-config' (docs/config.md describes every key)"
    )


# --- files --------------------------------------------------------------------------------


def _owner_name(uid: int) -> str:
    return statedir.user_name(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _state_paths(state_dir: Path) -> list[Path]:
    """The files of the state directory that its owner must own (keys included)."""
    db = statedir.db_path(state_dir)
    paths = [
        db,
        Path(f"{db}-wal"),
        Path(f"{db}-shm"),
        state_dir / statedir.MARKER_NAME,
        state_dir / statedir.LOCK_NAME,
    ]
    keys = state_dir / statedir.KEY_DIR
    paths.append(keys)
    try:
        if keys.is_dir():
            paths.extend(sorted(keys.iterdir()))
    except OSError:
        pass  # said by access_problems, as the owner sees it
    return paths


def _config_file_fix(message: str, user: str) -> str:
    if "no such file" in message:
        return "create the file, or correct the path at the config line named"
    if "not executable" in message:
        return "chmod a+x the program, or correct source.command"
    if "not found on PATH" in message:
        return "give the program's full path in source.command"
    if "not writable" in message or "permission denied on a directory" in message:
        return f"give {user} access (the state directory: chown -R {user} it)"
    if "not readable" in message:
        return f"make it readable by {user}: chgrp {user} FILE && chmod 0640 FILE"
    return "correct the path at the config line named"


def files(ctx: Context) -> Finding:
    cfg = ctx.cfg
    if cfg is None:
        return skipped("files", NO_CONFIG)
    me = _owner_name(os.geteuid())
    parts: list[Finding] = [
        failed("files", str(p), _config_file_fix(p.message, me))
        for p in config_mod.runtime_problems(cfg, ctx.path)
    ]
    named = len(config_mod.named_files(cfg))
    state_dir = cfg.state_dir
    try:
        st = state_dir.stat()
    except FileNotFoundError:
        ok = (
            f"{named} file(s) the config names are readable by {me}; {state_dir} does not "
            "exist yet (register or the first run creates it)"
        )
        return combine("files", parts, ok)
    except OSError as exc:
        parts.append(
            failed(
                "files",
                f"{state_dir}: cannot be examined ({exc.strerror or exc})",
                f"give {me} access to {state_dir} and its parent directories",
            )
        )
        return combine("files", parts, "")
    owner, group = _owner_name(st.st_uid), _group_name(st.st_gid)
    chown = f"run: chown -R {owner}:{group} {state_dir}"
    # Every state file must be the state directory's owner's: a root-owned key (an old
    # `sudo register`) lets the daemon start and then fail every report.
    for path in _state_paths(state_dir):
        try:
            pst = path.lstat()
        except OSError:
            continue
        if pst.st_uid != st.st_uid:
            parts.append(
                failed(
                    "files",
                    f"{path} is owned by {_owner_name(pst.st_uid)}, not by {owner} "
                    f"(the owner of {state_dir}): the daemon, running as {owner}, "
                    "cannot use it",
                    chown,
                )
            )
        elif (
            path.parent.name == statedir.KEY_DIR
            and stat.S_ISREG(pst.st_mode)
            and stat.S_IMODE(pst.st_mode) & 0o077
        ):
            parts.append(
                warned(
                    "files",
                    f"{path} (a private key) has mode {stat.S_IMODE(pst.st_mode):04o}: "
                    "other users may read it",
                    f"run: chmod 600 {path}",
                )
            )
    if os.geteuid() == st.st_uid:
        for problem in statedir.access_problems(state_dir):
            what, _, fix = problem.partition("; ")
            parts.append(failed("files", what, fix or chown))
    elif os.geteuid() != 0:
        parts.append(
            warned(
                "files",
                f"{state_dir} belongs to {owner}, and this check runs as {me}: what the "
                f"daemon may read was not checked as {owner}",
                f"run the doctor as the service user: sudo ccx-agent doctor (or sudo -u {owner})",
            )
        )
    ok = (
        f"{named} file(s) the config names are readable by {me}; {state_dir} is writable "
        f"and every state file belongs to {owner}"
    )
    return combine("files", parts, ok)


# --- database -----------------------------------------------------------------------------


def database(ctx: Context) -> Finding:
    cfg = ctx.cfg
    if cfg is None:
        return skipped("database", NO_CONFIG)
    found = statedir.inspect(cfg.state_dir)
    db = statedir.db_path(cfg.state_dir)
    if found.kind is statedir.Kind.LOST:
        return failed(
            "database", statedir.lost_message(cfg.state_dir, found.evidence), statedir.RESTORE_HINT
        )
    if found.kind is not statedir.Kind.LIVE:
        return warned(
            "database",
            f"no state database yet ({db}): no instance was registered or run here",
            "register (ccx-agent register --token-file FILE) or start the service: "
            "until registered it runs in evaluation",
        )
    try:
        store = open_store(cfg, Open.READ)
    except AgentError as exc:
        return failed("database", str(exc), _database_fix(str(exc)))
    ctx.store = store
    try:
        store.quick_check()
        with store.read() as tx:
            ctx.credentials = tx.credentials()
        ctx.status = status_mod.collect(
            cfg,
            store,
            ctx.now,
            {"pid": cfg.identity.pid, "serial": cfg.identity.serial_number()},
            daemon_pid=statedir.lock_holder(cfg.state_dir),
        )
    except AgentError as exc:
        return failed("database", str(exc), _database_fix(str(exc)))
    # A license type other than the registered one: check-config and run refuse it.
    from ccx_agent.cli.commands import _instance_problems  # noqa: PLC0415

    for problem in _instance_problems(cfg, ctx.path):
        return failed(
            "database",
            str(problem),
            "deregister first (ccx-agent deregister), or put back the registered license type",
        )
    doc = ctx.status
    piid = doc["registration"]["piid"]
    who = f"registered as {piid}" if piid else "not registered (evaluation)"
    return passed(
        "database",
        f"{db}: schema version {SCHEMA_VERSION}, quick_check ok, {who}, "
        f"{doc['outbox']} report(s) unsent",
    )


def _database_fix(message: str) -> str:
    if "newer than this ccx-agent" in message:
        return "upgrade ccx-agent to the version that wrote this database"
    if "older than this" in message:
        return "start the daemon (or run any command that writes) once to upgrade it"
    if "permission" in message.lower() or "owned by" in message:
        return "see the files check: the state files must belong to the service user"
    return f"stop the daemon and {statedir.RESTORE_HINT}"


# --- daemon -------------------------------------------------------------------------------

#: Set by the template unit ``ccx-agent@.service`` to its instance name.
INSTANCE_ENV = "CCX_AGENT_INSTANCE"  # daemon.INSTANCE_ENV (not imported: the scheduler)


def unit_name(path: Path) -> str:
    """The systemd unit that runs this config: ``ccx-agent.service`` for the default
    config, ``ccx-agent@NAME.service`` for ``/etc/ccx-agent/NAME.yaml`` (the template)."""
    instance = os.environ.get(INSTANCE_ENV)
    if instance:
        return f"ccx-agent@{instance}.service"
    if path == config_mod.DEFAULT_PATH or path.parent != config_mod.DEFAULT_PATH.parent:
        return "ccx-agent.service"
    return f"ccx-agent@{path.stem}.service" if path.suffix == ".yaml" else "ccx-agent.service"


def systemd_state(unit: str) -> str | None:
    """``systemctl is-active UNIT`` (active, inactive, failed …), or None without systemd."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not Path("/run/systemd/system").is_dir():
        return None
    try:
        done = subprocess.run(
            [systemctl, "is-active", unit],
            capture_output=True,
            text=True,
            timeout=NET_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _ago(when: str | None, now: datetime) -> str:
    if when is None:
        return "never"
    seconds = int((now - parse_iso(when)).total_seconds())
    return f"{when} ({_span(seconds)} ago)"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if abs(seconds) < 120:
        return f"{seconds} s"
    if abs(seconds) < 7200:
        return f"{seconds // 60} min"
    if abs(seconds) < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def daemon(ctx: Context) -> Finding:
    cfg = ctx.cfg
    if cfg is None:
        return skipped("daemon", NO_CONFIG)
    unit = unit_name(ctx.path)
    unable = statedir.owner_cannot_run(cfg.state_dir)
    if unable is not None:
        owner, why = unable
        return failed(
            "daemon",
            f"{why}: the daemon runs as {owner} (the owner of {cfg.state_dir}) and could not start",
            statedir.REACH_FIX,
        )
    active = systemd_state(unit)
    under = f"; systemd: {unit} is {active}" if active else ""
    pid = statedir.lock_holder(cfg.state_dir)
    doc = ctx.status
    seen = ""
    if doc is not None:
        seen = (
            f"; last sample {_ago(doc['last_sample_at'], ctx.now)}, "
            f"last report delivered {_ago(doc['last_report_at'], ctx.now)}"
        )
    if pid is None:
        finding = f"no daemon runs on {cfg.state_dir}{under}{seen}"
        if active == "failed":
            return failed(
                "daemon",
                finding,
                f"journalctl -u {unit} -n 50 says why; fix it, then systemctl restart {unit}",
            )
        return warned(
            "daemon",
            finding,
            f"systemctl enable --now {unit} (docs/install.md), or run 'ccx-agent run'",
        )
    running = f"PID {pid}" if pid else "a daemon"
    finding = f"{running} runs on {cfg.state_dir}{under}{seen}"
    if doc is None:
        return passed("daemon", finding)
    failing = {
        name: job
        for name, job in doc["daemon"]["jobs"].items()
        if isinstance(job, dict) and job.get("consecutive_failures")
    }
    if failing:
        said = "; ".join(
            f"job {name} failing since {job.get('failing_since')}: {job.get('last_error')}"
            for name, job in sorted(failing.items())
        )
        return warned("daemon", f"{finding}; {said}", f"ccx-agent status; journalctl -u {unit}")
    last = doc["last_sample_at"]
    late = max(cfg.sample.interval * 3, timedelta(minutes=5))
    if last is not None and ctx.now - parse_iso(last) > late:
        return warned(
            "daemon",
            f"{finding}: no sample for longer than {_span(late.total_seconds())}",
            f"journalctl -u {unit} (the source check says whether the source answers)",
        )
    return passed("daemon", finding)


# --- timers -------------------------------------------------------------------------------


def _left(when: str | None, now: datetime) -> timedelta | None:
    return None if when is None else parse_iso(when) - now


def _days(left: timedelta) -> str:
    days = left.total_seconds() / 86400
    return f"{days:.0f} d" if abs(days) >= 2 else f"{left.total_seconds() / 3600:.1f} h"


def timers(ctx: Context) -> Finding:
    cfg, doc = ctx.cfg, ctx.status
    if cfg is None:
        return skipped("timers", NO_CONFIG)
    if doc is None:
        return skipped("timers", "no readable state database (see the database check)")
    parts: list[Finding] = []
    said: list[str] = []
    if doc["enforcement"]:
        parts.append(
            failed(
                "timers",
                f"enforcement is {doc['enforcement']}",
                "ccx-agent status says why; the ssm check says whether SSM can be reached",
            )
        )
    reg, auth = doc["registration"], doc["authorization"]
    if reg["piid"]:
        cert = _left(reg["certificate_expires_at"], ctx.now)
        if cert is not None:
            said.append(f"ID certificate {_days(cert)} left")
            if cert <= timedelta(0):
                parts.append(
                    failed(
                        "timers",
                        f"the ID certificate expired at {reg['certificate_expires_at']}",
                        "register again: ccx-agent register --force --token-file FILE",
                    )
                )
            elif cert <= cfg.id_certificate.expiry_warning:
                parts.append(
                    warned(
                        "timers",
                        f"the ID certificate expires in {_days(cert)}",
                        "ccx-agent renew id (the ssm check says whether SSM answers)",
                    )
                )
        expires = _left(auth["expires_at"], ctx.now)
        if expires is not None:
            said.append(f"authorization {_days(expires)} left")
            if expires <= timedelta(0):
                parts.append(
                    failed(
                        "timers",
                        f"the authorization expired at {auth['expires_at']} (communication "
                        f"deadline {auth['communication_deadline']})",
                        "ccx-agent renew auth, once the ssm check passes",
                    )
                )
            elif expires <= cfg.authorization.expiry_warning:
                parts.append(
                    warned(
                        "timers",
                        f"the authorization expires in {_days(expires)}",
                        "ccx-agent renew auth (the ssm check says whether SSM answers)",
                    )
                )
    else:
        left = timedelta(seconds=doc["evaluation_seconds_left"])
        said.append(f"evaluation {_days(left)} left")
        warn_days = max(cfg.evaluation.warning_days, default=30)
        if left <= timedelta(0):
            parts.append(
                failed(
                    "timers",
                    "the evaluation period is over",
                    "register: ccx-agent register --token-file FILE",
                )
            )
        elif left <= timedelta(days=warn_days):
            parts.append(
                warned(
                    "timers",
                    f"the evaluation ends in {_days(left)}",
                    "register: ccx-agent register --token-file FILE",
                )
            )
    return combine("timers", parts, ", ".join(said) or "no timer runs")
