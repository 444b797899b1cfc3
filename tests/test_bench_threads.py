"""bench.threads reads each thread's CPU and context switches from /proc and charges them per call to the thread
that spent them."""

from __future__ import annotations

import os
import threading
import time

from bench.cpu import CLK_TCK
from bench.threads import Row, ThreadTicks, Ticks, per_call_rows, thread_ticks


def test_each_thread_is_charged_what_it_spent_in_the_phase_busiest_first() -> None:
    before: ThreadTicks = {"1": Ticks("loop", 10, 5, 100, 7), "2": Ticks("writer", 3, 3, 40, 0)}
    after: ThreadTicks = {"1": Ticks("loop", 20, 5, 104, 8), "2": Ticks("writer", 3, 3, 45, 0),
                          "3": Ticks("new", 0, 2, 3, 0)}
    tick = 1e6 / CLK_TCK / 10
    assert per_call_rows(before, after, calls=10) == [Row("1 loop", 10 * tick, 0.0, 0.4, 0.1),
                                                      Row("3 new", 0.0, 2 * tick, 0.3, 0.0)]


def test_a_live_thread_that_spins_is_seen_spending_user_time() -> None:
    before = thread_ticks(os.getpid())
    seen: dict[str, ThreadTicks] = {}

    def spin() -> None:
        mine = str(threading.get_native_id())
        total = 0
        while thread_ticks(os.getpid())[mine].user - before.get(mine, Ticks("", 0, 0)).user < 3:
            total += sum(range(10_000))  # user time, between the reads
        seen["after"] = thread_ticks(os.getpid())  # while this thread still has its /proc entry
        seen["mine"] = {mine: Ticks("", total, 0)}

    busy = threading.Thread(target=spin)
    busy.start()
    busy.join()
    (mine,) = seen["mine"]
    rows = {row.thread.split()[0]: row.user_us for row in per_call_rows(before, seen["after"], calls=1)}
    assert rows[mine] >= 3 * 1e6 / CLK_TCK


def test_a_live_thread_that_blocks_is_seen_waiting() -> None:
    before = thread_ticks(os.getpid())
    seen: dict[str, ThreadTicks] = {}

    def block_then_spin() -> None:
        mine = str(threading.get_native_id())
        for _ in range(20):
            time.sleep(0.001)  # each one gives the CPU up: a voluntary context switch
        while thread_ticks(os.getpid())[mine].user - before.get(mine, Ticks("", 0, 0)).user < 1:
            sum(range(10_000))  # one tick of user time, so the phase counts the thread at all
        seen["after"] = thread_ticks(os.getpid())
        seen["mine"] = {mine: Ticks("", 0, 0)}

    busy = threading.Thread(target=block_then_spin)
    busy.start()
    busy.join()
    (mine,) = seen["mine"]
    rows = {row.thread.split()[0]: row for row in per_call_rows(before, seen["after"], calls=1)}
    assert rows[mine].waits >= 20
