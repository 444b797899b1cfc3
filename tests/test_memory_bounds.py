"""Memory bounds found by the soak (docs/operations.md#soak): every in-memory table the request path
fills per token or per task stays at its bound, sheds what can no longer be used, and evicting an
entry never turns a refusal into an acceptance.

Real classes throughout: the workload-token verifier against a real JWKS endpoint
(TestIdentityProvider), task tokens signed with a real key and checked against a real TaskService
on SQLite, and the tracemalloc switch on a real `narrowgate serve`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import aiohttp
import httpx2
import pytest

from gateway.admin.tasks_api import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
from gateway.catalog import Catalog
from gateway.expiring_cache import ExpiringCache
from gateway.identity.verified import TokenRejected
from gateway.identity.verifier import DEFAULT_CACHE_SIZE, TokenVerifier
from gateway.policy import PolicyEngine
from gateway.policy.engine import ENTITY_CACHE_SIZE
from gateway.policy.tool_listing import ToolLister
from gateway.registry.service import Registry
from gateway.settings.identity import identity_settings_from_mapping
from gateway.store import Store
from gateway.tasks.model import TaskEnded, TaskError
from gateway.tasks.service import TaskService, TaskSettings
from gateway.tasks.token_check import CACHE_SIZE, TaskTokenCheck
from gateway.tasks.tokens import TaskTokenIssuer
from gateway.telemetry.memory_snapshots import (
    DIRECTORY_VARIABLE,
    INTERVAL_VARIABLE,
    STATS_VARIABLE,
    memory_summary,
    pymalloc_stats,
    snapshots,
    start_if_asked,
    top_growth,
)
from tests.support.identity_provider import TestIdentityProvider, generate_key
from tests.support.processes import ADMIN_TOKEN, Gateway
from tests.support.state import FakeClock
from tests.test_listing_equivalence import all_facts
from tests.test_listing_equivalence import cedar_dir as listing_cedar_dir
from tests.test_listing_equivalence import principal as listing_principal
from tests.test_listing_equivalence import schemas as listing_schemas
from tests.test_listing_equivalence import write_catalog as listing_catalog
from tests.test_policy_engine import REPO_CEDAR, agent_principal, engine_for, facts, write_catalog
from tests.test_tasks import GATEWAY, RESOURCE, LocalSigner, add_agents, make_catalog

AUDIENCE = "https://gateway.test"
BOUND = 4096  # the most verified tokens (of each kind) and ended tasks kept: the soak's plateau


# --- the generic cache -------------------------------------------------------------------------


def test_expiring_cache_holds_its_bound_and_sheds_expired_entries() -> None:
    clock = FakeClock(1000.0)
    cache: ExpiringCache[int, float] = ExpiringCache(8, lambda expiry: expiry, clock)
    for key in range(20):
        cache.put(key, 1010.0)
    assert len(cache) == 8 and cache.get(0) is None and cache.get(19) == 1010.0
    clock.now = 1010.0  # all of them used up: the next entry sweeps them out
    cache.put(100, 1100.0)
    assert len(cache) == 1
    assert cache.get(19) is None  # never returned past its expiry
    clock.now = 1100.0
    assert cache.get(100) is None and len(cache) == 0


# --- workload tokens ---------------------------------------------------------------------------


@pytest.fixture
def idp() -> Iterator[TestIdentityProvider]:
    provider = TestIdentityProvider(AUDIENCE, keys=[generate_key("ES256")])
    yield provider
    provider.close()


@pytest.fixture
async def verifier(idp: TestIdentityProvider, tmp_path: Path) -> AsyncIterator[TokenVerifier]:
    raw = {"clock_skew_s": 0, "key_refresh_min_interval_s": 60,
           "oidc_issuers": [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri}]}
    async with aiohttp.ClientSession() as http:
        verifier = TokenVerifier(identity_settings_from_mapping(raw, tmp_path, default_audience=AUDIENCE), http)
        await verifier.start()
        yield verifier
        await verifier.close()


async def test_workload_token_cache_stays_at_its_bound_and_an_evicted_token_is_verified_again(
    verifier: TokenVerifier, idp: TestIdentityProvider
) -> None:
    assert DEFAULT_CACHE_SIZE <= BOUND
    tokens = [idp.mint(jti=f"token-{n}") for n in range(DEFAULT_CACHE_SIZE + 50)]
    for token in tokens:
        await verifier.verify(token)
    assert len(verifier.cache) == DEFAULT_CACHE_SIZE
    # The first tokens were evicted: they are verified afresh (signature, exp), and still good.
    assert (await verifier.verify(tokens[0])).subject == idp.claims()["sub"]
    # A token is never trusted on its past: once past its exp it is refused, cached or not.
    expiry = int(time.time()) + 1
    short = idp.mint(jti="short", exp=expiry)
    await verifier.verify(short)
    await asyncio.sleep(expiry - time.time() + 0.05)
    with pytest.raises(TokenRejected, match="expired"):
        await verifier.verify(short)


async def test_workload_token_cache_sheds_used_up_tokens(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    expiry = int(time.time()) + 2
    for n in range(200):  # one-shot tokens, as a task exchange uses them
        await verifier.verify(idp.mint(jti=f"once-{n}", exp=expiry))
    assert len(verifier.cache) == 200
    await asyncio.sleep(expiry - time.time() + 0.05)
    await verifier.verify(idp.mint(jti="fresh"))
    assert len(verifier.cache) == 1  # the used-up ones left as the next one arrived


# --- task tokens and tasks ---------------------------------------------------------------------


@pytest.fixture
async def registry(store: Store, clock: FakeClock) -> Registry:
    registry = await Registry.open(store, clock)
    await add_agents(registry)
    return registry


async def open_tasks(store: Store, registry: Registry, clock: FakeClock, **settings: int) -> TaskService:
    service = TaskService(store, registry, make_catalog(), clock, TaskSettings(**settings))
    await service.open(background=False)
    return service


async def start(tasks: TaskService, deadline_s: float = 600) -> str:
    task = await tasks.start("bot-a", "soak", ["gh__read_issue"], started_by="orchestrator", deadline_s=deadline_s)
    return task.id


async def test_task_token_cache_stays_at_its_bound_sheds_used_up_tokens_and_never_outranks_the_task(
    store: Store, registry: Registry, clock: FakeClock
) -> None:
    assert CACHE_SIZE <= BOUND
    tasks = await open_tasks(store, registry, clock)
    signer = LocalSigner()
    issuer = TaskTokenIssuer(signer, GATEWAY, RESOURCE, ttl_s=60, clock=clock)
    check = TaskTokenCheck(tasks, signer.public_keys, GATEWAY, RESOURCE, clock)
    task_id = await start(tasks)
    task = tasks.check(task_id)
    tokens = [issuer.issue(task, registry.require("bot-a"))[0] for _ in range(CACHE_SIZE + 50)]
    for token in tokens:
        check.verify(token)
    assert len(check.cache) == CACHE_SIZE
    assert check.verify(tokens[0])["task_id"] == task_id  # evicted: verified again, still good
    # What the authenticator asks next: the task itself, never the cache. Once ended, refused.
    await tasks.complete(task_id, "bot-a", "done")
    assert check.verify(tokens[-1])["task_id"] == task_id
    with pytest.raises(TaskEnded, match="completed"):
        tasks.check(task_id)
    # Every cached token is past its exp a minute later: the next token sweeps them out.
    clock.now += 61
    other = tasks.check(await start(tasks))
    check.verify(issuer.issue(other, registry.require("bot-a"))[0])
    assert len(check.cache) == 1
    await tasks.close()


async def test_a_forgotten_ended_task_stays_refused_for_its_tokens(
    store: Store, registry: Registry, clock: FakeClock
) -> None:
    assert TaskSettings().ended_retention_max <= BOUND
    tasks = await open_tasks(store, registry, clock, ended_retention_max=2)
    signer = LocalSigner()
    issuer = TaskTokenIssuer(signer, GATEWAY, RESOURCE, ttl_s=600, clock=clock)
    check = TaskTokenCheck(tasks, signer.public_keys, GATEWAY, RESOURCE, clock)
    first = tasks.check(await start(tasks))
    token = issuer.issue(first, registry.require("bot-a"))[0]
    await tasks.complete(first.id, "bot-a", "done")
    for _ in range(3):  # pushes the first out of memory
        await tasks.complete(await start(tasks), "bot-a", "done")
    assert tasks.get(first.id) is None
    assert check.verify(token)["task_id"] == first.id  # the signature is still good...
    with pytest.raises(TaskEnded, match="unknown task"):
        tasks.check(first.id)  # ...and the task is refused: forgetting it did not revive it
    await tasks.close()


async def test_an_agent_holds_at_most_its_limit_of_active_tasks(
    store: Store, registry: Registry, clock: FakeClock
) -> None:
    assert TaskSettings().max_active_per_agent == 1000
    tasks = await open_tasks(store, registry, clock, max_active_per_agent=3)
    held = [await start(tasks, deadline_s=600) for _ in range(2)] + [await start(tasks, deadline_s=10)]
    with pytest.raises(TaskError, match="already has 3 active tasks"):
        await start(tasks)
    assert len(await store.list_tasks(agent_id="bot-a")) == 3  # the refused one was never written
    await tasks.complete(held[0], "bot-a", "done")
    held.append(await start(tasks))  # an ended task frees its place
    with pytest.raises(TaskError, match="active tasks"):
        await start(tasks)
    clock.now += 11  # past one task's deadline, before the sweep has marked it expired
    await start(tasks)
    await tasks.close()
    # A restart counts the live tasks it loads.
    reopened = await open_tasks(store, registry, clock, max_active_per_agent=3)
    with pytest.raises(TaskError, match="active tasks"):
        await start(reopened)
    await reopened.close()


# --- parsed Cedar entities ----------------------------------------------------------------------


def test_parsed_entity_sets_stay_at_their_bound_and_an_evicted_one_decides_the_same(tmp_path: Path) -> None:
    """Each parsed set is ~13 KiB of Cedar's memory, and a task token's claims make a new one per task."""
    assert ENTITY_CACHE_SIZE <= 2048
    cedar_dir = tmp_path / "cedar"
    shutil.copytree(REPO_CEDAR, cedar_dir, ignore=shutil.ignore_patterns("tests", "README.md"))
    catalog = write_catalog(tmp_path / "catalog")
    engine = engine_for(cedar_dir, catalog)
    read, balance = catalog.tools["files__read_file"], catalog.tools["payments__get_balance"]
    tasks = [agent_principal(servers=("files",), claims={"task_id": f"task-{n}"})
             for n in range(ENTITY_CACHE_SIZE + 20)]
    for who in tasks:
        assert engine.decide_tool(who, read, {"path": "/a"}, facts()).outcome == "allow"
    assert len(engine._entity_handles) == ENTITY_CACHE_SIZE
    # The first ones were evicted: parsed again, the same answers (allowed and refused alike).
    assert engine.decide_tool(tasks[0], read, {"path": "/a"}, facts()).outcome == "allow"
    assert engine.decide_tool(tasks[1], balance, {}, facts()).outcome == "deny"
    assert len(engine._entity_handles) == ENTITY_CACHE_SIZE


# --- listings ------------------------------------------------------------------------------------


def test_remembered_listings_keep_no_bundle_but_the_newest(tmp_path: Path) -> None:
    """The soak's shifting upstream changes the catalog every 20 s; each change is a new bundle (its
    catalog model and two Cedar policy sets). A shown set of an older bundle is never served again,
    so the lister keeps none: before, each of its 64 entries could pin a bundle of its own."""
    catalog = listing_catalog(tmp_path / "catalog")
    engine = PolicyEngine(listing_cedar_dir(tmp_path / "cedar", ""), catalog, tool_schemas=listing_schemas(catalog))
    lister = ToolLister(engine)
    weekday = all_facts()["weekday"]
    for change in range(12):
        catalog = with_tool(catalog, f"shift_{change}")  # quarantined, as discovery adds it
        engine.set_catalog(catalog, listing_schemas(catalog))
        tools = list(catalog.tools.values())
        for who in (listing_principal("steady", groups=(f"team-{change % 3}",)),
                    listing_principal(f"task-agent-{change}", groups=(f"task-{change}",))):
            assert asyncio.run(lister.visible(who, tools, weekday)) == engine.visible_tools(who, tools, weekday)
    current, _, _ = engine.listing_facts(listing_principal("steady"), weekday)
    assert {id(bundle) for bundle, _ in lister._shown.values()} == {id(current)}


def with_tool(catalog: Catalog, name: str) -> Catalog:
    servers = []
    for server in catalog.servers.values():
        tools = dict(server.tools)
        if server.id == "bulk":
            tools[name] = replace(tools["t0"], name=name, exposed_name=f"bulk__{name}", status="quarantined")
        servers.append(replace(server, tools=MappingProxyType(tools)))
    return Catalog.of(servers)


# --- task listings -----------------------------------------------------------------------------


async def test_a_task_listing_loads_its_page_not_the_whole_store(
    store: Store, registry: Registry, clock: FakeClock
) -> None:
    """The store keeps every task ever started; the soak listed them all each minute, a transient
    that grew with the store (20,000 tasks in an hour) and took the gateway's RSS up with it. A
    listing with a limit loads only the newest that many rows."""
    tasks = await open_tasks(store, registry, clock)
    started: list[str] = []
    for n in range(12):
        clock.now += 1  # distinct start times: "newest" is well defined
        started.append(await start(tasks))
        if n % 3:
            await tasks.complete(started[-1], "bot-a", "done")
    assert [t.id for t in await store.list_tasks(limit=5)] == started[-5:]  # the newest five, oldest first
    assert [t.id for t in await tasks.list(limit=5)] == started[-5:]
    active = started[::3]
    # Selected in the store, so older active tasks are found past newer ended ones.
    assert [t.id for t in await store.list_tasks(state="active", limit=3)] == active[-3:]
    assert [t.id for t in await tasks.list(state="active", limit=3)] == active[-3:]
    assert [t.id for t in await tasks.list()] == started  # no limit: every task (internal callers only)
    # The console's tasks page: active tasks and those ended recently, loaded as such (not every task, filtered).
    clock.now += 100
    recent = await start(tasks)
    await tasks.complete(recent, "bot-a", "done")
    assert [t.id for t in await tasks.list(limit=50, ended_since=clock.now - 10)] == [*active, recent]
    await tasks.close()


def test_the_admin_task_listing_returns_at_most_its_limit(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"{gateway.base}/admin/v1/tasks"
    ids = []
    for _ in range(3):
        started = httpx2.post(base, headers=headers, timeout=10,
                              json={"agent_id": "agent-a", "purpose": "listing bound", "tools": ["behav__echo"]})
        assert started.status_code == 201, started.text
        ids.append(started.json()["task"]["id"])
    listed = httpx2.get(base, params={"agent": "agent-a", "limit": "2"}, headers=headers, timeout=10)
    assert listed.status_code == 200, listed.text
    assert [t["id"] for t in listed.json()["tasks"]] == ids[-2:]
    unbounded = httpx2.get(base, params={"agent": "agent-a"}, headers=headers, timeout=10).json()["tasks"]
    assert 3 <= len(unbounded) <= DEFAULT_LIST_LIMIT
    for bad in ("0", str(MAX_LIST_LIMIT + 1), "all"):
        refused = httpx2.get(base, params={"limit": bad}, headers=headers, timeout=10)
        assert refused.status_code == 400 and "limit" in refused.text


# --- the diagnostic switch ---------------------------------------------------------------------


def test_the_tracemalloc_switch_is_off_unless_set() -> None:
    assert start_if_asked({}) is None
    assert not tracemalloc.is_tracing()


def test_the_tracemalloc_switch_writes_snapshots_of_a_real_gateway(tmp_path: Path) -> None:
    out = tmp_path / "snapshots"
    gateway = Gateway(tmp_path / "gw", [], env={DIRECTORY_VARIABLE: str(out), INTERVAL_VARIABLE: "0.5"})
    gateway.start(timeout_s=120)  # tracing every allocation from the first import makes the start several times slower
    try:
        deadline = time.monotonic() + 30
        while len(snapshots(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        gateway.stop()
    found = snapshots(out)
    assert len(found) >= 2, gateway.log_text()[-2000:]
    assert "tracemalloc on" in gateway.log_text()
    report = top_growth(found[0], found[-1])
    assert report[0].startswith(f"tracemalloc: {found[0].name} -> {found[-1].name}")
    assert any(line.strip().startswith("rss_bytes:") for line in report)
    assert memory_summary(found[-1])["objects_by_type"]["builtins.dict"] > 0  # gc's census beside the snapshot


def test_the_memory_stats_switch_writes_figures_of_a_real_gateway_without_tracing(tmp_path: Path) -> None:
    out = tmp_path / "stats"
    gateway = Gateway(tmp_path / "gw", [], env={STATS_VARIABLE: str(out), INTERVAL_VARIABLE: "0.5"})
    gateway.start()
    try:
        deadline = time.monotonic() + 30
        while len(list(out.glob("stats-*.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        gateway.stop()
    found = sorted(out.glob("stats-*.json"))
    assert len(found) >= 2, gateway.log_text()[-2000:]
    assert "memory figures every" in gateway.log_text() and "tracemalloc on" not in gateway.log_text()
    assert not list(out.glob("*.pickle"))
    figures = json.loads(found[-1].read_text())
    assert 0 < figures["pymalloc_in_use_bytes"] <= figures["pymalloc_arena_bytes"] <= figures["rss_bytes"]
    assert figures["gc_frozen"] > 0  # the gateway freezes its long-lived state...
    # ...and the census counts it (the 200 most numerous kinds; frozen ones left out, it saw ~1 %)
    assert sum(figures["objects_by_type"].values()) > figures["gc_frozen"] / 2


def test_pymalloc_figures_follow_small_objects() -> None:
    before = pymalloc_stats()
    held = [object() for _ in range(200_000)]  # 16 bytes each: 3.2 MB of small blocks
    after = pymalloc_stats()
    assert after["pymalloc_in_use_bytes"] - before["pymalloc_in_use_bytes"] >= 2_500_000
    assert after["pymalloc_arena_bytes"] >= after["pymalloc_in_use_bytes"]  # blocks live in arenas
    assert len(held) == 200_000
