"""What an agent experiences when a call needs a person's approval.

A StepUp decision first looks for a granted, unused approval of exactly this call; if there is one
it is used up and Cedar decides again with `context.approval.granted`. Otherwise an approval request
is made (or the pending one for the same call found) and, by the policy's `@step_up` mode (empty:
`approvals.default_mode`, whose default "auto" holds only clients that can send a person to a URL,
so that no client waits silently for something it was never told about):

- hold: the call waits, its SSE stream kept alive, until the request is decided, expires or the
  hold times out, and then runs or fails like any other call; if the call goes away first (its
  client disconnects or cancels it), the request is abandoned and can no longer grant anything;
- pending: the call answers at once with a model-readable message naming the approval id and the
  console URL; the identical call, retried after approval, goes through.

Where the client supports URL elicitation, the protocol's own way of sending a person to a URL is
used as well: an `elicitation/create` (mode url) while holding, or a -32042 error when pending, in
2025-11-25; an `input_required` result whose retry then holds or answers, in 2026-07-28.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn, Protocol

from gateway.approvals.arguments import approver_view
from gateway.approvals.model import Approval, ApprovalError, ApprovalState
from gateway.approvals.service import ApprovalService
from gateway.catalog.model import ToolEntry
from gateway.identity.principal import Principal
from gateway.links import approval_path
from gateway.policy.authorizer import Authorizer
from gateway.policy.engine import Decision, RequestFacts
from gateway.protocol.eras import MODERN_ERA
from gateway.protocol.errors import ACCESS_DENIED, APPROVAL_REQUIRED, URL_ELICITATION_REQUIRED, RpcError
from gateway.settings.approvals import ApprovalSettings
from gateway.tasks.service import TaskService
from gateway.telemetry import Telemetry
from gateway.verifier import argument_digest

INPUT_KEY = "narrowgate_approval"  # our key in an input_required result's inputRequests
HOLD_ENDED = ("abandoned: the agent's held call ended before it could use the approval "
              "(its client cancelled the call or closed the connection, or the gateway stopped)")
CLIENT_GONE = "abandoned: the agent's client disconnected while the call was held"


def without_approval_round(params: dict[str, Any]) -> dict[str, Any]:
    """The agent's params minus our own input-required round (the upstream never saw it, and an SDK
    server rejects a requestState it did not mint)."""
    state = params.get("requestState")
    responses = params.get("inputResponses")
    if not (isinstance(state, str) and state.startswith("apr_")) and not (
            isinstance(responses, dict) and INPUT_KEY in responses):
        return params
    cleaned = {k: v for k, v in params.items() if k not in ("requestState", "inputResponses")}
    if isinstance(responses, dict):
        others = {k: v for k, v in responses.items() if k != INPUT_KEY}
        if others:
            cleaned["inputResponses"] = others
    if isinstance(state, str) and not state.startswith("apr_"):
        cleaned["requestState"] = state
    return cleaned


class AwaitingApproval(Exception):
    """The call stops here, answered: a person must approve it first, and `reply` ({"result": ...}) tells
    the agent where a person decides and how to retry. Not an error for the agent, so not an RpcError."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__("awaiting approval")
        self.reply = reply


class HoldingSink(Protocol):
    """The part of the reply channel a held call uses (gateway.transport.responses.ResponseChannel)."""

    async def notify(self, message: dict[str, Any]) -> None: ...

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]: ...

    async def keepalive(self) -> None: ...

    async def gone(self) -> None: ...  # returns once nobody can receive the reply any more


@dataclass(slots=True)
class StepUpCall:
    """One tool call that Cedar answered with StepUp."""

    principal: Principal
    era: str
    entry: ToolEntry
    arguments: dict[str, Any] | None
    refused: Decision
    facts: RequestFacts
    params: dict[str, Any]  # the agent's tools/call params (inputResponses on a modern retry)
    url_elicitation: bool  # the client can be sent to a URL
    sink: HoldingSink | None = None
    trace_id: str | None = None
    refresh: Callable[[], Awaitable[RequestFacts]] | None = None  # the request facts as of now (after a hold)


