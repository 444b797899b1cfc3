"""No stall at a large catalog: a policy reload (with its pass over every open session), an
upstream's tool change and another agent's first tools/list must not hold up a concurrent tools/call,
also with a thousand idle sessions open.

A real `narrowgate serve` in front of the shifting upstream serving 2,000 extra tools, with ~40
policies: compiling that set takes seconds (Cedar validates every policy against every tool's
action), which the old gateway did on its event loop. Bounds are relative to the same run's
normal latency (generous, for a loaded 2-core machine): the worst call during the event must stay
under normal p99 * 5 + 0.5 s.

In process, the two mechanisms that keep the remaining stalls short (see gateway/heap.py and
gateway/policy/bundle.py): no bundle holds a cedarpy Schema of the catalog (freeing one holds the
GIL for 0.1-0.2 s at 5,000 tools), and a swapped-in policy set is frozen, out of the way of full
garbage collections, while the cycles frozen meanwhile are freed by the next compaction.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import cedarpy
import httpx2
import pytest
from mcp import Client

from gateway.heap import HEAP, YOUNG_THRESHOLD
from gateway.policy import PolicyEngine
from gateway.policy.bundle import CompileError, compile_bundle
from gateway.policy.model import build_catalog_model
from tests.support.changes import SHIFTING_SERVER, control
from tests.support.clients import mcp_client
from tests.support.processes import ADMIN_TOKEN, Gateway, cedar_copy, start_listening, stop
from tests.test_listing_equivalence import all_facts, principal, schemas, write_catalog

BULK_TOOLS = 2000
QUIET_POLICIES = 30  # harmless forbids over every tool: what makes validation take seconds
TOKENS = {"agent-a": "token-a", "agent-b": "token-b", "agent-c": "token-c", "agent-idle": "token-idle"}
CALL = ("shifting__lookup", {"query": "ping"})
IDLE_SESSIONS = 1000  # 2025-11-25 sessions of agent-idle, open and idle during the events
IDLE_LISTED = 10  # one in this many listed its tools (so a change has lists to recompute and compare)
# Latency bounds relative to the run's own calls: run alone, not beside another xdist worker (docs/development.md).
pytestmark = pytest.mark.serial


def quiet_policies(count: int, offset: int = 0) -> str:
    """Forbids that never match (no hour is >= 100), each validated against every tool's action."""
    return "\n".join(
        f'@id("quiet-{i}")\n@reason("never")\nforbid (principal, action in Action::"call_tool", resource) '
        f'when {{ context.request.hour == {100 + i} && resource.owner == "nobody-{i}" }};\n'
        for i in range(offset, offset + count))


@pytest.fixture
def big_upstream() -> Iterator[int]:
    process, port = start_listening([sys.executable, str(SHIFTING_SERVER), "--port", "0",
                                     "--bulk-tools", str(BULK_TOOLS)])
    yield port
    stop(process)


@pytest.fixture
def gateway(tmp_path: Path, big_upstream: int) -> Iterator[Gateway]:
    names = ["lookup", "note", "purge", *(f"tool{i:05d}" for i in range(BULK_TOOLS))]
    manifest = {
        "id": "shifting", "owner": "tests@example.com", "description": "a large catalog",
        "transport": {"url": f"http://127.0.0.1:{big_upstream}/mcp"}, "timeout_s": 30,
        "tools": [{"name": n, "risk": "read", "data_classes": ["internal"]} for n in names],
    }
    cedar = cedar_copy(tmp_path / "cedar", **{"70-quiet": quiet_policies(QUIET_POLICIES)})
    gw = Gateway(tmp_path / "gateway", [manifest], tokens=TOKENS,
                 extra_config={"policies": str(cedar), "policy": {"watch_interval_s": 0},
                               "limits": {"max_sessions_per_agent": IDLE_SESSIONS + 10,
                                          "max_sessions": IDLE_SESSIONS + 100}})
    gw.start(timeout_s=120)
    yield gw
    gw.stop()


async def serial_calls(client: Client, until: Callable[[], bool], latencies: list[float]) -> None:
    """tools/call one after another until `until()`; every answer must be the upstream's."""
    while not until():
        started = time.perf_counter()
        result = await client.call_tool(*CALL)
        latencies.append(time.perf_counter() - started)
        assert not result.is_error, result


async def worst_call_during(client: Client, event: Callable[[], Awaitable[Any]], tail_s: float) -> tuple[float, Any]:
    """Run `event` while calling serially (and `tail_s` after it, for work it left behind);
    the slowest call and the event's result."""
    latencies: list[float] = []
    done_at: list[float] = []
    outcome: list[Any] = []

    async def run_event() -> None:
        await anyio.sleep(0.2)  # calls are flowing before the event starts
        outcome.append(await event())
        done_at.append(time.monotonic())

    async with anyio.create_task_group() as group:
        group.start_soon(run_event)
        await serial_calls(client, lambda: bool(done_at) and time.monotonic() > done_at[0] + tail_s, latencies)
    assert len(latencies) >= 5, latencies
    return max(latencies), outcome[0]


