"""The chain stage of the call path: rate limits before the decision, signals and detections after.

Thin glue between the request path (principal, tool, outcome) and the chain state seams
(ChainSignals and RateWindows; in memory, one ChainTracker holds both), with detections handed to
the DetectionResponder (audit, metric, webhook, kill switch).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, cast

from gateway.audit import AuditEvent
from gateway.catalog.model import ToolEntry
from gateway.chain.detections import DetectionResponder
from gateway.chain.detectors import Detection
from gateway.chain.signals import person_scope
from gateway.chain.tracker import RateLimited, RatesUnavailable
from gateway.identity.principal import Principal
from gateway.protocol.errors import ACCESS_DENIED, RATE_LIMITED, RpcError
from gateway.registry.model import client_binding
from gateway.state.chain import CallAdmission, ChainSignals, ChainUnavailable, CountedObservation, RateWindows

UNAVAILABLE = "chain signals unavailable"


class ChainMonitor:
    def __init__(self, signals: ChainSignals[ToolEntry, Detection], rates: RateWindows,
                 responder: DetectionResponder) -> None:
        self.signals = signals
        self.rates = rates
        self.responder = responder
        # One object holding both seams admits a tools/call and reads its context in one step (one round trip
        # for a shared one); separate seams are asked one after the other, with the same answers.
        self.joint: CallAdmission | None = None
        if isinstance(signals, CallAdmission) and cast(object, rates) is signals:
            self.joint = signals

    async def admit(self, principal: Principal, tool: str | None) -> None:
        """Count one request that will reach an upstream against the caller's rate limits, or refuse it
        (-32029 with retryAfterSeconds). `tool`: the exposed name for tools/call, None for any other."""
        try:
            await self.rates.admit(principal.agent_id, principal.task_id, tool)
        except RateLimited as exc:
            raise rate_limited(exc, tool) from None

    async def admit_call(self, principal: Principal, tool: str) -> dict[str, Any]:
        """`admit` a tools/call, then its `context` (the record its decision sees): refused as either would be."""
        if self.joint is None or signal_scope(principal) != principal.task_id:  # a person: rates stay the agent's
            await self.admit(principal, tool)
            return await self.context(principal)
        try:
            return await self.joint.admit_call(principal.agent_id, principal.task_id, tool)
        except RateLimited as exc:
            raise rate_limited(exc, tool) from None
        except ChainUnavailable as exc:
            raise self.unavailable(principal, None, "context", exc) from None

    async def context(self, principal: Principal) -> dict[str, Any]:
        try:
            return await self.signals.context(principal.agent_id, signal_scope(principal))
        except ChainUnavailable as exc:
            raise self.unavailable(principal, None, "context", exc) from None

    async def observe(self, principal: Principal, tool: ToolEntry, outcome: str) -> None:
        try:
            found = await self.signals.observe_call(principal.agent_id, signal_scope(principal), tool, outcome)
        except ChainUnavailable as exc:
            raise self.unavailable(principal, tool.exposed_name, "observe", exc) from None
        if found:  # usually nothing: no act() to await then
            await self.act(found, principal)

    def counting(self, budgets: object) -> CountedObservation[ToolEntry, Detection] | None:
        """The chain signals when they are also `budgets` (the task call counts, a fleet's): an allowed call of a
        task is then observed and counted in one step (`observe_counted`). None: one after the other."""
        if isinstance(self.signals, CountedObservation) and budgets is self.signals:
            return self.signals
        return None

    async def observe_counted(self, counts: CountedObservation[ToolEntry, Detection], principal: Principal,
                              task_id: str, tool: ToolEntry, outcome: str, budget: int | None, floor: int,
                              deadline: float) -> int | None:
        """`observe`, then `counts.count` (the task's call count: the calls made, or None when the budget is spent),
        in one step unless the observation found something: that is acted on first (a kill switch refuses the
        call uncounted), then the call is counted apart."""
        try:
            found, made = await counts.observe_counted(principal.agent_id, task_id, tool, outcome, budget, floor,
                                                       deadline)
        except ChainUnavailable as exc:
            raise self.unavailable(principal, tool.exposed_name, "observe", exc) from None
        if not found:
            return made
        await self.act(found, principal)
        return await counts.count(task_id, budget, floor, deadline)

    async def probe(self, principal: Principal, tool_name: str) -> None:
        try:
            found = await self.signals.observe_probe(principal.agent_id, signal_scope(principal), tool_name)
        except ChainUnavailable as exc:
            raise self.unavailable(principal, tool_name, "probe", exc) from None
        await self.act(found, principal)

    def unavailable(self, principal: Principal, tool: str | None, step: str, exc: ChainUnavailable) -> RpcError:
        """Fail closed: a request the chain signals cannot see (or record) is refused, and the audit says why."""
        self.responder.audit.record(AuditEvent(
            kind="monitoring", action="unavailable", actor="narrowgate", agent_id=principal.agent_id,
            task_id=principal.task_id, tool=tool, detail={"step": step, "reason": str(exc)}))
        return RpcError(ACCESS_DENIED, f"Access denied: {UNAVAILABLE}; the gateway cannot check this agent's recent "
                        "activity right now, retry shortly", {"decision": "deny", "reason": UNAVAILABLE})

    async def act(self, detections: list[Detection], principal: Principal) -> None:
        if detections and await self.responder.respond(attributed(detections, principal)):
            raise RpcError(ACCESS_DENIED, "Access denied: this agent was suspended by the gateway's kill switch",
                           {"decision": "deny", "detector": detections[-1].detector})


def signal_scope(principal: Principal) -> str | None:
    """Whose signals a call reads and adds to: its task's; a person's task-less call, that person's through this
    client (never the client's shared record, so one person's reads never colour another's calls); else None
    (the agent's own). A `shared` client binding (one process acting for many people, a team bot) keeps the
    agent's: what it read for one person is in the process that answers the next."""
    user = principal.user
    if principal.task_id is not None or user is None:
        return principal.task_id
    agent = principal.agent
    binding = client_binding(agent, user.issuer, user.client_id) if agent is not None else None
    if binding is None or binding.shared:
        return None  # fail closed: a binding not found reads the client's signals, as a shared one does
    return person_scope(principal.agent_id, user.issuer, user.subject)


def attributed(detections: list[Detection], principal: Principal) -> list[Detection]:
    """Detections as recorded: a person's name the person, and the task is the call's own (none for a person's
    task-less call, whose record key is no task)."""
    user = principal.user
    if user is None:
        return detections
    return [replace(d, task_id=principal.task_id, user=user.subject, user_issuer=user.issuer) for d in detections]


def rate_limited(exc: RateLimited, tool: str | None) -> RpcError:
    """The agent's -32029: over a limit, or the limits cannot be counted now (never admitted uncounted)."""
    wait = math.ceil(exc.retry_after_s)
    what = "calls" if tool is not None else "requests"
    if isinstance(exc, RatesUnavailable):
        return RpcError(RATE_LIMITED, f"Rate limited: the gateway cannot count {what} right now; retry in "
                        f"{wait} s", {"scope": exc.scope, "retryAfterSeconds": wait})
    return RpcError(RATE_LIMITED, f"Rate limited: too many {what} for this {exc.scope}; retry in {wait} s",
                    {"scope": exc.scope, "retryAfterSeconds": wait})
