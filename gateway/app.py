"""Builds the gateway's ASGI application: constructs every part, passing each its collaborators, and
connects the event sources to their observers. What the parts do when told lives in gateway/wiring/."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from gateway.admin.auth import AdminAuthenticator
from gateway.approvals.service import ApprovalService
from gateway.approvals.step_up import StepUpFlow
from gateway.audit import AuditLog
from gateway.audit.digests import DigestKey
from gateway.calls.methods import Methods
from gateway.catalog import Catalog
from gateway.chain.detections import DetectionResponder
from gateway.chain.monitor import ChainMonitor
from gateway.cluster.backends import state_backends
from gateway.cluster.connection import Cluster, replica_id
from gateway.config import Settings
from gateway.credentials.leases import LeaseBroker
from gateway.credentials.rotation import SecretRotation
from gateway.credentials.secret_sources import SecretResolver
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.identity.authenticator import Authenticator
from gateway.identity.verifier import TokenVerifier
from gateway.in_memory_state import monitoring_with_catalog_egress
from gateway.oauth.delegation import DelegationParties
from gateway.oauth.token_endpoint import TOKEN_PATH, TokenEndpoint, settings_for_audience
from gateway.policy.authorizer import Authorizer
from gateway.policy.engine import PolicyEngine
from gateway.policy.hours import WorkingHours
from gateway.policy.recorder import DecisionRecorder
from gateway.policy.reloader import PolicyReloader
from gateway.registry.service import Registry
from gateway.state.backends import StateBackends
from gateway.store import open_store
from gateway.tasks.gate import TaskGate
from gateway.tasks.service import TaskService, TaskSettings
from gateway.tasks.token_check import TaskTokenCheck
from gateway.tasks.tokens import TaskTokenIssuer
from gateway.telemetry import Telemetry
from gateway.transport.endpoint import McpEndpoint
from gateway.transport.front import McpFirst
from gateway.upstream.pool import UpstreamPool
from gateway.wiring.admin_routes import admin_routes
from gateway.wiring.background import Background
from gateway.wiring.catalog_sync import CatalogSync, ListingReconciler
from gateway.wiring.endpoints import SmallEndpoints
from gateway.wiring.lifecycle import LifecycleReactions
from gateway.wiring.lifespan import Lifetime
from gateway.wiring.list_changes import ListChanges
from gateway.wiring.observers import connect
from gateway.wiring.task_times import TaskTimes
from gateway.wiring.unused_share import measuring
from gateway.wiring.webhooks import PeoplesWebhooks


class Gateway:
    """Everything one running gateway holds; the ASGI app is `self.app`."""

    def __init__(self, settings: Settings, catalog: Catalog, tool_schemas: dict[str, Any] | None = None,
                 state: StateBackends | None = None) -> None:
        """`state`: where the in-memory-only state lives (default: this process; see docs/state.md)."""
        self.settings = settings
        self.catalog = catalog
        self.cluster = Cluster(settings.cluster) if settings.cluster.shared else None
        self.replica_id = replica_id(settings.cluster)  # the Cluster's too: computed from the same settings
        self.state = state if state is not None else state_backends(settings, catalog, self.cluster)
        self.background = Background()
        self.store = open_store(settings.state)
        self.digest_key = DigestKey()  # loaded from the store at start, before anything is recorded
        self.audit = AuditLog(self.store, digests=self.digest_key.keyed)
        self.telemetry = Telemetry.from_env(instance_id=self.replica_id)
        self.webhooks = PeoplesWebhooks(settings)
        schemas = dict(tool_schemas or {})  # input schemas last reported by upstreams (from the store)
        self.build_identity()
        self.build_policy(schemas)
        self.build_tasks()
        self.build_discovery(schemas)
        self.build_vaulted_secrets()
        self.sessions = self.state.agent_sessions
        self.recorder = DecisionRecorder(self.store, self.policy, settings.policy.record_retention_s)
        authorizer = Authorizer(self.policy, self.audit, settings.policy.agent_reasons,
                                on_evaluated=lambda d, s: self.telemetry.record_policy_evaluation(s, d.outcome),
                                replica=self.replica_id, recorder=self.recorder)
        self.methods = Methods(self.pool, authorizer, self.upstream_auth, TaskGate(self.tasks),
                               self.telemetry, self.build_monitor(), self.build_approvals(authorizer))
        authenticator = Authenticator(settings, self.verifier, self.registry, self.task_check)
        self.endpoint = McpEndpoint(settings, authenticator, self.methods, self.sessions, self.telemetry)
        self.lifecycle = LifecycleReactions(self.registry, self.audit, self.chain, self.sessions,
                                            self.endpoint.listen_hub, self.upstream_auth)
        self.list_changes = ListChanges(self.state.notices, self.sessions, self.endpoint.listen_hub, self.methods,
                                        self.pool, self.audit, self.background, self.catalog_sync.policy_catalog_synced)
        self.store_sweeps = connect(self)  # every observer joined; with a cluster, the backstop to the event bus
        self.admin_auth = AdminAuthenticator(settings, self.verifier, self.registry, self.task_check.is_ours)
        self.unused_share = measuring(self.policy, self.registry, self.tasks, self.store, settings, self.telemetry)
        self.lifetime = Lifetime(
            settings, self.store, self.digest_key, self.audit, self.registry,
            [self.verifier, self.assertion_verifier, self.actor_verifier],
            self.upstream_auth, [self.tasks, self.leases, self.rotation, self.approvals, self.reviews,
                                 self.resource_reviews, *self.store_sweeps,
                                 self.unused_share, self.recorder],
            self.pool, self.catalog_sync, self.reloader, self.policy, self.lifecycle, self.endpoint,
            [*self.store_sweeps, self.rotation, self.leases, self.secrets, self.detections, self.approvals,
             self.webhooks, self.tasks, self.verifier, self.assertion_verifier, self.actor_verifier, self.unused_share,
             self.recorder],
            self.background, [self.reviews, self.resource_reviews], self.telemetry, self.cluster)
        self.drain = self.lifetime.drain  # on SIGINT/SIGTERM, before the lifespan ends (gateway/serving.py)
        self.app = McpFirst(self.endpoint, Starlette(routes=self.routes(), lifespan=self.lifetime.lifespan))

    def build_identity(self) -> None:
        """Who calls: the agent registry, workload-token verification, and the gateway's own keys."""
        self.registry = Registry(self.store, [])
        self.verifier = TokenVerifier(self.settings.identity, cache=self.state.verified_tokens)
        self.secrets = SecretResolver()
        self.upstream_auth = UpstreamAuth(self.settings.base_url, self.secrets, self.settings.tokens.upstream_ttl_s,
                                          revocations=self.state.revocations)

    def build_policy(self, tool_schemas: dict[str, Any]) -> None:
        settings = self.settings
        self.policy = PolicyEngine(
            settings.policies_dir, self.catalog, shadow_dir=settings.policy.shadow, tool_schemas=tool_schemas,
            working_hours=WorkingHours.from_mapping(settings.policy.working_hours),
        )
        watched = [settings.policies_dir, *([settings.policy.shadow] if settings.policy.shadow else [])]
        self.reloader = PolicyReloader(self.policy, watched, settings.policy.watch_interval_s)

    def build_monitor(self) -> ChainMonitor:
        """Chain monitoring: the catalog's `egress: true` tools count as egress, besides the config's."""
        settings = monitoring_with_catalog_egress(self.settings, self.catalog)
        self.chain = self.state.chain_signals
        self.detections = DetectionResponder(self.audit, self.registry, self.telemetry, settings,
                                             self.settings.monitoring_webhook_url,
                                             self.settings.monitoring_webhook_secret_env)
        return ChainMonitor(self.chain, self.state.rate_windows, self.detections)

    def build_tasks(self) -> None:
        """Task grants: the token endpoint that starts them and the check that honours their tokens."""
        base = self.settings.base_url
        resource, token_url = f"{base}/mcp", f"{base}{TOKEN_PATH}"
        self.tasks = TaskService(self.store, self.registry, self.catalog, budgets=self.state.call_budgets,
                                 settings=TaskSettings(max_delegation_depth=self.settings.tokens.max_delegation_depth))
        self.task_tokens = TaskTokenIssuer(self.upstream_auth, base, resource, self.settings.tokens.task_ttl_s)
        self.task_check = TaskTokenCheck(self.tasks, self.upstream_auth.public_keys, base, resource)
        # RFC 7523 client assertions may name the token endpoint as their audience.
        self.assertion_verifier = TokenVerifier(settings_for_audience(self.settings.identity, token_url))
        # Actor tokens name an audience of their own, so no other verifier accepts them (and this one nothing else).
        self.actor_verifier = TokenVerifier(settings_for_audience(
            self.settings.identity, self.settings.identity.delegation_audience or f"{base}/oauth/delegate"))
        self.token_endpoint = TokenEndpoint(self.verifier, self.registry, self.tasks, self.task_tokens,
                                            resource=resource, token_url=token_url,
                                            assertion_verifier=self.assertion_verifier,
                                            delegation=DelegationParties(self.task_check, self.tasks,
                                                                         self.actor_verifier, self.registry,
                                                                         self.store))

    def build_vaulted_secrets(self) -> None:
        """Vault: credentials leased per task (mode: lease) and the rotation of gateway-owned KV secrets."""
        servers = lambda: self.pool.catalog.servers  # noqa: E731 - the catalog as reloaded
        self.leases = LeaseBroker(self.secrets.vault, self.store, self.audit, TaskTimes(self.tasks), servers,
                                  self.replica_id)
        self.upstream_auth.leases = self.leases
        self.rotation = SecretRotation(self.secrets, self.audit, servers)

    def build_discovery(self, tool_schemas: dict[str, Any]) -> None:
        """Upstream tools as reviewed: quarantine for new and changed definitions, and their review."""
        settings = self.settings.discovery
        self.reviews = ToolReviews(self.store, self.audit, max_pending=settings.max_pending_reviews_per_server,
                                   forget_after_s=settings.forget_unlisted_after_s)
        self.resource_reviews = ResourceReviews(self.store, self.audit)
        self.reconciler = ListingReconciler(self.catalog, self.reviews, self.resource_reviews, self.telemetry,
                                            self.background)
        self.pool = UpstreamPool(self.catalog, self.upstream_auth, full_resync_s=settings.resync_interval_s,
                                 max_reply_bytes=self.settings.limits.max_upstream_reply_bytes,
                                 reconcile=self.reconciler.reconcile_listings,
                                 resource_status=self.resource_reviews.status)
        self.catalog_sync = CatalogSync(self.pool, self.reconciler, self.policy, self.tasks, self.store, self.audit,
                                        self.state.notices, self.background, tool_schemas)

    def build_approvals(self, authorizer: Authorizer) -> StepUpFlow:
        """Step-up approvals: requests people decide in the console, the admin API or the CLI."""
        settings = self.settings.approvals
        self.approvals = ApprovalService(self.store, self.registry, self.audit, settings, digests=self.digest_key,
                                         open_approvals=self.state.open_approvals, waiters=self.state.approval_waiters)
        return StepUpFlow(self.approvals, authorizer, self.tasks, self.telemetry, settings, self.settings.base_url)

    def routes(self) -> list[BaseRoute]:
        endpoints = SmallEndpoints(self.settings.base_url, self.pool, self.policy, self.reloader, self.catalog_sync,
                                   self.telemetry, self.upstream_auth, self.replica_id, self.settings.identity)
        return [
            Route("/mcp", self.endpoint, methods=["GET", "POST", "DELETE"]),
            *endpoints.routes(),
            *self.token_endpoint.routes(),
            *admin_routes(self),
        ]