async def normal_bound(client: Client) -> tuple[float, str]:
    """The bound for a call during an event (normal p99 * 5 + 0.5 s) from 4 s of serial calls, and a
    description of it for failure messages."""
    normal: list[float] = []
    deadline = time.monotonic() + 4
    await serial_calls(client, lambda: time.monotonic() > deadline, normal)
    bound = p99(normal) * 5 + 0.5
    return bound, f"normal p99 {p99(normal):.3f}s over {len(normal)} calls, bound {bound:.2f}s"


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def admin_reload(gw: Gateway) -> dict[str, Any]:
    async with httpx2.AsyncClient(timeout=300) as http:
        response = await http.post(f"{gw.base}/admin/v1/policies/reload",
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def first_listing(gw: Gateway, agent: str) -> int:
    """How many tools `agent` sees in its first tools/list."""
    async with mcp_client(gw.url, TOKENS[agent], "legacy") as other:
        return len((await other.list_tools()).tools)


async def worst_call_during_first_listings(client: Client, gw: Gateway,
                                           agents: tuple[str, ...]) -> tuple[float, set[int]]:
    """The first tools/list of each of `agents` in turn, while calling: the slowest call during the quietest of
    them, and the tool counts they listed. A stall the listing causes shows in each; a moment the machine gave
    the gateway no CPU (another process's turn: the suite runs beside other work) in one at most."""
    worst: list[float] = []
    listed: set[int] = set()
    for agent in agents:
        slowest, count = await worst_call_during(client, lambda agent=agent: first_listing(gw, agent), tail_s=0.2)
        worst.append(slowest)
        listed.add(count)
    return min(worst), listed


async def test_reload_and_listing_at_a_large_catalog_do_not_hold_up_calls(gateway: Gateway, tmp_path: Path) -> None:
    async with (
        mcp_client(gateway.url, TOKENS["agent-a"], "legacy") as caller,
        mcp_client(gateway.url, TOKENS["agent-a"], "legacy") as watcher,
    ):
        # A session that has listed: the reload's pass over open sessions has to recompute its list.
        assert len((await watcher.list_tools()).tools) == BULK_TOOLS + 3
        bound, seen = await normal_bound(caller)

        # A real change: the whole set compiles again against 2,000 tools.
        (tmp_path / "cedar" / "policies" / "71-quiet.cedar").write_text(quiet_policies(8, QUIET_POLICIES))
        worst_reload, reloaded = await worst_call_during(caller, lambda: admin_reload(gateway), tail_s=1.0)
        assert reloaded["ok"] and reloaded["changed"], reloaded

        worst_listing, listed = await worst_call_during_first_listings(caller, gateway, ("agent-b", "agent-c"))
        assert listed == {BULK_TOOLS + 3}

    assert worst_reload < bound, f"a call waited {worst_reload:.2f}s during a reload ({seen})"
    assert worst_listing < bound, f"a call waited {worst_listing:.2f}s during a listing ({seen})"


async def open_idle_sessions(gw: Gateway, count: int) -> tuple[int, dict[str, str]]:
    """`count` 2025-11-25 sessions of agent-idle, left open with no stream; one in IDLE_LISTED lists
    its tools first. Returns how many listed, and the headers of the first that did."""
    watched: dict[str, str] = {}
    base = {"Authorization": f"Bearer {TOKENS['agent-idle']}", "Accept": "application/json, text/event-stream"}
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "idle", "version": "0"}}
    listed = 0
    gate = anyio.Semaphore(16)

    async def one(http: httpx2.AsyncClient, i: int) -> None:
        nonlocal listed
        async with gate:
            answer = await http.post(gw.url, headers=base, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                                                 "params": init})
            assert answer.status_code == 200, answer.text
            headers = {**base, "Mcp-Session-Id": answer.headers["mcp-session-id"],
                       "Mcp-Protocol-Version": "2025-11-25"}
            done = await http.post(gw.url, headers=headers, json={"jsonrpc": "2.0",
                                                                  "method": "notifications/initialized"})
            assert done.status_code == 202, done.text
            if i % IDLE_LISTED == 0:
                tools = await http.post(gw.url, headers=headers, json={"jsonrpc": "2.0", "id": 2,
                                                                       "method": "tools/list"})
                assert tools.status_code == 200 and b"tool01999" in tools.content, tools.text[:300]
                listed += 1
                if i == 0:
                    watched.update(headers)

    async with httpx2.AsyncClient(timeout=60) as http, anyio.create_task_group() as group:
        for i in range(count):
            group.start_soon(one, http, i)
    return listed, watched


