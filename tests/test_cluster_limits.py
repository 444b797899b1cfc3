"""Rate limits, chain signals and task budgets across a fleet (issue 15, item 3), on a real Redis.

First the Redis implementations against the in-memory ones: the seams' contracts (tests/test_state_seams.py)
and the same random sequences of calls giving the same answers, clock for clock. Then two real replicas:
an agent alternating between them is rate limited at the same count as on one, a sensitive read on A then
an egress call on B is held by the shipped chain rule, and racing calls never exceed a task's budget.
Then the fault test: Redis stops, calls are refused with a clear error; it restarts on the same port and
calls pass again without a gateway restart. Last, bad input: two deployments sharing one Redis under different
key prefixes count the same agent separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from redis import Redis as SyncRedis

from gateway.catalog.model import ToolEntry
from gateway.chain.signals import person_scope
from gateway.chain.tracker import ChainTracker, RateLimited, RatesUnavailable
from gateway.cluster.call_budgets import RedisCallBudgets
from gateway.cluster.chain import RedisChain
from gateway.cluster.chain_signals import RedisChainSignals
from gateway.cluster.connection import Cluster
from gateway.cluster.rate_windows import RedisRateWindows
from gateway.settings.cluster import ClusterSettings
from gateway.settings.monitoring import MonitoringSettings, RateLimit
from gateway.state import ChainSignals, RateWindows
from gateway.state.budgets import BudgetUnavailable, CallBudgets
from gateway.state.chain import CallAdmission, ChainUnavailable, CountedObservation
from tests import test_state_seams as seams
from tests.support.changes import SHIFTING_SERVER
from tests.support.clients import mcp_client
from tests.support.engines import start_redis
from tests.support.fleet import Fleet, start_fleet
from tests.support.processes import Gateway, free_port, start_listening, stop
from tests.test_monitoring_e2e import (
    ACCESS_DENIED,
    ADMIN,
    EGRESS_REASON,
    RATE_LIMITED,
    WAIT_S,
    always_working_hours,
    detections_of,
    monitoring_records,
    needs_approval,
    wait_for,
)


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


async def test_the_redis_chain_is_both_seams_and_admits_a_call_in_one_round_trip(cluster: Cluster) -> None:
    """A fleet's chain object (like the in-memory tracker) is the rate windows and the chain signals, each to its
    contract, and admits a tools/call with its chain context in one script."""
    chain = RedisChain(cluster, seams.LIMITS)
    assert isinstance(chain, RateWindows) and isinstance(chain, CallAdmission)
    assert isinstance(ChainTracker(seams.LIMITS), CallAdmission)
    await seams.test_rate_windows_contract(lambda settings: RedisChain(cluster, settings))
    await seams.test_chain_signals_contract(lambda settings: RedisChain(cluster, settings))
    await chain.admit_call("warm", None, "files__read")  # the script is loaded
    before = await evalsha_calls(cluster)
    assert (await chain.admit_call("one", "t", "files__read"))["agent"]["calls_last_minute"] == 0
    assert await evalsha_calls(cluster) == before + 1
    assert (await chain.admit_call("one", "t", "files__read"))["calls_last_minute"] == 0
    with pytest.raises(RateLimited):  # LIMITS: two calls a minute per agent
        await chain.admit_call("one", "t", "files__read")
    assert await evalsha_calls(cluster) == before + 3


async def test_an_allowed_call_is_observed_and_counted_in_one_round_trip(cluster: Cluster) -> None:
    """After an allow: the call's signals and its task's count in one script; a detection counts nothing (the
    kill switch may refuse the call first), so the caller counts apart."""
    chain = RedisChain(cluster, DIFFERENTIAL)  # burst: 4 calls in 10 s
    assert isinstance(chain, CountedObservation) and isinstance(chain, CallBudgets)
    deadline = time.time() + 60
    await chain.observe_counted("warm", "w", TOOLS[0], "allow", None, 0, deadline)  # the script is loaded
    before = await evalsha_calls(cluster)
    answers = [await chain.observe_counted("one", "t", TOOLS[0], "allow", 3, 0, deadline) for _ in range(4)]
    assert await evalsha_calls(cluster) == before + 4
    assert answers == [([], 1), ([], 2), ([], 3), ([], None)]  # the budget of 3 is spent: nothing counted
    found, made = await chain.observe_counted("one", "t", TOOLS[0], "allow", 10, 0, deadline)  # the fifth: a burst
    assert [d.detector for d in found] == ["burst"] and made is None
    assert await chain.count("t", 10, 0, deadline) == 4  # that call was not counted: counted apart, it is the 4th
    context = await chain.context("one", "t")
    assert context["calls_last_minute"] == 5  # every call observed, counted or not


async def evalsha_calls(cluster: Cluster) -> int:
    stats = await cluster.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


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
    per_agent=RateLimit(5, 20.0), per_task=RateLimit(3, 15.0), per_tool=RateLimit(2, 10.0),
    egress_servers=("mail",), burst=RateLimit(4, 10.0), repeated_denials=RateLimit(3, 30.0),
    probing=RateLimit(2, 20.0), window_s=120.0, max_history=5)


class Counts:
    """A task's call count as one process keeps it (TaskService.consume), against a budget of BUDGET."""

    BUDGET = 6

    def __init__(self) -> None:
        self.made: dict[str, int] = {}

    def count(self, task: str) -> int | None:
        made = self.made.get(task, 0)
        if made >= self.BUDGET:
            return None
        self.made[task] = made + 1
        return made + 1


