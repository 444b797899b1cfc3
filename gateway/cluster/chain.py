"""A fleet's chain seams in one object: chain signals, rate windows and, for a tools/call, both at once.

`admit_call` is `RateWindows.admit` then `ChainSignals.context` as ONE Lua script (gateway/state/chain.py,
CallAdmission): the call path's reads and writes before the decision are one round trip, with the
answers of the two scripts run in that order (a refused request counts nowhere and reads nothing;
unreachable Redis refuses it as `admit` does, RatesUnavailable). The other operations are the two seams'
own (gateway/cluster/rate_windows.py, chain_signals.py), on the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.cluster.chain_signals import CONTEXT_FUNCTION, FAILURES, PRELUDE, RedisChainSignals
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


class RedisChain(RedisChainSignals):
    """`ChainSignals`, `RateWindows` and `CallAdmission` on Redis (as `ChainTracker` is all three in memory)."""

    def __init__(self, cluster: Cluster, settings: MonitoringSettings,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(cluster, settings, clock)
        self.rates = RedisRateWindows(cluster, settings, clock)
        self._admit_call = cluster.redis.register_script(ADMIT_CALL)

    async def admit(self, agent_id: str, task_id: str | None, tool: str | None) -> None:
        await self.rates.admit(agent_id, task_id, tool)

    async def admit_call(self, agent_id: str, task_id: str | None, tool: str) -> dict[str, Any]:
        rates = self.rates
        windows = rates.windows(agent_id, task_id, tool)
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