class StepUpFlow:
    def __init__(self, approvals: ApprovalService, authorizer: Authorizer, tasks: TaskService | None,
                 telemetry: Telemetry, settings: ApprovalSettings, base_url: str) -> None:
        self.approvals = approvals
        self.authorizer = authorizer
        self.tasks = tasks
        self.telemetry = telemetry
        self.settings = settings
        self.base_url = base_url.rstrip("/")

    async def resolve(self, call: StepUpCall) -> Decision:
        """An allow Decision (go on with the call); else AwaitingApproval (the agent is told to retry) or
        RpcError."""
        refused = call.refused
        digest = refused.args_digest or argument_digest(call.arguments)
        binding = (call.principal.agent_id, call.principal.task_id, call.entry.exposed_name, digest,
                   refused.rules_version)
        granted = await self.approvals.usable(*binding, covers=lambda approval: self.covers(approval, call),
                                              user=person_of(call))
        if granted is not None:
            return await self.use(call, granted)
        mode = self.mode(refused, call)
        try:
            approval = await self.approvals.request(self.draft(call, digest, mode))
        except ApprovalError as exc:  # no request could be opened: the call does not run
            raise RpcError(APPROVAL_REQUIRED, f"Approval required, but {exc}: try again later",
                           {"decision": "step_up", "decisionId": refused.decision_id}) from None
        if call.url_elicitation and call.era == MODERN_ERA:
            answer = self.input_answer(call)
            if answer is None:
                await self.retry_later(approval, self.input_required(approval, call))
            if answer != "accept":  # the person would not open the page: say how to get it, do not hold
                await self.retry_later(approval, self.pending_result(approval, call))
        if mode == "hold":
            return await self.hold(call, approval)
        if call.url_elicitation and call.era != MODERN_ERA:
            await self.approvals.told_to_retry(approval.id)
            raise RpcError(URL_ELICITATION_REQUIRED, self.message(approval, call), {
                "elicitations": [self.elicitation(approval, call, with_id=True)],
                "decision": "step_up", "decisionId": refused.decision_id, "approvalId": approval.id})
        await self.retry_later(approval, self.pending_result(approval, call))

    async def retry_later(self, approval: Approval, result: dict[str, Any]) -> NoReturn:
        """Answer now; the agent was told to retry, so the request stays good for that retry."""
        await self.approvals.told_to_retry(approval.id)
        raise AwaitingApproval({"result": result})

    @staticmethod
    def covers(approval: Approval, call: StepUpCall) -> bool:
        """The approval was given for this server's tool and for every rule that asks now (a rule the
        person never saw, e.g. egress after a sensitive read since, needs its own approval)."""
        return (approval.server_id == call.entry.server_id
                and approval.policy_version == call.refused.rules_version  # rules reloaded since: ask again
                and set(call.refused.policy_ids) <= set(approval.policy_ids))

    # the approval's shape

    def mode(self, decision: Decision, call: StepUpCall) -> str:
        """hold or pending for this call. An explicit `@step_up("hold")` holds whatever the client; the
        "auto" default holds only a client that can send its person to the console (it declared URL
        elicitation, in either era) and answers any other at once with the pending result."""
        mode = decision.step_up_mode or self.settings.default_mode
        if mode == "auto":
            return "hold" if call.url_elicitation else "pending"
        return mode

    def draft(self, call: StepUpCall, digest: str, mode: str) -> Approval:
        refused = call.refused
        now = self.approvals.clock()
        agent = call.principal.agent
        task = self.tasks.get(call.principal.task_id) if self.tasks and call.principal.task_id else None
        canonical = refused.canonical_arguments
        return Approval(
            id="", state=ApprovalState.PENDING, agent_id=call.principal.agent_id, task_id=call.principal.task_id,
            tool=call.entry.exposed_name, args_digest=digest, policy_version=refused.rules_version,
            decision_id=refused.decision_id, mode=mode, created_at=now,
            expires_at=now + (refused.approval_ttl_s or self.settings.ttl_s),
            owner=agent.owner if agent is not None else "",
            server_id=call.entry.server_id, risk=call.entry.risk, reason=refused.reason,
            policy_ids=refused.policy_ids,
            preview=approver_view(canonical if canonical is not None else call.arguments, call.entry.data_classes),
            agent_purpose=agent.purpose if agent is not None else "",
            task_purpose=task.purpose if task is not None else None,
            task_started_by=task.started_by if task is not None else None,
            approvers_group=refused.approvers, trace_id=call.trace_id, user=person_of(call),
        )

    def url(self, approval: Approval) -> str:
        return self.base_url + approval_path(approval.id)

    def message(self, approval: Approval, call: StepUpCall) -> str:
        """Model-readable: what happened, the approval id, where a person decides, and what to do next."""
        reason = self.authorizer.agent_reason(call.refused)  # the approver sees the policy's; the agent may not
        expires = datetime.datetime.fromtimestamp(approval.expires_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (f"Approval required: {reason}. A person must approve this exact call before it runs. "
                f"Approval id: {approval.id}. Ask the user to review it at {self.url(approval)} and then retry "
                f"the identical call (same tool, same arguments). The request expires at {expires}.")

    def elicitation(self, approval: Approval, call: StepUpCall, with_id: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"mode": "url", "message": self.message(approval, call), "url": self.url(approval)}
        if with_id:
            params["elicitationId"] = approval.id
        return params

    def input_required(self, approval: Approval, call: StepUpCall) -> dict[str, Any]:
        return {"resultType": "input_required",
                "inputRequests": {INPUT_KEY: {"method": "elicitation/create",
                                              "params": self.elicitation(approval, call, with_id=False)}},
                "requestState": approval.id}

    def pending_result(self, approval: Approval, call: StepUpCall) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": self.message(approval, call)}], "isError": True,
                "_meta": {"narrowgate/approval": {"id": approval.id, "state": approval.state.value,
                                                  "url": self.url(approval), "expiresAt": approval.expires_at,
                                                  "decisionId": call.refused.decision_id}}}

    @staticmethod
    def input_answer(call: StepUpCall) -> str | None:
        """On a 2026-07-28 retry, the client's answer to our URL request (accept, decline, cancel)."""
        responses = call.params.get("inputResponses")
        answer = responses.get(INPUT_KEY) if isinstance(responses, dict) else None
        if not isinstance(answer, dict):
            return None
        action = answer.get("action")
        return action if isinstance(action, str) else "cancel"

    # holding

    async def hold(self, call: StepUpCall, approval: Approval) -> Decision:
        """Wait for the person, then go on; a call that leaves without an answer abandons the request."""
        self.approvals.hold_begins(approval.id)
        left: str | None = HOLD_ENDED  # cancelled, or refused on the way: nobody will use this approval
        try:
            outcome = await self.wait_for_person(call, approval)
            if outcome is None:
                left = CLIENT_GONE
                raise RpcError(APPROVAL_REQUIRED, f"Approval required: the request was {CLIENT_GONE}",
                               {"decision": "step_up", "state": ApprovalState.ABANDONED.value,
                                "approvalId": approval.id})
            try:
                answer = await self.after_wait(call, outcome)
            except AwaitingApproval:
                left = None  # still pending after the hold, or asked again: the agent was told to retry
                raise
            left = None
            return answer
        finally:
            await self.approvals.hold_ends(approval.id, left)

    async def wait_for_person(self, call: StepUpCall, approval: Approval) -> Approval | None:
        """The request as decided (or expired, or still pending when the hold timed out); None if the
        client went away first."""
        await self.announce_hold(call, approval)
        asking = self.ask_for_url(call, approval)
        try:
            with self.telemetry.stage("approval_wait", approval_id=approval.id):
                outcome = await self.wait_unless_gone(call, approval)
                self.telemetry.annotate_stage(
                    approval_outcome=outcome.state.value if outcome else ApprovalState.ABANDONED.value)
        finally:
            if asking is not None:
                asking.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asking
        if outcome is not None and asking is not None and call.sink is not None:
            await call.sink.notify({"jsonrpc": "2.0", "method": "notifications/elicitation/complete",
                                    "params": {"elicitationId": approval.id}})
        return outcome

    async def wait_unless_gone(self, call: StepUpCall, approval: Approval) -> Approval | None:
        if call.sink is None:
            return await self.wait(call, approval)
        waiting = asyncio.ensure_future(self.wait(call, approval))
        leaving = asyncio.ensure_future(call.sink.gone())
        try:
            await asyncio.wait((waiting, leaving), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, leaving):
                task.cancel()
            await asyncio.gather(waiting, leaving, return_exceptions=True)
        return None if waiting.cancelled() else waiting.result()

    async def wait(self, call: StepUpCall, approval: Approval) -> Approval:
        """Wait for the request, sending SSE keepalives so proxies keep the stream open."""
        deadline = self.approvals.clock() + self.settings.hold_timeout_s
        while True:
            slice_s = min(self.settings.keepalive_s, deadline - self.approvals.clock())
            current = await self.approvals.wait(approval.id, max(slice_s, 0.0))
            if current.state is not ApprovalState.PENDING or self.approvals.clock() >= deadline:
                return current
            if call.sink is not None:
                await call.sink.keepalive()

    async def announce_hold(self, call: StepUpCall, approval: Approval) -> None:
        """A held client that cannot be sent to the console (a policy insisted on holding it) still hears
        where the person decides: a log message, and a progress message if it asked for progress."""
        if call.url_elicitation or call.sink is None:
            return
        expires = datetime.datetime.fromtimestamp(approval.expires_at, datetime.UTC).strftime("%H:%M:%S UTC")
        text = (f"Waiting for approval {approval.id}: {self.authorizer.agent_reason(call.refused)}. A person "
                f"decides at {self.url(approval)} (the request expires at {expires}).")
        await call.sink.notify({"jsonrpc": "2.0", "method": "notifications/message",
                                "params": {"level": "notice", "logger": "narrowgate", "data": text}})
        meta = call.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if isinstance(token, str | int) and not isinstance(token, bool):
            await call.sink.notify({"jsonrpc": "2.0", "method": "notifications/progress",
                                    "params": {"progressToken": token, "progress": 0, "message": text}})

    def ask_for_url(self, call: StepUpCall, approval: Approval) -> asyncio.Task[object] | None:
        """2025-11-25 with URL elicitation: show the person the console page while the call holds."""
        if not call.url_elicitation or call.era == MODERN_ERA or call.sink is None:
            return None
        message = {"jsonrpc": "2.0", "id": f"approval-{approval.id}", "method": "elicitation/create",
                   "params": self.elicitation(approval, call, with_id=True)}
        return asyncio.get_running_loop().create_task(call.sink.ask(message))

    async def after_wait(self, call: StepUpCall, approval: Approval) -> Decision:
        data = {"decisionId": call.refused.decision_id, "approvalId": approval.id}
        if approval.state is ApprovalState.APPROVED:
            if call.refresh is not None:
                call.facts = await call.refresh()  # minutes may have passed: decide on the facts of now
                again = await self.decide_again(call)
                if again is not None:
                    call = replace(call, refused=again)  # the decision that uses the approval, if it covers it
                    if not self.covers(approval, call):
                        # A rule the person did not see asks now (e.g. a sensitive read meanwhile): ask again.
                        return await self.resolve(call)
            return await self.use(call, approval)
        if approval.state is ApprovalState.DENIED:
            comment = f": {approval.comment}" if approval.comment else ""
            who = approval.decided_by_label or approval.decided_by
            raise RpcError(ACCESS_DENIED, f"Access denied: the approval was denied by {who}{comment}",
                           {"decision": "deny", **data})
        if approval.state is ApprovalState.PENDING:  # the hold timed out first; it may still be approved
            await self.retry_later(approval, self.pending_result(approval, call))
        reason = approval.end_reason or approval.state.value
        raise RpcError(APPROVAL_REQUIRED, f"Approval required: the approval request {approval.state.value} ({reason})",
                       {"decision": "step_up", "state": approval.state.value, **data})

    async def decide_again(self, call: StepUpCall) -> Decision | None:
        """The step-up decision as of now (audited like any), or None if it is no longer a step-up."""
        decision = await self.authorizer.check_tool(call.principal, call.entry, call.arguments, call.facts,
                                                    call.trace_id)
        if decision.outcome == "deny" or decision.reauth is not None:
            raise self.authorizer.refusal(decision)  # denied now, or the person must sign in again first
        return decision if decision.outcome == "step_up" else None

    async def use(self, call: StepUpCall, approval: Approval) -> Decision:
        """Let Cedar decide again with the approval granted, and spend it only if that allows the call: a call
        that must first re-authenticate (or is denied now) is refused with the approval kept for its retry."""
        granted = self.authorizer.engine.decide_tool(call.principal, call.entry, call.arguments, call.facts, True)
        if not granted.allowed:  # decided again to be recorded and raised, the approval unspent
            await self.authorizer.tool(call.principal, call.entry, call.arguments, call.facts, call.trace_id,
                                       approval_id=approval.id)
        try:
            await self.approvals.spend(approval.id, call.refused.decision_id)
        except ApprovalError:
            raise RpcError(APPROVAL_REQUIRED, "Approval required: the approval was already used or has expired",
                           {"decision": "step_up", "approvalId": approval.id}) from None
        return await self.authorizer.tool(call.principal, call.entry, call.arguments, call.facts, call.trace_id,
                                          approval_id=approval.id)


def person_of(call: StepUpCall) -> str | None:
    """The person a person's MCP client made the call for, as an approval binds them (never their email)."""
    user = call.principal.user
    return None if user is None else f"{user.issuer} {user.subject}"
