"""Hearing tools/list_changed with the SDK client in either era, and driving the shifting upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.subscriptions import Subscription, ToolsListChanged

from tests.support.processes import REPO

SHIFTING_SERVER = REPO / "tests" / "fixtures" / "upstreams" / "shifting_server.py"
# How long "nothing arrived" is waited for; a real notification takes milliseconds.
QUIET_S = 0.3


class ChangeWatcher:
    """Counts tools/list_changed notifications a client receives and lets a test await the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._send, self._receive = anyio.create_memory_object_stream[None](64)
        self.subscription: Subscription | None = None

    async def handle(self, message: Any) -> None:
        # The SDK tees every server notification here, listen-stream frames included.
        if isinstance(message, types.ToolListChangedNotification):
            self.count += 1
            self._send.send_nowait(None)

    async def next_change(self, timeout_s: float = 5) -> None:
        with anyio.fail_after(timeout_s):
            await self._receive.receive()
            if self.subscription is not None:
                # 2026-07-28: the same change, as the typed event of the held subscriptions/listen stream.
                assert isinstance(await anext(self.subscription), ToolsListChanged)

    async def quiet(self, seconds: float = QUIET_S) -> bool:
        """True if no change arrives within `seconds`."""
        before = self.count
        await anyio.sleep(seconds)
        return self.count == before


@asynccontextmanager
async def listening(client: Client, watcher: ChangeWatcher, mode: str) -> AsyncIterator[None]:
    """Hold what the era needs to hear list changes: nothing extra for a 2025-11-25 session (its GET stream
    opens by itself), a subscriptions/listen stream for 2026-07-28."""
    if mode == "legacy":
        yield
        return
    async with client.listen(tools_list_changed=True) as subscription:
        watcher.subscription = subscription
        yield


async def control(port: int, op: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """Apply one op to a shifting upstream over HTTP (POST /control)."""
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(f"http://127.0.0.1:{port}/control", json=op)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_state(port: int, timeout_s: float = 5, at_least: bool = False, **expected: int) -> dict[str, Any]:
    """Poll GET /control until the given counters (sessions, get_streams, listeners) are reached."""
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(timeout_s):
            while True:
                state: dict[str, Any] = (await http.get(f"http://127.0.0.1:{port}/control")).json()
                if all(state[k] >= v if at_least else state[k] == v for k, v in expected.items()):
                    return state
                await anyio.sleep(0.02)
