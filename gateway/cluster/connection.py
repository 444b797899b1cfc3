"""The one Redis connection (pool) a gateway process shares between its seams, and its replica id."""

from __future__ import annotations

import logging
import os
import socket
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.cluster.keyspace import KeySpace
from gateway.settings.cluster import ClusterSettings

log = logging.getLogger("narrowgate")
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 2.0  # a call waits on Redis for one round trip; a stuck server is an outage, not a wait


class Runs(Protocol):
    """A shared seam with work of its own (a pub/sub reader): started once Redis answers, stopped before it closes."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ClusterUnavailable(Exception):
    """Redis cannot be reached; the message names its location, never its credentials."""


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def replica_id(settings: ClusterSettings) -> str:
    """Who this process is in /healthz, metrics and audit records, with or without a cluster."""
    return settings.replica_id or default_replica_id()


async def reach_redis(settings: ClusterSettings) -> None:
    """ClusterUnavailable unless the configured Redis answers (nothing to do without one)."""
    if settings.redis_url is None:
        return
    probe = Cluster(settings)
    try:
        await probe.ping()
        await probe.refuse_evicting_redis()
    finally:
        await probe.close()


class Cluster:
    """What every shared seam needs: the client, the key space and who this replica is."""

    def __init__(self, settings: ClusterSettings) -> None:
        if settings.redis_url is None:
            raise ValueError("a cluster needs cluster.redis_url")
        self.settings = settings
        self.replica_id = replica_id(settings)
        self.keys = KeySpace(settings.key_prefix)
        self.redis: redis.Redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=COMMAND_TIMEOUT_S,
            health_check_interval=30, decode_responses=False)
        self.runners: list[Runs] = []  # shared seams append themselves (gateway/cluster/backends.py)

    async def open(self) -> None:
        """Refuse to serve without Redis: the shared state is the security state."""
        await self.ping()
        await self.refuse_evicting_redis()
        log.info("replica %s shares state through Redis at %s (key prefix %r)", self.replica_id,
                 self.settings.redis_location(), self.keys.prefix)
        for runner in self.runners:
            await runner.start()

    async def refuse_evicting_redis(self) -> None:
        """A Redis that may evict keys under memory pressure would silently reset rate windows, budgets, chain
        records and used-approval marks: refuse it. A server that hides CONFIG (managed services) is warned about."""
        try:
            config = await self.redis.config_get("maxmemory*")
        except (RedisError, OSError) as exc:
            log.warning("cannot read Redis's eviction policy at %s (%s): make sure it is noeviction or maxmemory is 0",
                        self.settings.redis_location(), type(exc).__name__)
            return
        limit = int(config.get("maxmemory") or 0)  # redis-py decodes CONFIG GET's answer whatever the client's setting
        policy = str(config.get("maxmemory-policy") or "noeviction")
        if limit > 0 and policy != "noeviction":
            raise ClusterUnavailable(
                f"Redis at {self.settings.redis_location()} may evict keys (maxmemory {limit}, maxmemory-policy "
                f"{policy}): evicted limits and approvals would fail open; set maxmemory-policy noeviction")

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(
                f"cannot reach Redis at {self.settings.redis_location()}: {type(exc).__name__}") from None

    async def close(self) -> None:
        for runner in reversed(self.runners):
            await runner.stop()
        await self.redis.aclose()
