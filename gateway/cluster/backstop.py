"""The store sweep: a backstop that bounds how stale a replica's view of agent lifecycles and task ends
can be, with the shared store as the source of truth, whatever the event bus does.

The event bus (gateway/cluster/notices.py) normally tells a replica of a suspension, retirement or task
end made elsewhere within milliseconds. It can miss one: the replica that made the change lost Redis
(its notice waits), or Redis is down for everyone. So every replica also re-reads, every
`SWEEP_HEALTHY_S` (every `SWEEP_UNHEALTHY_S` while its own bus is unhealthy: subscription down or a
notice of its own waiting), the agents changed and the tasks ended since its last sweep, and applies
what it had not heard through the same local reactions the bus path uses (`Registry.refresh`,
`TaskService.refresh_ended`: close sessions and streams, revoke, forget chain records; no audit record,
the replica that made the change wrote it).

One sweep is two indexed-by-time queries returning only recently changed rows (`changed_at` of agents,
`ended_at` of tasks), re-read with an overlap of `CLOCK_SKEW_S` because those stamps come from the
writing replica's clock; diffing is a dict lookup per returned row. Store calls are async, so the event
loop is never blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.cluster.notices import RedisNotices
from gateway.registry.service import Registry
from gateway.state.notices import Notices
from gateway.tasks.service import TaskService

log = logging.getLogger("narrowgate")
SWEEP_HEALTHY_S = 5.0  # staleness bound when this replica's own bus is healthy (another's may not be)
SWEEP_UNHEALTHY_S = 1.0  # ...and while it is not
TICK_S = 0.25  # how often the bus's health is looked at (no I/O)
CLOCK_SKEW_S = 10.0  # replicas' clocks may disagree by this much and no change is missed (NTP keeps them far closer)
FAILURE_LOG_EVERY_S = 60.0


class StoreSweep:
    def __init__(self, registry: Registry, tasks: TaskService, bus_healthy: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.tasks = tasks
        self.bus_healthy = bus_healthy
        self.clock = clock
        self.seen = clock()  # changes stamped before this (less the skew) are known: the registry loads at start
        self.task: asyncio.Task[None] | None = None
        self.failing_since: float | None = None  # monotonic; the store could not be read since then
        self.last_failure_log = 0.0
        self.sweeps = 0
        self.found = 0  # changes the sweep applied that the bus had not delivered

    @classmethod
    def for_bus(cls, notices: Notices, registry: Registry, tasks: TaskService) -> StoreSweep:
        healthy = notices.healthy if isinstance(notices, RedisNotices) else (lambda: True)
        return cls(registry, tasks, healthy)

    async def open(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name="narrowgate-store-sweep")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def interval(self) -> float:
        return SWEEP_HEALTHY_S if self.bus_healthy() else SWEEP_UNHEALTHY_S

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            if time.monotonic() - last >= self.interval():
                last = time.monotonic()
                await self.sweep()

    async def sweep(self) -> None:
        """Re-read what changed in the store since the last sweep and apply what was not heard."""
        started = self.clock()
        since = self.seen - CLOCK_SKEW_S
        try:
            agents = await self.registry.refresh(changed_since=since)
            ended = await self.tasks.refresh_ended(since)
        except Exception as exc:
            self.failed(exc)
            return
        self.seen = started
        self.sweeps += 1
        if self.failing_since is not None:
            log.warning("the store sweep reads the store again (after %.0f s)", time.monotonic() - self.failing_since)
            self.failing_since = None
        if agents or ended:
            self.found += len(agents) + ended
            log.warning("the store sweep applied %d agent change(s) (%s) and %d task end(s) the event bus had "
                        "not (yet) delivered", len(agents), ", ".join(agent.id for agent in agents[:10]), ended)

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        if now - self.last_failure_log >= FAILURE_LOG_EVERY_S:
            self.last_failure_log = now
            log.error("the store sweep cannot read the store (%s); agent and task changes made on other "
                      "replicas reach this one only through the event bus meanwhile", type(exc).__name__)

    @property
    def failing(self) -> bool:
        return self.failing_since is not None
