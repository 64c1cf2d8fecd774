"""``source.kind: scripted``: synthetic agents that follow a timeline.

The demo uses it to log agents in beyond the entitlement at a known moment; operators use
it for load tests (``agents: 100000`` shows what a large cluster costs the daemon). Each
step holds from its ``at`` (time since the source was built, by a clock that never jumps)
until the next one; the snapshot it builds is the document shape of the ``file`` source,
so the agents are counted by the same rules as real ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ccx_agent.config.schema import ScriptedSource as ScriptedSourceConfig
from ccx_agent.config.schema import ScriptStep
from ccx_agent.licensing.snapshot import Agent, Csq, Snapshot
from ccx_agent.sources import SourceError

#: The CSQs every scripted snapshot has: voice for plain agents, chat for premium ones.
CSQS = (Csq("Voice", "VOICE", ("Voice",)), Csq("Chat", "CHAT", ("Chat",)))


def snapshot_of(step: ScriptStep) -> Snapshot:
    agents = [Agent(f"agent{i:06d}", "agent", "READY", ("Voice",)) for i in range(step.agents)]
    agents += [
        Agent(f"premium{i:06d}", "agent", "READY", ("Voice", "Chat"))
        for i in range(step.premium_agents)
    ]
    agents += [
        Agent(f"supervisor{i:06d}", "supervisor", "READY", ("Voice",))
        for i in range(step.supervisors)
    ]
    return Snapshot(agents, CSQS, step.outbound_ports)


class ScriptedSource:
    def __init__(
        self, cfg: ScriptedSourceConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.started = clock()
        self._cache: dict[int, Snapshot] = {}

    def step_index(self) -> int:
        elapsed = self.clock() - self.started
        steps = self.cfg.steps
        if self.cfg.repeat_after is not None:
            elapsed %= self.cfg.repeat_after.total_seconds()
        index = 0
        for i, step in enumerate(steps):
            if step.at.total_seconds() <= elapsed:
                index = i
        return index

    def read(self) -> Snapshot:
        index = self.step_index()
        step = self.cfg.steps[index]
        if step.fail:
            raise SourceError(f"scripted source: step {index} fails on purpose (fail: true)")
        snap = self._cache.get(index)
        if snap is None:
            snap = self._cache[index] = snapshot_of(step)
        return snap

    def close(self) -> None:
        """Nothing is held but the cached snapshots."""
        self._cache.clear()
