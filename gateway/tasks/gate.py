"""The task stage of the call path: what a task token grants, and the agent's own task tools.

A caller with a task token sees and may call only its task's tools, within its call budget, while
the task is active. An agent that requires tasks gets nothing with a bare workload token.
Two built-in tools let the agent end its own task: `narrowgate__complete_task` and
`narrowgate__fail_task`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.identity.principal import Principal
from gateway.policy.context import NO_CHAIN_AGENT
from gateway.protocol.errors import ACCESS_DENIED, INVALID_PARAMS, RpcError
from gateway.state.budgets import BudgetUnavailable, CallBudgets
from gateway.tasks.model import Task, TaskEnded
from gateway.tasks.service import TaskService

COMPLETE_TOOL = "narrowgate__complete_task"
FAIL_TOOL = "narrowgate__fail_task"
_REASON_SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string", "description": "What was done, or why it failed."}},
}
BUILTIN_TOOLS = {
    COMPLETE_TOOL: {"name": COMPLETE_TOOL, "title": "Complete this task",
                    "description": "Tell the gateway your task is done. Every grant of the task ends at once.",
                    "inputSchema": _REASON_SCHEMA},
    FAIL_TOOL: {"name": FAIL_TOOL, "title": "Fail this task",
                "description": "Tell the gateway your task failed. Every grant of the task ends at once.",
                "inputSchema": _REASON_SCHEMA},
}
NEEDS_TASK = ("this agent needs a task token: exchange its workload token at the gateway's /oauth/token "
              "(RFC 8693) for the tools of one task")


def task_facts(task: Task | None) -> dict[str, Any] | None:
    """What policies see of the caller's task (context.task); `chain`: the agents root first."""
    if task is None:
        return None
    return {"id": task.id, "purpose": task.purpose, "tools": task.tools,
            **chain_facts([(link.agent_id, link.owner) for link in task.chain])}


def chain_facts(links: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The chain's facts from its (agent id, owner) pairs, root first: the chain itself (a Cedar Set, so
    its order is lost there), its depth, and the two ends a policy names by role: `root`, the root task's
    agent, and `delegator`, the agent that handed this task on (empty strings for a root task)."""
    chain = [{"agent": agent, "owner": owner} for agent, owner in links]
    return {"chain": chain, "depth": max(len(chain) - 1, 0), "root": chain[0] if chain else NO_CHAIN_AGENT,
            "delegator": chain[-2] if len(chain) > 1 else NO_CHAIN_AGENT}


class TaskGate:
    def __init__(self, tasks: TaskService) -> None:
        self.tasks = tasks

    def task_of(self, principal: Principal) -> Task | None:
        """The caller's active task; RpcError if it has ended."""
        if principal.task_id is None:
            return None
        try:
            return self.tasks.check(principal.task_id)
        except TaskEnded as exc:
            raise RpcError(ACCESS_DENIED, f"Access denied: task {principal.task_id} has ended ({exc.reason})",
                           {"decision": "deny", "task": principal.task_id}) from None

    def facts(self, principal: Principal) -> dict[str, Any] | None:
        return task_facts(self.task_of(principal))

    def visible(self, principal: Principal, names: Iterable[str]) -> list[str]:
        """Of these tool names, the ones this caller's grant covers."""
        task = self.task_of(principal)
        if task is not None:
            allowed = set(task.tools)
            return [n for n in names if n in allowed]
        if _requires_task(principal):
            return []
        return list(names)

    def builtin_tools(self, principal: Principal) -> list[dict[str, Any]]:
        return list(BUILTIN_TOOLS.values()) if principal.task_id is not None else []

    def admit(self, principal: Principal, tool: str) -> Task | None:
        """Before policy: is this tool part of the caller's grant at all? Returns the caller's task."""
        task = self.task_of(principal)
        if task is not None:
            if tool not in task.tools:
                raise RpcError(ACCESS_DENIED, f"Access denied: {tool} is not part of task {task.id}",
                               {"decision": "deny", "task": task.id})
        elif _requires_task(principal):
            raise RpcError(ACCESS_DENIED, f"Access denied: {NEEDS_TASK}", {"decision": "deny"})
        return task

    async def consume(self, principal: Principal, budgets: CallBudgets | None = None) -> None:
        """After an allow: count the call against the task's budget (fleet-wide in a fleet, through `budgets`
        when given: see TaskService.count_call)."""
        if principal.task_id is None:
            return
        try:
            await self.tasks.count_call(principal.task_id, budgets)
        except TaskEnded as exc:
            raise RpcError(ACCESS_DENIED, f"Access denied: task {principal.task_id}: {exc.reason}",
                           {"decision": "deny", "task": principal.task_id}) from None
        except BudgetUnavailable:
            raise RpcError(ACCESS_DENIED, f"Access denied: task {principal.task_id}: its calls cannot be counted "
                           "right now (shared state unreachable); retry shortly",
                           {"decision": "deny", "task": principal.task_id}) from None

    async def call_builtin(self, principal: Principal, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        task = self.task_of(principal)
        if task is None:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        reason = str(arguments.get("reason") or ("completed by the agent" if name == COMPLETE_TOOL
                                                  else "failed, as reported by the agent"))
        actor = f"agent:{principal.agent_id}"
        if name == COMPLETE_TOOL:
            ended = await self.tasks.complete(task.id, actor, reason)
        else:
            ended = await self.tasks.fail(task.id, actor, reason)
        text = f"Task {ended.id} is {ended.state.value}; its grants have ended."
        return {"result": {"content": [{"type": "text", "text": text}], "isError": False}}


def _requires_task(principal: Principal) -> bool:
    return principal.agent is not None and principal.agent.entitlement.require_task