async def step(rng: random.Random, clock: Clock, memory: tuple[ChainTracker, ChainTracker, Counts],
               chain: RedisChain) -> None:
    """One random operation on both implementations; their answers must agree. `memory`: the in-memory rate
    windows and chain signals, two trackers as two seams (one tracker would also forget a task's window), and
    the tasks' call counts; `chain`: the Redis rate windows, chain signals and call counts, one object as a
    fleet has them."""
    memory_rates, tracker, counts = memory
    signals: ChainSignals[ToolEntry, Any] = chain
    agent = rng.choice(["a", "a", "b"])
    task = rng.choice(scopes(agent))
    op = rng.random()
    if op < 0.2:
        tool = rng.choice([None, *(t.exposed_name for t in TOOLS)])
        expected = await outcome_of(memory_rates.admit(agent, task, tool))
        assert await outcome_of(chain.admit(agent, task, tool)) == expected
    elif op < 0.35:  # a tools/call's admission: the windows and the context in one script, as the two in order
        tool = rng.choice([t.exposed_name for t in TOOLS])
        expected = await outcome_of(memory_rates.admit(agent, task, tool))
        joint: list[dict[str, Any]] = []
        assert await outcome_of(joint_admission(chain, agent, task, tool, joint)) == expected
        if expected is None:
            assert joint == [await tracker.context(agent, task)]
    elif op < 0.6:
        entry, outcome = rng.choice(TOOLS), rng.choice(["allow", "allow", "approved", "deny", "step_up"])
        assert await signals.observe_call(agent, task, entry, outcome) == \
            await tracker.observe_call(agent, task, entry, outcome)
    elif op < 0.66 and task is not None:  # an allowed call of a task: observed, then counted unless detected
        entry, outcome = rng.choice(TOOLS), rng.choice(["allow", "approved"])
        expected = await tracker.observe_call(agent, task, entry, outcome)
        found, made = await chain.observe_counted(agent, task, entry, outcome, Counts.BUDGET, 0, time.time() + 60)
        assert found == expected
        assert made == (None if expected else counts.count(task))
    elif op < 0.72:
        assert await signals.observe_probe(agent, task, "nope") == await tracker.observe_probe(agent, task, "nope")
    elif op < 0.74 and task is not None:
        signals.forget_task(task)
        tracker.forget_task(task)
    elif op < 0.75:
        signals.forget_agent(agent)  # and its tasks
        tracker.forget_agent(agent)
    else:
        assert await signals.context(agent, task) == await tracker.context(agent, task)
    clock.now += rng.choice([0.0, 0.0, 0.2, 0.5, 1.0, 2.0, 40.0])


async def joint_admission(chain: CallAdmission, agent: str, task: str | None, tool: str,
                          into: list[dict[str, Any]]) -> None:
    into.append(await chain.admit_call(agent, task, tool))


