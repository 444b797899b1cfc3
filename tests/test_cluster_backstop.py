"""The store sweep: a suspension reaches every replica within a bound even when the event bus cannot
carry it (gateway/cluster/backstop.py; docs/state.md "The store sweep").

First one sweep on a real store (SQLite and PostgreSQL) with 1,000 agents: what it costs, that it finds
an agent suspended and a task ended through another registry and task service on the same store, and
that it reads nothing back when nothing changed. Then two real `narrowgate serve` replicas on one
PostgreSQL store, driven through /mcp and the admin API:
(a) only the publishing replica loses Redis (its path to Redis runs through a TCP proxy the test cuts),
and (b) Redis stops for everyone. Either way the other replica knows of the suspension within the
bound (refuses the agent's `tools/list`; closes its streams); once Redis is back, every replica agrees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from gateway.cluster import notices as notices_module
from gateway.cluster.backstop import SWEEP_HEALTHY_S, SWEEP_UNHEALTHY_S, StoreSweep
from gateway.registry.model import Lifecycle
from gateway.registry.service import Registry
from gateway.state.notices import TOPIC_AGENT_CHANGED, TOPIC_TASK_CHANGED
from gateway.store import Store
from gateway.tasks.model import TaskState
from gateway.tasks.service import TaskService
from tests.support import engines
from tests.support.admin import unique
from tests.support.fleet import Fleet, start_fleet
from tests.support.processes import Gateway, behaviour_manifest
from tests.support.tcp_proxy import TcpProxy
from tests.test_cluster_bus import admin, eventually, recorder, replica
from tests.test_identity_e2e import assert_streams_end, open_streams
from tests.test_tasks import agent_spec, make_catalog

AGENTS = ("agent-cut", "agent-down", "agent-other")
TOKENS = {agent: f"token-{agent}" for agent in AGENTS}
SLACK_S = 1.5  # a sweep's own time, the request's, the poll's
POLL_S = 0.05
UNMONITORED = {"monitoring": {"per_agent": None, "per_task": None, "kill_switch_severity": "off"}}


AGENT_COUNT = 1000
SWEEPS = 20
SWEEP_COST_BOUND_S = 0.05  # an unchanged sweep is two small queries; generous for a loaded machine
# Wall-clock bounds (a sweep's cost, its interval plus SLACK_S): run alone, not beside another xdist worker
# (docs/development.md).
pytestmark = pytest.mark.serial


async def test_one_sweep_applies_what_another_replica_changed_at_1000_agents(store: Store) -> None:
    an_hour_ago = time.time() - 3600
    created = Registry(store, [], clock=lambda: an_hour_ago)  # long before the sweep's skew window
    for n in range(AGENT_COUNT):
        await created.create(agent_spec(f"bot-{n:04d}", servers=["gh"]), "alice", "test")
    here, there = await Registry.open(store), await Registry.open(store)
    tasks_here = TaskService(store, here, make_catalog())
    await tasks_here.open(background=False)
    task = await tasks_here.start("bot-0002", "sweep test", ["gh__read_issue"], started_by="alice")
    tasks_there = TaskService(store, there, make_catalog())
    await tasks_there.open(background=False)
    sweep = StoreSweep(here, tasks_here, bus_healthy=lambda: True)
    try:
        costs = []
        for _ in range(SWEEPS):
            sweep.seen = an_hour_ago  # the worst case: every agent changed since the last sweep (re-read, nothing new)
            started = time.perf_counter()
            await sweep.sweep()
            costs.append(time.perf_counter() - started)
        assert sweep.found == 0 and not sweep.failing
        # The steady state: nothing changed since the last sweep (nor within the skew window), nothing is read.
        steady = []
        for _ in range(SWEEPS):
            started = time.perf_counter()
            await sweep.sweep()
            steady.append(time.perf_counter() - started)
        costs.sort()
        steady.sort()
        print(f"\none store sweep at {AGENT_COUNT} agents: median {costs[SWEEPS // 2] * 1000:.2f} ms with all "
              f"{AGENT_COUNT} re-read, {steady[SWEEPS // 2] * 1000:.2f} ms with none changed "
              f"(max {steady[-1] * 1000:.2f} ms)")
        assert steady[SWEEPS // 2] < SWEEP_COST_BOUND_S

        await there.suspend("bot-0001", "alice", "compromised")  # tells nobody here: no bus in this test
        await tasks_there.revoke(task.id, "alice", "done")
        await sweep.sweep()
        assert here.require("bot-0001").state is Lifecycle.SUSPENDED
        ended = tasks_here.get(task.id)
        assert ended is not None and ended.state is TaskState.REVOKED
        assert sweep.found >= 2
        found = sweep.found
        await sweep.sweep()  # applied once: re-reading the same rows changes nothing
        assert sweep.found == found
    finally:
        await tasks_there.close()
        await tasks_here.close()


async def test_a_notice_waits_for_redis_and_is_never_given_up(
    redis_url: str, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publisher that lost Redis is not healthy while its notices wait; they are delivered in order
    once Redis takes them; too many collapse into one resync notice per topic."""
    monkeypatch.setattr(notices_module, "PENDING_MAX", 3)
    through_proxy = urlsplit(redis_url)._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    prefix = unique("backstop-bus")
    async with replica(through_proxy, prefix, "a") as (a, _), replica(redis_url, prefix, "b") as (b, _):
        heard: list[tuple[str, Mapping[str, Any]]] = []
        b.subscribe(TOPIC_AGENT_CHANGED, recorder(heard, "agents"))
        b.subscribe(TOPIC_TASK_CHANGED, recorder(heard, "tasks"))
        await eventually(lambda: a.healthy() and b.healthy())
        proxy.cut()
        await a.publish(TOPIC_AGENT_CHANGED, {"agent_id": "one"})
        await a.publish(TOPIC_AGENT_CHANGED, {"agent_id": "two"})
        assert not a.healthy() and b.healthy()
        proxy.restore()
        await eventually(lambda: len(heard) == 2 and a.healthy(), timeout_s=10)
        assert heard == [("agents", {"agent_id": "one"}), ("agents", {"agent_id": "two"})]
        heard.clear()
        proxy.cut()
        for n in range(4):  # one more than wait: they become one resync per topic
            await a.publish(TOPIC_AGENT_CHANGED if n % 2 else TOPIC_TASK_CHANGED, {"n": n})
        assert len(a.pending) <= 3
        proxy.restore()
        await eventually(lambda: a.healthy() and ("agents", {"resync": True}) in heard
                         and ("tasks", {"resync": True}) in heard, timeout_s=10)


