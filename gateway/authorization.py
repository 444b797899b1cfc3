"""Asks the policy engine about each request and turns its answer into what the agent sees.

Every decision is logged once with its id, outcome and determining policies (never argument
values), so an operator can find it from the id the agent was given: denials and step-ups at
INFO, allows at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from gateway.catalog.model import ToolEntry
from gateway.errors import ACCESS_DENIED, APPROVAL_REQUIRED, RpcError
from gateway.identity.principal import Principal
from gateway.policy.engine import Decision, PolicyEngine, RequestFacts

log = logging.getLogger("narrowgate.decisions")
GENERIC_REASON = {"deny": "denied by policy", "step_up": "approval required"}


class Authorizer:
    def __init__(self, engine: PolicyEngine, agent_reasons: str = "annotation") -> None:
        self.engine = engine
        # "annotation": tell the agent the policy's @reason text; "generic": only that it was denied.
        self.agent_reasons = agent_reasons

    @staticmethod
    def facts(era: str, client_info: dict[str, Any] | None, task: dict[str, Any] | None = None) -> RequestFacts:
        client = client_info.get("name", "") if isinstance(client_info, dict) else ""
        return RequestFacts(now=time.time(), era=era, client=str(client), task=task)

    def tool(self, principal: Principal, tool: ToolEntry, arguments: dict[str, Any] | None,
             facts: RequestFacts) -> Decision:
        decision = self.engine.decide_tool(principal, tool, arguments, facts)
        return self.enforce(decision, principal, "tool", tool.exposed_name)

    def prompt(self, principal: Principal, server_id: str, name: str, facts: RequestFacts) -> Decision:
        decision = self.engine.decide_prompt(principal, server_id, name, facts)
        return self.enforce(decision, principal, "prompt", name)

    def resource(self, principal: Principal, server_id: str, uri: str, facts: RequestFacts) -> Decision:
        decision = self.engine.decide_resource(principal, server_id, uri, facts)
        return self.enforce(decision, principal, "resource", uri)

    def visible_tools(self, principal: Principal, tools: Iterable[ToolEntry], facts: RequestFacts) -> set[str]:
        return self.engine.visible_tools(principal, list(tools), facts)

    def visible_prompts(self, principal: Principal, prompts: Iterable[tuple[str, str]],
                        facts: RequestFacts) -> set[str]:
        return self.engine.visible_prompts(principal, prompts, facts)

    def visible_resources(self, principal: Principal, resources: Iterable[tuple[str, str]],
                          facts: RequestFacts) -> set[str]:
        return self.engine.visible_resources(principal, resources, facts)

    def enforce(self, decision: Decision, principal: Principal, kind: str, target: str) -> Decision:
        """Log the decision; raise the agent-facing error unless it is a clean allow."""
        # Allows are the bulk of traffic: DEBUG keeps them off a busy log (the audit log records all).
        log.log(
            logging.DEBUG if decision.allowed else logging.INFO,
            "decision %s %s agent=%s %s=%s policies=%s version=%s%s",
            decision.decision_id, decision.outcome, principal.agent_id, kind, target,
            ",".join(decision.policy_ids) or "-", decision.policy_version,
            f" errors={len(decision.errors)}" if decision.errors else "",
        )
        for error in decision.errors:
            log.warning("decision %s evaluation error (denied, fail closed): %s", decision.decision_id, error)
        if decision.allowed:
            return decision
        reason = decision.reason if self.agent_reasons == "annotation" else GENERIC_REASON[decision.outcome]
        data = {"decision": decision.outcome, "decisionId": decision.decision_id}
        if decision.outcome == "step_up":
            raise RpcError(APPROVAL_REQUIRED, f"Approval required: {reason}", data)
        raise RpcError(ACCESS_DENIED, f"Access denied: {reason}", data)
