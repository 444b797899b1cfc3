"""The observe stage: what chain monitoring learns from a decided tool call (signals for later decisions,
detectors, the kill switch). The decision itself is audited by the decide stage before the agent hears
of it, and the request's metrics and span are written by the transport from the call's record."""

from __future__ import annotations

from gateway.calls.call import ToolCall
from gateway.chain.monitor import ChainMonitor
from gateway.identity.principal import Principal


class Observe:
    def __init__(self, monitor: ChainMonitor) -> None:
        self.monitor = monitor

    async def __call__(self, call: ToolCall) -> None:
        """Whatever the decision came to (a kill switch refuses the call in hand)."""
        await self.monitor.observe(call.principal, call.entry, call.request.record.outcome())

    async def probe(self, principal: Principal, name: str) -> None:
        """A call of a tool nobody serves: a probing signal."""
        await self.monitor.probe(principal, name)
