"""The upstream client's request slots (gateway/upstream/http1.py Slots): asyncio.Semaphore's behaviour.

At most `size` holders; the rest wait and get a slot in arrival order as slots are released; a waiter
cancelled while waiting leaves the queue, and one cancelled just as it was handed a slot passes it on, so
no slot is ever lost or given twice. Run on uvloop, the gateway's loop.
"""

from __future__ import annotations

import asyncio

import uvloop

from gateway.upstream.http1 import Slots


async def acquire(slots: Slots) -> None:
    if not slots.take():
        await slots.wait()


def test_slots_are_handed_out_in_arrival_order_and_never_more_than_the_size() -> None:
    async def case() -> tuple[list[int], int, int]:
        slots = Slots(2)
        order: list[int] = []
        holding = 0
        most = 0

        async def user(n: int) -> None:
            nonlocal holding, most
            await acquire(slots)
            order.append(n)
            holding += 1
            most = max(most, holding)
            await asyncio.sleep(0)
            holding -= 1
            slots.release()

        await asyncio.gather(*(user(n) for n in range(10)))
        return order, most, slots.free
    assert uvloop.run(case()) == (list(range(10)), 2, 2)


def test_a_waiter_cancelled_while_waiting_leaves_the_queue_and_the_next_one_gets_the_slot() -> None:
    async def case() -> tuple[bool, bool, int, int]:
        slots = Slots(1)
        assert slots.take()
        first = asyncio.create_task(acquire(slots))
        second = asyncio.create_task(acquire(slots))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        slots.release()
        await second
        slots.release()
        return first.cancelled(), second.done(), slots.free, len(slots.waiters)
    assert uvloop.run(case()) == (True, True, 1, 0)


def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    """The release sets the waiter's future, then the waiting task is cancelled before it runs: the slot goes to
    the next waiter (or back to the free count), never lost."""
    async def case() -> tuple[bool, bool, int]:
        slots = Slots(1)
        assert slots.take()
        first = asyncio.create_task(acquire(slots))
        second = asyncio.create_task(acquire(slots))
        await asyncio.sleep(0)
        slots.release()  # handed to `first`...
        first.cancel()  # ...which is cancelled before it resumes
        await asyncio.gather(first, return_exceptions=True)
        await second  # got the slot `first` passed on
        slots.release()
        return first.cancelled(), second.done(), slots.free
    assert uvloop.run(case()) == (True, True, 1)
