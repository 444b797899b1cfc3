"""The event bus between replicas: `Notices` over Redis pub/sub (gateway/state/notices.py).

`publish` runs this process's handlers, then sends one PUBLISH on the topic's channel; a reader
task (started and stopped with the Cluster) hands every other process's notices to the local
handlers, one topic's notices in the order they were sent. A notice of this process comes back
from Redis too and is dropped there: the local handlers already had it.

After a lost connection the reader subscribes again and delivers `resync_payload(topic)` to every
topic's handlers (for TOPIC_LIST_CHANGED: a list change of every kind), since notices may have been
missed meanwhile. A PUBLISH that fails is retried in the background for a while; if Redis stays
away, the other replicas lost their subscriptions too and resynchronise when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from gateway.cluster.connection import Cluster
from gateway.cluster.subscriber import REDIS_FAILURES, Subscription, pattern_escape
from gateway.state.notices import Handler, resync_payload

log = logging.getLogger("narrowgate")
PUBLISH_RETRY_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)  # then the notice is given up (logged)


class RedisNotices:
    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.origin = f"{cluster.replica_id}/{uuid.uuid4().hex}"  # this process, even among workers sharing an id
        self.handlers: dict[str, list[Handler]] = {}
        self.queues: dict[str, asyncio.Queue[Mapping[str, Any]]] = {}  # remote notices per topic, in order
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.retries: set[asyncio.Task[None]] = set()
        self.channel_prefix = cluster.keys.channel("")
        self.lost = False
        self.subscription = Subscription(
            cluster, "notices", patterns=(pattern_escape(self.channel_prefix) + "*",),
            on_message=self.received, on_subscribed=self.subscribed, on_lost=self.connection_lost)

    def subscribe(self, topic: str, handler: Handler) -> None:
        self.handlers.setdefault(topic, []).append(handler)

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> None:
        await self.run_handlers(topic, payload)
        message = orjson.dumps({"origin": self.origin, "payload": payload})
        try:
            await self.cluster.redis.publish(self.cluster.keys.channel(topic), message)
        except REDIS_FAILURES as exc:
            log.warning("could not send the %s notice to the other replicas (%s); retrying", topic,
                        type(exc).__name__)
            task = asyncio.create_task(self.publish_later(topic, message))
            self.retries.add(task)
            task.add_done_callback(self.retries.discard)

    async def publish_later(self, topic: str, message: bytes) -> None:
        for delay in PUBLISH_RETRY_S:
            await asyncio.sleep(delay)
            try:
                await self.cluster.redis.publish(self.cluster.keys.channel(topic), message)
                return
            except REDIS_FAILURES:
                continue
        log.error("gave up sending the %s notice to the other replicas: Redis at %s is unreachable", topic,
                  self.cluster.settings.redis_location())

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
        for task in [*self.workers.values(), *self.retries]:
            task.cancel()
        await asyncio.gather(*self.workers.values(), *self.retries, return_exceptions=True)
        self.workers.clear()

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
