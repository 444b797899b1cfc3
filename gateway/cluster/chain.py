"""A fleet's chain seams in one object: chain signals, rate windows and task call counts, and for a
tools/call the steps that use two of them as one script each.

`admit_call` is `RateWindows.admit` then `ChainSignals.context` as ONE Lua script (gateway/state/chain.py,
CallAdmission): the call path's reads and writes before the decision are one round trip, with the
answers of the two scripts run in that order (a refused request counts nowhere and reads nothing;
unreachable Redis refuses it as `admit` does, RatesUnavailable; with no window to count, as `context`
does, ChainUnavailable). The other operations are the seams' own (gateway/cluster/rate_windows.py,
chain_signals.py, call_budgets.py), on the same keys.

`observe_counted` is `ChainSignals.observe_call` then `CallBudgets.count` (CountedObservation) for an
allowed call of a task: the call path's writes after the decision, one round trip. It counts only when
the observation found nothing (a detection may suspend the agent first; then the caller counts apart).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.catalog.model import ToolEntry
from gateway.chain.detectors import Detection
from gateway.cluster.call_budgets import COUNT_FUNCTION, RedisCallBudgets, made_or_none
from gateway.cluster.chain_signals import (
    CONTEXT_FUNCTION,
    FAILURES,
    OBSERVE,
    PRELUDE,
    RedisChainSignals,
    script_source,
)
from gateway.cluster.connection import Cluster
from gateway.cluster.rate_windows import ADMIT_FUNCTION, RedisRateWindows
from gateway.settings.monitoring import MonitoringSettings

# KEYS: the n rate windows, then the agent's record and the task's ('' without one).
# ARGV: now ('' for Redis TIME), a unique member, window_s, n, then calls and per_s per window.
# Returns {index of the window with the longest wait, that wait} when refused, else {0, context(...)}.
ADMIT_CALL = PRELUDE + ADMIT_FUNCTION + CONTEXT_FUNCTION + """
local now, n = clock(ARGV[1]), tonumber(ARGV[4])
local at, wait = admit(now, ARGV[2], 1, n, 5)
if at > 0 then return {at, tostring(wait)} end
return {0, context(now, tonumber(ARGV[3]), KEYS[n + 1], KEYS[n + 2])}
"""


# KEYS: OBSERVE's, then the task's counter. ARGV: OBSERVE's, then count's after its key (budget, floor, ttl).
# Returns {detections, count(...)} when OBSERVE found nothing, else {detections, -2} (nothing counted).
OBSERVE_COUNTED = PRELUDE + COUNT_FUNCTION + OBSERVE + """
if #found > 0 then return {found, -2} end
local after = 10 + tonumber(ARGV[9])
return {found, count(KEYS[5], ARGV[after], ARGV[after + 1], ARGV[after + 2])}
"""


class RedisChain(RedisChainSignals):
    """`ChainSignals`, `RateWindows` and `CallAdmission` on Redis (as `ChainTracker` is all three in memory),
    and `CallBudgets` with `CountedObservation` (one process counts a task's calls in `TaskService`)."""

    def __init__(self, cluster: Cluster, settings: MonitoringSettings,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(cluster, settings, clock)
        self.rates = RedisRateWindows(cluster, settings, clock)
        self.budgets = RedisCallBudgets(cluster)
        self._admit_call = cluster.redis.register_script(ADMIT_CALL)
        self._observe_counted = cluster.redis.register_script(
            script_source(OBSERVE_COUNTED, self.constants(settings)))

    async def count(self, task_id: str, budget: int | None, floor: int, deadline: float) -> int | None:
        return await self.budgets.count(task_id, budget, floor, deadline)

    async def reserve(self, task_id: str, amount: int, budget: int, floor: int, deadline: float) -> int | None:
        return await self.budgets.reserve(task_id, amount, budget, floor, deadline)

    async def observe_counted(self, agent_id: str, task_id: str, tool: ToolEntry, outcome: str, budget: int | None,
                              floor: int, deadline: float) -> tuple[list[Detection], int | None]:
        keys, args = self.observe_arguments(agent_id, task_id, tool, outcome)
        keys.append(self.budgets.key(task_id))
        args += self.budgets.args(budget, floor, deadline)
        found, made = await self._run("observe", self._observe_counted(keys=keys, args=args))
        return self.detections(found, agent_id, task_id, tool.exposed_name, outcome), made_or_none(made)

    async def admit(self, agent_id: str, task_id: str | None, tool: str | None) -> None:
        await self.rates.admit(agent_id, task_id, tool)

    async def admit_call(self, agent_id: str, task_id: str | None, tool: str) -> dict[str, Any]:
        rates = self.rates
        windows = rates.windows(agent_id, task_id, tool)
        if not windows:  # nothing to count: the context alone (so a failure is the context's, as apart)
            return await self.context(agent_id, task_id)
        keys = [key for _, _, key in windows] + self.context_keys(agent_id, task_id)
        args = [self.now_arg(), rates.unique(), self.settings.window_s, len(windows), *rates.limits(windows)]
        if self._pending:  # a forget_* of this process lands before anything read after it
            await self.drain()
        try:
            answer = await self._admit_call(keys=keys, args=args)
        except FAILURES as exc:
            raise rates.unavailable(exc) from None
        rates.check(windows, answer)
        return self.chain_context(answer[1], task_id)
