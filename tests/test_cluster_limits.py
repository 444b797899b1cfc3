"""Rate limits, chain signals and task budgets across a fleet (issue 15, item 3), on a real Redis.

First the Redis implementations against the in-memory ones: the seams' contracts (tests/test_state_seams.py)
and the same random sequences of calls giving the same answers, clock for clock. Then two real replicas:
an agent alternating between them is rate limited at the same count as on one, a sensitive read on A then
an egress call on B is held by the shipped chain rule, and racing calls never exceed a task's budget.
Last, the fault test: Redis stops, calls are refused with a clear error; it restarts on the same port and
calls pass again without a gateway restart.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.catalog.model import ToolEntry
from gateway.chain.tracker import ChainTracker, RateLimited
from gateway.cluster.chain_signals import RedisChainSignals
from gateway.cluster.connection import Cluster
from gateway.cluster.rate_windows import RedisRateWindows
from gateway.settings.cluster import ClusterSettings
from gateway.settings.monitoring import MonitoringSettings, RateLimit
from gateway.state import ChainSignals, RateWindows
from tests import test_state_seams as seams


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[Cluster]:
    """A client of the session's Redis under a key prefix of its own."""
    cluster = Cluster(ClusterSettings(redis_url=redis_url, key_prefix=f"test-{uuid.uuid4().hex[:12]}"))
    await cluster.open()
    yield cluster
    await cluster.close()


# -- the seams' contracts -----------------------------------------------------------------------------

async def test_redis_rate_windows_satisfy_the_contract(cluster: Cluster) -> None:
    assert isinstance(RedisRateWindows(cluster, seams.LIMITS), RateWindows)
    await seams.test_rate_windows_contract(lambda settings: RedisRateWindows(cluster, settings))


async def test_redis_chain_signals_satisfy_the_contract(cluster: Cluster) -> None:
    assert isinstance(RedisChainSignals(cluster, seams.LIMITS), ChainSignals)
    await seams.test_chain_signals_contract(lambda settings: RedisChainSignals(cluster, settings))


# -- the same answers as one process, for the same sequence ----------------------------------------------

TOOLS = [
    ToolEntry(name="read", exposed_name="files__read", server_id="files", risk="read", data_classes=("internal",),
              owner="team"),
    ToolEntry(name="write", exposed_name="files__write", server_id="files", risk="write",
              data_classes=("internal",), owner="team"),
    ToolEntry(name="secret", exposed_name="vault__read", server_id="vault", risk="read",
              data_classes=("secrets", "pii"), owner="team"),
    ToolEntry(name="send", exposed_name="mail__send", server_id="mail", risk="write", data_classes=(),
              owner="team"),
    ToolEntry(name="post", exposed_name="web__post", server_id="web", risk="write", data_classes=(), owner="team",
              egress=True),
    ToolEntry(name="list", exposed_name="files__list", server_id="files", risk="read", data_classes=(),
              owner="team"),
]
DIFFERENTIAL = MonitoringSettings(
    per_agent=RateLimit(6, 20.0), per_task=RateLimit(4, 15.0), per_tool=RateLimit(3, 10.0),
    egress_servers=("mail",), burst=RateLimit(4, 10.0), repeated_denials=RateLimit(3, 30.0),
    probing=RateLimit(2, 20.0), window_s=120.0, max_history=5)


async def step(rng: random.Random, clock: Clock, tracker: ChainTracker, rates: RateWindows,
               signals: ChainSignals[ToolEntry, Any]) -> None:
    """One random operation on both implementations; their answers must agree."""
    agent = rng.choice(["a", "a", "b"])
    task = rng.choice([None, "t1", "t2", "t3"])
    op = rng.random()
    if op < 0.35:
        tool = rng.choice([None, *(t.exposed_name for t in TOOLS)])
        assert await outcome_of(tracker.admit(agent, task, tool)) == await outcome_of(rates.admit(agent, task, tool))
    elif op < 0.6:
        entry, outcome = rng.choice(TOOLS), rng.choice(["allow", "allow", "approved", "deny", "step_up"])
        assert await signals.observe_call(agent, task, entry, outcome) == \
            await tracker.observe_call(agent, task, entry, outcome)
    elif op < 0.72:
        assert await signals.observe_probe(agent, task, "nope") == await tracker.observe_probe(agent, task, "nope")
    elif op < 0.74 and task is not None:
        signals.forget_task(task)
        tracker.forget_task(task)
    else:
        assert await signals.context(agent, task) == await tracker.context(agent, task)
    clock.now += rng.choice([0.0, 0.0, 0.2, 0.5, 1.0, 2.0, 40.0])


async def outcome_of(admit: Any) -> tuple[str, float] | None:
    try:
        await admit
    except RateLimited as exc:
        return exc.scope, round(exc.retry_after_s, 6)
    return None


@pytest.mark.parametrize("seed", range(6))
async def test_redis_answers_as_one_process_does(cluster: Cluster, seed: int) -> None:
    """Random sequences of admits, decided calls, probes, forgets and contexts (two agents, three tasks,
    every detector) give the same rate limits, context.chain records and detections."""
    clock, rng = Clock(), random.Random(seed)
    tracker = ChainTracker(DIFFERENTIAL, clock)
    rates = RedisRateWindows(cluster, DIFFERENTIAL, clock)
    signals = RedisChainSignals(cluster, DIFFERENTIAL, clock)
    for _ in range(400):
        await step(rng, clock, tracker, rates, signals)
    for agent in ("a", "b"):
        for task in (None, "t1", "t2", "t3"):
            assert await signals.context(agent, task) == await tracker.context(agent, task)
