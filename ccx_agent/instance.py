"""This instance's pieces, as the config describes them: its database, its SSM client
and its UDI. Shared by the one-shot commands and the daemon (which must not pull in the
what-if simulator that ``commands`` can run)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Protocol, TextIO

from ccx_agent.licensing.lifecycle import ProductState
from ccx_agent.store import statedir
from ccx_agent.store.db import UDI_UUID_KEY, AlertRow, Store, Unborn

if TYPE_CHECKING:
    # The schema, the SSM client and its port only where used: opening the database for
    # a look (``status --check``) needs neither pydantic nor cryptography.
    from pathlib import Path

    from ccx_agent.config.schema import Config
    from ccx_agent.ssm import client as ssm_client
    from ccx_agent.ssm.port import Udi


class Open(Enum):
    """How a command may open the state database."""

    #: Look only: never create a directory or a database, take no write lock.
    READ = "read"
    #: Change an instance that exists (renew, deregister): never create one.
    WRITE = "write"
    #: Create the instance if the directory is absent or empty (register, run).
    CREATE = "create"


def instance_udi(store: Store, cfg: Config) -> Udi:
    """The UDI: PID and serial from the config, a UUID created once and kept."""
    from ccx_agent.ssm.port import Udi  # noqa: PLC0415 - see the imports

    with store.transaction() as tx:
        value = tx.meta(UDI_UUID_KEY)
        if value is None:
            import uuid  # noqa: PLC0415 - once in the life of an instance

            value = str(uuid.uuid4())
            tx.set_meta(UDI_UUID_KEY, value)
    return Udi(cfg.identity.pid, cfg.identity.serial_number(), value)


class HasStateDir(Protocol):
    """What :func:`open_store` reads of a config: a :class:`~ccx_agent.config.schema.Config`, or
    the record of one that ``status --check`` reads (:mod:`ccx_agent.checkconfig`)."""

    @property
    def state_dir(self) -> Path: ...


def open_store(cfg: HasStateDir, mode: Open = Open.CREATE) -> Store:
    """The state database, opened as ``mode`` allows; a lost or damaged instance is always
    refused, by every command alike.

    Raises :class:`~ccx_agent.store.statedir.NoDatabase` where there is no instance and
    ``mode`` may not create one, :class:`~ccx_agent.store.statedir.LostInstance` where an
    instance lived but its database is gone, empty, or holds nothing of it (no schema, no
    product state, no UDI), :class:`~ccx_agent.store.db.StoreError` where it is damaged
    (``PRAGMA quick_check`` fails: a command must neither answer "none" from half a
    database nor write into one).
    """
    found = statedir.inspect(cfg.state_dir)
    path = statedir.db_path(cfg.state_dir)
    if found.kind is statedir.Kind.LOST:
        raise statedir.LostInstance(statedir.lost_message(cfg.state_dir, found.evidence))
    if found.kind is not statedir.Kind.LIVE and mode is not Open.CREATE:
        raise statedir.NoDatabase(
            f"{path}: no state database (no instance has been registered or run with "
            f"state_dir {cfg.state_dir}): check state_dir in the config"
        )
    # Where an instance lived, its database must already hold it: never make a schema,
    # a product state or a UDI there (that would be a new instance: a new UDI, a new
    # evaluation, no registration).
    lived = found.kind is statedir.Kind.LIVE and bool(found.evidence)
    try:
        store = Store(path, readonly=mode is Open.READ, create=not lived)
    except Unborn:
        raise statedir.LostInstance(
            statedir.lost_message(cfg.state_dir, found.evidence, "its schema (it holds no table)")
        ) from None
    try:
        store.quick_check()
        missing = store.missing_life()
        if missing and lived:
            raise statedir.LostInstance(
                statedir.lost_message(cfg.state_dir, found.evidence, " and ".join(missing))
            )
        if mode is not Open.READ:
            import uuid  # noqa: PLC0415 - once in the life of an instance

            # A command that writes has the whole config (the license type); only a
            # look (``status --check``) passes a record of it.
            license_type = cfg.license.type  # type: ignore[attr-defined]
            store.be_born(ProductState(license_type), str(uuid.uuid4()), datetime.now(UTC))
    except BaseException:
        store.close()
        raise
    if mode is not Open.READ:
        # After the database is committed with its product state and UDI, never before (a
        # crash between the two must not leave a marker that calls a half-made new
        # instance "lost"). Best effort: a full disk must not stop the daemon; the next
        # start writes it.
        with contextlib.suppress(OSError):
            statedir.write_marker(cfg.state_dir, datetime.now(UTC).isoformat())
    return store


def client_for(cfg: Config) -> ssm_client.SsmClient | None:
    """The SSM client of ``cfg``; None in ``transport.mode: offline`` (no connection, ever)."""
    from ccx_agent.ssm import client as ssm_client  # noqa: PLC0415 - see the imports

    t = cfg.transport
    if t.mode == "offline":
        return None
    return ssm_client.build(
        t.url,
        cfg.state_dir,
        ca_bundle=t.ca_bundle,
        trust_anchor=t.trust_anchor,
        proxy=t.proxy,
        timeout=t.timeout,
        connect_timeout=t.connect_timeout,
        attempts=t.attempts,
        report_interval=cfg.report.interval,
    )


def print_alerts(store: Store, err: TextIO) -> Callable[[Sequence[AlertRow]], None]:
    """Show the alerts this command raises; they stay pending in the database for the
    daemon to deliver to syslog (a command's alerts must reach syslog too)."""
    with store.read() as tx:
        seen = tx.last_alert_id()

    def emit(rows: Sequence[AlertRow]) -> None:
        nonlocal seen
        for row in rows:
            if row.id > seen:
                for line in row.lines:
                    print(f"alert: {line}", file=err)
        seen = max([seen, *(row.id for row in rows)])

    return emit
