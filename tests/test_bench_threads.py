"""bench.threads reads each thread's CPU from /proc and charges it per call to the thread that spent it."""

from __future__ import annotations

import os
import threading

from bench.threads import ThreadTicks, per_call_rows, thread_ticks


def test_a_busy_thread_is_charged_its_own_cpu_and_an_idle_one_nothing() -> None:
    before = thread_ticks(os.getpid())
    done = threading.Event()
    ids: dict[str, str] = {}
    taken: dict[str, ThreadTicks] = {}

    def spin() -> None:
        ids["busy"] = str(threading.get_native_id())
        mine = f"/proc/{os.getpid()}/task/{ids['busy']}/stat"
        while thread_ticks(os.getpid())[ids["busy"]][1] - before.get(ids["busy"], ("", 0, 0))[1] < 3:
            assert os.path.exists(mine)
        taken["after"] = thread_ticks(os.getpid())  # while this thread still has its /proc entry

    idle = threading.Thread(target=done.wait)
    idle.start()
    busy = threading.Thread(target=spin)
    busy.start()
    busy.join()
    idle_id = str(idle.native_id)
    done.set()
    idle.join()
    rows = {thread.split()[0]: (user, system)
            for thread, user, system in per_call_rows(before, taken["after"], calls=10)}
    assert rows[ids["busy"]][0] > 0  # its user ticks, per call
    assert idle_id not in rows  # a thread that spent nothing is not listed
    assert next(iter(rows)) == ids["busy"]  # the busiest thread first
