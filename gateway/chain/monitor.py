"""The chain stage of the call path: rate limits before the decision, signals and detections after.

Thin glue between the request path (principal, tool, outcome) and the chain state seams
(ChainSignals and RateWindows; in memory, one ChainTracker holds both), with detections handed to
the DetectionResponder (audit, metric, webhook, kill switch).
"""

from __future__ import annotations

import math
from typing import Any

from gateway.audit import AuditEvent
from gateway.catalog.model import ToolEntry
from gateway.chain.detections import DetectionResponder
from gateway.chain.detectors import Detection
from gateway.chain.tracker import RateLimited, RatesUnavailable
from gateway.identity.principal import Principal
from gateway.protocol.errors import ACCESS_DENIED, RATE_LIMITED, RpcError
from gateway.state.chain import ChainSignals, ChainUnavailable, RateWindows

UNAVAILABLE = "chain signals unavailable"


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
            if isinstance(exc, RatesUnavailable):
                raise RpcError(RATE_LIMITED, f"Rate limited: the gateway cannot count {what} right now; retry in "
                               f"{wait} s", {"scope": exc.scope, "retryAfterSeconds": wait}) from None
            raise RpcError(RATE_LIMITED, f"Rate limited: too many {what} for this {exc.scope}; retry in {wait} s",
                           {"scope": exc.scope, "retryAfterSeconds": wait}) from None

    async def context(self, principal: Principal) -> dict[str, Any]:
        try:
            return await self.signals.context(principal.agent_id, principal.task_id)
        except ChainUnavailable as exc:
            raise self.unavailable(principal, None, "context", exc) from None

    async def observe(self, principal: Principal, tool: ToolEntry, outcome: str) -> None:
        try:
            found = await self.signals.observe_call(principal.agent_id, principal.task_id, tool, outcome)
        except ChainUnavailable as exc:
            raise self.unavailable(principal, tool.exposed_name, "observe", exc) from None
        await self.act(found)

    async def probe(self, principal: Principal, tool_name: str) -> None:
        try:
            found = await self.signals.observe_probe(principal.agent_id, principal.task_id, tool_name)
        except ChainUnavailable as exc:
            raise self.unavailable(principal, tool_name, "probe", exc) from None
        await self.act(found)

    def unavailable(self, principal: Principal, tool: str | None, step: str, exc: ChainUnavailable) -> RpcError:
        """Fail closed: a request the chain signals cannot see (or record) is refused, and the audit says why."""
        self.responder.audit.record(AuditEvent(
            kind="monitoring", action="unavailable", actor="narrowgate", agent_id=principal.agent_id,
            task_id=principal.task_id, tool=tool, detail={"step": step, "reason": str(exc)}))
        return RpcError(ACCESS_DENIED, f"Access denied: {UNAVAILABLE}; the gateway cannot check this agent's recent "
                        "activity right now, retry shortly", {"decision": "deny", "reason": UNAVAILABLE})

    async def act(self, detections: list[Detection]) -> None:
        if detections and await self.responder.respond(detections):
            raise RpcError(ACCESS_DENIED, "Access denied: this agent was suspended by the gateway's kill switch",
                           {"decision": "deny", "detector": detections[-1].detector})
