"""Per-call deadlines on shared timers (gateway/upstream/deadlines.py) behave as asyncio.timeout does.

Each case runs the same block under `asyncio.timeout(delay)` and under `Deadlines().within(delay)` on uvloop
(the gateway's loop) and asserts the same outcome: TimeoutError for a block past its deadline, the task's
cancellation count restored, a cancellation from elsewhere passed through, a block that ends in time untouched,
and among many concurrent calls with mixed delays exactly the overdue ones cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from gateway.upstream.deadlines import Deadlines

Bound = Callable[[float], Any]  # delay -> a context manager entered with `with` or `async with`


class Shared:
    """`Deadlines().within`, shaped like asyncio.timeout for the cases below."""

    def __init__(self) -> None:
        self.deadlines = Deadlines()

    @contextlib.asynccontextmanager
    async def __call__(self, delay: float) -> Any:
        with self.deadlines.within(delay):
            yield


def run(case: Callable[[Bound], Any]) -> tuple[Any, Any]:
    """The case's outcome under asyncio.timeout and under shared deadlines."""
    async def both() -> tuple[Any, Any]:
        return await case(asyncio.timeout), await case(Shared())
    return uvloop.run(both())


async def outcome(bound: Bound, delay: float, wait: asyncio.Future[None] | float) -> str:
    task = asyncio.current_task()
    assert task is not None
    try:
        async with bound(delay):
            if isinstance(wait, float):
                await asyncio.sleep(wait)
            else:
                await wait
        result = "done"
    except TimeoutError:
        result = "timeout"
    return f"{result}, cancelling={task.cancelling()}"


def test_a_block_past_its_deadline_raises_timeout_error_and_leaves_the_task_uncancelled() -> None:
    async def case(bound: Bound) -> str:
        return await asyncio.create_task(outcome(bound, 0.01, asyncio.get_running_loop().create_future()))
    assert run(case) == ("timeout, cancelling=0", "timeout, cancelling=0")


def test_a_block_that_ends_in_time_is_not_interrupted_and_no_later_cancel_reaches_the_task() -> None:
    async def case(bound: Bound) -> list[str]:
        async def after() -> list[str]:
            first = await outcome(bound, 0.05, 0.0)
            await asyncio.sleep(0.1)  # past where the deadline was: nothing may cancel this sleep
            return [first, "slept"]
        return await asyncio.create_task(after())
    assert run(case) == (["done, cancelling=0", "slept"], ["done, cancelling=0", "slept"])


def test_a_cancellation_from_elsewhere_passes_through_as_cancelled_error() -> None:
    async def case(bound: Bound) -> str:
        started = asyncio.Event()

        async def held() -> None:
            async with bound(30.0):
                started.set()
                await asyncio.get_running_loop().create_future()
        task = asyncio.create_task(held())
        await started.wait()
        task.cancel("the agent went away")
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "not cancelled"
    assert run(case) == ("cancelled", "cancelled")


def test_a_cancellation_caught_before_the_block_counts_as_before_it() -> None:
    """The task caught a cancellation before the block (cancelling() is 1 on entry); the block's deadline fires:
    a TimeoutError, as asyncio.timeout measures it against the count on entry."""
    async def case(bound: Bound) -> str:
        async def body() -> str:
            task = asyncio.current_task()
            assert task is not None
            with contextlib.suppress(asyncio.CancelledError):  # caught, still pending (cancelling() == 1)
                await asyncio.get_running_loop().create_future()
            try:
                async with bound(0.01):
                    await asyncio.get_running_loop().create_future()
            except TimeoutError:
                return "timeout"
            except asyncio.CancelledError:
                return f"cancelled, cancelling={task.cancelling()}"
            return "done"
        task = asyncio.create_task(body())
        await asyncio.sleep(0)
        task.cancel()
        return await task
    assert run(case) == ("timeout", "timeout")


