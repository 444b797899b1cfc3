"""Who hears of what: every event source's observers (gateway/events.py), connected in one place and in
the order they are told. The pool's `on_rebuild` is joined in `lifespan`, after the start's own rebuilds."""

from __future__ import annotations

from typing import Protocol

from gateway.approvals.service import ApprovalService
from gateway.calls.methods import Methods
from gateway.cluster.backstop import StoreSweep
from gateway.cluster.connection import Cluster
from gateway.cluster.convergence import Convergence
from gateway.credentials.leases import LeaseBroker
from gateway.credentials.rotation import SecretRotation
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.identity.principal import Principal
from gateway.policy.reloader import PolicyReloader
from gateway.registry.service import Registry
from gateway.resource_updates import ResourceUpdateRelay
from gateway.state.backends import StateBackends
from gateway.state.notices import TOPIC_LIST_CHANGED
from gateway.state.sessions import AgentSessions
from gateway.tasks.service import TaskService
from gateway.telemetry import Telemetry
from gateway.transport.endpoint import McpEndpoint
from gateway.transport.sessions import AgentSession
from gateway.upstream.pool import UpstreamPool
from gateway.wiring.background import Background
from gateway.wiring.catalog_sync import CatalogSync
from gateway.wiring.lifecycle import LifecycleReactions
from gateway.wiring.list_changes import ListChanges
from gateway.wiring.webhooks import PeoplesWebhooks


class ObservedParts(Protocol):
    """The Gateway's parts (gateway/app.py) that send or hear events, read-only."""

    @property
    def registry(self) -> Registry: ...
    @property
    def reloader(self) -> PolicyReloader: ...
    @property
    def tasks(self) -> TaskService: ...
    @property
    def reviews(self) -> ToolReviews: ...
    @property
    def resource_reviews(self) -> ResourceReviews: ...
    @property
    def pool(self) -> UpstreamPool: ...
    @property
    def approvals(self) -> ApprovalService: ...
    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def webhooks(self) -> PeoplesWebhooks: ...
    @property
    def state(self) -> StateBackends: ...
    @property
    def methods(self) -> Methods: ...
    @property
    def sessions(self) -> AgentSessions[Principal, AgentSession]: ...
    @property
    def endpoint(self) -> McpEndpoint: ...
    @property
    def lifecycle(self) -> LifecycleReactions: ...
    @property
    def list_changes(self) -> ListChanges: ...
    @property
    def catalog_sync(self) -> CatalogSync: ...
    @property
    def cluster(self) -> Cluster | None: ...
    @property
    def background(self) -> Background: ...
    @property
    def upstream_auth(self) -> UpstreamAuth: ...
    @property
    def leases(self) -> LeaseBroker: ...
    @property
    def rotation(self) -> SecretRotation: ...


def connect(parts: ObservedParts) -> list[StoreSweep]:
    """Every observer joined to its source; in a cluster, the returned store sweep is the bus's backstop."""
    lifecycle, list_changes, catalog_sync = parts.lifecycle, parts.list_changes, parts.catalog_sync
    parts.registry.on_change.append(lifecycle.on_agent_change)
    parts.reloader.on_change.append(list_changes.announce_policy_change)
    parts.reloader.on_outcome.append(catalog_sync.audit_policy_reload)
    parts.tasks.on_end.append(lifecycle.on_task_end)
    parts.tasks.on_start.append(lifecycle.on_task_start)
    parts.resource_reviews.on_decided.append(catalog_sync.apply_resource_reviews)
    parts.reviews.on_decided.append(catalog_sync.apply_reviews)
    parts.pool.on_list_changed.append(list_changes.on_upstream_lists_changed)
    parts.tasks.on_end.append(parts.approvals.task_ended)
    leases = parts.leases
    for task_ends in (parts.tasks.on_end, parts.tasks.on_ended_elsewhere):  # a task's Vault leases end with it
        task_ends.append(lambda task: leases.task_ended(task.id))
    rotation = parts.rotation
    parts.pool.on_rebuild.append(lambda _: rotation.reconcile())  # rotation schedules follow the catalog
    parts.approvals.on_change.append(parts.telemetry.set_approvals_pending)
    parts.webhooks.connect(parts.reviews, parts.resource_reviews, parts.approvals)
    parts.state.notices.subscribe(TOPIC_LIST_CHANGED, list_changes.on_list_changed)
    parts.pool.on_resource_updated.append(ResourceUpdateRelay(
        parts.methods, parts.sessions, parts.endpoint.listen_hub, lifecycle.current_principal).relay)
    return [] if parts.cluster is None else join_fleet(parts)


def join_fleet(parts: ObservedParts) -> list[StoreSweep]:
    """The other replicas hear of every change here, and this one of theirs."""
    notices = parts.state.notices
    Convergence(notices, parts.background, parts.registry, parts.tasks, parts.lifecycle, parts.reloader,
                parts.catalog_sync, parts.list_changes, parts.upstream_auth).connect(
        {"tools": parts.reviews, "resources": parts.resource_reviews})
    return [StoreSweep.for_bus(notices, parts.registry, parts.tasks)]
