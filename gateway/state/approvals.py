"""Open approval requests (pending, or granted and not yet used) and the calls held waiting on them."""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable


class Identified(Protocol):
    @property
    def id(self) -> str: ...


ApprovalT = TypeVar("ApprovalT", bound=Identified)


class OpenApprovalsUnreachable(Exception):
    """The shared open requests could not be read (`values(strict=True)`)."""


@runtime_checkable
class OpenApprovals(Protocol[ApprovalT]):
    """Open requests by id, read on the call path without touching disk (the store has every row).

    `pop` is the claim: of two concurrent pops of one id, one gets the request and the other None, so an
    approval is used (or closed) once. `put` writes only what its caller read: a new request only if no
    request of its id is open, a change only if the open one is still `replacing` (compare-and-set), so a
    decision never revives a request cancelled meanwhile. A shared implementation expires entries with
    the request and, when unreachable, answers with nothing open (`get` None, `values` empty, `put` and
    `pop` refused): a call then asks again; it is never allowed on a request it cannot see.
    """

    async def get(self, approval_id: str) -> ApprovalT | None: ...

    async def put(self, approval: ApprovalT, replacing: ApprovalT | None = None) -> bool:
        """Open `approval` (replacing None) or change it from `replacing`; True if it was written."""
        ...

    async def pop(self, approval_id: str) -> ApprovalT | None: ...

    async def values(self, strict: bool = False) -> list[ApprovalT]:
        """The open requests; `strict`: raise OpenApprovalsUnreachable rather than answer "none" when
        they cannot be read (a canceller must know it has not seen them)."""
        ...

    async def count(self) -> int: ...


@runtime_checkable
class ApprovalWaiters(Protocol):
    """Calls held on a request, and the wake-up when it changes.

    `hold_begins`/`hold_ends` count the held calls of this process (a request no call waits on and
    no agent was told to retry is abandoned); `wait` returns when `wake` is called for the request
    (in any process, with a shared implementation: pub/sub) or after `timeout_s`. A missed wake-up
    only delays the waiter to its next keepalive slice, when it re-reads the request.
    """

    def hold_begins(self, approval_id: str) -> None: ...

    def hold_ends(self, approval_id: str) -> bool:
        """One held call stopped waiting; True when none is left."""
        ...

    def is_held(self, approval_id: str) -> bool: ...

    async def wait(self, approval_id: str, timeout_s: float) -> None: ...

    def wake(self, approval_id: str) -> None: ...
