"""What a delegated (child) task may be: never more than its parent.

An agent holding a task hands part of it to another agent (token exchange with an actor token, see
gateway/oauth/delegation.py). The child task's tools are a subset of the parent's, its deadline is no
later, its budget fits in what the parent has left (and is reserved out of it by the service), the
chain of agents stays within the configured depth and never visits an agent twice.
"""

from __future__ import annotations

from gateway.registry.model import Agent
from gateway.tasks.model import ChainLink, Task, TaskError, ToolsRefused


class DelegationRefused(TaskError):
    """The delegation itself is not acceptable (a loop, too deep a chain, an ended parent)."""


def child_chain(parent: Task, agent: Agent, child_id: str, max_depth: int) -> tuple[ChainLink, ...]:
    """The parent's chain plus the child's agent; refused if the agent is in it already or it gets too long."""
    chain = parent.chain or (ChainLink(parent.agent_id, "", parent.id),)
    if any(link.agent_id == agent.id for link in chain):
        path = " -> ".join(link.agent_id for link in chain)
        raise DelegationRefused(f"delegation loop: agent {agent.id!r} is already in the chain ({path})")
    if len(chain) > max_depth:
        raise DelegationRefused(f"delegation chain too deep: task {parent.id} is at depth {len(chain) - 1}, "
                                f"and at most {max_depth} delegation(s) are allowed (tokens.max_delegation_depth)")
    return (*chain, ChainLink(agent.id, agent.owner, child_id))


def child_tools(parent: Task, tools: tuple[str, ...], trim: bool) -> tuple[str, ...]:
    """The requested tools the parent holds; any other is refused (or dropped with `trim`)."""
    lacking = tuple(t for t in tools if t not in parent.tools)
    if lacking and not trim:
        raise ToolsRefused(f"tool(s) not granted to the parent task {parent.id}: {', '.join(lacking)}",
                           outside=lacking)
    held = tuple(t for t in tools if t not in lacking)
    if not held:
        raise ToolsRefused(f"none of the requested tools is granted to the parent task {parent.id}", outside=lacking)
    return held


def child_deadline(parent: Task, now: float, deadline_s: float | None) -> float:
    """The child's deadline: the parent's when none is asked for; a later one than the parent's is refused."""
    if deadline_s is None:
        return parent.deadline
    if deadline_s <= 0:
        raise TaskError("the deadline must lie in the future")
    if now + deadline_s > parent.deadline:
        raise TaskError(f"deadline refused: the parent task {parent.id} ends in {max(parent.deadline - now, 0):.0f} s; "
                        "a delegated task cannot outlive it")
    return now + deadline_s


def child_budget(parent: Task, budget: int | None) -> int | None:
    """The child's budget; within what the parent has left (which the service then reserves)."""
    left = parent.remaining_calls
    if left is None:
        return budget
    if budget is None:
        raise TaskError(f"budget required: the parent task {parent.id} has a call budget ({left} call(s) left); "
                        "name the child's budget")
    if budget > left:
        raise TaskError(f"budget refused: the parent task {parent.id} has {left} call(s) left, {budget} asked for")
    return budget
