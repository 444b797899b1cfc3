"""Asks the policy engine about each request and turns its answer into what the agent sees.

Every decision is logged once with its id, outcome and determining policies (never argument
values), so an operator can find it from the id the agent was given: denials and step-ups at
INFO, allows at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from gateway.audit import AuditEvent, AuditLog, AuditUnavailable, redacted_preview
from gateway.audit.shape import RecordShape, record_shape
from gateway.catalog.model import ToolEntry
from gateway.frozen import maker
from gateway.identity.principal import Principal
from gateway.identity.user import UserIdentity
from gateway.policy.engine import CedarRequest, Decision, PolicyEngine, RequestFacts, new_decision_id
from gateway.policy.recorder import DecisionRecorder
from gateway.protocol.errors import ACCESS_DENIED, APPROVAL_REQUIRED, REAUTHENTICATION_REQUIRED, RpcError
from gateway.verifier import argument_digest

log = logging.getLogger("narrowgate.decisions")
GENERIC_REASON = {"deny": "denied by policy", "step_up": "approval required"}
GENERIC_REAUTH = "re-authentication required"

DURABLE_RISKS = frozenset({"privileged", "destructive"})
_new_facts = maker(RequestFacts)
MAX_SHAPES = 4096  # audit record shapes kept (gateway.audit.shape: ~1 KB each)
# agent, owner, task, tool, outcome, policy ids, policy version, era, user subject, user issuer
ShapeKey = tuple[str, str | None, str | None, str, str, tuple[str, ...], str, str, str | None, str | None]


class Authorizer:
    def __init__(self, engine: PolicyEngine, audit: AuditLog, agent_reasons: str = "annotation",
                 on_evaluated: Callable[[Decision, float], None] | None = None, replica: str | None = None,
                 recorder: DecisionRecorder | None = None) -> None:
        self.engine = engine
        self.audit = audit
        # "annotation": tell the agent the policy's @reason text; "generic": only that it was denied.
        self.agent_reasons = agent_reasons
        self.on_evaluated = on_evaluated  # metrics: how long each tool decision took
        self.replica = replica  # which replica decided, in each decision's audit detail (replicas differing show)
        self.recorder = recorder if recorder is not None and recorder.enabled else None  # what-if replay's inputs
        self._shapes: dict[ShapeKey, RecordShape | None] = {}  # see _shape()

    @staticmethod
    def facts(era: str, client_info: dict[str, Any] | None, task: dict[str, Any] | None = None,
              chain: dict[str, Any] | None = None, user: UserIdentity | None = None) -> RequestFacts:
        client = client_info.get("name", "") if isinstance(client_info, dict) else ""
        # By position (now, era, client, working_hours, task, chain, user), without a frozen __init__'s
        # object.__setattr__ per field (gateway.frozen): this runs on every call.
        return _new_facts(time.time(), era, client if type(client) is str else str(client), None, task, chain, user)

    async def tool(self, principal: Principal, tool: ToolEntry, arguments: dict[str, Any] | None,
                   facts: RequestFacts, trace_id: str | None = None, approval_id: str | None = None) -> Decision:
        """check_tool, then the agent-facing RpcError unless it is a clean allow."""
        decision = await self.check_tool(principal, tool, arguments, facts, trace_id, approval_id)
        if not decision.allowed:
            raise self.refusal(decision)
        return decision

    async def check_tool(self, principal: Principal, tool: ToolEntry, arguments: dict[str, Any] | None,
                         facts: RequestFacts, trace_id: str | None = None, approval_id: str | None = None) -> Decision:
        """Decide one call, record and log it; with `approval_id`, as a call carrying that (already spent)
        approval. Refusals are returned, not raised (see tool())."""
        started = time.perf_counter()
        seen = self.seen()
        decision = self.engine.decide_tool(principal, tool, arguments, facts, approval_id is not None, seen)
        if self.on_evaluated is not None:
            self.on_evaluated(decision, time.perf_counter() - started)
        event, durable = self.tool_event(decision, principal, tool, arguments, facts, seen, trace_id, approval_id)
        if durable:
            await self._record_durable(event)
        else:  # what record() does for it, without a coroutine per call: enqueueing never waits
            self.audit.record(event)
        self.log_decision(decision, principal, "tool", tool.exposed_name)
        return decision

    def tool_event(self, decision: Decision, principal: Principal, tool: ToolEntry, arguments: dict[str, Any] | None,
                   facts: RequestFacts, seen: list[CedarRequest] | None, trace_id: str | None = None,
                   approval_id: str | None = None) -> tuple[AuditEvent, bool]:
        """Note a tool decision's input (for replay); its audit event, and whether it must be durable."""
        self.note(principal, decision, "tool", tool.exposed_name, facts, seen, tool.data_classes)
        canonical = decision.canonical_arguments
        args_digest = decision.args_digest or argument_digest(arguments)
        preview = redacted_preview(canonical if canonical is not None else arguments, tool.data_classes)
        shape = None if approval_id is not None else self._shape(decision, principal, facts, tool.exposed_name)
        if shape is None:
            event = self.event(decision, principal, facts, tool.exposed_name, trace_id, args_digest, preview)
        else:  # the shape's own values, so the audit log serializes only this call's five
            event = AuditEvent(shape.kind, shape.action, shape.actor, shape.agent_id, shape.owner, shape.task_id,
                               shape.tool, shape.decision, shape.policy_ids, decision.decision_id, trace_id,
                               args_digest, preview, shape.detail, shape)
        if approval_id is not None:
            event = replace(event, detail={**event.detail, "approval_id": approval_id})
        # A denial, a step-up or an allow of a privileged tool is on disk before the agent hears of it.
        return event, not decision.allowed or tool.risk in DURABLE_RISKS or approval_id is not None

    async def prompt(self, principal: Principal, server_id: str, name: str, facts: RequestFacts,
                     trace_id: str | None = None) -> Decision:
        seen = self.seen()
        decision = self.engine.decide_prompt(principal, server_id, name, facts, seen)
        self.note(principal, decision, "prompt", name, facts, seen)
        await self.record(self.event(decision, principal, facts, name, trace_id), durable=not decision.allowed)
        return self.enforce(decision, principal, "prompt", name)

    async def resource(self, principal: Principal, server_id: str, uri: str, facts: RequestFacts,
                       trace_id: str | None = None) -> Decision:
        seen = self.seen()
        decision = self.engine.decide_resource(principal, server_id, uri, facts, seen)
        self.note(principal, decision, "resource", uri, facts, seen)
        await self.record(self.event(decision, principal, facts, uri, trace_id), durable=not decision.allowed)
        return self.enforce(decision, principal, "resource", uri)

    async def refuse_resource(self, principal: Principal, uri: str, reason: str, facts: RequestFacts,
                              trace_id: str | None = None, detail: str = "") -> RpcError:
        """A resource the gateway refuses before policy (a URI with no single meaning, one nobody may
        serve): recorded and logged as a deny like any decision; the agent-facing error to raise."""
        decision = Decision("deny", new_decision_id(), (), reason, (detail or reason,), self.engine.version)
        self.note(principal, decision, "resource", uri, facts, None)
        await self.record(self.event(decision, principal, facts, uri, trace_id), durable=True)
        self.log_decision(decision, principal, "resource", uri)
        return self.refusal(decision)

    async def recheck_resource(self, principal: Principal, server_id: str, uri: str, facts: RequestFacts) -> bool:
        """Before relaying a resource update to a subscriber: would a read be allowed now? An allow is not
        recorded again (the subscription's was); a refusal is, and ends that subscription."""
        seen = self.seen()
        decision = self.engine.decide_resource(principal, server_id, uri, facts, seen)
        if decision.allowed:
            return True
        self.note(principal, decision, "resource", uri, facts, seen)
        event = self.event(decision, principal, facts, uri, None)
        await self.record(replace(event, detail={**event.detail, "subscription": "dropped"}), durable=False)
        self.log_decision(decision, principal, "resource subscription", uri)
        return False

    def seen(self) -> list[CedarRequest] | None:
        """Where the engine puts the Cedar request it makes, while decisions are recorded."""
        return [] if self.recorder is not None else None

    def note(self, principal: Principal, decision: Decision, kind: str, target: str, facts: RequestFacts,
             seen: list[CedarRequest] | None, data_classes: tuple[str, ...] = ()) -> None:
        """Hand a decision that is audited to the recorder (what-if replay); nothing when recording is off."""
        if self.recorder is not None:
            self.recorder.note(principal, decision, kind, target, facts.now, seen, data_classes)

    def event(self, decision: Decision, principal: Principal, facts: RequestFacts, target: str, trace_id: str | None,
              args_digest: str | None = None, preview: Any = None) -> AuditEvent:
        # Every input read here that can differ between two calls of one agent and tool must be in _shape's
        # key (or make _shape return None): a kept shape would otherwise record the first call's value.
        agent = principal.agent
        detail: dict[str, Any] = {"policy_version": decision.policy_version, "era": facts.era}
        if self.replica is not None:
            detail["replica"] = self.replica
        if principal.user is not None:  # a person's call: who, never their token or email
            detail["user"] = principal.user.subject
            detail["user_issuer"] = principal.user.issuer
        if decision.reauth is not None:  # step-up by re-authentication: what was asked, and why
            detail.update(step_up="reauth", reason=decision.reason, acr_values=" ".join(decision.reauth.acr_values),
                          max_age=decision.reauth.max_age_s)
        if facts.task is not None and facts.task.get("depth"):  # a delegated task: who handed it on, root first
            detail["chain"] = [link["agent"] for link in facts.task["chain"]]
        return AuditEvent(
            kind="decision", action="call", actor=principal.agent_id, agent_id=principal.agent_id,
            owner=agent.owner if agent is not None else None, task_id=principal.task_id, tool=target,
            decision=decision.outcome, policy_ids=decision.policy_ids, decision_id=decision.decision_id,
            trace_id=trace_id, args_digest=args_digest, preview=preview,
            detail=detail,
        )

    def _shape(self, decision: Decision, principal: Principal, facts: RequestFacts, tool: str) -> RecordShape | None:
        """The shape of this agent's records of `tool` with this answer (gateway.audit.shape), made on first use;
        None for a record whose detail is made per call (a re-authentication, a delegated task's chain)."""
        if decision.reauth is not None or (facts.task is not None and facts.task.get("depth")):
            return None
        agent, user = principal.agent, principal.user
        key = (principal.agent_id, None if agent is None else agent.owner, principal.task_id, tool, decision.outcome,
               decision.policy_ids, decision.policy_version, facts.era,
               None if user is None else user.subject, None if user is None else user.issuer)
        shapes = self._shapes
        try:
            return shapes[key]
        except KeyError:
            pass
        if len(shapes) >= MAX_SHAPES:  # agents x tools x answers x versions: bounded, started afresh when full
            shapes.clear()
        event = self.event(decision, principal, facts, tool, None)
        shape = shapes[key] = record_shape(event.kind, event.action, event.actor, event.agent_id, event.owner,
                                           event.task_id, event.tool, event.decision, decision.policy_ids,
                                           event.detail)  # (copied there)
        return shape

    async def record(self, event: AuditEvent, durable: bool) -> None:
        if durable:
            await self._record_durable(event)
        else:
            self.audit.record(event)

    async def _record_durable(self, event: AuditEvent) -> None:
        try:
            await self.audit.record_durable(event)
        except AuditUnavailable:
            # No record, no call: an unrecorded privileged action is worse than a refused one. The
            # queued record is written once the log recovers, followed by this refusal.
            log.error("audit log unavailable; refusing decision %s", event.decision_id)
            self.audit.record(replace(event, decision="deny", detail={**event.detail,
                                                                      "refused": "audit log unavailable"}))
            raise RpcError(ACCESS_DENIED, "Access denied: the audit log is unavailable",
                           {"decision": "deny", "decisionId": event.decision_id}) from None

    def visible_prompts(self, principal: Principal, prompts: Iterable[tuple[str, str]],
                        facts: RequestFacts) -> set[str]:
        return self.engine.visible_prompts(principal, prompts, facts)

    def visible_resources(self, principal: Principal, resources: Iterable[tuple[str, str]],
                          facts: RequestFacts) -> set[str]:
        return self.engine.visible_resources(principal, resources, facts)

    def agent_reason(self, decision: Decision) -> str:
        """What the agent is told: the policy's @reason, or only the generic outcome."""
        if self.agent_reasons == "annotation":
            return decision.reason
        return GENERIC_REAUTH if decision.reauth is not None else GENERIC_REASON[decision.outcome]

    def enforce(self, decision: Decision, principal: Principal, kind: str, target: str) -> Decision:
        """Log the decision; raise the agent-facing error unless it is a clean allow."""
        self.log_decision(decision, principal, kind, target)
        if not decision.allowed:
            raise self.refusal(decision)
        return decision

    @staticmethod
    def log_decision(decision: Decision, principal: Principal, kind: str, target: str) -> None:
        # Allows are the bulk of traffic: DEBUG keeps them off a busy log (the audit log records all).
        level = logging.DEBUG if decision.allowed else logging.INFO
        if log.isEnabledFor(level):  # else the line's arguments are not even joined
            log.log(
                level,
                "decision %s %s agent=%s %s=%s policies=%s version=%s%s",
                decision.decision_id, decision.outcome, principal.agent_id, kind, target,
                ",".join(decision.policy_ids) or "-", decision.policy_version,
                f" errors={len(decision.errors)}" if decision.errors else "",
            )
        for error in decision.errors:
            log.warning("decision %s evaluation error (denied, fail closed): %s", decision.decision_id, error)

    def refusal(self, decision: Decision) -> RpcError:
        """The agent-facing error for a deny or step-up."""
        data: dict[str, Any] = {"decision": decision.outcome, "decisionId": decision.decision_id}
        if decision.reauth is not None:
            # RFC 9470: the transport answers 401 with this challenge; the body says the same to any client.
            reason = self.agent_reason(decision)
            data["challenge"] = decision.reauth.challenge(reason)
            return RpcError(REAUTHENTICATION_REQUIRED, f"Re-authentication required: {reason}", data)
        code, text = (APPROVAL_REQUIRED, "Approval required") if decision.outcome == "step_up" else (
            ACCESS_DENIED, "Access denied")
        return RpcError(code, f"{text}: {self.agent_reason(decision)}", data)
