"""The Redis part of one fleet `tools/call`: gateway CPU and round trips per call (issue 15's speed aim).

Drives the shared chain and budget seams as the call path does for an allowed call of an agent with a
task (rate windows on for agent, task and tool; a budget the run never reaches), serially, on uvloop, on
a throwaway `redis-server` (started as the tests start theirs). Two ways side by side: the four steps of
main before the fleet's call path was merged (windows, context, observe, count: four round trips) and
the two it takes now (`admit_call` before the decision, `observe_counted` after it), and the session
lookup a 2025-11-25 request adds before either (`RedisSessions.get`). Per call: this
process's CPU (user + system: everything redis-py does, packing, the socket, parsing the reply), the Redis
server's CPU, wall time and round trips (requests written to a Redis socket). Each figure is the round
with the least gateway CPU (the machine's other work only ever adds CPU).

    .venv/bin/python -m bench.fleet_redis                     # 3000 calls per figure, 3 rounds
    .venv/bin/python -m bench.fleet_redis --calls 10000 --rounds 5
    .venv/bin/python -m bench.fleet_redis --pure-python       # redis-py's own reply parser instead of hiredis

The CPU of the rest of the call (policy, audit, the upstream hop) is `bench.run`'s.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Awaitable, Callable

import uvloop
from redis._parsers import _AsyncRESP2Parser
from redis.asyncio.connection import AbstractConnection, DefaultParser

from bench.cpu import tree_cpu_s
from gateway.catalog.model import ToolEntry
from gateway.cluster.call_budgets import RedisCallBudgets
from gateway.cluster.chain import RedisChain
from gateway.cluster.connection import Cluster
from gateway.cluster.sessions import RedisSessions
from gateway.identity.principal import Principal
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


Figure = tuple[float, float, float, float]  # per call: gateway CPU, Redis CPU, wall time (s), round trips


async def measure(calls: int, one: Callable[[], Awaitable[object]], trips: RoundTrips,
                  redis_pid: int | None) -> Figure:
    for _ in range(min(200, calls)):  # warm: scripts loaded, connection open
        await one()
    before_trips, server = trips.count, tree_cpu_s(redis_pid) if redis_pid else 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await one()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    server = (tree_cpu_s(redis_pid) - server) if redis_pid else 0.0
    return cpu / calls, server / calls, wall / calls, (trips.count - before_trips) / calls


async def operations(cluster: Cluster) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    """(label, one call's Redis work) for each figure, on agents and tasks of their own."""
    chain, budgets = RedisChain(cluster, SETTINGS), RedisCallBudgets(cluster)
    sessions, caller = RedisSessions(cluster, idle_s=600), Principal("agent-3", "static-token")
    opened = await sessions.create(caller, "2025-11-25", {"roots": {}}, {"name": "bench", "version": "1"})
    deadline = time.time() + 3600
    name = TOOL.exposed_name

    async def get() -> object:
        return await cluster.redis.get("bench-missing")

    async def admit(agent: str, task: str) -> None:  # main before the change: windows, then the context
        await chain.admit(agent, task, name)
        await chain.context(agent, task)

    async def count_apart(agent: str, task: str) -> None:  # main before the change: observed, then counted
        await chain.observe_call(agent, task, TOOL, "allow")
        await budgets.count(task, BUDGET, 0, deadline)

    async def call_apart() -> None:
        await admit("agent-1", "task-1")
        await count_apart("agent-1", "task-1")

    async def lookup() -> object:  # a 2025-11-25 request's session lookup (the transport, before the call)
        return await sessions.get(opened.id, caller)

    async def call_joint() -> None:  # the call path now: gateway/calls/pipeline.py, one step before and after
        await chain.admit_call("agent-2", "task-2", name)
        await chain.observe_counted("agent-2", "task-2", TOOL, "allow", BUDGET, 0, deadline)

    return [
        ("GET (for scale)", get),
        ("tools/call, 4 steps (before)", call_apart),
        ("tools/call, 2 steps (now)", call_joint),
        ("  admit, then context", lambda: admit("agent-1", "task-1")),
        ("  admit_call", lambda: chain.admit_call("agent-2", "task-2", name)),
        ("  observe_call, then count", lambda: count_apart("agent-1", "task-1")),
        ("  observe_counted", lambda: chain.observe_counted("agent-2", "task-2", TOOL, "allow", BUDGET, 0, deadline)),
        ("session lookup (2025-11-25, +1)", lookup),
    ]


async def run(redis_url: str, redis_pid: int | None, calls: int, rounds: int, pure_python: bool) -> None:
    trips = RoundTrips()
    cluster = Cluster(ClusterSettings(redis_url=redis_url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}"))
    if pure_python:  # redis-py's own reply parser, as without hiredis installed
        cluster.redis.connection_pool.connection_kwargs["parser_class"] = _AsyncRESP2Parser
    parser = cluster.redis.connection_pool.connection_kwargs.get("parser_class", DefaultParser)
    print(f"reply parser: {parser.__name__}; {calls} calls per figure, least gateway CPU of {rounds} rounds")
    await cluster.open()
    try:
        ops = await operations(cluster)
        best: dict[str, Figure] = {}
        for _ in range(rounds):  # interleaved, so a busy spell of the machine hits every figure alike
            for label, one in ops:
                figure = await measure(calls, one, trips, redis_pid)
                if label not in best or figure[0] < best[label][0]:
                    best[label] = figure
        print(f"{'per call':<34} {'gw us':>8} {'redis us':>9} {'wall us':>8} {'trips':>6}")
        for label, (cpu, server, wall, per_call) in best.items():
            print(f"{label:<34} {cpu * 1e6:8.1f} {server * 1e6:9.1f} {wall * 1e6:8.1f} {per_call:6.2f}")
    finally:
        await cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
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
        # uvloop: the gateway's loop (gateway/cli/serve.py)
        uvloop.run(run(url, pid, args.calls, args.rounds, args.pure_python))
    finally:
        if engine is not None:
            engine.stop()


if __name__ == "__main__":
    main()
