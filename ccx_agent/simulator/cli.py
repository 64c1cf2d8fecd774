"""``ccx-agent ssm --state-dir DIR …``: run the simulator and administer it.

The admin commands work on the database directly, so they also work while ``serve``
runs (SQLite WAL; writers wait for each other). ``token create`` prints the token alone
on stdout, so a script can capture it; nothing else ever prints a token.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from ccx_agent.cli import helptext as cli_help
from ccx_agent.config.durations import parse_positive_duration
from ccx_agent.offline.answer import AnswerError as _AnswerError
from ccx_agent.offline.answer import answer
from ccx_agent.simulator.admin import DEFAULT_TOKEN_EXPIRY, Admin, AdminError
from ccx_agent.simulator.ca import DEFAULT_ID_LIFETIME, CaError
from ccx_agent.simulator.core import Simulator
from ccx_agent.simulator.db import DB_NAME, DEFAULT_ACCOUNT, DbError
from ccx_agent.simulator.server import (
    ADMIN_TOKEN_FILE,
    DEFAULT_LISTEN,
    DIRECT_PATH,
    PROTOCOL_PATHS,
    RunningServer,
    ServeError,
    serve_forever,
)

EX_OK = 0
EX_ERROR = 1
#: A malformed option, as argparse exits for the main CLI.
EX_USAGE = 2


class _Parents:
    """Sub-parsers that each take ``common``'s options too (argparse's ``parents=``)."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self.action, self.common = action, common

    def add_parser(self, name: str, **kw: Any) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = self.action.add_parser(name, parents=[self.common], **kw)
        return made


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ssm`` on the main parser's sub-parsers (``args.command == "ssm"``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ssm",
        help=cli_help.LISTED["ssm"],
        description="The SSM simulator: a real HTTPS server speaking the agent's protocol.",
    )
    state_help = "the simulator's state: CA, database, admin token (created on first use)"
    # Before the subcommand (``ssm --state-dir DIR show``) or after it (``ssm show
    # --state-dir DIR``): the subcommands' copy leaves the attribute alone when not given.
    p.add_argument("--state-dir", type=Path, metavar="DIR", help=f"{state_help} (required)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir", type=Path, metavar="DIR", default=argparse.SUPPRESS, help=state_help
    )
    sub = _Parents(
        p.add_subparsers(dest="ssm_command", required=True, metavar="SSM_COMMAND"), common
    )

    serve = sub.add_parser("serve", help="serve HTTPS until SIGTERM / Ctrl-C")
    serve.add_argument(
        "--listen",
        default=f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}",
        metavar="HOST:PORT",
        help="address to listen on (default: 127.0.0.1:8443; port 0 picks a free one)",
    )
    serve.add_argument(
        "--id-lifetime",
        default="365d",
        metavar="DURATION",
        help="lifetime of issued ID certificates (default: 365d)",
    )

    token = sub.add_parser("token", help="create or revoke registration (ID) tokens")
    tsub = _Parents(
        token.add_subparsers(dest="token_command", required=True, metavar="ACTION"), common
    )
    create = tsub.add_parser("create", help="create a token and print it (alone) on stdout")
    create.add_argument("--account", default=DEFAULT_ACCOUNT, metavar="NAME")
    create.add_argument("--uses", type=int, default=1, metavar="N", help="default: 1")
    create.add_argument("--expires", default="30d", metavar="DURATION", help="default: 30d")
    revoke = tsub.add_parser("revoke", help="revoke a token")
    revoke.add_argument("token", metavar="TOKEN")

    lic = sub.add_parser("license", help="buy or remove licenses of a virtual account")
    lsub = _Parents(
        lic.add_subparsers(dest="license_command", required=True, metavar="ACTION"), common
    )
    for name, text in (
        ("add", "buy N licenses of TAG (creates the account if new)"),
        ("remove", "remove up to N licenses of TAG (never below 0)"),
    ):
        action = lsub.add_parser(name, help=text)
        action.add_argument(
            "tag", metavar="TAG", help="an entitlement tag, e.g. flex-standard-seat"
        )
        action.add_argument("count", type=int, metavar="N")
        action.add_argument("--account", default=DEFAULT_ACCOUNT, metavar="NAME")

    off = sub.add_parser("offline", help="answer an air-gapped agent's request file")
    osub = _Parents(
        off.add_subparsers(dest="offline_command", required=True, metavar="ACTION"), common
    )
    ans = osub.add_parser(
        "answer", help="answer every request of an 'offline export' file into one signed file"
    )
    ans.add_argument("request", type=Path, metavar="REQUEST", help="the agent's export file")
    ans.add_argument(
        "--output", type=Path, required=True, metavar="RESPONSE", help="the answer file to write"
    )

    show = sub.add_parser("show", help="accounts, instances and their last reports")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one ``ssm`` command; the exit status (1 with one line on stderr on bad input)."""
    out, err = out or sys.stdout, err or sys.stderr
    state_dir: Path | None = args.state_dir
    if state_dir is None:
        print("ccx-agent ssm: error: the following arguments are required: --state-dir", file=err)
        return EX_USAGE
    try:
        if args.ssm_command == "serve":
            return _serve(state_dir, args.listen, args.id_lifetime, out)
        if args.ssm_command == "show":
            return _show(state_dir, args.json, out)
        if args.ssm_command == "offline":
            return _answer(state_dir, args.request, args.output, out)
        with _admin(state_dir) as admin:
            if args.ssm_command == "token":
                return _token(admin, args, out)
            return _license(admin, args, out)
    except _UsageError as exc:
        print(f"ccx-agent ssm: error: {exc}", file=err)
        return EX_USAGE
    except (AdminError, CaError, DbError, ServeError, _NoState, _AnswerError) as exc:
        print(f"error: {exc}", file=err)
        return EX_ERROR
    except OSError as exc:
        print(f"error: {state_dir}: {exc.strerror or exc}", file=err)
        return EX_ERROR


class _UsageError(Exception):
    """A malformed option value (exit 2, like argparse's own usage errors)."""


class _NoState(Exception):
    """No simulator state where the command looked (exit 1: an action that failed)."""


@contextmanager
def _admin(state_dir: Path) -> Iterator[Admin]:
    admin = Admin.for_state_dir(state_dir)
    try:
        yield admin
    finally:
        admin.close()


def _duration(value: str, option: str) -> timedelta:
    try:
        return parse_positive_duration(value)
    except ValueError as exc:
        raise _UsageError(f"{option} {exc}") from None


def _token(admin: Admin, args: argparse.Namespace, out: TextIO) -> int:
    if args.token_command == "create":  # noqa: S105 - a sub-command name
        expires = _duration(args.expires, "--expires") if args.expires else DEFAULT_TOKEN_EXPIRY
        token = admin.create_token(args.account, args.uses, expires, now=datetime.now(UTC))
        print(token, file=out)
    else:
        admin.revoke_token(args.token)
        print("token revoked", file=out)
    return EX_OK


def _license(admin: Admin, args: argparse.Namespace, out: TextIO) -> int:
    if args.license_command == "add":
        total = admin.add_licenses(args.tag, args.count, args.account)
    else:
        total = admin.remove_licenses(args.tag, args.count, args.account)
    print(f"{args.tag}: {total} purchased in account {args.account}", file=out)
    return EX_OK


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise _UsageError(f"--listen must be HOST:PORT (like 127.0.0.1:8443), got {value!r}")
    return host, int(port)


def _serve(state_dir: Path, listen: str, id_lifetime: str, out: TextIO) -> int:
    address = _parse_listen(listen)
    lifetime = _duration(id_lifetime, "--id-lifetime") if id_lifetime else DEFAULT_ID_LIFETIME
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
        )

    def announce(running: RunningServer) -> None:
        others = " and ".join(sorted(PROTOCOL_PATHS - {DIRECT_PATH}))
        print(f"SSM simulator listening on {running.url}", file=out)
        print(f"  (On-Prem paths too: {others})", file=out)
        print(f"root CA (transport.ca_bundle): {running.ca_path}", file=out)
        print(f"admin token file: {state_dir / ADMIN_TOKEN_FILE}", file=out)
        out.flush()

    serve_forever(state_dir, address, announce=announce, id_lifetime=lifetime)
    return EX_OK


