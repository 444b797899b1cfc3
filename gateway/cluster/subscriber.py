"""One pub/sub subscription that survives a lost connection: the reader the event bus and the shared
deny-list each run for as long as the Cluster is open.

The reader (re)subscribes, then says so (`on_subscribed`, after which nothing published is missed);
it hands every message to `on_message` in order; when the connection is lost it says so (`on_lost`:
messages may be missed from now on) and subscribes again with a short backoff, for as long as it runs.
redis-py may reconnect a pub/sub connection by itself (and resubscribe): that counts as a loss too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from gateway.cluster.connection import Cluster

log = logging.getLogger("narrowgate")
POLL_S = 1.0  # how long one read waits for a message; an idle connection is checked by the client's PING
BACKOFF_S = (0.1, 0.25, 0.5, 1.0)  # between attempts to subscribe again; then every last value
REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class Subscription:
    def __init__(self, cluster: Cluster, name: str, *, channels: tuple[str, ...] = (),
                 patterns: tuple[str, ...] = (), on_message: Callable[[bytes, bytes], Awaitable[None]],
                 on_subscribed: Callable[[], Awaitable[None]], on_lost: Callable[[], None]) -> None:
        self.cluster = cluster
        self.name = name  # for the log: "notices", "revocations"
        self.channels = channels
        self.patterns = patterns
        self.on_message = on_message
        self.on_subscribed = on_subscribed
        self.on_lost = on_lost
        self.task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set while subscribed (tests and start-up wait on it)
        self.connects = 0  # (re)connections of the current pub/sub object's connection
        self.seen_connects = 0  # ...as of the last time it was known to be subscribed
        self.resubscribe: Callable[[Connection], Awaitable[None]] | None = None  # the pub/sub object's own on_connect

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name=f"narrowgate-{self.name}-reader")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def run(self) -> None:
        failures = 0
        while True:
            pubsub = self.cluster.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await self.subscribe(pubsub)
                failures = 0
                await self.read(pubsub)
            except Exception as exc:  # any failure, not only Redis's: a reader that died would hear nothing
                if not isinstance(exc, REDIS_FAILURES):
                    log.error("the %s subscription reader failed (%s); treating it as lost", self.name,
                              type(exc).__name__)
                elif failures == 0:
                    log.warning("lost the %s subscription to Redis at %s (%s); subscribing again", self.name,
                                self.cluster.settings.redis_location(), type(exc).__name__)
                self.subscribed.clear()
                self.on_lost()
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
            finally:
                with contextlib.suppress(*REDIS_FAILURES):
                    await pubsub.aclose()

    async def subscribe(self, pubsub: PubSub) -> None:
        self.connects = 0
        self.resubscribe = pubsub.on_connect
        # Registered (as a weak bound method) at the first command below, called on every reconnection.
        pubsub.on_connect = self.counted  # type: ignore[method-assign]
        if self.channels:
            await pubsub.subscribe(*self.channels)
        if self.patterns:
            await pubsub.psubscribe(*self.patterns)
        await self.on_subscribed()
        self.seen_connects = self.connects
        self.subscribed.set()

    async def counted(self, connection: Connection) -> None:
        self.connects += 1
        if self.resubscribe is not None:
            await self.resubscribe(connection)

    async def read(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
            if self.connects != self.seen_connects:  # reconnected under us: what was sent meanwhile is lost
                log.warning("the %s subscription to Redis was re-established; catching up", self.name)
                self.seen_connects = self.connects
                self.on_lost()
                await self.on_subscribed()
            if message is None or message["type"] not in ("message", "pmessage"):
                continue
            await self.on_message(message["channel"], message["data"])


def pattern_escape(text: str) -> str:
    """`text` matched literally in a PSUBSCRIBE pattern (a key prefix may contain glob characters)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
