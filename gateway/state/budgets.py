"""Task call counts shared by every process that serves a task: the budget's check-and-count."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class BudgetUnavailable(Exception):
    """The shared count cannot be reached: the call is refused, never let through uncounted."""


@runtime_checkable
class CallBudgets(Protocol):
    """One counter per task, for a fleet (one process counts in `TaskService` itself: no seam).

    `count` adds one call unless `budget` calls were made already, atomically for every process:
    of N racing calls against a budget of k, exactly k are counted. `floor` is the count this process
    knows (from the store, or an earlier answer): the shared count never starts below it. The counter
    expires after the task's `deadline` (epoch seconds). Unreachable: BudgetUnavailable.
    """

    async def count(self, task_id: str, budget: int | None, floor: int, deadline: float) -> int | None:
        """The task's calls made including this one, or None (nothing counted) when the budget is spent."""
        ...


@runtime_checkable
class BudgetReservations(Protocol):
    """Part of a task's budget set aside at once (for a delegated child task), fleet-wide: `reserve` adds
    `amount` calls to the count unless that would pass `budget` (then None, nothing changed). `floor` and
    `deadline` as in `count`. Reserved calls are not given back (the store's counts only ever grow)."""

    async def reserve(self, task_id: str, amount: int, budget: int, floor: int, deadline: float) -> int | None:
        """The task's count including the reservation, or None when the budget has not that much left."""
        ...
