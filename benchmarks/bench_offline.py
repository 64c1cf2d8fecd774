"""An air-gapped site's year: the outbox, the export, the answer and the import.

A registered instance (real store, key directory and the real simulator with its SQLite
file, in a temporary directory) holds a year of pending reports (35,040 15-minute
intervals, as a site that never made an exchange), and one file exchange delivers them:
``offline export`` (streamed), the simulator's ``offline answer``, ``offline import``.
Each step is timed, then run again under ``tracemalloc`` for its peak memory; the same is
done with a tenth of the reports, to show that the peak does not grow with the outbox.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ccx_agent.agent import Agent
from ccx_agent.config.schema import CommonConfig
from ccx_agent.licensing.timeutil import iso
from ccx_agent.offline.answer import answer
from ccx_agent.offline.exchange import export, import_answers
from ccx_agent.simulator.core import Simulator
from ccx_agent.ssm.identity import KeyStore
from ccx_agent.ssm.port import Udi
from ccx_agent.store.db import DB_NAME, Store

STEP = timedelta(minutes=15)
START = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
UDI = Udi("UCCX", "BENCH1", "00000000-0000-4000-8000-0000000000be")


def _measure(step: Callable[[], object], traced: bool) -> tuple[float, int]:
    if traced:
        tracemalloc.start()
    began = time.perf_counter()
    step()
    took = time.perf_counter() - began
    peak = 0
    if traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return took, peak


def year(reports: int, traced: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ccx-bench-offline-") as tmp:
        d = Path(tmp)
        sim = Simulator.open(d / "ssm", START)
        sim.add_licenses("flex-standard-seat", 10)
        cfg = CommonConfig.model_validate({"license": {"type": "flex"}})
        store = Store(d / "agent" / DB_NAME)
        keys = KeyStore(d / "agent")
        agent = Agent(cfg, store, None, udi=UDI, offline=True)
        token = sim.create_token(uses=1, expires=timedelta(days=1), now=START)
        export(agent, keys, d / "r0.json", START, token=token)
        answer(sim, d / "r0.json", d / "a0.json", START)
        import_answers(agent, keys, [sim.root], d / "a0.json", START)
        piid = agent.state().identity.piid  # type: ignore[union-attr]
        first = START - reports * STEP
        rows = []
        for i in range(reports):
            s = first + i * STEP
            rid = f"{piid}:{iso(s)}"
            usage = {"flex-standard-seat": 3, "flex-premium-seat": 0, "flex-outbound-port": 0}
            rows.append((rid, piid, s, {"id": rid, "start": iso(s), "end": iso(s + STEP), "usage": usage}))  # fmt: skip
        with store.transaction() as tx:
            tx.enqueue_many(rows, START)
        del rows
        store.checkpoint()
        db = (d / "agent" / DB_NAME).stat().st_size
        ex = _measure(lambda: export(agent, keys, d / "r1.json", START), traced)
        an = _measure(lambda: answer(sim, d / "r1.json", d / "a1.json", START), traced)
        im = _measure(lambda: import_answers(agent, keys, [sim.root], d / "a1.json", START), traced)
        with store.read() as tx:
            assert tx.outbox_count() == 0
        assert len(sim.reports(piid)) == reports
        size = (d / "r1.json").stat().st_size
        store.close()
        sim.close()
        return {
            "db_mb": db / 1e6,
            "file_mb": size / 1e6,
            "export_s": ex[0],
            "export_peak_mb": ex[1] / 1e6,
            "answer_s": an[0],
            "import_s": im[0],
            "import_peak_mb": im[1] / 1e6,
        }


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_offline")
    p.add_argument("--reports", type=int, default=35_040, help="pending reports (35,040)")
    args = p.parse_args(argv)
    out: dict[str, float] = {}
    for n in (args.reports // 10, args.reports):
        timed = year(n, traced=False)
        peaks = year(n, traced=True)
        print(
            f"{n:,} pending reports: database {timed['db_mb']:.1f} MB; export "
            f"{timed['export_s']:.2f} s (peak {peaks['export_peak_mb']:.1f} MB), file "
            f"{timed['file_mb']:.1f} MB; answer {timed['answer_s']:.2f} s; import "
            f"{timed['import_s']:.2f} s (peak {peaks['import_peak_mb']:.1f} MB)"
        )
        out = {**timed, "export_peak_mb": peaks["export_peak_mb"]}
    return out


if __name__ == "__main__":
    main()
