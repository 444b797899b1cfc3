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

# count(key, budget ('' for none), floor, ttl in ms): the new count, or -1 (nothing counted: the budget is spent).
COUNT_FUNCTION = """
local function count(key, budget, floor, ttl)
  local made = math.max(tonumber(redis.call('GET', key) or '0'), tonumber(floor))
  if budget ~= '' and made >= tonumber(budget) then return -1 end
  made = made + 1
  redis.call('SET', key, made, 'PX', ttl)
  return made
end
"""

# KEYS: the task's counter. ARGV: budget ('' for none), floor, ttl in ms. Returns count(...).
COUNT = COUNT_FUNCTION + """
return count(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
"""

# KEYS: the task's counter. ARGV: amount, budget, floor, ttl in ms. The new count, or -1 (not that much left).
RESERVE = """
local made = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[3]))
if made + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -1 end
made = made + tonumber(ARGV[1])
redis.call('SET', KEYS[1], made, 'PX', ARGV[4])
return made
"""


class RedisCallBudgets:
    """`CallBudgets` on Redis: of N calls racing on any replicas against a budget of k, k are counted."""

    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._script = cluster.redis.register_script(COUNT)
        self._reserve = cluster.redis.register_script(RESERVE)

    async def count(self, task_id: str, budget: int | None, floor: int, deadline: float) -> int | None:
        try:
            made = await self._script(keys=[self.key(task_id)], args=self.args(budget, floor, deadline))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("task call counts unreachable at %s (%s): call refused",
                        self.cluster.settings.redis_location(), type(exc).__name__)
            raise BudgetUnavailable() from None
        return made_or_none(made)

    async def reserve(self, task_id: str, amount: int, budget: int, floor: int, deadline: float) -> int | None:
        """`BudgetReservations` on Redis: the parent's calls set aside for a child, atomic with every count."""
        args = self.args(budget, floor, deadline)
        try:
            made = await self._reserve(keys=[self.key(task_id)], args=[amount, *args])
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("task call counts unreachable at %s (%s): delegation refused",
                        self.cluster.settings.redis_location(), type(exc).__name__)
            raise BudgetUnavailable() from None
        return made_or_none(made)

    def key(self, task_id: str) -> str:
        return self.cluster.keys.key("budget", task_id)

    @staticmethod
    def args(budget: int | None, floor: int, deadline: float) -> list[int | str]:
        """The Lua `count`'s arguments after its key: budget ('' for none), floor, ttl in ms."""
        ttl_ms = math.ceil((max(deadline - time.time(), 0.0) + AFTER_DEADLINE_S) * 1000)
        return ["" if budget is None else budget, floor, ttl_ms]


def made_or_none(made: int | bytes) -> int | None:
    """The Lua `count`'s answer: the calls made including this one, or None (nothing counted)."""
    made = int(made)
    return None if made < 0 else made
