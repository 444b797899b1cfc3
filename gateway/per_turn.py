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

A caller resumes after the rest of its turn and one more pass of the loop (about 3 µs a call in a uvloop loop
with nothing else to do). A caller cancelled before the callback runs has its work skipped: nothing is done for
a request nobody waits for. Whatever the work raises reaches its own caller only (a StopIteration as a
RuntimeError, which a future can hold); when a SystemExit or KeyboardInterrupt goes on out of the callback, the
callers left in the turn are cancelled rather than left waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, cast

T = TypeVar("T")
Args = TypeVarTuple("Args")
Queued = list[tuple["asyncio.Future[object]", Callable[..., object], tuple[object, ...]]]


class PerTurn:
    """One queue of work per stage that uses it, for one event loop at a time; use from that loop's thread."""

    __slots__ = ("_loop", "_queued")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued: Queued = []  # this turn's, handed to the callback scheduled with it

    def run(self, work: Callable[[*Args], T], *args: *Args) -> asyncio.Future[T]:
        """`work(*args)` done with the rest of this turn's work, after the tasks ready in this turn have run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queued or self._loop is not loop:
            # The turn's first: a queue of its own (one left by a loop that stopped before its callback ran
            # stays with that callback, never delaying this loop's work).
            self._loop, self._queued = loop, []
            loop.call_soon(self._finish_turn, self._queued)
        self._queued.append((cast("asyncio.Future[object]", future), work, args))  # (each T is its caller's)
        return future

    def _finish_turn(self, queued: Queued) -> None:
        if self._queued is queued:
            self._queued = []  # work asked for from here on is the next turn's
        for index, (future, work, args) in enumerate(queued):
            if future.done():  # its caller was cancelled meanwhile
                continue
            try:
                future.set_result(work(*args))
            except BaseException as exc:  # to its own caller, as a direct call would have raised it
                future.set_exception(future_error(exc))
                if isinstance(exc, SystemExit | KeyboardInterrupt):  # the process stops: nobody left waiting
                    for rest, _, _ in queued[index + 1:]:
                        rest.cancel()
                    raise

def future_error(exc: BaseException) -> BaseException:
    """`exc` as a future may hold it: a StopIteration would end the awaiting coroutine's frame as a return, so a
    future refuses one (asyncio turns a coroutine's into RuntimeError the same way)."""
    if isinstance(exc, StopIteration):
        error = RuntimeError(f"{type(exc).__name__} raised by work done per turn")
        error.__cause__ = exc
        return error
    return exc
