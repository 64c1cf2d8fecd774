"""What ``status --check`` and the commands that only look (``status``, ``report``,
``alerts``) need of the config, as the daemon validated it.

Monitoring runs ``status --check`` every minute. Validating the config with its full
schema (pydantic, 28 models) is most of what such a start costs, and it tells the check
nothing new while the file is the one the running daemon validated. So the daemon
records, in the state database, what that file means for those commands (the keys of
:data:`KEYS`, the state directory and the timers; never a secret), beside the file's
SHA-256, its path and a fingerprint of the code that validated it (:func:`fingerprint`).
They read the record (:func:`lookup`) and use it only if all three still match;
otherwise, or if anything is unusual (a relative path, no database, an unreadable
record), they validate the file as every other command does, with the same messages and
exit statuses.

The record is written from a validated :class:`~ccx_agent.config.schema.Config` by reading its
attributes, never from a second description of the keys or their defaults: the schema in
:mod:`ccx_agent.config.schema` stays the one source of truth.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import re
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TextIO, cast

from ccx_agent import __version__
from ccx_agent.config.configpath import DEFAULT_STATE_DIR, serial_number
from ccx_agent.licensing.catalogue import LicenseType
from ccx_agent.licensing.lifecycle import Timers

if TYPE_CHECKING:
    from ccx_agent.config.schema import Config
    from ccx_agent.store.db import Store

#: The ``meta`` key of the record.
META_KEY = "config_for_check"

#: The keys ``status --check``, ``status``, ``report`` and ``alerts`` read
#: (:func:`ccx_agent.cli.check.verdict`, :func:`ccx_agent.status.collect`,
#: :func:`ccx_agent.cli.commands.status`, :mod:`ccx_agent.history.cli`), and the type each
#: is read back as. None is a secret. A key read there and missing here makes the
#: recorded view raise :class:`NotRecorded`, and ``tests/test_imports.py`` fail.
KEYS: dict[str, type] = {
    "license.type": LicenseType,
    "transport.mode": str,
    "compliance.ooc_threshold": int,
    "report.interval": timedelta,
    "monitoring.stale_after": timedelta,
    "id_certificate.expiry_warning": timedelta,
    "authorization.expiry_warning": timedelta,
    "identity.pid": str,
    "identity.serial": str,
}

#: The modules whose code decides what a config file means: a record made by other code
#: (an upgrade not yet followed by a restart) is not used.
_DECIDING = (
    "config/schema.py",
    "config/configpath.py",
    "config/durations.py",
    "config/yamldoc.py",
    "checkconfig.py",
    "licensing/catalogue.py",
    "licensing/lifecycle.py",
)


@functools.cache
def fingerprint() -> str:
    """The version of the code (ours and pydantic's) that validates a config file."""
    h = hashlib.sha256(__version__.encode())
    here = Path(__file__).parent
    files = [here / name for name in _DECIDING]
    spec = importlib.util.find_spec("pydantic")  # found, not imported
    if spec is not None and spec.origin is not None:
        files.append(Path(spec.origin).parent / "version.py")
    for file in files:
        try:
            h.update(file.read_bytes())
        except OSError:
            h.update(b"?")
    return h.hexdigest()


def _read(path: Path) -> bytes | None:
    """The file's bytes if it is a regular file that can be read, else None: opened as
    every config is (:func:`ccx_agent.userfiles.open_regular`), so a FIFO put where the
    config was never blocks the daemon's reload nor the check."""
    from ccx_agent.userfiles import UserFileError, open_regular  # noqa: PLC0415

    try:
        with open_regular(path) as f:
            return f.read()
    except (OSError, UserFileError):
        return None


def digest(path: Path) -> str | None:
    """The SHA-256 of the file's bytes; None if it cannot be read."""
    raw = _read(path)
    return None if raw is None else hashlib.sha256(raw).hexdigest()


def _encode(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, tuple):
        return list(value)
    return str(value) if isinstance(value, Path | LicenseType) else value


def _decode(kind: type, value: Any) -> Any:
    if kind is timedelta:
        return timedelta(seconds=value)
    if kind is tuple:
        return tuple(value)
    if kind is Path:
        return Path(value)
    return kind(value)


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def record(store: Store, path: Path, cfg: Config, before: str | None) -> None:
    """Record what the file at ``path`` means for the check: ``cfg``, validated from the
    bytes whose digest was ``before`` (taken before reading it). Nothing is recorded for
    a relative path, or a file that changed meanwhile (the check validates it itself)."""
    if before is None or not path.is_absolute() or digest(path) != before:
        return
    doc = {
        "path": str(path),
        "sha256": before,
        "code": fingerprint(),
        "state_dir": str(cfg.state_dir),
        "timers": {f.name: _encode(getattr(cfg.timers(), f.name)) for f in _timer_fields()},
        "keys": {key: _encode(_get(cfg, key)) for key in KEYS},
    }
    with store.transaction() as tx:
        tx.set_meta(META_KEY, json.dumps(doc, sort_keys=True))


def _timer_fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(Timers)


class NotRecorded(AttributeError):
    """The check read a key the record does not carry (one added to the check but not
    to :data:`KEYS`): it answers from the file instead (:func:`ccx_agent.cli.check.main`)."""


class _Section(SimpleNamespace):
    def __getattr__(self, name: str) -> Any:
        raise NotRecorded(name)


class _Identity(_Section):
    """``identity``, with :meth:`~ccx_agent.config.schema.IdentityConfig.serial_number`."""

    def serial_number(self) -> str:
        return serial_number(self.serial)


#: The recorded sections that have methods of their own.
_SECTIONS: dict[str, type[_Section]] = {"identity": _Identity}


class StateDir:
    """Where to open the database before the config is known (:func:`light_state_dir`).
    A plain class, not a dataclass: see :class:`ccx_agent.cli.check.Verdict`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir


class Recorded(_Section):
    """The recorded config: the attributes of :data:`KEYS`, ``state_dir`` and
    ``timers()``, as a :class:`~ccx_agent.config.schema.Config` has them."""

    state_dir: Path

    def __init__(self, state_dir: Path, timers: Timers, keys: dict[str, Any]) -> None:
        super().__init__(state_dir=state_dir)
        self._timers = timers
        for key, value in keys.items():
            here: SimpleNamespace = self
            *sections, name = key.split(".")
            for section in sections:
                if not hasattr(here, section):
                    setattr(here, section, _SECTIONS.get(section, _Section)())
                here = getattr(here, section)
            setattr(here, name, value)

    def timers(self) -> Timers:
        return self._timers


#: A top-level ``state_dir:`` line: its value, a trailing comment left out.
_STATE_DIR = re.compile(r"^state_dir[ \t]*:[ \t]*(.*?)(?:[ \t]+#.*)?[ \t]*$", re.M)


def light_state_dir(path: Path) -> Path | None:
    """Where the state directory of the config at ``path`` seems to be, read without the
    schema, nor even a YAML parser: only to find the record, which is used only if it
    names this same directory (so a line read wrongly here can only cost a full
    validation). None for a value written in any but the plain ways."""
    raw = _read(path)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except ValueError:
        return None
    found = _STATE_DIR.findall(text)
    if len(found) > 1:
        return None
    value = found[0] if found else str(DEFAULT_STATE_DIR)
    if value[:1] in ("'", '"'):
        quote, value = value[0], value[1:-1] if value[-1:] == value[0] else ""
        if quote in value or "\\" in value or "'" in value:
            return None
    elif not value or value[0] in "[{&*!|>%@`\"'":
        return None
    state_dir = Path(value)
    return state_dir if state_dir.is_absolute() else path.parent / state_dir


def read(store: Store, path: Path, state_dir: Path) -> Recorded | None:
    """The record in ``store`` (opened at ``state_dir``) if it is of the file at ``path``
    as it is now, validated by this code, with this state directory; else None."""
    if not path.is_absolute():
        return None
    try:
        with store.read() as tx:
            text = tx.meta(META_KEY)
        if text is None:
            return None
        doc = json.loads(text)
        if (
            doc["path"] != str(path)
            or doc["code"] != fingerprint()
            or doc["state_dir"] != str(state_dir)
            or doc["sha256"] != digest(path)
            or set(doc["keys"]) != set(KEYS)
        ):
            return None
        timers = Timers(
            **{
                f.name: _decode(type(getattr(Timers(), f.name)), doc["timers"][f.name])
                for f in _timer_fields()
            }
        )
        keys = {key: _decode(kind, doc["keys"][key]) for key, kind in KEYS.items()}
    except Exception:  # a record this code cannot read: validate the file instead
        return None
    return Recorded(state_dir, timers, keys)


def lookup(path: Path) -> tuple[Recorded, Store] | None:
    """The record of the config at ``path`` (:func:`read`), and the database it is in
    (opened read-only), when the file is still the one the daemon validated; else None,
    having said nothing: the caller validates the file and opens the database as every
    command does, and says what is wrong."""
    from ccx_agent.instance import Open, open_store  # noqa: PLC0415 - no import cycle

    state_dir = light_state_dir(path) if path.is_absolute() else None
    if state_dir is None:
        return None
    try:
        store = open_store(StateDir(state_dir), Open.READ)
    except Exception:
        return None
    recorded = read(store, path, state_dir)
    if recorded is None:
        store.close()
        return None
    return recorded, store


def recorded(path: Path) -> Recorded | None:
    """The record of :func:`lookup`, for a caller that then opens the database itself as
    every command does (:func:`ccx_agent.instance.open_store`, which refuses a lost or
    damaged one): the database is opened here only to read the record, without the
    ``quick_check`` of every page, which that open makes (once is enough, and on a year's
    history it is most of what opening costs)."""
    from ccx_agent.store import statedir  # noqa: PLC0415 - no import cycle
    from ccx_agent.store.db import Store  # noqa: PLC0415

    state_dir = light_state_dir(path) if path.is_absolute() else None
    if state_dir is None:
        return None
    try:
        store = Store(statedir.db_path(state_dir), readonly=True)
    except Exception:
        return None
    try:
        return read(store, path, state_dir)
    finally:
        store.close()


def recorded_state_dir(path: Path) -> Path | None:
    """The state directory of the config at ``path``, if the daemon recorded this very
    file (:func:`recorded`): where root becomes the directory's owner before a command
    that reads the record."""
    found = recorded(path)
    return None if found is None else found.state_dir


def load(path: Path, err: TextIO, *, record: bool = True) -> Config | int:
    """The config at ``path`` for ``status``, ``report`` and ``alerts``: the daemon's
    record of it when it applies (:func:`recorded`), else (or without ``record``) the file
    validated in full by :func:`ccx_agent.config.schema.load`; a file that is not valid is its
    problems on ``err``, one a line, and :data:`~ccx_agent.errors.EX_CONFIG`, as every
    command says them. The record is not a :class:`~ccx_agent.config.schema.Config`: it has the
    attributes of :data:`KEYS`, ``state_dir`` and ``timers()``, and raises
    :class:`NotRecorded` for any other."""
    found = recorded(path) if record else None
    if found is not None:
        return cast("Config", found)
    # The schema and the YAML parser only here.
    from ccx_agent.config import schema as config_mod  # noqa: PLC0415

    return config_mod.load_or_status(path, err)
