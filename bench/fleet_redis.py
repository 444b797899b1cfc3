"""The Redis part of one fleet `tools/call`: gateway CPU and round trips per call (issue 15's speed aim).

Drives the shared chain and budget seams exactly as the call path does for an allowed call of an agent
with a task (rate windows on for agent, task and tool; a budget the run never reaches), serially, on a
throwaway `redis-server` (started as the tests start theirs), and prints per call: this process's CPU
(user + system, everything redis-py does: packing, the socket, parsing the reply), the Redis server's
CPU, and the round trips (requests written to a Redis socket). Also the same figures for one plain GET
and for each seam operation alone, for scale.

    .venv/bin/python -m bench.fleet_redis                 # 3000 calls per figure
    .venv/bin/python -m bench.fleet_redis --calls 10000

The CPU of the rest of the call (policy, audit, the upstream hop) is `bench.run`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from redis._parsers import _AsyncRESP2Parser
from redis.asyncio.connection import AbstractConnection, DefaultParser

from bench.cpu import tree_cpu_s
from gateway.catalog.model import ToolEntry
from gateway.cluster.call_budgets import RedisCallBudgets
from gateway.cluster.chain import RedisChain
from gateway.cluster.connection import Cluster
from gateway.settings.cluster import ClusterSettings
from gateway.settings.monitoring import MonitoringSettings, RateLimit

TOOL = ToolEntry(name="read", exposed_name="files__read", server_id="files", risk="read",
                 data_classes=("internal",), owner="team")
SETTINGS = MonitoringSettings(per_agent=RateLimit(10**9, 60.0), per_task=RateLimit(10**9, 60.0),
                              per_tool=RateLimit(10**9, 60.0))
BUDGET = 10**9


class RoundTrips:
    """Counts requests written to a Redis socket (a pipeline's commands are one)."""

    def __init__(self) -> None:
        self.count = 0
        original = AbstractConnection.send_packed_command

        async def counted(connection: AbstractConnection, command: object, check_health: bool = True) -> None:
            self.count += 1
            await original(connection, command, check_health)  # type: ignore[arg-type]

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign,assignment]


async def measure(label: str, calls: int, one: Callable[[int], Awaitable[object]], trips: RoundTrips,
                  redis_pid: int | None) -> None:
    for i in range(min(200, calls)):  # warm: scripts loaded, connection open
        await one(-1 - i)
    before_trips, server = trips.count, tree_cpu_s(redis_pid) if redis_pid else 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(calls):
        await one(i)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    server = (tree_cpu_s(redis_pid) - server) if redis_pid else 0.0
    print(f"{label:<34} {cpu / calls * 1e6:8.1f} {server / calls * 1e6:9.1f} {wall / calls * 1e6:8.1f} "
          f"{(trips.count - before_trips) / calls:6.2f}")


async def run(redis_url: str, redis_pid: int | None, calls: int, pure_python: bool) -> None:
    trips = RoundTrips()
    cluster = Cluster(ClusterSettings(redis_url=redis_url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}"))
    if pure_python:  # redis-py's own reply parser, as without hiredis installed
        cluster.redis.connection_pool.connection_kwargs["parser_class"] = _AsyncRESP2Parser
    parser = cluster.redis.connection_pool.connection_kwargs.get("parser_class", DefaultParser)
    print(f"reply parser: {parser.__name__}")
    await cluster.open()
    try:
        chain = RedisChain(cluster, SETTINGS)
        budgets = RedisCallBudgets(cluster)
        deadline = time.time() + 3600
        print(f"{'per call':<34} {'gw us':>8} {'redis us':>9} {'wall us':>8} {'trips':>6}")

        async def get(i: int) -> object:
            return await cluster.redis.get("bench-missing")

        async def admit_and_context(i: int) -> object:
            return await chain.admit_call("agent-1", "task-1", TOOL.exposed_name)

        async def observe(i: int) -> object:
            return await chain.observe_call("agent-1", "task-1", TOOL, "allow")

        async def count(i: int) -> object:
            return await budgets.count("task-1", BUDGET, 0, deadline)

        async def tools_call(i: int) -> object:
            """An allowed call: admitted with its chain context before the decision, observed and
            counted after it (the pipeline's order)."""
            await chain.admit_call("agent-2", "task-2", TOOL.exposed_name)
            await chain.observe_call("agent-2", "task-2", TOOL, "allow")
            return await budgets.count("task-2", BUDGET, 0, deadline)

        # observe_call first: the agent then has a history, which its context carries (as in a real run)
        for label, one in (("GET (for scale)", get), ("observe_call", observe),
                           ("admit + chain context", admit_and_context), ("budget count", count),
                           ("tools/call: all of the above", tools_call)):
            await measure(label, calls, one, trips, redis_pid)
    finally:
        await cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--pure-python", action="store_true", help="redis-py's own reply parser, not hiredis")
    parser.add_argument("--redis-url", help="an existing Redis (default: a throwaway redis-server)")
    args = parser.parse_args()
    engine = None
    if args.redis_url is None:
        from tests.support.engines import start_redis  # the tests' throwaway Redis, reused
        engine = start_redis()
    try:
        url = args.redis_url or engine.url  # type: ignore[union-attr]
        pid = engine.process.pid if engine is not None and engine.process is not None else None
        asyncio.run(run(url, pid, args.calls, args.pure_python))
    finally:
        if engine is not None:
            engine.stop()


if __name__ == "__main__":
    main()
