"""``ccx-agent offline export|import``: the agent's half of a file exchange (docs/offline.md).

Exit status: 0 done (an import of a file already imported too: it says so and changes
nothing), 1 refused or failed (one line on stderr, nothing changed), 78 a bad config.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ccx_agent.agent import Agent
from ccx_agent.cli import helptext as cli_help
from ccx_agent.config import schema as config_mod
from ccx_agent.errors import AgentError
from ccx_agent.instance import Open, instance_udi, open_store, print_alerts
from ccx_agent.offline import exchange
from ccx_agent.ssm.identity import KeyStore, load_anchors
from ccx_agent.userfiles import TokenError, read_token

EX_FAILED = 1


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("offline", help=cli_help.LISTED["offline"])
    sub = p.add_subparsers(dest="offline_command", required=True, metavar="ACTION")
    e = sub.add_parser(
        "export", help="write the pending reports and due renewals, signed, to one file"
    )
    e.add_argument("--output", type=Path, required=True, metavar="FILE", help="the file to write")
    e.add_argument(
        "--token-file",
        type=Path,
        metavar="F",
        help="register by file: a file holding the ID token, - for standard input (never "
        "printed or logged)",
    )
    e.add_argument(
        "--renew-id",
        action="store_true",
        help="renew the ID certificate even if it is not due within 30 days",
    )
    e.add_argument(
        "--deregister",
        action="store_true",
        help="deregister by file: the pending reports and a DEREGISTER (importing the answer "
        "wipes the identity; SSM releases the licences)",
    )
    i = sub.add_parser("import", help="check SSM's answer file and apply it")
    i.add_argument("response", type=Path, metavar="RESPONSE", help="the answer file")


def _now() -> datetime:
    return datetime.now(UTC)


def run(
    args: argparse.Namespace, path: Path, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    cfg = config_mod.load_or_status(path, err)
    if isinstance(cfg, int):
        return cfg
    token: str | None = None
    if args.offline_command == "export" and args.token_file is not None:
        try:  # as 'register' reads it: '-' is standard input
            token = read_token(None, str(args.token_file))
        except TokenError as exc:
            print(f"error: {exc}", file=err)
            return exc.exit_status
    # Registering by file may create the instance, as 'register' does.
    mode = Open.CREATE if token is not None else Open.WRITE
    try:
        store = open_store(cfg, mode)
    except AgentError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_status
    try:
        agent = Agent(
            cfg,
            store,
            None,
            udi=instance_udi(store, cfg),
            emit=print_alerts(store, err),
            delivers_alerts=False,
            offline=cfg.transport.mode == "offline",
        )
        agent.state()  # a license type other than the registered one is refused here
        keys = KeyStore(cfg.state_dir)
        if args.offline_command == "export":
            result = exchange.export(
                agent,
                keys,
                args.output,
                _now(),
                token=token,
                renew_id=args.renew_id,
                deregister=args.deregister,
            )
            lines = result.lines()
        else:
            anchors = load_anchors(cfg.transport.anchor())
            if not anchors:
                raise exchange.ExchangeError(
                    "transport.trust_anchor is not set: the answers' signatures cannot be checked"
                )
            lines = exchange.import_answers(agent, keys, anchors, args.response, _now()).lines
    except AgentError as exc:  # refused exchanges, SSM, identity and type errors alike
        print(f"error: {exc}", file=err)
        return exc.exit_status
    finally:
        store.close()
    for line in lines:
        print(line, file=out)
    return 0