async def until_notified(gw: Gateway, headers: dict[str, str], method: str,
                         action: Callable[[], Awaitable[Any]]) -> None:
    """Open the session's GET stream, run `action`, return once `method` arrives on the stream."""
    async with httpx2.AsyncClient(timeout=300) as http, http.stream(
            "GET", gw.url, headers={**headers, "Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        await action()
        seen = b""
        async for chunk in stream.aiter_bytes():
            seen = (seen + chunk)[-4096:]
            if method.encode() in seen:
                return
    raise AssertionError(f"the stream ended before {method}")


async def test_changes_with_many_sessions_open_do_not_hold_up_calls(gateway: Gateway, big_upstream: int,
                                                                    tmp_path: Path) -> None:
    listed, watched = await open_idle_sessions(gateway, IDLE_SESSIONS)
    assert listed == IDLE_SESSIONS // IDLE_LISTED
    async with mcp_client(gateway.url, TOKENS["agent-a"], "legacy") as caller:
        assert len((await caller.list_tools()).tools) == BULK_TOOLS + 3
        bound, seen = await normal_bound(caller)

        (tmp_path / "cedar" / "policies" / "72-quiet.cedar").write_text(quiet_policies(4, QUIET_POLICIES + 8))
        worst_reload, reloaded = await worst_call_during(caller, lambda: admin_reload(gateway), tail_s=1.5)
        assert reloaded["ok"] and reloaded["changed"], reloaded

        async def upstream_drops_a_tool() -> int:
            # Done when an idle session that listed hears of it: the re-list, the new directory, the
            # policy catalog compiled again (its generated schema changed) and the pass over every session.
            await until_notified(gateway, watched, "notifications/tools/list_changed",
                                 lambda: control(big_upstream, {"op": "remove", "name": "note"}))
            return len((await caller.list_tools()).tools)

        worst_change, left = await worst_call_during(caller, upstream_drops_a_tool, tail_s=1.0)
        assert left == BULK_TOOLS + 2

        worst_listing, shown = await worst_call_during_first_listings(caller, gateway, ("agent-c", "agent-b"))
        assert shown == {BULK_TOOLS + 2}

    assert worst_reload < bound, f"a call waited {worst_reload:.2f}s during a reload, {IDLE_SESSIONS} sessions ({seen})"
    assert worst_change < bound, f"a call waited {worst_change:.2f}s during a catalog change ({seen})"
    assert worst_listing < bound, f"a call waited {worst_listing:.2f}s during a listing ({seen})"


def test_no_bundle_holds_a_cedar_schema_and_a_catalog_that_does_not_fit_is_still_refused(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog", bulk=50)
    model = build_catalog_model(catalog, schemas(catalog))
    bundle = compile_bundle(cedar_copy(tmp_path / "cedar"), model)
    held = [f.name for f in dataclasses.fields(bundle) if isinstance(getattr(bundle, f.name), cedarpy.Schema)]
    assert held == []
    # Validation now gets the schema as text: a generated part that does not fit is still reported.
    misfit = dataclasses.replace(model, schema_text=model.schema_text + "\nentity Stray in [Nowhere];")
    with pytest.raises(CompileError) as refused:
        compile_bundle(tmp_path / "cedar", misfit)
    assert any("does not fit the base schema" in p and "Nowhere" in p for p in refused.value.problems), \
        refused.value.problems


def walked_by_the_collector(obj: object) -> bool:
    """Whether a full collection would look at `obj` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


async def test_a_new_policy_set_is_frozen_and_compaction_frees_frozen_cycles(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog", bulk=50)
    cedar = cedar_copy(tmp_path / "cedar")
    engine = PolicyEngine(cedar, catalog, tool_schemas=schemas(catalog))
    try:
        (cedar / "policies" / "71-quiet.cedar").write_text(quiet_policies(2))
        assert (await engine.reload_async()).changed
        bundle = engine.listing_facts(principal("agent-1"), all_facts()["weekday"])[0]
        assert "quiet-1" in {source.policy_id for source in bundle.sources}
        assert not walked_by_the_collector(bundle.sources)

        class Node:
            link: object = None

        cycle = Node()
        cycle.link = cycle
        freed = weakref.ref(cycle)
        HEAP.settle()
        del cycle
        gc.collect()
        assert freed() is not None  # frozen garbage: what the periodic compaction is for
        HEAP.compact()
        assert freed() is None
    finally:
        gc.unfreeze()  # the rest of this test process collects as usual


def test_serving_collects_the_young_generation_less_often_and_keeps_the_older_thresholds() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 7, 9)
        HEAP.collect_young_less_often()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 7, 9)
    finally:
        gc.set_threshold(*before)
