"""Rate-limit windows shared by every replica: one Lua script checks every window that applies (agent, task,
(agent, tool)) and records the request in all of them, or in none (docs/state.md, RateWindows).

Each window is a sorted set of request stamps scored by time, trimmed to the limit's `calls` and expiring
one window after its last request. Time is Redis's own clock (`TIME`), so replicas with skewed clocks
share one window; tests may pass a clock instead. Unreachable Redis: RatesUnavailable (refused as rate
limited, never admitted uncounted).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from gateway.chain.tracker import RateLimited, RatesUnavailable
from gateway.cluster.chain_clock import LUA_CLOCK, ClockedSeam
from gateway.cluster.connection import Cluster
from gateway.settings.monitoring import MonitoringSettings, RateLimit

log = logging.getLogger("narrowgate.cluster")

# KEYS: one window each. ARGV: now ('' for Redis TIME), a unique member, then calls and per_s per window.
# Returns {0} when admitted, else {index of the window with the longest wait, that wait as a string}.
ADMIT = LUA_CLOCK + """
local now = clock(ARGV[1])
local worst, worst_at = 0, 0
for i, key in ipairs(KEYS) do
  local calls, per = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - per)
  local n = redis.call('ZCARD', key)
  if n >= calls then
    local oldest = redis.call('ZRANGE', key, n - calls, n - calls, 'WITHSCORES')
    local wait = tonumber(oldest[2]) + per - now
    if wait > worst then worst, worst_at = wait, i end
  end
end
if worst_at > 0 then return {worst_at, tostring(worst)} end
local member = string.format('%.6f', now) .. ':' .. ARGV[2]
for i, key in ipairs(KEYS) do
  local calls, per = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYRANK', key, 0, -(calls + 1))
  redis.call('PEXPIRE', key, math.ceil(per * 1000) + 1000)
end
return {0}
"""


class RedisRateWindows(ClockedSeam):
    """`RateWindows` on Redis: the same windows and answers as `ChainTracker.admit`, fleet-wide."""

    def __init__(self, cluster: Cluster, settings: MonitoringSettings,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(cluster, settings, clock)
        self._script = cluster.redis.register_script(ADMIT)
        self._stamp = f"{cluster.replica_id}:{{}}".format
        self._serial = itertools.count()

    async def admit(self, agent_id: str, task_id: str | None, tool: str | None) -> None:
        windows = self.windows(agent_id, task_id, tool)
        if not windows:
            return
        args: list[str | float] = [self.now_arg(), self._stamp(next(self._serial))]
        for _, limit, _ in windows:
            args += [limit.calls, limit.per_s]
        try:
            answer = await self._script(keys=[key for _, _, key in windows], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("rate windows unreachable at %s (%s): request refused", self.cluster.settings.redis_location(),
                        type(exc).__name__)
            raise RatesUnavailable() from None
        if answer[0]:
            scope, limit, _ = windows[int(answer[0]) - 1]
            raise RateLimited(scope, float(answer[1]), limit)

    def windows(self, agent_id: str, task_id: str | None, tool: str | None) -> list[tuple[str, RateLimit, str]]:
        """(scope, limit, key) of every window that applies, in the order ChainTracker checks them."""
        s, key = self.settings, self.cluster.keys.key
        found: list[tuple[str, RateLimit, str]] = []
        if s.per_agent is not None:
            found.append(("agent", s.per_agent, key("rate", "agent", agent_id)))
        if s.per_task is not None and task_id is not None:
            found.append(("task", s.per_task, key("rate", "task", task_id)))
        if s.per_tool is not None and tool is not None:
            # The agent id's length keeps (agent, tool) pairs apart whatever characters either holds.
            found.append(("tool", s.per_tool, key("rate", "tool", str(len(agent_id)), agent_id, tool)))
        return found

