"""The `narrowgate.granted_tools.unused` gauge: right-sizing's headline figure, per agent and fleet-wide,
recomputed in the background every REFRESH_S (never on the call path, never on a scrape).

Cheap by construction: the audit log is read incrementally (only records written since the last
refresh), and each agent's reach comes from the reach analyzer's cache unless the policies, the
catalog or the agent changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.config import Settings
from gateway.policy.engine import PolicyEngine
from gateway.privilege.reach import ReachAnalyzer
from gateway.privilege.rightsize import DEFAULT_WINDOW_S, RightsizeSources, unused_count
from gateway.privilege.usage import Usage, read_usage
from gateway.registry.model import Lifecycle
from gateway.registry.service import Registry
from gateway.store.base import Store
from gateway.tasks.service import TaskService
from gateway.telemetry import Telemetry
from gateway.telemetry.attributes import FLEET

log = logging.getLogger("narrowgate")
REFRESH_S = 300.0
FIRST_AFTER_S = 30.0  # not in the start's own busy seconds


def measuring(policy: PolicyEngine, registry: Registry, tasks: TaskService, store: Store, settings: Settings,
              telemetry: Telemetry) -> UnusedShareGauge:
    """What measuring privilege reads (`.sources`: one reach cache for every page, report and the metric), and
    the gauge over it."""
    reach = ReachAnalyzer(policy, registry, tasks, settings.monitoring)
    return UnusedShareGauge(RightsizeSources(reach, store, settings.agents_file), telemetry)


class UnusedShareGauge:
    def __init__(self, sources: RightsizeSources, telemetry: Telemetry, window_s: float = DEFAULT_WINDOW_S,
                 interval_s: float = REFRESH_S, clock: Callable[[], float] = time.time) -> None:
        self.sources = sources
        self.telemetry = telemetry
        self.window_s = window_s
        self.interval_s = interval_s
        self.clock = clock
        # Every allowed call's latest time per (agent, target), read incrementally; targets last called before
        # the window are forgotten at each refresh, so it holds what one window saw.
        self.ledger = Usage(with_tasks=False)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one refresh at a time: two would read the same records into the ledger

    async def open(self) -> None:
        self._task = asyncio.create_task(self._every_interval())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _every_interval(self) -> None:
        await asyncio.sleep(min(FIRST_AFTER_S, self.interval_s))
        while True:
            try:
                await self.refresh()
            except Exception:  # the next round tries again; the last values stay
                log.exception("right-sizing: the unused-share metric could not be refreshed")
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> dict[str, float]:
        """Read the audit log's new records, recompute every share, and set the gauge; returns the shares."""
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> dict[str, float]:
        now = self.clock()
        since = now - self.window_s
        await read_usage(self.sources.store, since, now, into=self.ledger)
        self.ledger.forget_before(since)
        shares: dict[str, float] = {}
        if self.ledger.last_at is not None and self.ledger.last_at >= since:  # else nothing measured: no series
            shares = await self._shares(since, now)
        self.telemetry.set_unused_shares(shares)
        return shares

    async def _shares(self, since: float, now: float) -> dict[str, float]:
        shares: dict[str, float] = {}
        total_granted = total_unused = 0
        for agent in self.sources.reach.registry.agents():
            if agent.effective_state(now) is Lifecycle.RETIRED:
                continue
            reach = await self.sources.reach.agent_reach(agent.id)
            granted, unused = unused_count(reach, self.ledger.used_since(agent.id, since))
            if granted:
                shares[agent.id] = unused / granted
            total_granted, total_unused = total_granted + granted, total_unused + unused
        if total_granted:
            shares[FLEET] = total_unused / total_granted
        return shares
