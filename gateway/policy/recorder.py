"""Records what Cedar saw for every decision, for what-if replay (`narrowgate policy replay`).

On the request path the recorder only keeps references to what the engine already built (the Cedar
request, its entities, the request facts and the decision) in a bounded queue: no serializing, no
encryption, no I/O, nothing that can fail a call. A writer task takes the queue every
BATCH_WINDOW_S, builds the documents (gateway.policy.engine.PolicyEngine.recorded_json) and
encrypts them SEAL_CHUNK at a time on the loop, letting calls run between chunks, and appends
them in one store transaction; what is noted meanwhile waits for the next window. Not on a worker
thread: cryptography's AES-GCM lets go of the GIL for every record it encrypts, and a thread taking
it back while the loop runs made the loop wait for it about once every other call
(docs/performance-cuts.md, "Fourth pass"). A full queue or a failed write loses recordings, never a
call: each loss is counted and logged (the first and every LOG_EVERY-th). A sweep deletes what is
older than the retention window; with retention 0 nothing is recorded and whatever was recorded
before is deleted at start.

Decisions refused before Cedar was asked (a tool the policy catalog does not know, arguments that do
not fit the tool's schema, a URI with no single meaning) are recorded as such: no policy set can
change them, and replay reports them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from gateway.identity.principal import Principal
from gateway.policy.engine import CedarRequest, Decision, PolicyEngine
from gateway.policy.recorded import InputCipher
from gateway.store.base import DELETE_CHUNK, DecisionInputRow, DecisionInputStore, GatewaySecretStore

log = logging.getLogger("narrowgate.policy.recorder")

# A store that hangs (not one that fails: a failed batch is dropped at once) lets the queue grow: each noted
# decision holds a few KB (its context and Cedar request), so the bound keeps that to tens of MB.
MAX_PENDING = 10_000
BATCH_WINDOW_S = 0.5  # recordings gather this long, so one transaction carries many
MAX_BATCH = 2_000
SEAL_CHUNK = 32  # records built and encrypted between two turns of the loop: about 0.4 ms (12 µs each, hot)
LOG_EVERY = 1_000
SWEEP_MAX_INTERVAL_S = 3600.0
SWEEP_MIN_INTERVAL_S = 1.0


class RecorderStore(DecisionInputStore, GatewaySecretStore, Protocol):
    """What the recorder needs of the state store."""


class Noted(NamedTuple):
    """One decision as the request path hands it over: references only, nothing built yet (a tuple: the
    cheapest record to make per call)."""

    principal: Principal
    decision: Decision
    kind: str
    target: str
    at: float  # the request time the decision was made at
    request: CedarRequest | None  # None: refused before Cedar was asked
    data_classes: tuple[str, ...]  # the tool's, so replay examples are redacted as the console redacts them


class DecisionRecorder:
    """Use from the event loop's thread (note); the writer and the sweep run as tasks of it."""

    def __init__(self, store: RecorderStore, engine: PolicyEngine, retention_s: float,
                 clock: Callable[[], float] = time.time, *, batch_window_s: float = BATCH_WINDOW_S,
                 max_pending: int = MAX_PENDING, sweep_chunk: int = DELETE_CHUNK) -> None:
        self.store = store
        self.engine = engine
        self.retention_s = retention_s
        self.enabled = retention_s > 0
        self.cipher = InputCipher()
        self._clock = clock
        self._batch_window_s = batch_window_s
        self._max_pending = max_pending
        self._sweep_chunk = sweep_chunk
        self._pending: deque[Noted] = deque()
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()  # one batch at a time: taken off the queue and written under it
        self._writes: set[asyncio.Task[None]] = set()  # batches being written (the loop holds tasks weakly)
        self._taken = 0  # records taken off the queue, ever
        self._settled = 0  # of those, written or lost (and counted)
        self.recorded = 0
        self.lost = 0  # queue full or a failed write: counted, logged, never a failed call
        self.swept = 0

    # the request path

    def note(self, principal: Principal, decision: Decision, kind: str, target: str, at: float,
             seen: Sequence[CedarRequest] | None, data_classes: tuple[str, ...] = ()) -> None:
        """Remember one decision for recording. Never blocks, never raises."""
        if not self.enabled:
            return
        if len(self._pending) >= self._max_pending:
            self._lose(1, "the recording queue is full")
            return
        self._pending.append(Noted(principal, decision, kind, target, at, seen[0] if seen else None, data_classes))
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.is_set():
            wakeup.set()

    def cutoff(self, now: float | None = None) -> float:
        """Inputs recorded before this time are past retention (deleted, or about to be). Recording off: none
        are (what is missing was never recorded)."""
        return (self._clock() if now is None else now) - self.retention_s if self.enabled else -math.inf

    # start and stop

    async def open(self) -> None:
        await self.cipher.load(self.store)
        if not self.enabled:
            # Recording off: what was recorded while it was on is not kept for good.
            await self._sweep_once()
            return
        self._wakeup = asyncio.Event()
        if self._pending:
            self._wakeup.set()
        self._tasks = [asyncio.create_task(self._write_loop(), name="narrowgate-decision-recorder"),
                       asyncio.create_task(self._sweep_loop(), name="narrowgate-decision-input-sweep")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        # A batch in flight (a task of its own: the cancel above does not stop it) and everything queued still go
        # in, in the order taken (the store closes after the recorder): the lock is handed on first come, first
        # served, so once it is free and the queue empty, every write started before has ended.
        while self._pending or self._write_lock.locked():
            await self._write_batch()

    async def flush(self) -> None:
        """Return once everything noted before the call is written (or lost, and counted): the batches in hand
        included, whoever took them (the replay API settles the window with this; tests and benchmarks too).
        Each batch is written by a task of its own, so a flush cancelled half-way loses nothing."""
        target = self._taken + len(self._pending)
        while self._settled < target:
            if self._pending:
                await asyncio.wait([self._write()])
            elif self._write_lock.locked():  # the rest is a batch another writer took: until it is in
                async with self._write_lock:
                    pass
            else:
                return  # (the rest was taken off the queue by something else, as bench/records_instr.py does)

    # the writer

    def _write(self) -> asyncio.Task[None]:
        """A batch written by a task of its own: whoever waits for it may be cancelled, the write goes on."""
        task = asyncio.create_task(self._write_batch())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    async def _write_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(self._batch_window_s)
            # What gathered in the window, and no more: what is noted while it is written waits for the next
            # window (writing that at once made batches of the few calls one write took, one commit each).
            for _ in range(math.ceil(len(self._pending) / MAX_BATCH)):
                await asyncio.wait([self._write()])  # (cancelling the loop, as close does, lets the batch finish)

    async def _write_batch(self) -> None:
        async with self._write_lock:  # (a batch taken after another is written after it)
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_BATCH))]
            self._taken += len(batch)
            if batch:
                try:
                    await self._seal_and_append(batch)
                finally:  # written, or lost and counted: settled either way
                    self._settled += len(batch)

    async def _seal_and_append(self, batch: list[Noted]) -> None:
        try:
            rows: list[DecisionInputRow] = []
            for start in range(0, len(batch), SEAL_CHUNK):
                if start:
                    await asyncio.sleep(0)  # calls waiting on the loop go first
                rows += self._rows(batch[start:start + SEAL_CHUNK])
            await self.store.append_decision_inputs(rows)
        except asyncio.CancelledError:  # not an Exception: counted all the same
            self._lose(len(batch), "stopped while writing")
            raise
        except Exception as exc:  # recording is best effort: the calls were decided and answered already
            self._lose(len(batch), f"{type(exc).__name__}: {exc}")
            return
        self.recorded += len(rows)

    def _rows(self, batch: list[Noted]) -> list[DecisionInputRow]:
        """Build and encrypt each document (on the loop, a chunk at a time: _write_batch)."""
        payloads = self.cipher.seal_all([(noted.decision.decision_id, self._document(noted)) for noted in batch])
        return [DecisionInputRow(noted.decision.decision_id, noted.at, noted.principal.agent_id, noted.kind,
                                 noted.target, noted.decision.outcome, payload)
                for noted, payload in zip(batch, payloads, strict=True)]

    def _document(self, noted: Noted) -> dict[str, Any]:
        decision, principal = noted.decision, noted.principal
        cedar: dict[str, Any] = ({"kind": noted.kind, "target": noted.target, "before_policy": True}
                                 if noted.request is None else self.engine.recorded_json(noted.request))
        return {
            **cedar,
            "decision_id": decision.decision_id,
            "at": noted.at,
            "agent_id": principal.agent_id,
            "agent_version": principal.agent.changed_at if principal.agent is not None else None,
            "task_id": principal.task_id,
            # (tuples as they are: orjson writes them as the arrays the lists were)
            "live": {"outcome": decision.outcome, "policy_ids": decision.policy_ids,
                     "policy_version": decision.policy_version},
            "arguments": decision.canonical_arguments,
            "data_classes": noted.data_classes,
        }

    def _lose(self, count: int, why: str) -> None:
        before = self.lost
        self.lost += count
        if before == 0 or before // LOG_EVERY != self.lost // LOG_EVERY:
            log.error("decision input recording lost %d so far (%s); the calls were not affected", self.lost, why)

    # retention

    async def _sweep_loop(self) -> None:
        interval = min(max(self.retention_s / 24, SWEEP_MIN_INTERVAL_S), SWEEP_MAX_INTERVAL_S)
        while True:
            await self._sweep_once()
            await asyncio.sleep(interval)

    async def _sweep_once(self) -> None:
        before = self.cutoff() if self.enabled else self._clock() + 1
        deleted = 0
        try:
            while True:  # in chunks, letting the writer and other store users in between
                chunk = await self.store.delete_decision_inputs(before, self._sweep_chunk)
                deleted += chunk
                self.swept += chunk
                if chunk < self._sweep_chunk:
                    break
                await asyncio.sleep(0)
        except Exception as exc:  # the next sweep tries again; replay treats old rows as expired meanwhile
            log.error("deleting expired decision inputs failed: %s: %s", type(exc).__name__, exc)
        if deleted:
            log.info("deleted %d decision input(s) past retention", deleted)

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "retention_s": self.retention_s, "pending": len(self._pending),
                "recorded": self.recorded, "lost": self.lost, "swept": self.swept}
