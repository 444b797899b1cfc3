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
class CallAdmission(Protocol):
    """`RateWindows.admit` then `ChainSignals.context` for one tools/call, as one step: for an object that
    is both seams (the in-memory tracker, the Redis chain), so a shared one answers in one round trip.

    The same answers as the two calls in that order: over a limit (or unreachable, as `admit` would be)
    it raises `RateLimited` and counts nothing; otherwise the request is counted and the returned record
    is the `context` of the caller as it stands after the count.
    """

    async def admit_call(self, agent_id: str, task_id: str | None, tool: str) -> dict[str, Any]: ...


@runtime_checkable
class CountedObservation(Protocol[ToolT, DetectionT]):
    """`ChainSignals.observe_call` then `CallBudgets.count` for an allowed tools/call of a task, as one step:
    for an object that is both seams (a fleet's Redis chain: one round trip).

    Returns what the observation found and the count's answer (as `count`'s: the calls made, or None when
    the budget is spent) - but only when it found nothing: a detection may suspend the agent, which must
    refuse the call before it counts, so with detections nothing is counted (the second value is then
    None and means nothing; the caller acts on them, then counts apart). Unreachable: ChainUnavailable,
    as `observe_call` (nothing observed or counted).
    """

    async def observe_counted(self, agent_id: str, task_id: str, tool: ToolT, outcome: str, budget: int | None,
                              floor: int, deadline: float) -> tuple[list[DetectionT], int | None]: ...

    async def count(self, task_id: str, budget: int | None, floor: int, deadline: float) -> int | None: ...


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
