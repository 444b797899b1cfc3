"""bench.threads reads each thread's CPU from /proc and charges it per call to the thread that spent it."""

from __future__ import annotations

import os
import threading

from bench.cpu import CLK_TCK
from bench.threads import ThreadTicks, per_call_rows, thread_ticks


def test_each_thread_is_charged_what_it_spent_in_the_phase_busiest_first() -> None:
    before: ThreadTicks = {"1": ("loop", 10, 5), "2": ("writer", 3, 3)}
    after: ThreadTicks = {"1": ("loop", 20, 5), "2": ("writer", 3, 3), "3": ("new", 0, 2)}
    tick = 1e6 / CLK_TCK / 10
    assert per_call_rows(before, after, calls=10) == [("1 loop", 10 * tick, 0.0), ("3 new", 0.0, 2 * tick)]


def test_a_live_thread_that_spins_is_seen_spending_user_time() -> None:
    before = thread_ticks(os.getpid())
    seen: dict[str, ThreadTicks] = {}

    def spin() -> None:
        mine = str(threading.get_native_id())
        total = 0
        while thread_ticks(os.getpid())[mine][1] - before.get(mine, ("", 0, 0))[1] < 3:
            total += sum(range(10_000))  # user time, between the reads
        seen["after"] = thread_ticks(os.getpid())  # while this thread still has its /proc entry
        seen["mine"] = {mine: ("", total, 0)}

    busy = threading.Thread(target=spin)
    busy.start()
    busy.join()
    (mine,) = seen["mine"]
    rows = {thread.split()[0]: user for thread, user, _ in per_call_rows(before, seen["after"], calls=1)}
    assert rows[mine] >= 3 * 1e6 / CLK_TCK
