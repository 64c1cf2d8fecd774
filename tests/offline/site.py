"""Two rooms and a USB stick: an air-gapped agent and the SSM simulator, each with its own
real state (SQLite files, key directory, CA), and a directory for the files carried.

Time is injected: ``Site.now`` is the agent's clock and the simulator's, moved by
``live`` (which samples and closes intervals as the daemon's jobs do) without sleeping.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ccx_agent.agent import Agent
from ccx_agent.config.schema import CommonConfig
from ccx_agent.offline import exchange
from ccx_agent.offline.answer import Answered, answer
from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm.identity import KeyStore
from ccx_agent.ssm.port import Udi
from ccx_agent.store.db import DB_NAME, AlertRow, Store

START = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
STANDARD = "flex-standard-seat"
PREMIUM = "flex-premium-seat"


def config() -> CommonConfig:
    return CommonConfig.model_validate(
        {"license": {"type": "flex"}, "alerts": {"node_id": "uccx1"}}
    )


class Site:
    def __init__(
        self,
        tmp: Path,
        name: str = "site",
        *,
        sim: Simulator | None = None,
        start: datetime = START,
        serial: str = "FCH2231A0BC",
    ) -> None:
        self.tmp = tmp
        self.name = name
        self.now = start
        if sim is None:
            sim = Simulator.open(tmp / "ssm", start)
            sim.add_licenses(STANDARD, 10)
            sim.add_licenses(PREMIUM, 2)
        self.sim = sim
        self.dir = tmp / name
        self.store = Store(self.dir / DB_NAME)
        self.keys = KeyStore(self.dir)
        self.emitted: list[AlertRow] = []
        self.udi = Udi("UCCX", serial, str(uuid.uuid5(uuid.NAMESPACE_URL, f"ccx-test:{name}")))
        self.agent = Agent(
            config(), self.store, None, udi=self.udi, emit=self.emitted.extend, offline=True
        )
        self.usb = tmp / "usb"
        self.usb.mkdir(exist_ok=True)
        self.count = 0

    def close(self) -> None:
        self.store.close()

    # --- the rooms ------------------------------------------------------------------

    def token(self) -> str:
        return self.sim.create_token(uses=1, expires=timedelta(days=30), now=self.now)

    def export(self, **kwargs: Any) -> Path:
        self.count += 1
        path = self.usb / f"{self.name}-request-{self.count}.json"
        exchange.export(self.agent, self.keys, path, self.now, **kwargs)
        return path

    def answer(self, request: Path) -> Path:
        response = request.with_name(request.name.replace("request", "response"))
        self.answered: Answered = answer(self.sim, request, response, self.now)
        return response

    def import_(self, response: Path) -> exchange.ImportResult:
        return exchange.import_answers(self.agent, self.keys, [self.sim.root], response, self.now)

    def exchange(self, **kwargs: Any) -> exchange.ImportResult:
        return self.import_(self.answer(self.export(**kwargs)))

    def register(self) -> exchange.ImportResult:
        return self.exchange(token=self.token())

    def live(self, span: timedelta, usage: Mapping[str, int]) -> None:
        """``span`` of service: a sample a minute into each interval, then the report
        and housekeeping jobs at the end, as the daemon runs them (one transaction each)."""
        end = self.now + span
        times = []
        t = self.agent.interval_start(self.now) + timedelta(minutes=1)
        while t < end:
            if t >= self.now:
                times.append(t)
            t += STEP
        if times:
            self.agent.sample(times, dict(usage))
        self.now = end
        self.agent.close_intervals(end)
        self.agent.housekeeping(end)

    # --- what tests compare ------------------------------------------------------------

    def outbox(self) -> list[str]:
        with self.store.read() as tx:
            return [b.report_id for b in tx.outbox_batch(10**6)]

    def snapshot(self) -> dict[str, Any]:
        """Every row of every table and every key file: what 'state unchanged' means."""
        conn = sqlite3.connect(f"file:{self.dir / DB_NAME}?mode=ro", uri=True)
        try:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            rows = {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}
        finally:
            conn.close()
        keys = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((self.dir / "keys").glob("*.pem"))
        }
        return {"tables": rows, "keys": keys}