async def outcome_of(admit: Any) -> tuple[str, float] | None:
    try:
        await admit
    except RateLimited as exc:
        return exc.scope, round(exc.retry_after_s, 6)
    return None


@pytest.mark.parametrize("seed", range(6))
async def test_redis_answers_as_one_process_does(cluster: Cluster, seed: int) -> None:
    """Random sequences of admits, tools/call admissions, decided calls (counted against a task's budget or not),
    probes, forgets and contexts (two agents with two tasks each, every detector) give the same rate limits,
    context.chain records, detections and call counts."""
    clock, rng = Clock(), random.Random(seed)
    memory = ChainTracker(DIFFERENTIAL, clock), ChainTracker(DIFFERENTIAL, clock), Counts()
    tracker = memory[1]
    chain = RedisChain(cluster, DIFFERENTIAL, clock)
    for _ in range(400):
        await step(rng, clock, memory, chain)
    for agent in ("a", "b"):
        for task in scopes(agent):
            assert await chain.context(agent, task) == await tracker.context(agent, task)


def scopes(agent: str) -> list[str | None]:
    """Whose signals a call adds to: the agent's own, one of its two tasks, or one of two people's through it."""
    people = [person_scope(agent, "https://login.example.com", sub) for sub in ("alice", "bob")]
    return [None, f"{agent}-t1", f"{agent}-t2", *people]  # a task belongs to one agent


async def test_an_unknown_person_carries_the_clients_read_and_a_persons_read_expires(cluster: Cluster) -> None:
    """Both implementations: a person with no record (new, evicted or expired) starts with the client's sensitive
    read within window_s, in context.chain and for sensitive_then_egress; a person's own read counts within
    window_s (never for ever)."""
    clock = Clock()
    settings = MonitoringSettings(per_agent=None, per_task=None, per_tool=None, egress_servers=("mail",),
                                  window_s=120.0)
    alice, bob = (person_scope("client", "https://login.example.com", sub) for sub in ("alice", "bob"))
    secret, send = TOOLS[2], next(t for t in TOOLS if t.server_id == "mail")
    for signals in (ChainTracker(settings, clock), RedisChainSignals(cluster, settings, clock)):
        await signals.observe_call("client", bob, TOOLS[0], "allow")  # Bob is known before anything is read
        await signals.observe_call("client", alice, secret, "allow")
        clock.now += 10
        assert (await signals.context("client", bob))["sensitive_read"] is False  # his own record
        carol = person_scope("client", "https://login.example.com", f"carol-{id(signals)}")
        assert (await signals.context("client", carol))["sensitive_read"] is True  # unknown: may be her read
        found = await signals.observe_call("client", carol, send, "allow")
        assert [(d.detector, d.task_id) for d in found] == [("sensitive_then_egress", carol)]
        clock.now += 120  # past the window: Alice's read no longer counts, nor does anyone inherit it
        for person in (alice, carol):
            assert (await signals.context("client", person))["sensitive_read"] is False
        assert await signals.observe_call("client", alice, send, "allow") == []
        clock.now += 1000


async def test_racing_counts_never_exceed_a_budget(cluster: Cluster) -> None:
    budgets = RedisCallBudgets(cluster)
    deadline = time.time() + 60
    answers = await asyncio.gather(*(budgets.count("task-1", 5, 0, deadline) for _ in range(40)))
    assert sorted(a for a in answers if a is not None) == [1, 2, 3, 4, 5]  # each count handed out once
    assert answers.count(None) == 35  # refused ones count nowhere...
    assert await budgets.count("task-1", 6, 0, deadline) == 6  # ...so a larger budget has room for one
    assert await budgets.count("task-2", 5, 4, deadline) == 5  # never below what the replica knows
    assert await budgets.count("task-2", 5, 0, deadline) is None
    assert [await budgets.count("task-3", None, 0, deadline) for _ in range(3)] == [1, 2, 3]  # no budget: counted
    ttl = await cluster.redis.pttl(cluster.keys.key("budget", "task-1"))
    assert 60_000 < ttl <= 121_000  # gone a minute after the deadline


