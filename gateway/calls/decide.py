"""The decide stage: Cedar, through the Authorizer (which records and logs every decision). A clean allow
goes on; a StepUp is raised as StepUpRequired for the approve stage; anything else is a refusal."""

from __future__ import annotations

from typing import Any

from gateway.calls.call import RequestContext, ToolCall
from gateway.chain.monitor import ChainMonitor
from gateway.identity.principal import Principal
from gateway.policy.authorizer import Authorizer
from gateway.policy.engine import Decision, RequestFacts
from gateway.policy.paths import CanonicalizationError, canonical_path
from gateway.protocol.eras import MODERN_ERA
from gateway.protocol.errors import INVALID_PARAMS, RESOURCE_NOT_FOUND, RpcError
from gateway.tasks.gate import TaskGate, task_facts
from gateway.tasks.model import Task
from gateway.telemetry import Telemetry
from gateway.upstream.directory import ResourceRoute, Withheld
from gateway.upstream.pool import UpstreamPool


class StepUpRequired(RpcError):
    """Cedar answered StepUp: the agent-facing -32031, unless the approve stage turns it into an allow."""

    def __init__(self, decision: Decision, facts: RequestFacts, refusal: RpcError) -> None:
        super().__init__(refusal.code, refusal.message, refusal.data)
        self.decision = decision
        self.facts = facts  # what it was decided on (the approval is bound to the same)


class Decide:
    def __init__(self, authorizer: Authorizer, tasks: TaskGate, monitor: ChainMonitor, pool: UpstreamPool,
                 telemetry: Telemetry) -> None:
        self.authorizer = authorizer
        self.tasks = tasks
        self.monitor = monitor
        self.pool = pool
        self.telemetry = telemetry

    async def __call__(self, call: ToolCall, task: Task | None, chain: dict[str, Any]) -> Decision:
        """An allow; StepUpRequired or the refusal otherwise (the policy stage span records it either way).
        `chain`: the caller's chain context, read when the call was admitted (the rate-limit stage)."""
        request = call.request
        facts = self.authorizer.facts(request.era, request.client_info, task_facts(task), chain,
                                      request.principal.user)
        if task is not None and task.depth:
            request.span.set(task_chain=[link.agent_id for link in task.chain])
        with self.telemetry.stage("policy"):
            decision = await self.authorizer.check_tool(request.principal, call.entry, call.arguments, facts,
                                                        request.trace_id)
            note_decision(request, decision)
            if decision.outcome == "step_up" and decision.reauth is None:  # reauth: the person, not an approver
                raise StepUpRequired(decision, facts, self.authorizer.refusal(decision))
            if not decision.allowed:
                raise self.authorizer.refusal(decision)
            return decision

    async def prompt(self, request: RequestContext, server_id: str, name: str) -> Decision:
        return await self.authorizer.prompt(request.principal, server_id, name, await self.facts(request),
                                            request.trace_id)

    async def template(self, request: RequestContext, server_id: str, uri: str) -> Decision:
        return await self.authorizer.resource(request.principal, server_id, uri, await self.facts(request),
                                              request.trace_id)

    async def resource(self, request: RequestContext, uri: object,
                       missing: int | None = None) -> tuple[str, ResourceRoute]:
        """The canonical URI and who serves it, once policy allows this caller to read it (recorded).

        The same decision for reads, subscriptions in both eras and completions: a URI with no
        single meaning, or one nobody may serve (awaiting review, claimed twice), is refused and
        recorded; an unknown one is "not found"."""
        if not isinstance(uri, str):
            raise RpcError(INVALID_PARAMS, "a string uri is required")
        facts = await self.facts(request)
        principal = request.principal
        try:
            canonical = canonical_path(uri)
        except CanonicalizationError as exc:
            raise await self.authorizer.refuse_resource(principal, escaped(uri), f"no single meaning: {exc}",
                                                        facts, request.trace_id) from None
        route = self.pool.directory.route(canonical)
        if isinstance(route, Withheld):
            raise await self.authorizer.refuse_resource(principal, canonical, f"not served: {route.reason}",
                                                        facts, request.trace_id, route.why)
        if route is None:
            # 2026-07-28 (SEP-2164) answers an unknown resource with invalid params; 2025-11-25 with -32002.
            code = missing or (INVALID_PARAMS if request.era == MODERN_ERA else RESOURCE_NOT_FOUND)
            raise RpcError(code, f"Resource not found: {uri}", {"uri": uri})
        request.record.upstream = route.server_id
        await self.authorizer.resource(principal, route.server_id, canonical, facts, request.trace_id)
        return canonical, route

    async def facts(self, request: RequestContext) -> RequestFacts:
        """The request facts policies see (task, chain, era, client), as of now."""
        return await self.facts_for(request.principal, request.era, request.client_info,
                                    self.tasks.facts(request.principal))

    async def facts_for(self, principal: Principal, era: str, client_info: dict[str, Any] | None,
                        task: dict[str, Any] | None) -> RequestFacts:
        return self.authorizer.facts(era, client_info, task, await self.monitor.context(principal), principal.user)


def note_decision(request: RequestContext, decision: Decision) -> None:
    """The decision in the request's record (metrics, chain monitoring, a stop) and on its span."""
    request.record.decision = decision.outcome
    request.span.set(decision=decision.outcome, decision_id=decision.decision_id,
                     policy_ids=list(decision.policy_ids))


def escaped(uri: str, limit: int = 500) -> str:
    """A refused URI as logs and the audit record show it: control and non-ASCII characters escaped
    (a newline cannot forge a log line), at most `limit` characters."""
    return ascii(uri)[1:-1][:limit]
