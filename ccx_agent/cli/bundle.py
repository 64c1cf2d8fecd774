"""``ccx-agent support-bundle``: one ``.tar.gz`` for a support case, free of secrets.

What a support engineer asks for first, gathered at once: the config (every secret
replaced by ``<redacted>``), ``status --json``, ``doctor --json``, the last 7 days of
``report`` (JSON) and ``alerts``, the last 2,000 lines of the daemon's journal when
``journalctl`` exists, and the versions of Python, ccx-agent, its dependencies, OpenSSL,
SQLite and systemd.

The commands are run as the CLI runs them (``python -m ccx_agent …``), each in its own
process: as root they work as the state directory's owner like any command does (no
root-owned ``-shm`` is ever left beside the daemon's database), one that fails is
recorded in ``commands.txt`` with its exit status and does not spoil the rest, and the
journal is read with the rights of whoever runs the bundle.

Nothing secret leaves the host: the config is redacted key by key (and checked by
parsing it again), every member goes through :func:`ccx_agent.logs.redact_text`
(private keys, URL passwords, bearer and basic credentials, ``token=…`` pairs), and every
secret value the agent knows of (:mod:`ccx_agent.secretvalues`: an inline password, the
first line of each password file and systemd credential it can read, a proxy password, a
token used as a URL's user name, a source command's secret argument, and what the
config's comments still hold) is replaced wherever it appears, comments included.
The private keys of ``state_dir/keys`` are never read into the bundle. The file is 0600.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import yaml

from ccx_agent import __version__, secretvalues
from ccx_agent.cli.doctor.local import unit_name
from ccx_agent.config import schema as config_mod
from ccx_agent.config.yamldoc import DocumentError
from ccx_agent.errors import EX_FAILED
from ccx_agent.licensing.timeutil import iso
from ccx_agent.logs import REDACTED as LOG_REDACTED
from ccx_agent.logs import redact_text, secret_key
from ccx_agent.userfiles import Output, UserFileError, reason

REDACTED = "<redacted>"
#: How far back ``report`` and ``alerts`` go.
HISTORY = timedelta(days=7)
#: Journal lines taken.
JOURNAL_LINES = 2000
#: Longest any one command may take (the doctor bounds itself well inside it).
COMMAND_TIMEOUT_S = 90.0

_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*):(?P<password>[^\s/@]*)@")
#: ``key: value`` on one line of YAML (a list item's key too), with an optional comment.
_KEY_LINE = re.compile(
    r"^(?P<lead>\s*(?:-\s+)?)(?P<q>[\"']?)(?P<key>[A-Za-z_][\w.\-]*)(?P=q)"
    r"(?P<colon>\s*:)(?P<sp>\s*)(?P<value>[^#\n]*?)(?P<tail>\s*(?:#.*)?)$"
)


# --- the config, redacted -----------------------------------------------------------------


#: A comment on a YAML line: at its start, or after a blank (a ``#`` inside a word or a
#: URL's fragment is not one).
_COMMENT = re.compile(r"(?:^|\s)#+\s?(?P<text>.*)$")
#: ``key: value`` (or ``key=value``) anywhere in a comment.
_COMMENT_PAIR = re.compile(
    r"(?P<key>[A-Za-z_][\w.\-]*)[\"']?\s*[:=]\s*[\"']?(?P<value>[^\s\"',\]}#]+)"
)
#: What splits a commented-out line into the words of a command line.
_WORDS = re.compile(r"[\s,\[\]{}\"']+")


def comment_secrets(text: str) -> list[str]:
    """The secrets in the comments of a YAML text: a commented-out secret key's value
    (``# password: old``), a commented-out command's secret argument (``--token X``), a
    URL's password or token user name. A comment is kept for support to read, and an old
    password left in one is often still somebody's password."""
    found: list[str] = []
    for line in text.splitlines():
        comment = _COMMENT.search(line)
        if comment is None:
            continue
        said = comment["text"]
        for m in _COMMENT_PAIR.finditer(said):
            if secret_key(m["key"]) and m["value"] not in ("null", "~", "|", ">"):
                found.append(m["value"])
        words = [w for w in _WORDS.split(said) if w]
        found += secretvalues.command_secrets(words)
        for word in words:
            if "://" in word:
                found += secretvalues.url_secrets(word)
    return [f for f in found if len(f) >= secretvalues.MIN_LENGTH and f != REDACTED]


def redact_config(text: str) -> str:
    """``text`` (a YAML config) with the value of every secret key, and every password in
    a URL, replaced by ``<redacted>``; lines and comments are kept, so that the doctor's
    ``PATH:LINE`` findings still point at the right line, and the secrets in comments
    (:func:`comment_secrets`) go too. If a secret survives in a form the line rules do not
    know (a flow mapping, say), the parsed document is written out redacted instead."""
    text = secretvalues.scrub(text, REDACTED, comment_secrets(text))
    out: list[str] = []
    block: int | None = None  # the indent of a secret key whose value is a block scalar
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip(" "))
        if block is not None:
            if line.strip() and indent <= block:
                block = None
            else:
                continue  # a line of the secret block: dropped
        m = _KEY_LINE.match(line.rstrip("\r\n"))
        if m and secret_key(m["key"]) and m["value"].strip() not in ("", "null", "~", '""', "''"):
            end = "\n" if line.endswith("\n") else ""
            head = f"{m['lead']}{m['q']}{m['key']}{m['q']}{m['colon']}{m['sp'] or ' '}"
            out.append(f"{head}{REDACTED}{end}")
            if m["value"].strip()[:1] in ("|", ">"):
                block = indent
            continue
        out.append(_USERINFO.sub(rf"\g<head>:{REDACTED}@", line))
    # The log's rules too (a private key pasted in, ``key=value`` pairs), in this file's
    # spelling of a redaction.
    redacted = redact_text("".join(out)).replace(LOG_REDACTED, REDACTED)
    if _secrets_left(redacted):
        return _dump_redacted(text)
    return redacted


