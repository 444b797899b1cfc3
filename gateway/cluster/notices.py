"""The event bus between replicas: `Notices` over Redis pub/sub (gateway/state/notices.py).

`publish` runs this process's handlers, then sends one PUBLISH on the topic's channel; a reader
task (started and stopped with the Cluster) hands every other process's notices to the local
handlers, one topic's notices in the order they were sent. A notice of this process comes back
from Redis too and is dropped there: the local handlers already had it.

After a lost connection the reader subscribes again and delivers `resync_payload(topic)` to every
topic's handlers (for TOPIC_LIST_CHANGED: a list change of every kind), since notices may have been
missed meanwhile. A PUBLISH that fails waits in a bounded queue and is retried, in order, until Redis
takes it: it is never given up. If more than `PENDING_MAX` wait, they collapse into one resync notice
per topic (the others re-read everything when it arrives). While a notice waits or the subscription is
down the bus is not `healthy`, and the store sweep (gateway/cluster/backstop.py) runs fast.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from gateway.cluster.connection import Cluster
from gateway.cluster.subscriber import REDIS_FAILURES, Subscription, pattern_escape
from gateway.state.notices import Handler, resync_payload

log = logging.getLogger("narrowgate")
PUBLISH_RETRY_S = (0.2, 0.5, 1.0, 2.0)  # between attempts to send waiting notices; then every last value
PENDING_MAX = 1000  # notices waiting for Redis; beyond, they collapse into one resync notice per topic
STILL_WAITING_LOG_S = 30.0


class RedisNotices:
    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.origin = f"{cluster.replica_id}/{uuid.uuid4().hex}"  # this process, even among workers sharing an id
        self.handlers: dict[str, list[Handler]] = {}
        self.queues: dict[str, asyncio.Queue[Mapping[str, Any]]] = {}  # remote notices per topic, in order
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.pending: deque[tuple[str, bytes]] = deque()  # (topic, message) not yet taken by Redis, in order
        self.sender: asyncio.Task[None] | None = None
        self.channel_prefix = cluster.keys.channel("")
        self.lost = False
        self.subscription = Subscription(
            cluster, "notices", patterns=(pattern_escape(self.channel_prefix) + "*",),
            on_message=self.received, on_subscribed=self.subscribed, on_lost=self.connection_lost)

    def subscribe(self, topic: str, handler: Handler) -> None:
        self.handlers.setdefault(topic, []).append(handler)

    def healthy(self) -> bool:
        """Subscribed, and nothing of this process waits to be sent: the other replicas and this one
        hear each other's changes now."""
        return self.subscription.subscribed.is_set() and not self.pending

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> None:
        await self.run_handlers(topic, payload)
        message = self.encode(payload)
        if self.pending:  # behind those already waiting, to keep the order
            self.wait(topic, message)
            return
        try:
            await self.cluster.redis.publish(self.cluster.keys.channel(topic), message)
        except REDIS_FAILURES as exc:
            log.warning("could not send the %s notice to the other replicas (%s); it waits and is retried until "
                        "Redis takes it", topic, type(exc).__name__)
            self.wait(topic, message)

    def encode(self, payload: Mapping[str, Any]) -> bytes:
        return orjson.dumps({"origin": self.origin, "payload": payload})

    def wait(self, topic: str, message: bytes) -> None:
        if len(self.pending) >= PENDING_MAX:
            self.collapse()
        self.pending.append((topic, message))
        if self.sender is None or self.sender.done():
            self.sender = asyncio.create_task(self.send_waiting(), name="narrowgate-notices-sender")

    def collapse(self) -> None:
        """Too many notices wait: one resync notice per topic replaces them (the others re-read everything)."""
        topics = dict.fromkeys(topic for topic, _ in self.pending)
        log.error("%d notices wait for Redis at %s: replaced by one resync notice per topic (%s)", len(self.pending),
                  self.cluster.settings.redis_location(), ", ".join(topics))
        self.pending.clear()
        self.pending.extend((topic, self.encode(resync_payload(topic))) for topic in topics)

    async def send_waiting(self) -> None:
        """Send the waiting notices in order, retrying each until Redis takes it."""
        since = last_log = time.monotonic()
        failures = 0
        while self.pending:
            waiting = self.pending[0]
            topic, message = waiting
            try:
                await self.cluster.redis.publish(self.cluster.keys.channel(topic), message)
            except REDIS_FAILURES:
                if time.monotonic() - last_log >= STILL_WAITING_LOG_S:
                    last_log = time.monotonic()
                    log.error("%d notice(s) still wait for Redis at %s after %.0f s; the store sweep bounds how "
                              "stale the other replicas are meanwhile", len(self.pending),
                              self.cluster.settings.redis_location(), last_log - since)
                await asyncio.sleep(PUBLISH_RETRY_S[min(failures, len(PUBLISH_RETRY_S) - 1)])
                failures += 1
                continue
            if self.pending and self.pending[0] is waiting:  # (not if the queue collapsed meanwhile)
                self.pending.popleft()
        log.warning("the waiting notices reached the other replicas after %.1f s", time.monotonic() - since)

    async def run_handlers(self, topic: str, payload: Mapping[str, Any]) -> None:
        for handler in list(self.handlers.get(topic, ())):
            try:
                await handler(payload)
            except Exception:
                # One failing handler must not keep the others (or later notices) from running.
                log.exception("handler of the %s notice failed", topic)

    # the reader side

    async def start(self) -> None:
        self.subscription.start()

    async def stop(self) -> None:
        await self.subscription.stop()
        if self.pending:
            log.error("stopping with %d notice(s) never taken by Redis: the other replicas' store sweeps find "
                      "those changes", len(self.pending))
        senders = [] if self.sender is None else [self.sender]
        for task in [*self.workers.values(), *senders]:
            task.cancel()
        await asyncio.gather(*self.workers.values(), *senders, return_exceptions=True)
        self.workers.clear()
        self.sender = None

    async def received(self, channel: bytes, data: bytes) -> None:
        topic = channel.decode("utf-8", "replace").removeprefix(self.channel_prefix)
        if topic not in self.handlers:
            return
        try:
            notice = orjson.loads(data)
            origin, payload = notice["origin"], notice["payload"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed %s notice from Redis", topic)
            return
        if origin != self.origin and isinstance(payload, dict):
            self.deliver(topic, payload)

    def deliver(self, topic: str, payload: Mapping[str, Any]) -> None:
        """Queue a notice for the topic's handlers: a slow handler (a policy compile) holds up only its topic."""
        queue = self.queues.get(topic)
        if queue is None:
            queue = self.queues[topic] = asyncio.Queue()
            self.workers[topic] = asyncio.create_task(self.work(topic, queue), name=f"narrowgate-notices-{topic}")
        queue.put_nowait(payload)

    async def work(self, topic: str, queue: asyncio.Queue[Mapping[str, Any]]) -> None:
        while True:
            payload = await queue.get()
            await self.run_handlers(topic, payload)

    def connection_lost(self) -> None:
        self.lost = True

    async def subscribed(self) -> None:
        """Subscribed (again): after a loss, every topic hears that it may have missed notices."""
        if not self.lost:
            return
        self.lost = False
        for topic in list(self.handlers):
            self.deliver(topic, resync_payload(topic))
