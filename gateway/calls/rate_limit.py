"""The rate-limit stage: everything that would reach an upstream counts against the caller's chain
windows (per agent and per task); over a limit it is refused with -32029 and retryAfterSeconds."""

from __future__ import annotations

from gateway.calls.call import RequestContext, ToolCall
from gateway.chain.monitor import ChainMonitor


class RateLimit:
    def __init__(self, monitor: ChainMonitor) -> None:
        self.monitor = monitor

    async def call(self, call: ToolCall) -> None:
        """One tools/call (counted per tool too, for the chain's call-rate signals)."""
        await self.monitor.admit(call.principal, call.name)

    async def request(self, request: RequestContext, server_id: str) -> None:
        """One prompt, resource, completion or subscription request on its way to `server_id`."""
        request.record.upstream = server_id  # a rate-limited refusal is labelled with the upstream it would reach
        await self.monitor.admit(request.principal, None)