def _walk(value: Any, key: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)
    else:
        yield key, value


def _secrets_left(text: str) -> bool:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False  # not YAML to begin with: the line rules are all there is
    for key, value in _walk(doc):
        if key and secret_key(key) and value not in (None, "", REDACTED):
            return True
        if isinstance(value, str) and any(
            m["password"] != REDACTED for m in _USERINFO.finditer(value)
        ):
            return True
    return False


def _scrubbed(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _scrubbed(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, key) for v in value]
    if key and secret_key(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return _USERINFO.sub(rf"\g<head>:{REDACTED}@", value)
    return value


def _dump_redacted(text: str) -> str:
    doc = _scrubbed(yaml.safe_load(text))
    note = "# rewritten from the parsed config (its secrets were not on lines of their own)\n"
    return note + yaml.safe_dump(doc, sort_keys=False)


# --- secrets the agent knows of -----------------------------------------------------------


def known_secrets(cfg: config_mod.Config | None, text: str = "") -> list[str]:
    """Every secret value this host's agent uses that can be read here: every secret the
    config names (an inline password, the first line of each password file, a proxy's
    password, a URL's token user name, a source command's secret arguments; see
    :mod:`ccx_agent.secretvalues`), each systemd credential, and those left in the
    comments of the config's ``text``. Longest first, so a secret inside another goes
    too."""
    found = set(secretvalues.in_credentials()) | set(comment_secrets(text))
    if cfg is not None:
        found |= set(secretvalues.in_document(cfg.model_dump()))
    else:  # a config that does not load still names its secrets
        with contextlib.suppress(yaml.YAMLError, ValueError):
            found |= set(secretvalues.in_document(yaml.safe_load(text)))
    found |= set(secretvalues.known())
    return sorted((s for s in found if len(s) >= secretvalues.MIN_LENGTH), key=len, reverse=True)


def scrub(text: str, secrets: Sequence[str], *, rules: bool = True) -> str:
    """``text`` through :func:`redact_text` (unless ``rules`` is off: the config has had
    its own), then without any of ``secrets``."""
    if rules:
        text = redact_text(text)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


# --- what goes in -------------------------------------------------------------------------


def _cli(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ccx_agent", "--config", str(path), *args]


def _run(argv: list[str]) -> tuple[int | None, str, str]:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, "", f"did not finish within {COMMAND_TIMEOUT_S:g} s"
    except OSError as exc:
        return None, "", f"could not run: {exc.strerror or exc}"
    return done.returncode, done.stdout, done.stderr


def _commands(path: Path, now: datetime) -> dict[str, list[str]]:
    since = iso(now - HISTORY)
    members = {
        "status.json": _cli(path, "status", "--json"),
        "doctor.json": _cli(path, "doctor", "--json"),
        "report.json": _cli(path, "report", "--format", "json", "--from", since),
        "alerts.json": _cli(path, "alerts", "--json", "--since", since),
    }
    journalctl = shutil.which("journalctl")
    if journalctl is not None:
        members["journal.txt"] = [
            journalctl,
            "--unit",
            unit_name(path),
            "--lines",
            str(JOURNAL_LINES),
            "--no-pager",
            "--output",
            "short-iso-precise",
        ]
    return members


def _dependencies() -> dict[str, str]:
    """Every distribution installed beside ccx-agent (a dedicated virtualenv: its deps)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        if dist.name:
            found[dist.name] = dist.version
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def _systemd_version() -> str | None:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    code, out, _ = _run([systemctl, "--version"])
    return out.splitlines()[0] if code == 0 and out else None


def versions() -> dict[str, Any]:
    return {
        "ccx-agent": __version__,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "openssl": ssl.OPENSSL_VERSION,
        "sqlite": sqlite3.sqlite_version,
        "systemd": _systemd_version(),
        "dependencies": _dependencies(),
    }


def default_output(now: datetime) -> Path:
    host = socket.gethostname().split(".")[0] or "host"
    return Path(f"ccx-agent-support-{host}-{now.strftime('%Y%m%dT%H%M%SZ')}.tar.gz")


def _config_member(path: Path) -> tuple[str, str, config_mod.Config | None]:
    """The config redacted, as read, and loaded (None if it does not load)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"# {path}: cannot be read ({exc.strerror or exc})\n", "", None
    try:
        cfg = config_mod.load(path)
    except DocumentError:
        cfg = None
    return redact_config(text), text, cfg


def collect(path: Path, now: datetime) -> dict[str, str]:
    """The bundle's members (name → text), scrubbed."""
    config_text, raw, cfg = _config_member(path)
    secrets = known_secrets(cfg, raw)
    members: dict[str, str] = {"config.yaml": config_text}
    log: list[str] = [
        f"ccx-agent support bundle, made {iso(now)} on {socket.gethostname()} by uid "
        f"{os.geteuid()} from {path}",
        "",
    ]
    commands = _commands(path, now)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(commands)) as pool:
        started = time.monotonic()
        futures = {name: pool.submit(_run, argv) for name, argv in commands.items()}
        for name, argv in commands.items():
            code, out, err = futures[name].result()
            shown = " ".join(["ccx-agent", *argv[3:]] if argv[0] == sys.executable else argv)
            log.append(f"$ {shown}\nexit status: {code}")
            if err.strip():
                log.append("stderr:\n" + err.rstrip())
            log.append("")
            members[name] = out if out.strip() or code == 0 else err
        log.append(f"(the commands took {time.monotonic() - started:.1f} s in all)")
    if "journal.txt" not in commands:
        log.append("journalctl is not installed here: no journal in this bundle")
    members["commands.txt"] = "\n".join(log) + "\n"
    members["versions.json"] = json.dumps(versions(), indent=2) + "\n"
    return {
        name: scrub(text, secrets, rules=name != "config.yaml") for name, text in members.items()
    }


def write(members: dict[str, str], output: Path, top: str) -> Output:
    """The ``.tar.gz`` at ``output`` (see :class:`~ccx_agent.userfiles.Output`: a new
    file is 0600, a failed run leaves nothing half-written), committed."""
    with (
        Output(output, 0o600) as target,
        tarfile.open(fileobj=target.stream, mode="w:gz") as tar,
    ):
        stamp = time.time()
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o600
            info.mtime = int(stamp)
            tar.addfile(info, io.BytesIO(data))
    return target


def main(
    path: Path,
    output: Path | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    now: datetime | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    now = now or datetime.now(UTC)
    target = output or default_output(now)
    top = target.name.removesuffix(".tar.gz").removesuffix(".tgz") or "ccx-agent-support"
    members = collect(path, now)
    try:
        written = write(members, target, top)
        mode = written.mode()
    except UserFileError as exc:
        print(f"error: {exc}", file=err)
        return EX_FAILED
    except OSError as exc:
        print(f"error: {target}: cannot write the bundle: {reason(exc)}", file=err)
        return EX_FAILED
    where = "written through" if mode is None else f"mode {mode:04o}"
    print(
        f"{target}: {len(members)} files, {written.size} bytes, {where} (secrets redacted: "
        "check before sending)",
        file=out,
    )
    return 0
