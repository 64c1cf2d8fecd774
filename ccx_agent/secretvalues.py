"""Secrets by value: what the config names and what a command was given, scrubbed from
every output.

Redacting by key (``password: …``) and by shape (a URL's password, ``Bearer …``) misses a
secret where nothing marks it: an ID token that SSM echoes in a refusal, a token passed
to a source command as a separate argument (``[snap, --token, X]``), a token used as a
URL's user name. So each secret value the process learns is remembered here, and every
output path (the log's :func:`ccx_agent.logs.redact_text`, an SSM refusal's message, the
support bundle) replaces it wherever it appears. Kept free of heavy imports: the config
loader registers what it finds on every load.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: What a secret becomes (the log's spelling; the support bundle uses its own).
MARK = "[REDACTED]"
#: Shorter than this, a "secret" would blank out half of every text; no real one is.
MIN_LENGTH = 4
#: A password file longer than this is not read for its first line.
MAX_SECRET_FILE = 64 * 1024
#: The systemd credentials the UCCX source may read (config.UCCX_CREDENTIAL, …).
CREDENTIAL_NAMES = ("uccx-password", "finesse-password")

#: A key holding one of these words (split on ``_ - .`` and camelCase) holds a secret.
_SECRET_WORDS = frozenset(
    {
        "token",
        "tokens",
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "authorization",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "apikey",
        "privatekey",
        "keypem",
    }
)
#: ... and so does a key with one of these pairs of adjacent words.
_SECRET_PAIRS = frozenset({("private", "key"), ("key", "pem"), ("api", "key")})
#: ... unless its last word says it is about the secret, not the secret itself
#: (``password_file`` is a path an operator needs to see; ``token_expiry`` a date).
_ABOUT_WORDS = frozenset(
    {"file", "path", "dir", "expiry", "expires", "count", "length", "type", "id", "set"}
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
#: A command-line option that takes a secret: ``-p``, or a long option named like a secret.
_SHORT_SECRET_FLAGS = frozenset({"-p"})


class _Known:
    """The values remembered in this process, longest first (replaced whole, under a lock:
    a reader never sees half an update)."""

    lock = threading.Lock()
    values: tuple[str, ...] = ()


def secret_key(name: str) -> bool:
    """Whether a key (of an event, a header, a query string, a config) names a secret."""
    words = [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", name).lower()) if w]
    if not words or words[-1] in _ABOUT_WORDS:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def remember(values: Iterable[str | None]) -> None:
    """Scrub these values from every output of this process from now on."""
    new = {v.strip() for v in values if v and len(v.strip()) >= MIN_LENGTH}
    with _Known.lock:
        if new - set(_Known.values):
            _Known.values = tuple(sorted(new | set(_Known.values), key=len, reverse=True))


def forget() -> None:
    """Forget every value (a test's process runs many configs, one after the other)."""
    with _Known.lock:
        _Known.values = ()


def known() -> tuple[str, ...]:
    """Every value remembered, longest first (a secret inside another goes too)."""
    return _Known.values


def scrub(text: str, mark: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every remembered value (and each of ``extra``) replaced by ``mark``."""
    values = _Known.values
    more = {e for e in extra if len(e) >= MIN_LENGTH}
    if more:
        values = tuple(sorted(more | set(values), key=len, reverse=True))
    for value in values:
        if value in text:
            text = text.replace(value, mark)
    return text


def first_line(path: Path) -> str | None:
    """The first line of a password file (what the source sends), None if unreadable or
    not a regular file: read on every config load, it must never block on a FIFO or
    read a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_SECRET_FILE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE:
        return None
    line = data.decode("utf-8", "replace").split("\n", 1)[0].strip()
    return line or None


def command_secrets(argv: Iterable[str]) -> list[str]:
    """The arguments of a command line that are secrets: the value after a secret option
    (``--token X``, ``-p X``) or in it (``--password=X``)."""
    found: list[str] = []
    after_flag = False
    for arg in argv:
        if after_flag:
            found.append(arg)
            after_flag = False
            continue
        if arg.startswith("-") and "=" in arg:
            flag, _, value = arg.partition("=")
            if secret_key(flag.lstrip("-")):
                found.append(value)
        elif arg in _SHORT_SECRET_FLAGS or (arg.startswith("--") and secret_key(arg[2:])):
            after_flag = True
    return found


def url_secrets(url: str) -> list[str]:
    """A URL's password, or its user name when it has no password (a token used as the
    user, as ``https://TOKEN@host/``)."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return []
    if password:
        return [password]
    return [user] if user else []


def in_document(doc: Any, key: str = "") -> list[str]:
    """Every secret value in a parsed config (or any document): values of secret keys, the
    first line of each ``*password_file``, URL secrets, a command's secret arguments."""
    found: list[str] = []
    if isinstance(doc, Mapping):
        for k, v in doc.items():
            found += in_document(v, str(k))
    elif isinstance(doc, list | tuple):
        if key == "command" and all(isinstance(a, str) for a in doc):
            found += command_secrets(doc)
        for item in doc:
            found += in_document(item, key)
    elif hasattr(doc, "get_secret_value"):  # pydantic's SecretStr
        found.append(str(doc.get_secret_value()))
    elif isinstance(doc, str | Path):
        text = str(doc)
        if key.endswith("password_file"):
            if line := first_line(Path(text)):
                found.append(line)
        elif key and secret_key(key):
            found.append(text)
        elif "://" in text:
            found += url_secrets(text)
    return found


def in_credentials() -> list[str]:
    """The first line of each systemd credential the source may read, where readable."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return []
    return [line for n in CREDENTIAL_NAMES if (line := first_line(Path(directory) / n))]