async def lists_tools(http: httpx2.AsyncClient, gateway: Gateway, token: str) -> bool:
    """One 2026-07-28 tools/list on `gateway`: True if the agent was served a list."""
    meta = {PROTOCOL_VERSION_META_KEY: "2026-07-28", CLIENT_CAPABILITIES_META_KEY: {},
            CLIENT_INFO_META_KEY: {"name": "backstop-tests", "version": "0"}}
    response = await http.post(gateway.url, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}})
    return response.status_code == 200 and '"tools"' in response.text


async def refused_after(gateway: Gateway, token: str, bound_s: float) -> float:
    """Seconds until `gateway` refuses the token's tools/list (fails the test past `bound_s`)."""
    started = time.monotonic()
    async with httpx2.AsyncClient(timeout=10) as http:
        while await lists_tools(http, gateway, token):
            assert time.monotonic() - started < bound_s, f"still served after {bound_s} s"
            await asyncio.sleep(POLL_S)
    return time.monotonic() - started


async def served(gateway: Gateway, token: str) -> bool:
    async with httpx2.AsyncClient(timeout=10) as http:
        return await lists_tools(http, gateway, token)


def suspend(gateway: Gateway, agent: str) -> None:
    assert admin(gateway, "POST", f"/admin/v1/agents/{agent}/suspend", {"reason": "backstop test"})["state"] == \
        "suspended"


def fleet_on(tmp_path: Path, behaviour_http: int, redis_url: str, postgres_url: str,
             replica_cluster: dict[int, dict[str, str]] | None = None) -> Fleet:
    manifests = [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=5)]
    return start_fleet(tmp_path, manifests, redis_url=redis_url, postgres_url=postgres_url, tokens=TOKENS,
                       replica_cluster=replica_cluster, extra_config=UNMONITORED)


@pytest.fixture
def proxy(redis_url: str) -> Iterator[TcpProxy]:
    target = urlsplit(redis_url)
    started = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    yield started
    started.stop()


