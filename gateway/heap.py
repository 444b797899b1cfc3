"""Keep the collector's full walks off reloads: freeze long-lived objects when they are made.

A full garbage collection walks every tracked object that is not frozen, holding the GIL: with
3,000 sessions open and a 5,000-tool catalog that was 0.3-0.5 s during a policy reload (the compile
allocates enough to trigger one, on whichever thread allocates, and the loop waits). So around
each swap of long-lived state (a policy set compiled, an upstream directory rebuilt) `settle()`
collects the young generations (cheap) and freezes what survived: sessions opened since, the new
bundle, the new directory. Later full collections walk only what was made after that.

The price: an object that was frozen and later becomes part of a garbage cycle (e.g. a closed
session) is only freed by a walk of everything. `compact()` does that walk (unfreeze, collect,
freeze); the gateway runs it at start and then at most every COMPACT_INTERVAL_S, and only when
something was frozen since the last one, so leaked cycles live at most that long. Objects freed
by reference counting (a replaced bundle, directory or catalog: none of them is cyclic) are freed
at once, frozen or not.

Young collections: at CPython's default (one per 700 more container objects made than freed) a gateway
under load ran one every ~20 calls, and each walked everything the calls in flight and the writers' pending
batches held: 13 µs of CPU per call at 16 agents, ~2 % of it. `collect_young_less_often()` raises the threshold to
YOUNG_THRESHOLD, which cuts that to under 1 µs; a young collection then walks at most that many more
objects (~1-2 ms, once in thousands of calls). Cycles wait for it no longer than they would in a
full-size heap, and the memory they hold meanwhile is bounded by the same count.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("narrowgate.heap")

COMPACT_INTERVAL_S = 600.0
YOUNG_THRESHOLD = 10_000  # containers made and not yet freed before a young collection (CPython: 700)


class Heap:
    def __init__(self) -> None:
        self.settled_since_compact = 0
        self.last_compact_s = 0.0
        self.last_compact_took_s = 0.0

    def collect_young_less_often(self) -> None:
        """Young collections at YOUNG_THRESHOLD rather than CPython's 700; the older generations' own
        thresholds (how many younger collections between theirs) are kept."""
        _, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)

    def settle(self) -> None:
        """Collect the young generations and freeze the survivors (cheap: the freeze links lists)."""
        gc.collect(1)
        gc.freeze()
        self.settled_since_compact += 1

    def compact(self) -> None:
        """A full collection over everything, frozen included; then freeze the survivors again."""
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.last_compact_took_s = time.perf_counter() - started
        self.last_compact_s = time.monotonic()
        self.settled_since_compact = 0
        log.debug("heap compacted in %.0f ms: %d objects frozen", self.last_compact_took_s * 1000,
                  gc.get_freeze_count())

    async def compact_now_and_then(self, interval_s: float = COMPACT_INTERVAL_S) -> None:
        """Background task: free the cycles frozen since the last compaction, at most once per interval."""
        while True:
            await asyncio.sleep(interval_s)
            if self.settled_since_compact:
                self.compact()


HEAP = Heap()  # one process, one collector
