"""What agents did: their allowed tool calls in a window, read from the audit log's decision records,
and their tasks with the tools each asked for and called, from the task store.

Only `allow` decisions count as use: a denied or step-up-refused attempt shows the agent wanted a
tool, not that it needed the grant. A step-up that a person approved is recorded again as an allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.store.base import AuditQuery, Store

PAGE = 1000  # audit records read per query


@dataclass(frozen=True, slots=True)
class TaskUse:
    """One task of the window: the tools it was granted and the ones it called with an allow."""

    task_id: str
    purpose: str
    state: str
    started_at: float
    granted: tuple[str, ...]
    called: tuple[str, ...]

    @property
    def unused(self) -> tuple[str, ...]:
        return tuple(t for t in self.granted if t not in set(self.called))


@dataclass(slots=True)
class AgentUse:
    """One agent's allowed calls: per target (exposed tool name, prompt name or resource URI), the
    number of allows and the last one's time; per task, the targets it called."""

    calls: dict[str, int] = field(default_factory=dict)
    last_at: dict[str, float] = field(default_factory=dict)
    task_calls: dict[str, set[str]] = field(default_factory=dict)

    def add(self, target: str, task_id: str | None, at: float) -> None:
        self.calls[target] = self.calls.get(target, 0) + 1
        self.last_at[target] = max(at, self.last_at.get(target, at))
        if task_id:
            self.task_calls.setdefault(task_id, set()).add(target)


@dataclass(slots=True)
class Usage:
    """Decision records folded per agent, and what the audit log says about the window's coverage."""

    agents: dict[str, AgentUse] = field(default_factory=dict)
    decisions: int = 0  # every decision record seen (any outcome): zero means nothing was recorded
    first_at: float | None = None  # the oldest decision record seen
    last_at: float | None = None  # the newest one
    after_seq: int = 0  # the last record read: where an incremental read goes on
    # False for a ledger kept for good (the metric's): task ids only grow, and it needs none.
    with_tasks: bool = True

    def fold(self, record: Mapping[str, Any]) -> None:
        self.after_seq = max(self.after_seq, int(record.get("seq") or 0))
        if record.get("kind") != "decision":
            return
        at = float(record.get("at") or 0.0)
        self.decisions += 1
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)
        agent_id, target = record.get("agent_id"), record.get("tool")
        if record.get("decision") != "allow" or not agent_id or not target:
            return
        task_id = record.get("task_id") if self.with_tasks else None
        self.agents.setdefault(str(agent_id), AgentUse()).add(str(target), task_id, at)

    def forget_before(self, since: float) -> None:
        """Drop targets last called before `since` (a ledger kept for good stays bounded by what the window
        saw, not by every resource URI or prompt name ever read)."""
        for agent_id, use in list(self.agents.items()):
            for target in [t for t, at in use.last_at.items() if at < since]:
                del use.last_at[target], use.calls[target]
            if not use.calls:
                del self.agents[agent_id]

    def of(self, agent_id: str) -> AgentUse:
        return self.agents.get(agent_id) or AgentUse()

    def used_since(self, agent_id: str, since: float) -> set[str]:
        """Targets the agent called with an allow at or after `since` (for a ledger kept across windows)."""
        return {t for t, at in self.of(agent_id).last_at.items() if at >= since}


async def read_usage(store: Store, since: float, until: float, agent_id: str | None = None,
                     into: Usage | None = None) -> Usage:
    """Fold every decision record in [since, until) (of one agent, or all) into `into` (or a new Usage),
    reading after its `after_seq`, a page at a time."""
    usage = into if into is not None else Usage()
    while True:
        page = await store.audit_records(AuditQuery(
            after_seq=usage.after_seq, kind="decision", agent_id=agent_id, since=since, until=until, limit=PAGE))
        for record in page:
            usage.fold(record)
        if len(page) < PAGE:
            return usage


async def read_task_use(store: Store, agent_id: str, since: float, until: float, use: AgentUse) -> list[TaskUse]:
    """The agent's tasks that were active at some point of the window, with what each called."""
    tasks = await store.list_tasks(agent_id=agent_id, ended_since=since)
    return [
        TaskUse(task.id, task.purpose, task.state.value, task.started_at, task.tools,
                tuple(sorted(use.task_calls.get(task.id, set()))))
        for task in tasks if task.started_at < until
    ]


async def audit_starts_at(store: Store) -> float | None:
    """When the audit log's oldest record was written (None: the log is empty)."""
    first = await store.audit_records(AuditQuery(limit=1))
    return float(first[0]["at"]) if first else None