async def test_a_suspension_on_a_replica_that_lost_redis_reaches_the_others(
    tmp_path: Path, behaviour_http: int, redis_url: str, postgres_url: str, proxy: TcpProxy
) -> None:
    """Only A lost Redis: its notice waits, B's bus is healthy and hears nothing; B's store sweep finds
    the suspension within SWEEP_HEALTHY_S. When A's path is back, its waiting notice is delivered."""
    through_proxy = urlsplit(redis_url)._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    fleet = fleet_on(tmp_path, behaviour_http, redis_url, postgres_url, {0: {"redis_url": through_proxy}})
    try:
        a, b = fleet[0], fleet[1]
        assert await served(b, TOKENS["agent-cut"])
        proxy.cut()
        await asyncio.to_thread(suspend, a, "agent-cut")  # the store write succeeds: PostgreSQL is fine
        bound = SWEEP_HEALTHY_S + SLACK_S
        took = await refused_after(b, TOKENS["agent-cut"], bound)
        print(f"\nsuspension on replica A (Redis cut) refused on replica B after {took * 1000:.0f} ms "
              f"(bound {bound:.1f} s)")
        assert await served(b, TOKENS["agent-other"])  # only the suspended agent
        proxy.restore()
        assert admin(b, "GET", "/admin/v1/agents/agent-cut")["state"] == "suspended"
        assert not await served(a, TOKENS["agent-cut"]) and not await served(b, TOKENS["agent-cut"])
        admin(b, "POST", "/admin/v1/agents/agent-cut/resume", {"reason": "backstop test"})
        took = await served_again_after(a, TOKENS["agent-cut"], bound)
        print(f"resumed on B, served again on A after {took * 1000:.0f} ms")
    finally:
        fleet.stop()


async def served_again_after(gateway: Gateway, token: str, bound_s: float) -> float:
    started = time.monotonic()
    while not await served(gateway, token):
        assert time.monotonic() - started < bound_s, f"not served again after {bound_s} s"
        await asyncio.sleep(POLL_S)
    return time.monotonic() - started


async def test_a_suspension_during_a_redis_outage_reaches_the_others(
    tmp_path: Path, behaviour_http: int, postgres_url: str
) -> None:
    """Redis down for everyone: requests needing the chain signals are refused everywhere, but B's view
    of the agent must not stay stale: B sweeps the store every SWEEP_UNHEALTHY_S, so within that the
    agent suspended on A has its streams on B closed, B reports it suspended and refuses to start a task
    for it. After Redis restarts, everything agrees."""
    engine = engines.start_redis()
    port = int(engine.url.rsplit(":", 1)[1].split("/")[0])
    fleet = fleet_on(tmp_path, behaviour_http, engine.url, postgres_url)
    try:
        a, b = fleet[0], fleet[1]
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http:
            streams = await open_streams(http, b, TOKENS["agent-down"])
            engine.stop()
            await asyncio.sleep(SWEEP_UNHEALTHY_S)  # B has noticed its subscription is gone by now
            await asyncio.to_thread(suspend, a, "agent-down")
            bound = SWEEP_UNHEALTHY_S + SLACK_S
            took = await suspended_after(b, "agent-down", bound)
            print(f"\nsuspension on replica A during a Redis outage known to replica B after {took * 1000:.0f} ms "
                  f"(bound {bound:.1f} s)")
            await assert_streams_end(streams, timeout_s=bound)
        refused = await asyncio.to_thread(admin, b, "POST", "/admin/v1/tasks", {
            "agent_id": "agent-down", "purpose": "backstop test", "tools": ["behav__echo"]}, 409)
        assert "not active" in str(refused) or "suspended" in str(refused), refused
        engine = engines.start_redis(port)
        for replica in (a, b):
            await served_again_after(replica, TOKENS["agent-other"], bound * 3)
            assert admin(replica, "GET", "/admin/v1/agents/agent-down")["state"] == "suspended"
            assert not await served(replica, TOKENS["agent-down"])
    finally:
        fleet.stop()
        engine.stop()


async def suspended_after(gateway: Gateway, agent: str, bound_s: float) -> float:
    """Seconds until `gateway`'s own view (its admin API, from memory) has `agent` suspended."""
    started = time.monotonic()
    while (await asyncio.to_thread(admin, gateway, "GET", f"/admin/v1/agents/{agent}"))["state"] != "suspended":
        assert time.monotonic() - started < bound_s, f"still not suspended after {bound_s} s"
        await asyncio.sleep(POLL_S)
    return time.monotonic() - started
