"""What each CLI command does; ``cli.py`` only parses arguments and calls these.

Every command returns its exit status. Bad input is one clear line per problem on stderr,
never a traceback: 78 (EX_CONFIG) for a bad config or scenario, 1 for a failed action.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from ccx_agent import config as config_mod
from ccx_agent.licensing.catalogue import DISPLAY_NAMES
from ccx_agent.licensing.consumption import compute
from ccx_agent.scenario.model import read_scenario
from ccx_agent.scenario.runner import format_text, run
from ccx_agent.sources import SourceError
from ccx_agent.sources.factory import build
from ccx_agent.yamldoc import EX_CONFIG, DocumentError

EX_FAILED = 1


def _problems(exc: DocumentError, err: TextIO) -> int:
    for problem in exc.problems:
        print(problem, file=err)
    return EX_CONFIG


def check_config(path: Path, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        config_mod.load(path)
    except DocumentError as exc:
        return _problems(exc, err)
    print("OK", file=out)
    return 0


def usage(path: Path, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        cfg = config_mod.load(path)
    except DocumentError as exc:
        return _problems(exc, err)
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
