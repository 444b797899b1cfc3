"""The gateway's start and stop: what opens in which order before it serves, and how it stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from gateway import __version__
from gateway.audit import AuditLog
from gateway.audit.digests import DigestKey
from gateway.cluster.connection import Cluster
from gateway.config import Settings
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.heap import HEAP
from gateway.identity.verifier import TokenVerifier
from gateway.policy.engine import PolicyEngine
from gateway.policy.reloader import PolicyReloader
from gateway.registry.service import Registry
from gateway.store.base import Store
from gateway.telemetry import Telemetry
from gateway.transport.endpoint import McpEndpoint
from gateway.upstream.pool import UpstreamPool
from gateway.wiring.background import Background
from gateway.wiring.catalog_sync import CatalogSync
from gateway.wiring.lifecycle import LifecycleReactions

log = logging.getLogger("narrowgate")
DRAIN_GRACE_S = 5.0  # how long calls in flight at a stop may take to finish (held calls are answered at once)


class Opens(Protocol):
    async def open(self) -> None: ...


class Closes(Protocol):
    async def close(self) -> None: ...


class Saves(Protocol):
    async def save(self) -> None: ...


class Lifetime:
    def __init__(self, settings: Settings, store: Store, digest_key: DigestKey, audit: AuditLog, registry: Registry,
                 verifiers: Sequence[TokenVerifier], upstream_auth: UpstreamAuth, services: Sequence[Opens],
                 pool: UpstreamPool, catalog_sync: CatalogSync, reloader: PolicyReloader, policy: PolicyEngine,
                 lifecycle: LifecycleReactions, endpoint: McpEndpoint, closers: Sequence[Closes],
                 background: Background, reviews: Sequence[Saves], telemetry: Telemetry,
                 cluster: Cluster | None = None) -> None:
        """`services` open in order after the keys; `closers` close in order after the upstreams;
        `reviews` are saved last, after the work started in the background has finished."""
        self.settings = settings
        self.store = store
        self.digest_key = digest_key
        self.audit = audit
        self.registry = registry
        self.verifiers = verifiers
        self.upstream_auth = upstream_auth
        self.services = services
        self.pool = pool
        self.catalog_sync = catalog_sync
        self.reloader = reloader
        self.policy = policy
        self.lifecycle = lifecycle
        self.endpoint = endpoint
        self.closers = closers
        self.background = background
        self.reviews = reviews
        self.telemetry = telemetry
        self.cluster = cluster  # opened first and closed last: the shared state outlives everything using it
        self.drained = (0, 0)  # (held calls, unfinished calls) answered when the process was stopped

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:  # Starlette passes the app; unused
        if self.cluster is not None:
            await self.cluster.open()
        await self.store.migrate()
        await self.digest_key.load(self.store)
        await self.audit.open()
        await self.registry.reload()
        if self.settings.agents_file is not None:
            report = await self.registry.load_agents_file(self.settings.agents_file)
            log.info("agents file %s: %s", self.settings.agents_file, report)
        for verifier in self.verifiers:
            await verifier.start()
        await self.upstream_auth.start(self.store)
        for service in self.services:
            await service.open()
        # One re-typing of the policy set for the whole start (not one per upstream listed), so one
        # "policy version ... in force" line at most: the rebuild observer joins after the start.
        await self.pool.start()
        rebuilt = self.catalog_sync.on_directory_rebuilt
        if rebuilt not in self.pool.on_rebuild:  # a lifespan entered again must not react twice
            self.pool.on_rebuild.append(rebuilt)
        self.catalog_sync.on_directory_rebuilt(self.pool.directory)
        await self.catalog_sync.policy_catalog_synced()  # serve with the schemas the upstreams report
        self.reloader.start()
        sweeper = asyncio.create_task(self.lifecycle.sweep_inactive_agents())
        down = [sid for sid, client in self.pool.clients.items() if not client.available]
        if down:
            log.warning("started with upstream(s) down: %s (retrying in the background)", ", ".join(down))
        # Long-lived start-up objects (catalog, keys, registry) leave the collector's view, so the
        # periodic full collections that cause tail-latency spikes have far less to walk.
        HEAP.collect_young_less_often()  # see gateway.heap
        HEAP.compact()
        compactor = asyncio.create_task(HEAP.compact_now_and_then())  # cycles frozen since (see gateway.heap)
        log.info("Narrowgate %s serving MCP at %s/mcp (policy version %s)", __version__, self.settings.base_url,
                 self.policy.version)
        try:
            yield
        finally:
            sweeper.cancel()
            compactor.cancel()
            await self.reloader.stop()
            await self.pool.close()
            for closer in self.closers:
                await closer.close()
            await self.background.finish()
            for reviews in self.reviews:
                await reviews.save()
            await self.audit.close()
            await self.store.close()
            if self.cluster is not None:
                await self.cluster.close()
            self.telemetry.shutdown()
            held, cut = self.drained
            log.info("Narrowgate stopped: %d held call(s) and %d unfinished call(s) answered with a shutting-down "
                     "error; audit log flushed; upstreams stopped", held, cut)

    async def drain(self) -> None:
        """On SIGINT/SIGTERM, before the lifespan ends: answer every open /mcp request."""
        self.drained = await self.endpoint.drain(DRAIN_GRACE_S)
