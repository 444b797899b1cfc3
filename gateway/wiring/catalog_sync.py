"""The catalog as reviewed, kept in step everywhere it is used.

`ListingReconciler` is the pool's hook: given every upstream's listing, the catalog to build the
directory from (new and changed tools quarantined, resources as reviewed). `CatalogSync` reacts to
a rebuilt directory (remember the tool schemas upstreams report, give the policy engine and task
grants the reviewed catalog, compiled on a worker thread) and to reviewers' decisions (rebuild,
then tell agents; a decision made on another replica is re-read from the store first), and audits
policy reloads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.audit import AuditEvent, AuditLog
from gateway.catalog import Catalog
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.discovery.webhook import approved_only
from gateway.policy.engine import PolicyEngine, ReloadOutcome
from gateway.state.notices import Notices
from gateway.store.base import Store
from gateway.tasks.service import TaskService
from gateway.telemetry import Telemetry
from gateway.upstream.directory import Directory, Listing
from gateway.upstream.pool import UpstreamPool
from gateway.wiring.background import Background
from gateway.wiring.list_changes import publish_list_changed

log = logging.getLogger("narrowgate")


class ListingReconciler:
    """The pool's view of the catalog: every listed tool as reviewed (approved, quarantined, rejected)."""

    def __init__(self, catalog: Catalog, reviews: ToolReviews, resource_reviews: ResourceReviews,
                 telemetry: Telemetry, background: Background) -> None:
        self.catalog = catalog
        self.reviews = reviews
        self.resource_reviews = resource_reviews
        self.telemetry = telemetry
        self.background = background
        self.effective_stale = True
        self.last = catalog  # what reconcile_listings returned last time

    def reconcile_listings(self, listings: dict[str, Listing]) -> Catalog:
        """The pool's view of the catalog: every listed tool as reviewed (approved, quarantined, rejected)."""
        if self.reviews.reconcile(self.catalog, {sid: listing.tools for sid, listing in listings.items()}):
            self.effective_stale = True
            self.background.run(self.reviews.save())
        if self.resource_reviews.reconcile(self.catalog, listings):
            self.background.run(self.resource_reviews.save())
        if not self.effective_stale:
            return self.last
        self.effective_stale = False
        effective = self.reviews.effective(self.catalog)
        self.telemetry.set_quarantined_tools(sum(1 for t in effective.tools.values() if t.status == "quarantined"))
        self.last = effective
        return effective


class CatalogSync:
    def __init__(self, pool: UpstreamPool, reconciler: ListingReconciler, policy: PolicyEngine, tasks: TaskService,
                 store: Store, audit: AuditLog, notices: Notices, background: Background,
                 tool_schemas: dict[str, Any]) -> None:
        self.pool = pool
        self.reconciler = reconciler
        self.policy = policy
        self.tasks = tasks
        self.store = store
        self.audit = audit
        self.notices = notices
        self.background = background
        # Input schemas last reported by upstreams (from the store), until they report again.
        self.tool_schemas = tool_schemas
        self.applied_catalog = pool.catalog  # the one the policy engine and task grants use now
        self.schema_update_failures = 0
        # The catalog compile under way on a worker thread (see on_directory_rebuilt), if any.
        self.policy_sync: asyncio.Task[None] | None = None

    async def apply_reviews(self) -> None:
        """After a review decision: rebuild the catalog everyone uses, then tell agents whose list changed."""
        self.reconciler.effective_stale = True
        self.pool.rebuild()
        await publish_list_changed(self.notices, {"tools"})

    async def apply_resource_reviews(self) -> None:
        """After a resource review decision: rebuild the directory, then tell agents to list again."""
        self.pool.rebuild()
        await publish_list_changed(self.notices, {"resources"})

    async def take_stored_reviews(self, kind: str) -> None:
        """Decisions made on another replica: re-read them from the store and rebuild as it did
        ("tools" or "resources"; the caller tells this replica's agents)."""
        await (self.reconciler.reviews if kind == "tools" else self.reconciler.resource_reviews).reread()
        if kind == "tools":
            self.reconciler.effective_stale = True
        self.pool.rebuild()

    def on_directory_rebuilt(self, directory: Directory) -> None:
        """Type each tool's `context.input` from the schema its upstream now reports (and remember it);
        give the policy engine and task grants the catalog as reviewed (quarantined tools included)."""
        reported = {name: view.definition.get("inputSchema") for name, view in directory.tools.items()}
        changed = {name: schema for name, schema in reported.items() if self.tool_schemas.get(name) != schema}
        catalog = self.pool.catalog
        if not changed and catalog is self.applied_catalog:
            return
        if changed:
            self.tool_schemas.update(changed)
            self.background.run(self.store.save_tool_schemas(changed))
        if catalog is not self.applied_catalog:
            self.applied_catalog = catalog
            # Only tools the catalog still has (a forgotten discovered tool leaves it): bounded by it.
            self.tool_schemas = {name: s for name, s in self.tool_schemas.items() if name in catalog.tools}
            self.tasks.set_catalog(approved_only(catalog))  # tasks are granted reviewed tools only
        # Compiling against thousands of tools takes seconds: on a worker thread, calls meanwhile
        # decided by the last good bundle (a tool whose entry changed is denied until the swap).
        task = self.background.run(self.apply_policy_catalog(catalog))
        self.policy_sync = task

    async def apply_policy_catalog(self, catalog: Catalog) -> None:
        outcome = await self.policy.set_catalog_async(catalog, self.tool_schemas)
        if not outcome.ok:
            self.schema_update_failures += 1
            log.error("POLICY SCHEMA UPDATE FAILED; the last good set %s keeps serving:\n%s",
                      outcome.version, "\n".join(outcome.problems))

    async def policy_catalog_synced(self) -> None:
        """Wait until the policy engine serves the catalog the pool uses now (later changes included)."""
        while (task := self.policy_sync) is not None and not task.done():
            await asyncio.wait({task})

    def audit_policy_reload(self, outcome: ReloadOutcome, why: str) -> None:
        self.audit.record(AuditEvent(
            kind="policy", action="reload" if outcome.ok else "reload_rejected", actor="narrowgate",
            detail={"why": why, "version": outcome.version, "changed": outcome.changed,
                    "problems": outcome.problems[:20]},
        ))
