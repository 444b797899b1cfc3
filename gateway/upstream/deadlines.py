"""Per-call deadlines on shared timers: what `asyncio.timeout` does for an upstream call, at a fraction of its cost.

`asyncio.timeout` (pure Python on 3.11) pushes a TimerHandle onto the loop per call and cancels it at the end:
27.5k instructions a call, against 8.6k here (bench/edges.py; docs/performance-cuts.md, "lean-edges2"). Here a call that
starts registers in a queue of the calls with the same delay (FIFO: same delay, so also deadline order) and leaves
it when it ends: two dict operations. One timer per queue fires at the oldest call's deadline; it cancels every
call whose deadline has come and re-arms for the oldest one left. Calls that end in time never touch a timer.

What a caller sees is asyncio.timeout's: the task is cancelled at its deadline and the block raises TimeoutError
(the cancellation taken back with `uncancel`); a cancellation from elsewhere passes through as CancelledError;
a block that ends before its deadline is never interrupted. The bound is the same: a call is cancelled when the
loop's clock reaches its deadline, within the loop's own timer resolution (a deadline less than CLOCK_SLACK_S
ahead counts as come, as the loop itself runs a timer due within its clock resolution).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

CLOCK_SLACK_S = 0.001  # uvloop keeps its clock and timers in whole milliseconds

__all__ = ["Deadline", "Deadlines"]


class Deadline:
    """`with deadlines.within(delay_s):` the block's task is cancelled after `delay_s`, and the block then raises
    TimeoutError. A plain (not async) context manager: entering and leaving it never suspend."""

    __slots__ = ("cancelling", "delay_s", "expired", "owner", "queue", "task")
    task: asyncio.Task[object]  # set on entry, with the rest below
    cancelling: int
    queue: dict[Deadline, float]

    def __init__(self, owner: Deadlines, delay_s: float) -> None:
        self.owner = owner
        self.delay_s = delay_s
        self.expired = False

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline is entered by a task")
        self.task, self.cancelling = task, task.cancelling()
        self.queue = self.owner.add(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.expired:
            del self.queue[self]  # still waiting: the sweep removes only the calls it cancels
            return
        # Ours only if no other cancellation is pending on the task (asyncio.timeout's rule).
        if self.task.uncancel() <= self.cancelling and kind is asyncio.CancelledError:
            raise TimeoutError from error

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


class Deadlines:
    """The running calls of one event loop (or of one upstream), by delay; one timer per delay in use."""

    def __init__(self) -> None:
        self.queues: dict[float, dict[Deadline, float]] = {}  # delay -> {deadline: when}, oldest first
        self.timers: dict[float, asyncio.TimerHandle] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop the timers are on

    def within(self, delay_s: float) -> Deadline:
        return Deadline(self, delay_s)

    def add(self, deadline: Deadline) -> dict[Deadline, float]:
        """Register a call that starts now; its queue, which it leaves when it ends in time."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # timers of a loop that has gone would never fire: start afresh
            self.queues.clear()
            self.timers.clear()
            self.loop = loop
        delay = deadline.delay_s
        when = loop.time() + delay
        queue = self.queues.get(delay)
        if queue is None:
            queue = self.queues[delay] = {}
        queue[deadline] = when
        if delay not in self.timers:
            self.timers[delay] = loop.call_at(when, self.sweep, delay)
        return queue

    def sweep(self, delay: float) -> None:
        """Cancel every call of this delay whose deadline has come; come back at the next one's."""
        del self.timers[delay]
        queue = self.queues.get(delay)
        if not queue:
            self.queues.pop(delay, None)  # no call of this delay running: the next one starts a timer
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + CLOCK_SLACK_S
        overdue: list[Deadline] = []
        for deadline, when in queue.items():  # oldest first: stop at the first not yet due, copy nothing
            if when > due:
                self.timers[delay] = loop.call_at(when, self.sweep, delay)
                break
            overdue.append(deadline)
        for deadline in overdue:
            del queue[deadline]
            deadline.expire()
        if not queue:
            del self.queues[delay]