def _answer(state_dir: Path, request: Path, output: Path, out: TextIO) -> int:
    """``offline answer``: the same code as the HTTPS endpoint, one file in, one out."""
    if not (state_dir / DB_NAME).exists():
        raise _NoState(f"no simulator state in {state_dir} (run 'ssm serve' first)")
    now = datetime.now(UTC)
    simulator = Simulator.open(state_dir, now)
    try:
        done = answer(simulator, request, output, now)
    finally:
        simulator.close()
    for line in done.lines():
        print(line, file=out)
    return EX_OK


def _show(state_dir: Path, as_json: bool, out: TextIO) -> int:
    if not (state_dir / DB_NAME).exists():
        raise _NoState(f"no simulator state in {state_dir} (run 'ssm serve' first)")
    with _admin(state_dir) as admin:
        state = admin.show(datetime.now(UTC))
    if as_json:
        json.dump(state, out, indent=2, sort_keys=True)
        print(file=out)
    else:
        for line in render(state):
            print(line, file=out)
    return EX_OK


def render(state: dict[str, Any]) -> Iterator[str]:
    """``show`` for people: per account, purchased vs used per tag; per instance, its
    UDI, state and last report."""
    for name, account in state["accounts"].items():
        yield f"account {name}"
        tags = account["tags"]
        if not tags:
            yield "  no licenses"
        else:
            width = max(len(t) for t in tags)
            yield f"  {'tag':<{width}}  purchased  used  available"
            for tag, row in tags.items():
                yield (
                    f"  {tag:<{width}}  {row['purchased']:>9}  {row['usage']:>4}"
                    f"  {row['available']:>9}"
                )
    instances = state["instances"]
    yield ""
    yield f"instances: {len(instances)}" if instances else "instances: none"
    for inst in instances:
        udi = inst["udi"]
        yield (
            f"  {inst['piid']}  {inst['state']}, account {inst['account']}, {inst['license_type']}"
        )
        yield f"    UDI pid {udi['pid']}, serial {udi['serial']}, uuid {udi['uuid']}"
        ended = f", deregistered {inst['deregistered_at']}" if inst["deregistered_at"] else ""
        yield (
            f"    registered {inst['registered_at']}{ended}, last contact {inst['last_contact']}"
            f", ID certificate until {inst['cert_expires_at']}"
        )
        last = inst["last_report"]
        if last is None:
            yield "    no report yet"
        else:
            usage = ", ".join(f"{t}={n}" for t, n in sorted(last["usage"].items())) or "nothing"
            yield f"    last report {last['start']} to {last['end']}: {usage}"
    tokens = state["tokens"]
    yield ""
    yield f"tokens: {tokens['total']} ({tokens['usable']} usable)"
