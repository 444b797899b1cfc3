"""The approve stage: a StepUp becomes an approval request bound to the exact call (see
gateway.approvals.step_up). It ends in an allow that used a person's approval, in AwaitingApproval (the
agent is told where a person decides and how to retry), or in a refusal."""

from __future__ import annotations

from typing import Any

from gateway.approvals.step_up import StepUpCall, StepUpFlow
from gateway.calls.call import ToolCall
from gateway.calls.decide import Decide, StepUpRequired, note_decision
from gateway.policy.engine import Decision


class Approve:
    def __init__(self, decide: Decide, flow: StepUpFlow | None) -> None:
        self.decide = decide
        self.flow = flow  # the approvals flow; without it (approvals off) a StepUp is refused

    async def __call__(self, call: ToolCall, step_up: StepUpRequired) -> Decision:
        if self.flow is None:
            raise step_up
        request = call.request
        decision = await self.flow.resolve(StepUpCall(
            principal=request.principal, era=request.era, entry=call.entry, arguments=call.arguments,
            refused=step_up.decision, facts=step_up.facts, params=call.params,
            url_elicitation=supports_url_elicitation(request.client_capabilities), sink=request.sink,
            trace_id=request.trace_id, refresh=lambda: self.decide.facts(request)))
        note_decision(request, decision)
        request.record.approved = True
        return decision


def supports_url_elicitation(capabilities: dict[str, Any]) -> bool:
    """The client declared URL-mode elicitation (`elicitation: {url: {}}`), so it can send a person to a URL."""
    elicitation = capabilities.get("elicitation") if isinstance(capabilities, dict) else None
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)
