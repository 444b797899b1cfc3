"""The upstream-token deny list shared by every replica (`RevocationList` on Redis, docs/state.md).

Answers come from a local replica (`credentials.revocations.Revocations`), so `is_revoked` and
`snapshot` stay synchronous and cost no round trip. Redis holds one sorted set per kind (member: the
task id or token id, score: its `until`; a later `until` wins, past entries are dropped as entries are
added) and a channel on which every addition is announced, written by one script per entry.

- `revoke_*` apply locally at once and are written through in the background, retried until Redis
  acknowledges them.
- The reader subscribes first, then loads both sets whole; from then on the local replica is current.
  While it is not (before that, or once the subscription is lost until it is back and reloaded),
  `is_revoked` answers True and `snapshot` raises RevocationListUnavailable: never a list that may
  miss entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from gateway.cluster.connection import Cluster
from gateway.cluster.subscriber import BACKOFF_S, REDIS_FAILURES, Subscription
from gateway.credentials.revocations import Revocations
from gateway.state.revocations import RevocationListUnavailable

log = logging.getLogger("narrowgate")
KINDS = ("task", "jti")
FIRST_LOAD_WAIT_S = 3.0  # start-up waits this long for the first load (refusing every token meanwhile)

# KEYS: the kind's sorted set. ARGV: kind, id, until, now, channel. One round trip per entry.
REVOKE_SCRIPT = """
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local keep = math.ceil(tonumber(ARGV[3]) - tonumber(ARGV[4])) + 1
if redis.call('TTL', KEYS[1]) < keep then redis.call('EXPIRE', KEYS[1], keep) end
redis.call('PUBLISH', ARGV[5], ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. ARGV[2])
return 1
"""


class RedisRevocationList:
    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster, clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.clock = clock
        self.local = Revocations(clock)
        self.current = False  # the local replica holds everything Redis holds, and hears every addition
        self.unwritten: dict[tuple[str, str], float] = {}  # (kind, id) -> until, not yet acknowledged
        self.written = asyncio.Event()  # set when there is something to write
        self.writer: asyncio.Task[None] | None = None
        self.channel = cluster.keys.key("revocations", "added")
        self.script = cluster.redis.register_script(REVOKE_SCRIPT)
        self.subscription = Subscription(cluster, "revocations", channels=(self.channel,),
                                         on_message=self.received, on_subscribed=self.load, on_lost=self.lost)

    def key(self, kind: str) -> str:
        return self.cluster.keys.key("revocations", kind)

    # RevocationList

    def revoke_task(self, task_id: str, until: float) -> None:
        self.local.revoke_task(task_id, until)
        self.write_through("task", task_id, until)

    def revoke_jti(self, jti: str, until: float) -> None:
        self.local.revoke_jti(jti, until)
        self.write_through("jti", jti, until)

    def is_revoked(self, task_id: str | None, jti: str | None = None) -> bool:
        return not self.current or self.local.is_revoked(task_id, jti)

    def snapshot(self) -> dict[str, Any]:
        if not self.current:
            raise RevocationListUnavailable("the shared revocation list is not in sync with Redis")
        return self.local.snapshot()

    def __len__(self) -> int:
        return len(self.local)

    # lifetime (with the Cluster)

    async def start(self) -> None:
        self.subscription.start()
        self.writer = asyncio.create_task(self.write_unwritten(), name="narrowgate-revocations-writer")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_LOAD_WAIT_S):
                await self.subscription.subscribed.wait()
        if not self.current:
            log.error("the shared revocation list is not loaded from Redis yet: every upstream token is refused "
                      "until it is")

    async def stop(self) -> None:
        await self.subscription.stop()
        if self.writer is not None:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer
            self.writer = None
        if self.unwritten:
            log.warning("%d revocation(s) were not written to Redis before the stop", len(self.unwritten))

    # the write-through

    def write_through(self, kind: str, entry_id: str, until: float) -> None:
        if until <= self.clock():
            return
        key = (kind, entry_id)
        self.unwritten[key] = max(until, self.unwritten.get(key, until))
        self.written.set()

    async def write_unwritten(self) -> None:
        failures = 0
        while True:
            await self.written.wait()
            self.written.clear()
            batch = dict(self.unwritten)
            try:
                await self.write(batch)
            except REDIS_FAILURES as exc:
                if failures == 0:
                    log.warning("could not write %d revocation(s) to Redis at %s (%s); retrying", len(batch),
                                self.cluster.settings.redis_location(), type(exc).__name__)
                self.written.set()
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                continue
            failures = 0
            for key, until in batch.items():
                if self.unwritten.get(key) == until:  # a later `until` arrived meanwhile: write that too
                    del self.unwritten[key]

    async def write(self, batch: dict[tuple[str, str], float]) -> None:
        now = repr(self.clock())
        async with self.cluster.redis.pipeline(transaction=False) as pipe:
            for (kind, entry_id), until in batch.items():
                await self.script(keys=[self.key(kind)], args=[kind, entry_id, repr(until), now, self.channel],
                                  client=pipe)
            await pipe.execute()

    # the reader

    def lost(self) -> None:
        self.current = False

    async def load(self) -> None:
        """Subscribed: load both sets whole (what was added before), then the replica is current."""
        now = self.clock()
        async with self.cluster.redis.pipeline(transaction=False) as pipe:
            for kind in KINDS:
                pipe.zrangebyscore(self.key(kind), f"({now!r}", "+inf", withscores=True)
            loaded = await pipe.execute()
        shared: dict[tuple[str, str], float] = {}
        for kind, entries in zip(KINDS, loaded, strict=True):
            for member, until in entries:
                shared[kind, member.decode("utf-8", "replace")] = float(until)
                self.apply(kind, member.decode("utf-8", "replace"), float(until))
        self.restore_missing(shared)
        if not self.current:
            log.info("the shared revocation list is in sync with Redis (%d live entries)", len(self.local))
        self.current = True
        if self.unwritten:
            self.written.set()  # written while away: write them now

    def restore_missing(self, shared: dict[tuple[str, str], float]) -> None:
        """Entries this replica knows that Redis lost (a restart without persistence) are written again."""
        snapshot = self.local.snapshot()
        for kind, entries in (("task", snapshot["tasks"]), ("jti", snapshot["jtis"])):
            for entry in entries:
                if shared.get((kind, entry["id"]), 0.0) < entry["until"]:
                    self.write_through(kind, entry["id"], entry["until"])

    async def received(self, channel: bytes, data: bytes) -> None:
        try:
            kind, until, entry_id = data.decode("utf-8").split(" ", 2)
            self.apply(kind, entry_id, float(until))
        except ValueError:
            log.warning("ignored a malformed revocation message from Redis")

    def apply(self, kind: str, entry_id: str, until: float) -> None:
        if kind == "task":
            self.local.revoke_task(entry_id, until)
        elif kind == "jti":
            self.local.revoke_jti(entry_id, until)
