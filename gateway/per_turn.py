"""Work asked for during one turn of the event loop, done back to back once the turn's ready tasks have run.

Under load one turn of the loop serves several requests, each running its stages up to its first wait before
the next one starts. An ES256 signature, done that way once per request with the rest of a request's work in
between, finds its code and tables (the P-256 base point table alone is about 150 KB) gone from the CPU's
caches each time: in a gateway at 16 agents it took 44 µs of CPU on average, against 22 µs in a loop of
signatures in the same process. `PerTurn.run` queues the work and hands back a future; the first piece queued
in a turn schedules one callback, which the loop runs after every task already ready in that turn, and which
does all of the turn's work in the order asked, each result (or exception) to its own future. The callers then
carry on together as well: the credential stage's calls send their upstream requests back to back, and the
upstream, then the gateway on the replies, take several per wake-up, spending less CPU a call in the kernel and
in the upstream (docs/performance-cuts.md, "Sixth pass").

A caller gives up one turn of the loop (a few µs) before its result. A caller cancelled before the callback
runs has its work skipped: nothing is done for a request nobody waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class PerTurn:
    """One queue of work per stage that uses it; use from the event loop's thread."""

    __slots__ = ("_queued",)

    def __init__(self) -> None:
        self._queued: list[tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def run(self, work: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`work(*args)` done with the rest of this turn's work, after the tasks ready in this turn have run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._do_queued)
        self._queued.append((future, work, args))
        return future

    def _do_queued(self) -> None:
        queued, self._queued = self._queued, []
        for future, work, args in queued:
            if future.cancelled():  # its caller went away
                continue
            try:
                future.set_result(work(*args))
            except Exception as exc:  # the caller's, as a direct call would have raised it
                future.set_exception(exc)
