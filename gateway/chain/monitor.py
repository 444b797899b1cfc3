"""The chain stage of the call path: rate limits before the decision, signals and detections after.

Thin glue between the request path (principal, tool, outcome) and the chain state seams
(ChainSignals and RateWindows; in memory, one ChainTracker holds both), with detections handed to
the DetectionResponder (audit, metric, webhook, kill switch).
"""

from __future__ import annotations

import math
from typing import Any

from gateway.catalog.model import ToolEntry
from gateway.chain.detections import DetectionResponder
from gateway.chain.detectors import Detection
from gateway.chain.tracker import RateLimited
from gateway.identity.principal import Principal
from gateway.protocol.errors import ACCESS_DENIED, RATE_LIMITED, RpcError
from gateway.state.chain import ChainSignals, RateWindows


class ChainMonitor:
    def __init__(self, signals: ChainSignals[ToolEntry, Detection], rates: RateWindows,
                 responder: DetectionResponder) -> None:
        self.signals = signals
        self.rates = rates
        self.responder = responder

    async def admit(self, principal: Principal, tool: str | None) -> None:
        """Count one request that will reach an upstream against the caller's rate limits, or refuse it
        (-32029 with retryAfterSeconds). `tool`: the exposed name for tools/call, None for any other."""
        try:
            await self.rates.admit(principal.agent_id, principal.task_id, tool)
        except RateLimited as exc:
            wait = math.ceil(exc.retry_after_s)
            what = "calls" if tool is not None else "requests"
            raise RpcError(RATE_LIMITED, f"Rate limited: too many {what} for this {exc.scope}; retry in {wait} s",
                           {"scope": exc.scope, "retryAfterSeconds": wait}) from None

    async def context(self, principal: Principal) -> dict[str, Any]:
        return await self.signals.context(principal.agent_id, principal.task_id)

    async def observe(self, principal: Principal, tool: ToolEntry, outcome: str) -> None:
        await self.act(await self.signals.observe_call(principal.agent_id, principal.task_id, tool, outcome))

    async def probe(self, principal: Principal, tool_name: str) -> None:
        await self.act(await self.signals.observe_probe(principal.agent_id, principal.task_id, tool_name))

    async def act(self, detections: list[Detection]) -> None:
        if detections and await self.responder.respond(detections):
            raise RpcError(ACCESS_DENIED, "Access denied: this agent was suspended by the gateway's kill switch",
                           {"decision": "deny", "detector": detections[-1].detector})
