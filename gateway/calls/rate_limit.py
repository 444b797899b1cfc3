"""The rate-limit stage: everything that would reach an upstream counts against the caller's chain
windows (per agent and per task); over a limit it is refused with -32029 and retryAfterSeconds."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from gateway.calls.call import RequestContext, ToolCall
from gateway.chain.monitor import ChainMonitor


class RateLimit:
    def __init__(self, monitor: ChainMonitor) -> None:
        self.monitor = monitor

    def call(self, call: ToolCall) -> Awaitable[dict[str, Any]]:
        """One tools/call (counted per tool too), and the chain context its decision sees (read with the
        count: one step, one round trip in a fleet). The monitor's coroutine, handed on to be awaited."""
        return self.monitor.admit_call(call.principal, call.name)

    async def request(self, request: RequestContext, server_id: str) -> None:
        """One prompt, resource, completion or subscription request on its way to `server_id`."""
        request.record.upstream = server_id  # a rate-limited refusal is labelled with the upstream it would reach
        await self.monitor.admit(request.principal, None)