async def test_racing_reservations_and_counts_never_exceed_a_budget(cluster: Cluster) -> None:
    """A delegated child's budget reserved out of its parent's shares the parent's one counter."""
    budgets = RedisCallBudgets(cluster)
    deadline = time.time() + 60
    answers = await asyncio.gather(*(budgets.reserve("parent", 3, 10, 0, deadline) for _ in range(5)),
                                   *(budgets.count("parent", 10, 0, deadline) for _ in range(5)))
    reserved, counted = answers[:5], answers[5:]
    made = 3 * sum(a is not None for a in reserved) + sum(a is not None for a in counted)
    assert 8 <= made <= 10  # never past the budget; as full as the last refused reservation of 3 left it
    assert int(await cluster.redis.get(cluster.keys.key("budget", "parent"))) == made  # every grant counted once
    assert sorted(a for a in answers if a is not None)[-1] == made
    assert await budgets.reserve("other", 4, 5, 2, deadline) is None  # never below what the replica knows: 2 + 4 > 5
    assert await budgets.reserve("other", 3, 5, 2, deadline) == 5


async def test_unreachable_redis_is_never_a_clean_answer() -> None:
    """Nothing listens on the port: every call-path operation refuses (never admits, never a clean record)."""
    cluster = Cluster(ClusterSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with pytest.raises(RatesUnavailable):
            await RedisRateWindows(cluster, seams.LIMITS).admit("a", "t", "files__read")
        with pytest.raises(RatesUnavailable):  # as admit would be: the first thing a tools/call asks
            await RedisChain(cluster, seams.LIMITS).admit_call("a", "t", "files__read")
        with pytest.raises(ChainUnavailable):  # no window to count: as context would be
            await RedisChain(cluster, MonitoringSettings(per_agent=None)).admit_call("a", None, "files__read")
        with pytest.raises(ChainUnavailable):  # an allowed call is neither observed nor counted: refused
            await RedisChain(cluster, DIFFERENTIAL).observe_counted("a", "t", TOOLS[0], "allow", 5, 0, time.time())
        signals = RedisChainSignals(cluster, DIFFERENTIAL)
        for operation in (signals.context("a", "t"), signals.observe_call("a", "t", TOOLS[0], "allow"),
                          signals.observe_probe("a", None, "nope")):
            with pytest.raises(ChainUnavailable):
                await operation
        signals.forget_agent("a")  # in the background: logged, and the records expire on their own
        await signals.drain()
        with pytest.raises(BudgetUnavailable):
            await RedisCallBudgets(cluster).count("t", 5, 0, time.time() + 60)
    finally:
        await cluster.close()


# -- two real replicas --------------------------------------------------------------------------------

AGENTS = ("alternating", "single", "reader", "reader-alone", "bystander", "budgeted", "burster")
PER_AGENT = 12  # calls a minute: more than the budget test races


def token_for(agent_id: str) -> str:
    return f"token-{agent_id}"


def fleet_manifests(port: int) -> list[dict[str, Any]]:
    """One upstream that logs every tools/call it executes, as three servers: a secrets read, an egress
    write and a plain read."""
    common = {"owner": "tests@example.com", "description": "logging test upstream", "timeout_s": 10,
              "transport": {"url": f"http://127.0.0.1:{port}/mcp"}}
    return [
        {"id": "vault", **common, "tools": [{"name": "lookup", "risk": "read", "data_classes": ["secrets"]}]},
        {"id": "mail", **common, "tools": [{"name": "note", "risk": "write", "egress": True}]},
        {"id": "files", **common, "tools": [{"name": "lookup", "risk": "read"}]},
    ]


@pytest.fixture(scope="module")
def upstream_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits-upstream") / "calls.jsonl"


@pytest.fixture(scope="module")
def upstream(upstream_log: Path) -> Iterator[int]:
    process, port = start_listening([sys.executable, str(SHIFTING_SERVER), "--port", "0"],
                                    env={"SHIFTING_LOG": str(upstream_log)})
    yield port
    stop(process)


def fleet_config() -> dict[str, Any]:
    return {"policy": always_working_hours(),
            "monitoring": {"kill_switch_severity": "off", "per_agent": {"calls": PER_AGENT, "per_s": 60},
                           "per_task": None, "burst": {"calls": 3, "per_s": 10}}}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, upstream: int, redis_url: str,
          postgres_url: str) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("limits-fleet")
    fleet = start_fleet(workdir, fleet_manifests(upstream), redis_url=redis_url, postgres_url=postgres_url,
                        tokens={a: token_for(a) for a in AGENTS}, extra_config=fleet_config())
    yield fleet
    fleet.stop()


