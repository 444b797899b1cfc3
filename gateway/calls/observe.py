"""The observe stage: what chain monitoring learns from a decided tool call (signals for later decisions,
detectors, the kill switch). The decision itself is audited by the decide stage before the agent hears
of it, and the request's metrics and span are written by the transport from the call's record."""

from __future__ import annotations

from collections.abc import Awaitable

from gateway.calls.call import ToolCall
from gateway.catalog.model import ToolEntry
from gateway.chain.detectors import Detection
from gateway.chain.monitor import ChainMonitor
from gateway.identity.principal import Principal
from gateway.state.chain import CountedObservation
from gateway.tasks.gate import TaskGate


class Observe:
    def __init__(self, monitor: ChainMonitor, tasks: TaskGate) -> None:
        self.monitor = monitor
        self.tasks = tasks
        self.counts = monitor.counting(tasks.tasks.budgets)  # a fleet's: observes and counts in one step

    def __call__(self, call: ToolCall) -> Awaitable[None]:
        """Whatever the decision came to (a kill switch refuses the call in hand); the monitor's coroutine, handed
        on to be awaited."""
        return self.monitor.observe(call.principal, call.entry, call.request.record.outcome())

    def allowed(self, call: ToolCall) -> Awaitable[None]:
        """An allowed call: observed (a kill switch refuses it), then counted against its task's budget; in one
        step when the chain signals are also the task call counts (a fleet: one round trip). To be awaited; a
        task-less call has no budget to count against: its observation is handed on as it is."""
        if call.principal.task_id is None:
            return self(call)
        return self.allowed_in_task(call)

    async def allowed_in_task(self, call: ToolCall) -> None:
        principal = call.principal
        if self.counts is None:
            await self(call)
            await self.tasks.consume(principal)
            return
        counter = ObservedCount(self.monitor, self.counts, call)
        try:
            await self.tasks.consume(principal, counter)
        finally:
            if not counter.observed:  # the task ended before it could count: observed all the same
                await self(call)

    async def probe(self, principal: Principal, name: str) -> None:
        """A call of a tool nobody serves: a probing signal."""
        await self.monitor.probe(principal, name)


class ObservedCount:
    """The task call counts as one allowed call reaches them: counting it observes it first, in one step."""

    def __init__(self, monitor: ChainMonitor, counts: CountedObservation[ToolEntry, Detection],
                 call: ToolCall) -> None:
        self.monitor = monitor
        self.counts = counts
        self.call = call
        self.observed = False

    async def count(self, task_id: str, budget: int | None, floor: int, deadline: float) -> int | None:
        self.observed = True
        call = self.call
        return await self.monitor.observe_counted(self.counts, call.principal, task_id, call.entry,
                                                  call.request.record.outcome(), budget, floor, deadline)
