"""The in-memory implementations small enough to live beside their Protocols (one process only).

The larger ones stay with their stage: transport.sessions.SessionRegistry and StreamLog,
chain.tracker.ChainTracker, credentials.revocations.Revocations, console.sessions.SessionStore and
LoginThrottle, identity.verifier.VerifiedTokenCache.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Generic

from gateway.state.approvals import ApprovalT
from gateway.state.notices import Handler


class InMemoryOpenApprovals(Generic[ApprovalT]):
    def __init__(self) -> None:
        self._open: dict[str, ApprovalT] = {}

    async def get(self, approval_id: str) -> ApprovalT | None:
        return self._open.get(approval_id)

    async def put(self, approval: ApprovalT, replacing: ApprovalT | None = None) -> bool:
        current = self._open.get(approval.id)
        if current is not replacing and (current is None or current != replacing):
            return False  # someone else changed or closed it since `replacing` was read
        self._open[approval.id] = approval
        return True

    async def pop(self, approval_id: str) -> ApprovalT | None:
        return self._open.pop(approval_id, None)

    async def values(self, strict: bool = False) -> list[ApprovalT]:
        return list(self._open.values())

    async def count(self) -> int:
        return len(self._open)


class InMemoryApprovalWaiters:
    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # approval id -> held calls waiting on it in this process
        self._changed: dict[str, asyncio.Event] = {}

    def hold_begins(self, approval_id: str) -> None:
        self._held[approval_id] = self._held.get(approval_id, 0) + 1

    def hold_ends(self, approval_id: str) -> bool:
        left = self._held.get(approval_id, 1) - 1
        if left > 0:
            self._held[approval_id] = left
            return False
        self._held.pop(approval_id, None)
        return True

    def is_held(self, approval_id: str) -> bool:
        return approval_id in self._held

    async def wait(self, approval_id: str, timeout_s: float) -> None:
        event = self._changed.setdefault(approval_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()

    def wake(self, approval_id: str) -> None:
        event = self._changed.pop(approval_id, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """Every waiter reads its request again (wake-ups from elsewhere may have been missed)."""
        for approval_id in list(self._changed):
            self.wake(approval_id)


class LocalNotices:
    """Notices within one process: `publish` runs every handler of the topic, in subscription order."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> None:
        for handler in list(self._handlers.get(topic, ())):
            await handler(payload)