def executed(log: Path, marker: str) -> int:
    """How many tools/calls carrying `marker` the upstream executed."""
    if not log.exists():
        return 0
    calls = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sum(marker in json.dumps(call["arguments"]) for call in calls)


async def calls_until_limited(urls: list[str], agent_id: str, marker: str) -> tuple[int, MCPError]:
    """Call files__lookup round-robin over `urls` until refused; the calls that ran and the refusal."""
    clients: list[Client] = []
    async with contextlib.AsyncExitStack() as stack:
        for url in urls:
            clients.append(await stack.enter_async_context(mcp_client(url, token_for(agent_id), "2026-07-28")))
        for n in range(PER_AGENT * 3):
            try:
                result = await clients[n % len(clients)].call_tool("files__lookup", {"query": f"{marker}-{n}"})
            except MCPError as exc:
                return n, exc
            assert not result.is_error, result
    raise AssertionError("never rate limited")


async def test_an_agent_alternating_replicas_is_limited_as_on_one(fleet: Fleet, upstream_log: Path) -> None:
    marker, alone_marker = uuid.uuid4().hex, uuid.uuid4().hex
    ran, refusal = await calls_until_limited([fleet[0].url, fleet[1].url], "alternating", marker)
    alone, alone_refusal = await calls_until_limited([fleet[0].url], "single", alone_marker)
    assert ran == alone == PER_AGENT
    for error in (refusal, alone_refusal):
        assert error.error.code == RATE_LIMITED, error.error
        assert error.error.message.startswith("Rate limited: too many calls for this agent"), error.error
        assert error.error.data["scope"] == "agent" and 0 < error.error.data["retryAfterSeconds"] <= 60
    # The refused calls never reached the upstream.
    assert executed(upstream_log, marker) == executed(upstream_log, alone_marker) == PER_AGENT


async def read_then_send(read_on: Gateway, send_on: Gateway, agent_id: str) -> None:
    async with mcp_client(read_on.url, token_for(agent_id), "2026-07-28") as client:
        result = await client.call_tool("vault__lookup", {"query": "the keys"})
        assert not result.is_error, result
    async with mcp_client(send_on.url, token_for(agent_id), "2026-07-28") as client:
        await needs_approval(client, "mail__note", {"text": "the keys"}, EGRESS_REASON)
    detection = wait_for(f"the detection of {agent_id}", lambda: [
        r for r in monitoring_records(send_on)
        if r["agent_id"] == agent_id and r["action"] == "sensitive_then_egress"])
    assert [(d["detail"]["severity"], d["tool"]) for d in detection] == [("high", "mail__note")]  # held: contained


async def test_a_sensitive_read_on_one_replica_holds_egress_on_the_other(fleet: Fleet) -> None:
    async with mcp_client(fleet[1].url, token_for("bystander"), "2026-07-28") as client:
        result = await client.call_tool("mail__note", {"text": "nothing read"})  # nothing read: egress runs
        assert not result.is_error, result
    await read_then_send(fleet[0], fleet[1], "reader")
    await read_then_send(fleet[0], fleet[0], "reader-alone")  # as on one replica


def start_task(gw: Gateway, agent_id: str, tools: list[str], budget: int) -> tuple[str, str]:
    """A task started through the admin API: its id and task token."""
    response = httpx2.post(f"{gw.base}/admin/v1/tasks", headers=ADMIN, timeout=WAIT_S, json={
        "agent_id": agent_id, "purpose": "race the budget", "tools": tools, "budget": budget})
    assert response.status_code == 201, response.text
    return str(response.json()["task"]["id"]), str(response.json()["token"])


def calls_made(gw: Gateway, task_id: str) -> int:
    response = httpx2.get(f"{gw.base}/admin/v1/tasks/{task_id}", headers=ADMIN, timeout=WAIT_S)
    assert response.status_code == 200, response.text
    return int(response.json()["calls_made"])


