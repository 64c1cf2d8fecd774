"""This instance's pieces, as the config describes them: its database, its SSM client
and its UDI. Shared by the one-shot commands and the daemon (which must not pull in the
what-if simulator that ``commands`` can run)."""

from __future__ import annotations

import uuid

from ccx_agent.config import Config
from ccx_agent.ssm import client as ssm_client
from ccx_agent.ssm.port import Udi
from ccx_agent.status import UDI_UUID_KEY
from ccx_agent.store import DB_NAME, Store


def instance_udi(store: Store, cfg: Config) -> Udi:
    """The UDI: PID and serial from the config, a UUID created once and kept."""
    with store.transaction() as tx:
        value = tx.meta(UDI_UUID_KEY)
        if value is None:
            value = str(uuid.uuid4())
            tx.set_meta(UDI_UUID_KEY, value)
    return Udi(cfg.identity.pid, cfg.identity.serial_number(), value)


def open_store(cfg: Config) -> Store:
    return Store(cfg.state_dir / DB_NAME)


def client_for(cfg: Config) -> ssm_client.SsmClient | None:
    t = cfg.transport
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
