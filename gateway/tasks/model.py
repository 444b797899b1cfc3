"""A task: one unit of an agent's work, bounded by tools, deadline and (optionally) a call budget."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    REVOKED = "revoked"


DEADLINE_REASON = "deadline passed"


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One agent in a delegation chain: who acted, who answers for it, under which task."""

    agent_id: str
    owner: str
    task_id: str


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    agent_id: str
    purpose: str
    tools: tuple[str, ...]  # exposed tool names
    deadline: float  # epoch seconds
    budget: int | None  # most tool calls allowed; None: unlimited
    calls_made: int
    state: TaskState
    started_by: str
    started_at: float
    ended_at: float | None = None
    end_reason: str | None = None
    # The task this one was delegated from (token exchange with an actor token); None for a root task.
    parent_id: str | None = None
    # The agents from the root task's agent to this task's agent, inclusive (a root task: itself only;
    # () for tasks stored before delegation existed).
    chain: tuple[ChainLink, ...] = ()

    @property
    def depth(self) -> int:
        """Delegation hops from the root task: 0 for a root task."""
        return max(len(self.chain) - 1, 0)

    def effective(self, now: float) -> Task:
        """The task as it stands at `now`: an active task past its deadline is expired (ended at the deadline)."""
        if self.state is TaskState.ACTIVE and now >= self.deadline:
            return replace(self, state=TaskState.EXPIRED, ended_at=self.deadline, end_reason=DEADLINE_REASON)
        return self

    @property
    def chain_agents(self) -> tuple[str, ...]:
        """The agents of the task's chain, root first, its own last. Each once: delegation refuses loops; a task
        stored before delegation has no chain, so only its own agent."""
        return tuple(link.agent_id for link in self.chain) or (self.agent_id,)

    @property
    def remaining_calls(self) -> int | None:
        return None if self.budget is None else max(0, self.budget - self.calls_made)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One state change of a task (its start included): the append-only history."""

    task_id: str
    from_state: TaskState | None
    to_state: TaskState
    actor: str
    reason: str
    at: float


class TaskError(Exception):
    """A task request refused; the message is safe to show the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ToolsRefused(TaskError):
    """Requested tools that are unknown to the catalog or outside the agent's entitlement."""

    def __init__(self, message: str, unknown: tuple[str, ...] = (), outside: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unknown = unknown
        self.outside = outside


class AgentNotActive(TaskError):
    """The agent is unknown, pending, suspended, retired or expired: it cannot start tasks."""


class TaskNotFound(TaskError):
    """No task has this id (or it ended long enough ago to be forgotten in memory)."""


class TaskEnded(Exception):
    """The task may not be used (any more); `reason` is safe to show the caller."""

    def __init__(self, reason: str, task_id: str = "", state: TaskState | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.task_id = task_id
        self.state = state


def task_to_dict(task: Task) -> dict[str, Any]:
    """The JSON shape for the admin API, the CLI and the store."""
    return {
        "id": task.id,
        "agent_id": task.agent_id,
        "purpose": task.purpose,
        "tools": list(task.tools),
        "deadline": task.deadline,
        "budget": task.budget,
        "calls_made": task.calls_made,
        "state": task.state.value,
        "started_by": task.started_by,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "end_reason": task.end_reason,
        "parent_id": task.parent_id,
        "chain": [link_to_dict(link) for link in task.chain],
    }


def link_to_dict(link: ChainLink) -> dict[str, str]:
    return {"agent_id": link.agent_id, "owner": link.owner, "task_id": link.task_id}


def link_from_dict(raw: dict[str, Any]) -> ChainLink:
    return ChainLink(str(raw["agent_id"]), str(raw["owner"]), str(raw["task_id"]))


def event_to_dict(event: TaskEvent) -> dict[str, Any]:
    return {
        "task_id": event.task_id,
        "from_state": None if event.from_state is None else event.from_state.value,
        "to_state": event.to_state.value,
        "actor": event.actor,
        "reason": event.reason,
        "at": event.at,
    }


def chain_detail(task: Task) -> dict[str, Any]:
    """What audit records say of a delegated task: its parent and the chain's agent ids, root first."""
    if task.parent_id is None:
        return {}
    return {"parent_id": task.parent_id, "chain": [link.agent_id for link in task.chain]}