async def until_known(gw: Gateway, task_token: str) -> None:
    """Wait until `gw` lists the task's tool to its token (a list is not counted against the budget)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            async with mcp_client(gw.url, task_token, "2026-07-28") as client:
                if "files__lookup" in {tool.name for tool in (await client.list_tools()).tools}:
                    return
        except (MCPError, httpx2.HTTPError):
            pass  # not yet: the token is refused
        assert time.monotonic() < deadline, "the task never reached the other replica"
        await asyncio.sleep(0.1)


async def test_racing_replicas_never_exceed_a_task_budget(fleet: Fleet, upstream_log: Path) -> None:
    budget, racers, marker = 3, 10, uuid.uuid4().hex
    task_id, token = start_task(fleet[0], "budgeted", ["files__lookup"], budget)
    await until_known(fleet[1], token)  # a task started on A reaches B through the fleet's bus
    async with mcp_client(fleet[0].url, token, "2026-07-28") as on_a, \
            mcp_client(fleet[1].url, token, "2026-07-28") as on_b:
        clients = [on_a, on_b]

        async def race(n: int) -> bool:
            try:
                result = await clients[n % 2].call_tool("files__lookup", {"query": f"{marker}-{n}"})
            except MCPError as exc:
                assert exc.error.code == ACCESS_DENIED and "call budget exhausted" in exc.error.message, exc.error
                return False
            assert not result.is_error, result
            return True

        ran = await asyncio.gather(*(race(n) for n in range(racers)))
    assert sum(ran) == budget
    assert executed(upstream_log, marker) == budget
    # The replica that counted the last call knows the fleet's count; each flushes the highest it has seen.
    assert max(calls_made(gw, task_id) for gw in fleet) == budget


async def test_a_call_that_sets_off_a_detector_is_counted_once(fleet: Fleet, upstream_log: Path) -> None:
    """An allowed call is observed and counted in one script, unless a detector fires: then it is acted on
    and counted apart - once. Here the fourth call is a burst (3 calls in 10 s); the budget still holds."""
    budget, marker = 5, uuid.uuid4().hex
    task_id, token = start_task(fleet[0], "burster", ["files__lookup"], budget)
    await until_known(fleet[1], token)
    async with mcp_client(fleet[0].url, token, "2026-07-28") as on_a, \
            mcp_client(fleet[1].url, token, "2026-07-28") as on_b:
        for n in range(budget):
            result = await (on_a, on_b)[n % 2].call_tool("files__lookup", {"query": f"{marker}-{n}"})
            assert not result.is_error, result
        with pytest.raises(MCPError) as refused:
            await on_b.call_tool("files__lookup", {"query": f"{marker}-over"})
    assert refused.value.error.code == ACCESS_DENIED and "call budget exhausted" in refused.value.error.message
    assert executed(upstream_log, marker) == budget
    assert max(calls_made(gw, task_id) for gw in fleet) == budget
    assert detections_of(fleet[0], "burster", "burst")  # the fleet's one audit log


# -- Redis goes away, and comes back --------------------------------------------------------------------

async def refusal(url: str, token: str, tool: str, arguments: dict[str, Any]) -> MCPError:
    async with mcp_client(url, token, "2026-07-28") as client:
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            return exc
    raise AssertionError(f"{tool} ran while Redis was down: {result}")


async def runs(url: str, token: str, marker: str) -> bool:
    try:
        async with mcp_client(url, token, "2026-07-28") as client:
            result = await client.call_tool("files__lookup", {"query": marker})
    except MCPError:
        return False
    return not result.is_error


async def test_without_redis_calls_are_refused_and_recover_when_it_returns(
        tmp_path: Path, upstream: int, upstream_log: Path, postgres_url: str) -> None:
    """Its own Redis: stopped, every call is refused with a clear error and nothing reaches the upstream
    uncounted; restarted on the same port, calls pass again, the gateway untouched."""
    redis = start_redis()
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    # No per-agent window: a bare token's call reaches the chain signals; a task's call its task window.
    config = {"policy": always_working_hours(),
              "monitoring": {"kill_switch_severity": "off", "per_agent": None, "per_task": {"calls": 50, "per_s": 60}}}
    fleet = start_fleet(tmp_path, fleet_manifests(upstream), redis_url=redis.url, postgres_url=postgres_url, replicas=1,
                        tokens={"outage": token_for("outage")}, extra_config=config)
    try:
        gw, bare, marker = fleet[0], token_for("outage"), uuid.uuid4().hex
        _, task_token = start_task(gw, "outage", ["files__lookup"], 20)
        assert await runs(gw.url, bare, f"{marker}-before") and await runs(gw.url, task_token, f"{marker}-before")
        redis.stop()

        unseen = await refusal(gw.url, bare, "files__lookup", {"query": f"{marker}-down"})
        assert unseen.error.code == ACCESS_DENIED, unseen.error
        assert unseen.error.message.startswith("Access denied: chain signals unavailable"), unseen.error
        uncounted = await refusal(gw.url, task_token, "files__lookup", {"query": f"{marker}-down"})
        assert uncounted.error.code == RATE_LIMITED, uncounted.error
        assert uncounted.error.message.startswith("Rate limited: the gateway cannot count calls right now")
        assert uncounted.error.data["retryAfterSeconds"] >= 1
        assert executed(upstream_log, f"{marker}-down") == 0
        why = wait_for("the audited refusal", lambda: [
            r for r in monitoring_records(gw) if r["agent_id"] == "outage" and r["action"] == "unavailable"])
        assert why[0]["detail"]["step"] == "context" and "unreachable" in why[0]["detail"]["reason"]
        # Logged with where Redis is (never its credentials) and why.
        assert f"chain signals unreachable at redis://127.0.0.1:{port}/0 (context, ConnectionError)" in gw.log_text()

        redis = start_redis(port)
        deadline = time.monotonic() + WAIT_S
        while not await runs(gw.url, bare, f"{marker}-after"):
            assert time.monotonic() < deadline, "calls still refused after Redis came back"
            await asyncio.sleep(0.2)
        assert await runs(gw.url, task_token, f"{marker}-after")
        assert gw.process is not None and gw.process.poll() is None  # the same gateway process throughout
    finally:
        fleet.stop()
        redis.stop()


# -- bad input: two deployments on one Redis --------------------------------------------------------

PREFIX_AGENT = "shared-name"


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory, upstream: int, redis_url: str,
                postgres_url: str) -> Iterator[list[Fleet]]:
    """Two one-replica deployments on one Redis, each with its own database and (start_fleet) key prefix."""
    fleets: list[Fleet] = []
    try:
        for name in ("blue", "green"):
            fleets.append(start_fleet(tmp_path_factory.mktemp(name), fleet_manifests(upstream), redis_url=redis_url,
                                      postgres_url=postgres_url, replicas=1,
                                      tokens={PREFIX_AGENT: token_for(PREFIX_AGENT)}, extra_config=fleet_config()))
        yield fleets
    finally:
        for fleet in fleets:
            fleet.stop()


async def test_the_same_agent_is_counted_separately_in_each_deployment(
        deployments: list[Fleet], upstream_log: Path, redis_url: str) -> None:
    blue, green = deployments
    assert blue.key_prefix != green.key_prefix
    marker_blue, marker_green = uuid.uuid4().hex, uuid.uuid4().hex
    ran_blue, _ = await calls_until_limited([blue[0].url], PREFIX_AGENT, marker_blue)
    ran_green, _ = await calls_until_limited([green[0].url], PREFIX_AGENT, marker_green)  # blue's count is not green's
    assert ran_blue == ran_green == PER_AGENT
    assert executed(upstream_log, marker_blue) == executed(upstream_log, marker_green) == PER_AGENT
    client = SyncRedis.from_url(redis_url)
    try:
        keys = [key.decode() for key in client.scan_iter(match="*", count=1000)]
    finally:
        client.close()
    ours = [k for k in keys if k.startswith((f"{blue.key_prefix}:", f"{green.key_prefix}:"))]
    assert any(k.startswith(f"{blue.key_prefix}:") for k in ours) and any(
        k.startswith(f"{green.key_prefix}:") for k in ours)
    assert not [k for k in keys if PREFIX_AGENT in k and k not in ours], "every key of a deployment is under its prefix"
