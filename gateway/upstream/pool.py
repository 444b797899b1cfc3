"""All upstream connections: start them, keep their lists in sync, and route calls to them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from gateway.catalog.model import Catalog, HttpTransport
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.events import AsyncObservers, Observers
from gateway.heap import HEAP
from gateway.protocol.eras import LEGACY_ERA
from gateway.protocol.errors import METHOD_NOT_FOUND, UPSTREAM_UNAVAILABLE, RpcError
from gateway.settings.limits import DEFAULT_MAX_UPSTREAM_REPLY_BYTES
from gateway.upstream.base import CallContext, Upstream, log, without_server_info
from gateway.upstream.directory import EMPTY, Directory, Listing, ResourceStatus, approve_all, build_directory
from gateway.upstream.http_client import HttpUpstream
from gateway.upstream.stdio_client import StdioUpstream

MAX_LIST_PAGES = 100
LIST_METHODS = {
    "tools": ("tools/list", "tools"),
    "prompts": ("prompts/list", "prompts"),
    "resources": ("resources/list", "resources"),
    "templates": ("resources/templates/list", "resourceTemplates"),
}
CHANGE_METHODS = {
    "notifications/tools/list_changed": "tools",
    "notifications/prompts/list_changed": "prompts",
    "notifications/resources/list_changed": "resources",
}

Reconcile = Callable[[dict[str, Listing]], Catalog]  # every upstream's listing -> the catalog to serve


class UpstreamPool:
    def __init__(self, catalog: Catalog, auth: UpstreamAuth, resync_interval_s: float = 2.0,
                 full_resync_s: float = 300.0, max_reply_bytes: int = DEFAULT_MAX_UPSTREAM_REPLY_BYTES,
                 reconcile: Reconcile | None = None, resource_status: ResourceStatus = approve_all) -> None:
        self.max_reply_bytes = max_reply_bytes  # limits.max_upstream_reply_bytes, per upstream message
        self.catalog = catalog  # the effective catalog once `reconcile` is set (reviewed tools included)
        self.auth = auth
        self.clients: dict[str, Upstream] = {}
        self.listings: dict[str, Listing] = {}
        self.synced_generation: dict[str, int] = {}
        self.directory: Directory = EMPTY
        self.resync_interval_s = resync_interval_s
        self.on_list_changed: AsyncObservers[[set[str]]] = []  # the kinds of list that changed
        self.on_resource_updated: AsyncObservers[[str, dict[str, Any]]] = []  # (server id, notification)
        self.on_rebuild: Observers[[Directory]] = []
        # Given every upstream's listing, the catalog to build the directory from (gateway.discovery).
        self.reconcile = reconcile
        # Whether each listed resource and template is approved (gateway.discovery.resources).
        self.resource_status = resource_status
        self.full_resync_s = full_resync_s  # backstop for upstreams that change without telling
        self.watcher: asyncio.Task[None] | None = None
        self.resyncs: set[asyncio.Task[None]] = set()
        self.queued: set[tuple[str, tuple[str, ...]]] = set()  # re-lists asked for and not yet started
        self.sync_locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        for server in self.catalog.servers.values():
            if isinstance(server.transport, HttpTransport):
                discovery = functools.partial(self.auth.for_discovery, server)
                self.clients[server.id] = HttpUpstream(server, self.on_session_event, discovery,
                                                       self.max_reply_bytes)
            else:
                self.clients[server.id] = StdioUpstream(server, self.on_session_event, self.auth.secrets,
                                                        self.max_reply_bytes)
        await asyncio.gather(*(client.start() for client in self.clients.values()))
        await asyncio.gather(*(self.sync(server_id) for server_id in self.clients))
        self.watcher = asyncio.create_task(self.watch())

    async def close(self) -> None:
        for task in [self.watcher, *self.resyncs]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(client.close() for client in self.clients.values()), return_exceptions=True)

    def down_reason(self, server_id: str) -> str | None:
        """Why an upstream could not connect, when the gateway knows (e.g. its secret is unavailable)."""
        client = self.clients.get(server_id)
        return client.last_error if client is not None else None

    async def call(self, server_id: str, method: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return without_server_info(await self.clients[server_id].call(method, params, ctx))

    # Lists -----------------------------------------------------------------------------------

    async def sync(self, server_id: str, kinds: tuple[str, ...] = tuple(LIST_METHODS)) -> set[str] | None:
        """Refresh an upstream's lists; None on failure (its entries vanish until it is back), else the
        kinds whose contents changed ("templates" counts as "resources"). One sync per upstream at a
        time, so an older listing can never overwrite a newer one."""
        async with self.sync_locks.setdefault(server_id, asyncio.Lock()):
            return await self._sync(server_id, kinds)

    async def _sync(self, server_id: str, kinds: tuple[str, ...]) -> set[str] | None:
        client = self.clients[server_id]
        generation = _generation(client)
        previous = self.listings.get(server_id)
        listing = dataclasses.replace(previous) if previous is not None else Listing()
        try:
            for kind in kinds:
                setattr(listing, kind, await self.fetch_all(server_id, *LIST_METHODS[kind]))
        except RpcError as exc:
            if server_id in self.listings:
                log.warning("upstream %s lists unavailable: %s", server_id, exc.message)
            self.listings.pop(server_id, None)
            self.rebuild()
            return None
        changed = {"resources" if kind == "templates" else kind for kind in kinds
                   if previous is None or getattr(previous, kind) != getattr(listing, kind)}
        self.listings[server_id] = listing
        self.synced_generation[server_id] = generation
        if changed or previous is None:
            self.rebuild()
            self.report_hidden(server_id, listing)
        return changed

    async def fetch_all(self, server_id: str, method: str, key: str) -> list[dict[str, Any]]:
        server = self.catalog.servers[server_id]
        ctx = CallContext(era=LEGACY_ERA, timeout_s=server.timeout_s)
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {}
        for _ in range(MAX_LIST_PAGES):
            reply = await self.clients[server_id].call(method, params, ctx)
            if "error" in reply:
                if reply["error"].get("code") == METHOD_NOT_FOUND:
                    return []  # the upstream does not offer this kind at all
                raise RpcError(UPSTREAM_UNAVAILABLE, f"upstream {server_id!r} failed {method}")
            result = reply.get("result") or {}
            items.extend(item for item in result.get(key) or [] if isinstance(item, dict))
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                return items
            params = {"cursor": cursor}
        log.warning("upstream %s: %s did not finish within %d pages", server_id, method, MAX_LIST_PAGES)
        return items

    def report_hidden(self, server_id: str, listing: Listing) -> None:
        """Say once per sync what an upstream offers that agents will not see."""
        server = self.catalog.servers[server_id]
        hidden = sorted(str(t.get("name")) for t in listing.tools if t.get("name") not in server.tools)
        if hidden:
            log.info("upstream %s offers uncatalogued tool(s), hidden: %s", server_id, ", ".join(hidden))

    def rebuild(self) -> None:
        if self.reconcile is not None:
            self.catalog = self.reconcile(self.listings)
        self.directory = build_directory(self.catalog, self.listings, self.resource_status, self.directory)
        for observer in self.on_rebuild:
            observer(self.directory)
        HEAP.settle()  # the new directory and catalog are long-lived (see gateway.heap)

    async def watch(self) -> None:
        """Backstop: bring back upstreams that were down or restarted since their last sync, and every
        `full_resync_s` list every upstream again (one that changes without notifying is caught too)."""
        last_full = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.resync_interval_s)
            try:
                last_full = await self.watch_once(last_full)
            except Exception:  # one bad round (an odd upstream answer) must not end the backstop
                log.exception("upstream re-sync round failed; trying again in %.0f s", self.resync_interval_s)

    async def watch_once(self, last_full: float) -> float:
        """One round of the backstop; returns when the last full re-list started."""
        now = asyncio.get_running_loop().time()
        full = now - last_full >= self.full_resync_s
        if full:
            last_full = now
        for server_id, client in self.clients.items():
            stale = self.synced_generation.get(server_id) != _generation(client)
            if server_id not in self.listings:  # back after its lists vanished: everything it lists is news
                if await self.sync(server_id) is not None:
                    await self.announce({"tools", "prompts", "resources"})
            elif stale or (full and client.available):  # reconnected or reopened: only what really changed
                changed = await self.sync(server_id)
                if changed:
                    await self.announce(changed)
        return last_full

    async def on_session_event(self, server_id: str, message: dict[str, Any]) -> None:
        method = message.get("method")
        kind = CHANGE_METHODS.get(method or "")
        if kind is not None:
            # Not awaited here: this runs on the upstream's reader (a stdio child's stdout), which must
            # keep reading for the re-list's own answer to arrive.
            kinds = ("resources", "templates") if kind == "resources" else (kind,)
            if (server_id, kinds) in self.queued:
                return  # a re-list that has not started yet will see this change too (no flood of re-lists)
            self.queued.add((server_id, kinds))
            task = asyncio.create_task(self.resync(server_id, kinds))
            self.resyncs.add(task)
            task.add_done_callback(self.resyncs.discard)
        elif method == "notifications/resources/updated":
            for observer in self.on_resource_updated:
                await observer(server_id, message)

    async def resync(self, server_id: str, kinds: tuple[str, ...]) -> None:
        async with self.sync_locks.setdefault(server_id, asyncio.Lock()):
            self.queued.discard((server_id, kinds))  # from here on, a new notice needs a new re-list
            changed = await self._sync(server_id, kinds)
        if changed:
            await self.announce(changed)

    async def announce(self, kinds: set[str]) -> None:
        for observer in self.on_list_changed:
            await observer(kinds)


def _generation(client: Upstream) -> int:
    """Changes whenever the upstream was (re)connected or its notification stream reopened, so a restart, or a
    gap in which a list change may have been announced, triggers a re-sync."""
    if isinstance(client, StdioUpstream):
        return client.restarts if client.available else -1
    if isinstance(client, HttpUpstream):  # a list change announced while its stream was down is lost
        return client.reopened if client.available else -1
    return 0


__all__ = ["UpstreamPool"]
