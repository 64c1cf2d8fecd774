"""The history commands: ``report``, ``alerts`` and ``features`` (docs/reports.md).

``report`` and ``alerts`` only look: the database is opened with :data:`Open.READ` (no
directory or database is ever created, no write lock is taken) and read from one
snapshot, so they run beside the daemon. Bad arguments are one line and exit 2, as
argparse exits; no instance is one line naming the database and exit 1.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ccx_agent import checkconfig
from ccx_agent.cli import helptext as cli_help
from ccx_agent.errors import EX_USAGE, AgentError
from ccx_agent.history import alertlog, features, render_csv, render_json, render_text
from ccx_agent.history.report import (
    BY_CHOICES,
    DEFAULT_SPAN,
    Report,
    WhenError,
    default_by,
    parse_when,
    stream,
)
from ccx_agent.instance import Open, open_store
from ccx_agent.licensing.catalogue import LicenseType, tags_of
from ccx_agent.store.db import Store
from ccx_agent.userfiles import Output, UserFileError, reason

if TYPE_CHECKING:
    from ccx_agent.config.schema import Config

COMMANDS = frozenset({"report", "alerts", "features"})
FORMATS = ("text", "csv", "json", "html")
#: ``alerts`` without ``--since``: this long back.
ALERTS_SPAN = DEFAULT_SPAN


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "report",
        help=cli_help.LISTED["report"],
    )
    r.add_argument(
        "--from", dest="start", metavar="WHEN", help="ISO 8601 (default: 7 days before --to)"
    )
    r.add_argument("--to", dest="end", metavar="WHEN", help="ISO 8601 (default: now)")
    r.add_argument(
        "--by",
        choices=BY_CHOICES,
        help="period of a row (default: hour up to 2 days, else day)",
    )
    r.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="only this tag (repeatable)"
    )
    r.add_argument("--format", choices=FORMATS, default="text", help="output format (text)")
    r.add_argument("--output", type=Path, metavar="FILE", help="write to FILE, not stdout")
    a = sub.add_parser("alerts", help=cli_help.LISTED["alerts"])
    a.add_argument("--since", metavar="WHEN", help="ISO 8601 (default: 7 days ago)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    f = sub.add_parser("features", help=cli_help.LISTED["features"])
    f.add_argument("--license-type", metavar="T", help="only this license type")
    f.add_argument("--json", action="store_true", help="machine-readable output")


def _load(path: Path, err: TextIO) -> Config | int:
    """The config, from the daemon's record of it when it applies: ``report`` and
    ``alerts`` read only ``state_dir`` and ``license.type`` (:mod:`ccx_agent.checkconfig`)."""
    return checkconfig.load(path, err)


def _read(cfg: Config, err: TextIO, work: Callable[[Store], None]) -> int:
    """Run ``work`` on the database opened read-only; its absence is one line, exit 1."""
    try:
        store = open_store(cfg, Open.READ)
    except AgentError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_status
    try:
        work(store)
    except AgentError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_status
    finally:
        store.close()
    return 0


def _when(option: str, text: str | None, err: TextIO) -> datetime | int | None:
    if text is None:
        return None
    try:
        return parse_when(text)
    except WhenError as exc:
        print(f"error: {option}: {exc}", file=err)
        return EX_USAGE


def _write_atomic(target: Path, write: Callable[[TextIO], None]) -> None:
    """Write ``target`` whole (:class:`~ccx_agent.userfiles.Output`): a failed run never
    leaves half a report; a new file is 0644, an existing one keeps its mode."""
    with Output(target, 0o644) as output:
        text = io.TextIOWrapper(output.stream, encoding="utf-8", newline="")
        write(text)
        text.flush()
        text.detach()


def render(report_: Report, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        render_json.write(report_, out)
    elif fmt == "csv":
        render_csv.write(report_, out)
    elif fmt == "html":
        from ccx_agent.history import render_html  # noqa: PLC0415 - only for this format

        render_html.write(report_, out)
    else:
        render_text.write(report_, out)


def report(
    path: Path,
    *,
    start: str | None = None,
    end: str | None = None,
    by: str | None = None,
    tags: Sequence[str] = (),
    fmt: str = "text",
    output: Path | None = None,
    now: datetime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    cfg = _load(path, err)
    if isinstance(cfg, int):
        return cfg
    until = _when("--to", end, err)
    if isinstance(until, int):
        return until
    since = _when("--from", start, err)
    if isinstance(since, int):
        return since
    until = until or now or datetime.now(UTC)
    since = since or until - DEFAULT_SPAN
    if since > until:
        print(f"error: --from ({start}) is after --to ({end or 'now'})", file=err)
        return EX_USAGE
    lt = cfg.license.type
    valid = tags_of(lt)
    for tag in tags:
        if tag not in valid:
            from ccx_agent.config.yamldoc import one_of  # noqa: PLC0415 - only to say what is wrong

            print(f"error: --tag: {one_of(list(valid), tag, f'{lt.value} tag')}", file=err)
            return EX_USAGE
    chosen = list(dict.fromkeys(tags)) or list(valid)
    period = by or default_by(since, until)
    made: list[Report] = []

    def work(store: Store) -> None:
        # The rows stream from the cursor through the aggregation to the writer, all
        # inside one read snapshot: no list of a year's rows is ever held.
        with store.read() as tx:
            raised = [a for a, _ in tx.alert_log(since) if a.time < until]
            result = stream(
                lambda: tx.iter_interval_tag_rows(since, until),
                license_type=lt.value,
                start=since,
                end=until,
                by=period,
                tags=chosen,
                alerts=raised,
                axis_from_data=start is None,
            )
            if output is None:
                render(result, fmt, out)
            else:
                _write_atomic(output, lambda f: render(result, fmt, f))
            made.append(result)

    try:
        code = _read(cfg, err, work)
    except UserFileError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except OSError as exc:
        if output is None:
            raise
        print(f"error: {output}: cannot write the report: {reason(exc)}", file=err)
        return 1
    if code or output is None:
        return code
    print(f"{output}: {made[0].count} rows by {period}, {fmt}", file=out)
    return 0


def alerts(
    path: Path,
    *,
    since: str | None = None,
    as_json: bool = False,
    now: datetime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    import json  # noqa: PLC0415

    out, err = out or sys.stdout, err or sys.stderr
    cfg = _load(path, err)
    if isinstance(cfg, int):
        return cfg
    start = _when("--since", since, err)
    if isinstance(start, int):
        return start
    start = start or (now or datetime.now(UTC)) - ALERTS_SPAN
    entries: list[alertlog.LogEntry] = []

    def work(store: Store) -> None:
        with store.read() as tx:
            entries.extend(tx.alert_log(start))

    code = _read(cfg, err, work)
    if code:
        return code
    if as_json:
        json.dump(alertlog.as_json(entries, start), out, indent=2)
        out.write("\n")
    else:
        print(alertlog.format_text(entries, start), file=out)
    return 0


def features_command(
    license_type: str | None,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """No config and no database: the catalogue is the same on every instance."""
    import json  # noqa: PLC0415

    out, err = out or sys.stdout, err or sys.stderr
    names = [t.value for t in LicenseType]
    if license_type is not None and license_type not in names:
        from ccx_agent.config.yamldoc import one_of  # noqa: PLC0415 - only to say what is wrong

        print(f"error: --license-type: {one_of(names, license_type, 'license type')}", file=err)
        return EX_USAGE
    types = [LicenseType(license_type)] if license_type else list(LicenseType)
    if as_json:
        json.dump(features.as_json(types), out, indent=2)
        out.write("\n")
    else:
        print(features.format_text(types), file=out)
    return 0
