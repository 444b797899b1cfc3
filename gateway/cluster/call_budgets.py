"""Task call counts shared by every replica: the budget's check-and-count as one Lua script.

A counter in Redis rather than a conditional UPDATE in the store: the check is on every tools/call of a
task, and one round trip to Redis costs far less than a write transaction (the store keeps being
written in batches, by `TaskService.flush`, with the highest count each replica has seen). The counter
never starts below what the calling replica knows (`floor`: the store's count, or an earlier answer),
so losing Redis's data loses at most the calls counted since. It expires a minute after the task's
deadline. Unreachable: BudgetUnavailable (the call is refused).
"""

from __future__ import annotations

import logging
import math
import time
from typing import ClassVar

from redis.exceptions import RedisError

from gateway.cluster.connection import Cluster
from gateway.state.budgets import BudgetUnavailable

log = logging.getLogger("narrowgate.cluster")
AFTER_DEADLINE_S = 60

# KEYS: the task's counter. ARGV: budget ('' for none), floor, ttl in ms. Returns the new count, or -1.
COUNT = """
local made = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[2]))
if ARGV[1] ~= '' and made >= tonumber(ARGV[1]) then return -1 end
made = made + 1
redis.call('SET', KEYS[1], made, 'PX', ARGV[3])
return made
"""


class RedisCallBudgets:
    """`CallBudgets` on Redis: of N calls racing on any replicas against a budget of k, k are counted."""

    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._script = cluster.redis.register_script(COUNT)

    async def count(self, task_id: str, budget: int | None, floor: int, deadline: float) -> int | None:
        ttl_ms = math.ceil((max(deadline - time.time(), 0.0) + AFTER_DEADLINE_S) * 1000)
        args = ["" if budget is None else budget, floor, ttl_ms]
        try:
            made = int(await self._script(keys=[self.cluster.keys.key("budget", task_id)], args=args))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("task call counts unreachable at %s (%s): call refused",
                        self.cluster.settings.redis_location(), type(exc).__name__)
            raise BudgetUnavailable() from None
        return None if made < 0 else made
