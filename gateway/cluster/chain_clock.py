"""What the chain seams on Redis share: Redis's own clock in their scripts (one clock for every replica,
whatever their hosts' clocks say), or a test's clock passed in as an argument."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from gateway.cluster.connection import Cluster
from gateway.settings.monitoring import MonitoringSettings

# `clock(ARGV[1])`: the time a script works at; an empty argument means Redis's `TIME`.
LUA_CLOCK = """
local function clock(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""


class ClockedSeam:
    """A chain seam on Redis: its cluster, the monitoring settings and whose clock it reads."""

    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster, settings: MonitoringSettings,
                 clock: Callable[[], float] | None = None) -> None:
        self.cluster = cluster
        self.settings = settings
        self.clock = clock

    def now_arg(self) -> str | float:
        """The scripts' first argument: the given clock's time, or '' for Redis's."""
        return "" if self.clock is None else self.clock()
