"""No stall at a large catalog: a policy reload (with its pass over every open session) and another
agent's first tools/list must not hold up a concurrent tools/call.

A real `narrowgate serve` in front of the shifting upstream serving 2,000 extra tools, with ~40
policies: compiling that set takes seconds (Cedar validates every policy against every tool's
action), which the old gateway did on its event loop. Bounds are relative to the same run's
normal latency (generous, for a loaded 2-core machine): the worst call during the event must stay
under normal p99 * 5 + 0.5 s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from tests.support.changes import SHIFTING_SERVER
from tests.support.clients import mcp_client
from tests.support.processes import ADMIN_TOKEN, Gateway, cedar_copy, start_listening, stop

BULK_TOOLS = 2000
QUIET_POLICIES = 30  # harmless forbids over every tool: what makes validation take seconds
TOKENS = {"agent-a": "token-a", "agent-b": "token-b"}
CALL = ("shifting__lookup", {"query": "ping"})


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
                 extra_config={"policies": str(cedar), "policy": {"watch_interval_s": 0}})
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


async def test_reload_and_listing_at_a_large_catalog_do_not_hold_up_calls(gateway: Gateway, tmp_path: Path) -> None:
    async with (
        mcp_client(gateway.url, TOKENS["agent-a"], "legacy") as caller,
        mcp_client(gateway.url, TOKENS["agent-a"], "legacy") as watcher,
    ):
        # A session that has listed: the reload's pass over open sessions has to recompute its list.
        assert len((await watcher.list_tools()).tools) == BULK_TOOLS + 3
        normal: list[float] = []
        deadline = time.monotonic() + 4
        await serial_calls(caller, lambda: time.monotonic() > deadline, normal)
        bound = p99(normal) * 5 + 0.5
        seen = f"normal p99 {p99(normal):.3f}s over {len(normal)} calls, bound {bound:.2f}s"

        # A real change: the whole set compiles again against 2,000 tools.
        (tmp_path / "cedar" / "policies" / "71-quiet.cedar").write_text(quiet_policies(8, QUIET_POLICIES))
        worst_reload, reloaded = await worst_call_during(caller, lambda: admin_reload(gateway), tail_s=1.0)
        assert reloaded["ok"] and reloaded["changed"], reloaded

        async def first_listing() -> int:
            async with mcp_client(gateway.url, TOKENS["agent-b"], "legacy") as other:
                return len((await other.list_tools()).tools)

        worst_listing, listed = await worst_call_during(caller, first_listing, tail_s=0.2)
        assert listed == BULK_TOOLS + 3

    assert worst_reload < bound, f"a call waited {worst_reload:.2f}s during a reload ({seen})"
    assert worst_listing < bound, f"a call waited {worst_listing:.2f}s during a listing ({seen})"