def test_among_many_concurrent_calls_only_the_overdue_ones_are_cancelled() -> None:
    """Calls of two delays start interleaved; the short ones are held past their deadline, the long ones end in
    time (each on its own future, set once every short one has timed out)."""
    async def case(bound: Bound) -> list[str]:
        loop = asyncio.get_running_loop()
        releases = [loop.create_future() for _ in range(20)]
        tasks = []
        for index, release in enumerate(releases):
            delay = 0.02 if index % 2 == 0 else 30.0
            tasks.append(asyncio.create_task(outcome(bound, delay, release)))
        short = tasks[0::2]
        await asyncio.wait(short)
        for release in releases:
            if not release.done():
                release.set_result(None)
        return [await task for task in tasks]
    expected = ["timeout, cancelling=0" if index % 2 == 0 else "done, cancelling=0" for index in range(20)]
    assert run(case) == (expected, expected)


def test_deadlines_keep_no_timer_and_no_entry_once_every_call_ended() -> None:
    async def case() -> tuple[int, int, int, int]:
        deadlines = Deadlines()
        for _ in range(100):
            with deadlines.within(0.01):
                await asyncio.sleep(0)
        running = len(deadlines.queues[0.01])
        await asyncio.sleep(0.05)  # the one timer fires, finds nothing due, and is not re-armed
        try:
            with deadlines.within(0.01):
                await asyncio.sleep(1.0)
        except TimeoutError:
            pass
        return running, len(deadlines.timers), len(deadlines.queues), len(deadlines.queues.get(0.01, {}))
    assert uvloop.run(case()) == (0, 0, 0, 0)


def test_a_deadline_outside_a_task_is_refused() -> None:
    with pytest.raises(RuntimeError), Deadlines().within(1.0):
        pass


class _Waiting:
    """A call still waiting in a queue: only its place matters to a sweep (review finding)."""

    __slots__ = ("expired",)

    def __init__(self) -> None:
        self.expired = False

    def expire(self) -> None:
        self.expired = True


def test_a_sweep_touches_only_the_due_calls_and_copies_nothing_of_the_rest() -> None:
    """A hung upstream makes the timer fire about once per timed-out call: a sweep that copied every waiting
    call would cost the loop O(calls in flight) per firing. Counted in bytes allocated, not in time."""

    async def sweep_allocates(waiting: int) -> tuple[int, int]:
        deadlines = Deadlines()
        loop = asyncio.get_running_loop()
        now = loop.time()
        calls = [_Waiting() for _ in range(waiting)]
        # The first call is overdue; the rest wait far ahead (a queue is oldest first).
        queue: dict[Any, float] = {call: (now - 1.0 if i == 0 else now + 10 + i) for i, call in enumerate(calls)}
        deadlines.queues[30.0] = queue
        deadlines.loop = loop
        deadlines.timers[30.0] = loop.call_at(now + 100, lambda: None)  # the handle the sweep replaces
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        deadlines.sweep(30.0)
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        deadlines.timers.pop(30.0).cancel()
        return peak, sum(call.expired for call in calls)

    small_peak, small_expired = uvloop.run(sweep_allocates(100))
    big_peak, big_expired = uvloop.run(sweep_allocates(20_000))
    assert small_expired == big_expired == 1
    assert big_peak < small_peak + 4096, (small_peak, big_peak)


def test_a_deadline_fires_on_a_later_loop_after_an_earlier_loop_closed_with_its_timer_pending() -> None:
    """One Deadlines used on two loops in turn (a test, or an upstream object reused): the first loop's timer
    handle, left pending when it closed, must not stop the second loop's calls from timing out."""
    deadlines = Deadlines()

    async def ends_in_time() -> None:
        with deadlines.within(0.05):  # the same delay as below: one timer per delay
            await asyncio.sleep(0)

    async def outlives_its_deadline() -> str:
        async with asyncio.timeout(5) as net:  # a safety net: the deadline must fire long before it
            try:
                with deadlines.within(0.05):
                    await asyncio.sleep(60)
            except TimeoutError:
                return "the deadline fired"
        return "the net fired" if net.expired() else "nothing fired"

    uvloop.run(ends_in_time())
    assert uvloop.run(outlives_its_deadline()) == "the deadline fired"
