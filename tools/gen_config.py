"""Write ``config/ccx-agent.yaml`` (the commented example) and the key tables of
``docs/config.md`` from the config schema, the way borgmatic does: each key's meaning is
written once, as the ``description`` of its pydantic field in ``ccx_agent/config/schema.py``
(with its type, default and notes in ``json_schema_extra``), and both files follow.

    python tools/gen_config.py          # write both files
    python tools/gen_config.py --check  # exit 1 if a committed file is out of date

``tools/gen_docs.py`` (``make docs``) writes these too, and ``tests/test_gen_docs.py``
fails when either is stale. In ``docs/config.md`` only the tables between the markers
``<!-- keys: NAME -->`` and ``<!-- end keys -->`` are generated; the prose around them is
written by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ccx_agent.config import schema as config  # noqa: E402
from ccx_agent.config.durations import format_duration  # noqa: E402
from ccx_agent.licensing.catalogue import LicenseType, tags_of  # noqa: E402

SAMPLE = ROOT / "config" / "ccx-agent.yaml"
DOC = ROOT / "docs" / "config.md"
WIDTH = 88
#: The source kinds, in the order the reference and the example show them.
KINDS: dict[str, type[BaseModel]] = {
    "file": config.FileSource,
    "uccx": config.UccxSource,
    "command": config.CommandSource,
    "scripted": config.ScriptedSource,
}

HEADER = """\
# ccx-agent configuration: the Smart Licensing agent of a Cisco UCCX product instance.
#
# Every key is shown with its default value, so this file behaves exactly like a file
# that holds only the `source:` section. Change what you need; delete the rest if you
# prefer a short file. The full reference is docs/config.md.
#
# Generated from the schema (ccx_agent/config/schema.py) by tools/gen_config.py: edit the
# descriptions there, then run `make docs`.
#
# Where the agent looks for this file: `--config PATH`, else $CCX_AGENT_CONFIG, else
# /etc/ccx-agent/ccx-agent.yaml. Check a file with:
#
#     ccx-agent --config /etc/ccx-agent/ccx-agent.yaml check-config
#
# It prints OK, or one line per problem (PATH:LINE: key: message) and exits 78.
#
# Durations are a number with a unit: s (seconds), m (minutes), h (hours), d (days),
# w (weeks), combined as in 1h30m. A bare number such as `15` is refused: say 15m.
# Unknown keys are errors, so a typo never silently becomes a default. Relative paths
# are beside this file.
"""

#: The other source kinds, as examples: what they look like, not what they mean (the
#: meaning of each key is in docs/config.md, from the same schema as this file).
OTHER_SOURCES = """\
# Instead, to read UCCX and Finesse (relative paths are beside this file):
#
# source:
#   kind: uccx
#   uccx:
#     url: https://uccx-pub.example.com        # one node; https:// only
#     # Or, instead of url, the HA pair (docs/sources.md): agents are read from
#     # whichever node's Finesse is in service, and a failover is followed.
#     # nodes: [https://uccx-pub.example.com, https://uccx-sub.example.com]
#     user: ccx-license-reader                 # required
#     # A file holding the password (mode 0600). Unset: the systemd credential
#     # $CREDENTIALS_DIRECTORY/uccx-password. An inline `password:` works but is
#     # warned about.
#     password_file: /etc/ccx-agent/uccx-password
#     ca_bundle: /etc/ccx-agent/uccx-ca.pem    # unset: the system trust store
#     timeout: 30s                             # read timeout (default 30s)
#     connect_timeout: 10s                     # (default 10s)
#     config_refresh: 5m                       # re-read the configuration (default 5m)
#   finesse:                                   # all optional
#     url: https://uccx-pub.example.com        # default: the UCCX host
#     # nodes: [...]                           # with uccx.nodes: one per node, same order
#     user: finesse-admin                      # default: source.uccx.user
#     password_file: /etc/ccx-agent/finesse-password   # default: the UCCX password
#
# Or to run a program (no shell) that prints a snapshot in the file format:
#
# source:
#   kind: command
#   command: [/usr/local/bin/ccx-snapshot, --cluster, uccx-pub]   # required
#   timeout: 30s                               # killed after this (default 30s)
#   max_output_mb: 256                         # output cap in MiB (default 256)
#
# Or synthetic agents on a timeline (the demo's source; also for load tests):
#
# source:
#   kind: scripted
#   steps:                                     # required; the first at 0s
#     - {at: 0s, agents: 8}                    # from the start: 8 agents (voice only)
#     - {at: 10m, agents: 900, premium_agents: 100, supervisors: 20, outbound_ports: 30}
#     - {at: 1h, fail: true}                   # the source fails (LICENSE_COMPUTATION_FAILED)
#   repeat_after: 2h                           # start over (default: the last step holds)
"""

_LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_COUNT = {2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six"}
#: What the catalogue's tags do not say of a license type.
_TYPE_NOTES = {LicenseType.NFR: " (lab use; never out of compliance)"}


def plain(markdown: str) -> str:
    """A description as the example file says it: links as their text (a manual named as
    ``docs/NAME.md``, where it is from the repository's root), and backticks kept only
    around what has spaces in it (a command), where the words would run into the prose."""

    def link(m: re.Match[str]) -> str:
        text = m.group(1)
        return f"docs/{text}" if text.endswith(".md") else text

    def code(m: re.Match[str]) -> str:
        text = m.group(1)
        return m.group(0) if " " in text.strip() or text.startswith("#") else text

    return _CODE.sub(code, _LINK.sub(link, markdown))


def extra(info: FieldInfo) -> dict[str, Any]:
    value = info.json_schema_extra
    return dict(value) if isinstance(value, dict) else {}


def default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def required(info: FieldInfo) -> bool:
    return default_of(info) is PydanticUndefined


def yaml_value(value: Any, info: FieldInfo | None = None) -> str:
    """``value`` as the example file writes it (``""`` for unset, ``15m`` for a duration)."""
    if info is not None and "written" in extra(info):
        return str(extra(info)["written"])
    if value is None or value == "":
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    text = str(value)
    if yaml.safe_load(text) != (value if isinstance(value, int) else text):
        return json.dumps(text)
    return text


def sub_model(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (a plain ``BaseModel`` annotation), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def item_model(annotation: Any) -> type[BaseModel] | None:
    """The model of each item of a list-of-models field (``source.steps``)."""
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


# --- config/ccx-agent.yaml -------------------------------------------------------------------


def comment(text: str, indent: str) -> list[str]:
    width = WIDTH - len(indent) - 2
    wrapped = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)
    return [f"{indent}# {line}" for line in wrapped]


def license_types(indent: str) -> list[str]:
    """The tags each license type selects, from the catalogue."""
    width = max(len(t.value) for t in LicenseType)
    return [
        f"{indent}#   {t.value.ljust(width)}  {', '.join(tags_of(t))}{_TYPE_NOTES.get(t, '')}"
        for t in LicenseType
    ]


def key_lines(name: str, info: FieldInfo, indent: str, loc: tuple[str, ...]) -> list[str]:
    more = extra(info)
    text = plain(info.description or "")
    if required(info):
        text += " Required."
    lines = comment(text, indent)
    if loc == ("license", "type"):
        lines += license_types(indent)
    if required(info):
        return [*lines, f"{indent}{name}: {more['example']}"]
    value = yaml_value(default_of(info), info)
    note = f" ({plain(more['note'])})" if "note" in more else ""
    return [*lines, f"{indent}# Default: {value}{note}", f"{indent}{name}: {value}"]


def section_lines(model: type[BaseModel], indent: str, loc: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for name, info in model.model_fields.items():
        if out:
            out.append("")
        sub = sub_model(info.annotation)
        if sub is None:
            out += key_lines(name, info, indent, (*loc, name))
            continue
        if info.description:
            out += comment(plain(info.description), indent)
        out.append(f"{indent}{name}:")
        out += section_lines(sub, indent + "  ", (*loc, name))
    return out


def source_lines() -> list[str]:
    info = config.Config.model_fields["source"]
    width = max(map(len, KINDS))
    count = _COUNT[len(KINDS)]
    lines = comment(f"{plain(info.description or '')} {count} kinds (docs/sources.md):", "")
    for kind, model in KINDS.items():
        meaning = plain(model.model_fields["kind"].description or "")
        lines += textwrap.wrap(
            meaning,
            WIDTH,
            initial_indent=f"#   {kind.ljust(width)}  ",
            subsequent_indent="#   " + " " * (width + 2),
            break_on_hyphens=False,
        )
    lines.append("# Check a source with `ccx-agent usage`: it prints the consumption it reads now.")
    lines.append("source:")
    file_kind = config.FileSource.model_fields["kind"]
    lines += comment(f"file: {plain(file_kind.description or '')}.", "  ")
    lines.append("  kind: file")
    path = config.FileSource.model_fields["path"]
    lines += key_lines("path", path, "  ", ("source", "path"))
    return lines


def sample() -> str:
    """The whole example file."""
    lines: list[str] = []
    for name, info in config.Config.model_fields.items():
        if name == "source":
            continue
        lines.append("")
        sub = sub_model(info.annotation)
        if sub is None:
            lines += key_lines(name, info, "", (name,))
            continue
        if info.description:
            lines += comment(plain(info.description), "")
        lines.append(f"{name}:")
        lines += section_lines(sub, "  ", (name,))
    lines += ["", *source_lines(), ""]
    return HEADER + "\n".join(lines) + "\n" + OTHER_SOURCES


# --- the key tables of docs/config.md ----------------------------------------------------------


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def default_cell(info: FieldInfo) -> str:
    more = extra(info)
    if "shown" in more:
        return str(more["shown"])
    if required(info):
        return "— (required)"
    value = f"`{yaml_value(default_of(info), info)}`"
    return f"{value} ({more['note']})" if "note" in more else value


def rows(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """A table row for each key under ``model`` (sections flattened, list items as ``[]``)."""
    for name, info in model.model_fields.items():
        if name == "kind" and model in KINDS.values():
            continue
        key = f"{prefix}{name}"
        sub = sub_model(info.annotation)
        if sub is not None:
            yield from rows(sub, f"{key}.")
            continue
        kind = str(extra(info).get("kind", ""))
        yield (
            f"| `{key}` | {cell(kind)} | {cell(default_cell(info))} | "
            f"{cell(info.description or '')} |"
        )
        items = item_model(info.annotation)
        if items is not None:
            yield from rows(items, f"{key}[].")


def source_kind_row() -> str:
    info = config.Config.model_fields["source"]
    kinds = " ".join(
        f"`{kind}`: {model.model_fields['kind'].description}." for kind, model in KINDS.items()
    )
    return (
        f"| `source.kind` | {cell(str(extra(info)['kind']))} | {default_cell(info)} | "
        f"{cell(info.description or '')} {cell(kinds)} |"
    )


def table(name: str) -> str:
    """The table a marker names: a top-level key or section, ``source``, or ``source.KIND``."""
    head = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    if name == "source":
        body = [source_kind_row()]
    elif name.startswith("source."):
        body = list(rows(KINDS[name.split(".", 1)[1]], "source."))
    else:
        fields = config.Config.model_fields
        sub = sub_model(fields[name].annotation)
        body = list(rows(sub, f"{name}.")) if sub else list(rows_of_key(name))
    return "\n".join(head + body)


def rows_of_key(name: str) -> Iterator[str]:
    """The row of a top-level key that is not a section (``state_dir``)."""

    info = config.Config.model_fields[name]
    kind = str(extra(info).get("kind", ""))
    yield f"| `{name}` | {cell(kind)} | {cell(default_cell(info))} | {cell(info.description or '')} |"


_MARKED = re.compile(r"(<!-- keys: (\S+) -->\n)(.*?)(<!-- end keys -->)", re.S)


def reference(text: str) -> str:
    """``docs/config.md`` with every marked table generated again."""
    return _MARKED.sub(lambda m: f"{m.group(1)}{table(m.group(2))}\n{m.group(4)}", text)


def outputs() -> dict[Path, str]:
    return {SAMPLE: sample(), DOC: reference(DOC.read_text(encoding="utf-8"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--check", action="store_true", help="only say whether the files are current")
    args = p.parse_args(argv)
    stale = 0
    for path, text in outputs().items():
        if path.read_text(encoding="utf-8") == text:
            continue
        stale += 1
        if args.check:
            print(f"{path.relative_to(ROOT)} is out of date: run make docs", file=sys.stderr)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
