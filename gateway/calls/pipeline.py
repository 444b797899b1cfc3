"""The call path, stage by stage. Each stage hands on what the next one needs or raises a typed refusal
(an RpcError: the agent's answer); a call a person must approve first ends in AwaitingApproval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.approvals.step_up import AwaitingApproval
from gateway.calls.admit import Admit
from gateway.calls.approve import Approve
from gateway.calls.call import Reply, RequestContext, ToolCall
from gateway.calls.credential import Credential
from gateway.calls.decide import Decide, StepUpRequired
from gateway.calls.forward import Forward
from gateway.calls.observe import Observe
from gateway.calls.rate_limit import RateLimit
from gateway.upstream.directory import PromptView


@dataclass(frozen=True, slots=True)
class Stages:
    admit: Admit
    rate_limit: RateLimit
    decide: Decide
    approve: Approve
    credential: Credential
    forward: Forward
    observe: Observe


async def call_tool(s: Stages, call: ToolCall) -> Reply:
    """tools/call, top to bottom."""
    task = await s.admit(call)  # the task gate: the tool is part of the caller's grant
    await s.rate_limit.call(call)  # the caller's chain windows (-32029 over a limit)
    try:
        try:
            decision = await s.decide(call, task)  # Cedar: an allow, StepUpRequired or a refusal
        except StepUpRequired as step_up:
            decision = await s.approve(call, step_up)  # a person: an allow, AwaitingApproval or a refusal
        finally:
            await s.observe(call)  # chain signals and detectors, whatever was decided (the kill switch)
    except AwaitingApproval as waiting:
        return waiting.reply  # the agent is told where a person decides and how to retry
    await s.admit.consume(call)  # the call counts against its task's budget
    judged = decision.canonical_arguments  # the upstream gets exactly what the policy judged
    arguments = judged if judged is not None else call.arguments
    auth = await s.credential(call, decision, arguments)  # a token for this tool, upstream and arguments
    return await s.forward.tool(call, arguments, auth)


async def get_prompt(s: Stages, request: RequestContext, name: str, view: PromptView,
                     params: dict[str, Any]) -> Reply:
    """prompts/get: decided, counted, forwarded under the upstream's own name for it."""
    await s.decide.prompt(request, view.server_id, name)
    await s.rate_limit.request(request, view.server_id)
    return await s.forward.request(request, view.server_id, "prompts/get", {**params, "name": view.upstream_name})


async def read_resource(s: Stages, request: RequestContext, params: dict[str, Any]) -> Reply:
    """resources/read: decided on the canonical URI, counted, forwarded as the serving upstream spells it."""
    _, route = await s.decide.resource(request, params.get("uri"))
    await s.rate_limit.request(request, route.server_id)
    return await s.forward.request(request, route.server_id, "resources/read", {**params, "uri": route.upstream_uri})
