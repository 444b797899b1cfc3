"""The audit log writer: callers enqueue events without waiting; one task writes them in order.

Group commit: the writer takes whatever is queued (up to max_batch) into one store transaction,
so under load many records share one fsync, and a caller that needs durability
(`record_durable`) waits for the commit that contains its record, never for a disk write of its own.

Failures are loud and never lose what is queued: the batch stays at the head of the queue and is
retried with back-off, every waiter gets AuditUnavailable, and while the store keeps failing
`record_durable` refuses at once (so the caller fails closed without waiting for a retry).
The queue is bounded; past the bound new records are dropped, counted and logged as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable

from gateway.audit.chain import GENESIS_HASH
from gateway.audit.model import AuditEvent, AuditUnavailable
from gateway.audit.prepared import PreparedRecord, prepared_record
from gateway.store.base import AuditStore

log = logging.getLogger("narrowgate.audit")

MAX_PENDING = 100_000
MAX_BATCH = 500
# How long ordinary records may wait to share a commit (nobody is waiting on them).
GROUP_WINDOW_S = 0.02
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
CLOSE_TIMEOUT_S = 10.0


class AuditLog:
    """Appends AuditEvents to the store's hash-chained audit log. Use from the event loop's thread."""

    def __init__(
        self,
        store: AuditStore,
        clock: Callable[[], float] = time.time,
        *,
        max_pending: int = MAX_PENDING,
        max_batch: int = MAX_BATCH,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
        digests: Callable[[str], str] | None = None,
    ) -> None:
        self._store = store
        # gateway.audit.digests.DigestKey.keyed: argument digests are written keyed, never plain.
        self._digests = digests
        self._clock = clock
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._tickets = itertools.count(1)  # enqueue order; a waiter is done once its ticket is committed
        self._last_ticket = 0
        self._pending: deque[tuple[int, PreparedRecord]] = deque()
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()  # someone waits for a commit: stop gathering and write
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._failing: str | None = None  # why the last write failed; None while writes succeed
        self.head: tuple[int, str] = (0, GENESIS_HASH)  # (seq, hash) of the last record committed
        self.written = 0
        self.dropped = 0

    @property
    def healthy(self) -> bool:
        return self._failing is None and not self._closing

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def open(self) -> None:
        """Read the chain head and start the writer; raises the store's error if the log is unreadable."""
        self.head = await self._store.audit_head()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="narrowgate-audit-writer")
            if self._pending:
                self._wakeup.set()

    def record(self, event: AuditEvent) -> None:
        """Enqueue `event`; it is written soon, in order. Never blocks, never raises for storage trouble."""
        self._enqueue(event)

    async def record_durable(self, event: AuditEvent) -> None:
        """Return only once `event`, and everything enqueued before it, is committed to disk.

        Raises AuditUnavailable when that cannot be done now; the record then stays queued and
        is written once the store recovers, so a caller that changes its outcome (denies the call)
        should record that too.
        """
        ticket = self._enqueue(event)
        if ticket is None:
            raise AuditUnavailable("the audit log is not accepting records (closed or queue full)")
        if self._failing is not None:
            raise AuditUnavailable(f"the audit store is failing: {self._failing}")
        await self._wait_for(ticket)

    async def flush(self) -> None:
        """Wait until everything enqueued so far is committed; AuditUnavailable if a write fails meanwhile."""
        if self._pending:
            await self._wait_for(self._last_ticket)

    async def close(self) -> None:
        """Flush, then stop the writer. Records that cannot be written in time are reported as lost."""
        if self._closing:
            return
        with contextlib.suppress(AuditUnavailable, TimeoutError):  # what is left is reported below
            await asyncio.wait_for(self.flush(), CLOSE_TIMEOUT_S)
        self._closing = True
        self._wakeup.set()
        self._urgent.set()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._pending:
            log.error("audit log closed with %d record(s) not written (seq after %d): %s",
                      len(self._pending), self.head[0], self._failing or "writer stopped")
        self._fail_waiters(AuditUnavailable("the audit log is closed"))

    # enqueueing and waiting

    def _enqueue(self, event: AuditEvent) -> int | None:
        if self._closing:
            self._drop("the audit log is closed")
            return None
        if len(self._pending) >= self._max_pending:
            self._drop(f"{len(self._pending)} records are waiting to be written")
            return None
        # Serialized here, once (a snapshot of the event's values); the writer only adds seq, prev_hash and the hash.
        record = prepared_record(event, self._clock(), self._digests)
        ticket = next(self._tickets)
        self._pending.append((ticket, record))
        self._last_ticket = ticket
        self._wakeup.set()
        return ticket

    def _drop(self, why: str) -> None:
        self.dropped += 1
        # Every drop is an error, but a flood of identical lines helps nobody: log the first and every 1000th.
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.error("audit record dropped (%d so far): %s", self.dropped, why)

    async def _wait_for(self, ticket: int) -> None:
        if self._writer is None:
            raise AuditUnavailable("the audit log is not open")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, future))
        self._urgent.set()
        await future

    def _resolve_waiters(self, committed_ticket: int) -> None:
        while self._waiters and self._waiters[0][0] <= committed_ticket:
            _, future = self._waiters.popleft()
            if not future.done():  # the caller may have been cancelled meanwhile
                future.set_result(None)

    def _fail_waiters(self, error: AuditUnavailable) -> None:
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)

    # the writer

    async def _write_loop(self) -> None:
        delay = self._retry_first_s
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather_batch()
            if await self._write_batch():
                delay = self._retry_first_s
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)

    async def _gather_batch(self) -> None:
        """Let ordinary records gather for a moment, so one commit (one fsync) carries many of them.

        Nobody waits on an ordinary record; a durable one (or a flush) ends the wait at once.
        """
        if self._waiters or self._closing or len(self._pending) >= self._max_batch:
            return
        self._urgent.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._urgent.wait(), GROUP_WINDOW_S)

    async def _write_batch(self) -> bool:
        batch = list(itertools.islice(self._pending, self._max_batch))
        try:
            self.head = await self._store.append_audit([record for _, record in batch])
        except Exception as exc:  # any failure: the records stay queued, nothing is silent
            self._on_write_failure(exc)
            return False
        for _ in batch:
            self._pending.popleft()
        self.written += len(batch)
        if self._failing is not None:
            log.warning("audit log writable again; %d queued record(s) written", len(batch))
            self._failing = None
        self._resolve_waiters(batch[-1][0])
        return True

    def _on_write_failure(self, exc: Exception) -> None:
        first = self._failing is None
        self._failing = f"{type(exc).__name__}: {exc}"
        log.error("audit log write failed (%d record(s) queued, %s): %s", len(self._pending),
                  "will retry" if first else "still failing", self._failing)
        self._fail_waiters(AuditUnavailable(f"audit write failed: {self._failing}"))


__all__ = ["AuditLog", "AuditUnavailable"]  # AuditUnavailable is re-exported: callers catch it from here
