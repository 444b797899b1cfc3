"""Rate-limit windows and chain signals: what each agent and task did lately, per agent and per task."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

ToolT = TypeVar("ToolT", contravariant=True)
DetectionT = TypeVar("DetectionT")


class ChainUnavailable(Exception):
    """A shared implementation cannot reach its records: the call must be refused, never decided on a
    record that may be missing what the agent did."""


@runtime_checkable
class RateWindows(Protocol):
    """Sliding windows of admitted requests per agent, per task and per (agent, tool).

    `admit` counts one request against every window that applies, or raises
    `gateway.chain.tracker.RateLimited` (the longest wait) and counts nothing: check-and-record is
    atomic across all windows. A shared implementation does it in one round trip (one script); when
    unreachable it refuses (RateLimited), never admits uncounted.
    """

    async def admit(self, agent_id: str, task_id: str | None, tool: str | None) -> None: ...


@runtime_checkable
class ChainSignals(Protocol[ToolT, DetectionT]):
    """Per-agent and per-task signals: the Cedar `context.chain` record before a decision, the
    detectors after it. `ToolT` is the catalog's tool entry, `DetectionT` what a detector found.

    A shared implementation loads the agent's and the task's records in one round trip for
    `context` and applies each observation atomically in one round trip; when unreachable, `context`
    must not claim a clean record the policy would allow on: it raises, and the call is refused.
    `forget_*` stay synchronous (they are called from lifecycle observers): a shared implementation
    deletes in the background. `stats` counts the records held in this process's memory.
    """

    async def context(self, agent_id: str, task_id: str | None) -> dict[str, Any]: ...

    async def observe_call(self, agent_id: str, task_id: str | None, tool: ToolT, outcome: str) -> list[DetectionT]: ...

    async def observe_probe(self, agent_id: str, task_id: str | None, tool_name: str) -> list[DetectionT]: ...

    def forget_task(self, task_id: str) -> None: ...

    def forget_agent(self, agent_id: str) -> None: ...

    def stats(self) -> dict[str, int]: ...
