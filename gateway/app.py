"""Builds the gateway's ASGI application and owns its lifetime (upstreams up, then serve)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import __version__
from gateway.admin.agents_api import AgentsApi
from gateway.admin.auth import AdminAuthenticator
from gateway.admin.policies_api import PoliciesApi
from gateway.approvals.service import ApprovalService
from gateway.approvals.step_up import StepUpFlow
from gateway.approvals.webhook import approval_webhook_payload
from gateway.audit import AuditEvent, AuditLog
from gateway.audit.digests import DigestKey
from gateway.authorization import Authorizer
from gateway.catalog import Catalog
from gateway.chain.monitor import ChainMonitor
from gateway.chain.tracker import ChainTracker
from gateway.config import Settings
from gateway.credentials.secret_sources import SecretResolver
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.detections import DetectionResponder
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.discovery.webhook import approved_only, resource_webhook_payload, review_webhook_payload
from gateway.heap import HEAP
from gateway.identity.authenticator import Authenticator
from gateway.identity.principal import Principal
from gateway.identity.verifier import TokenVerifier
from gateway.mcp_methods import Methods
from gateway.oauth.metadata import METADATA_PATH, authorization_server_metadata
from gateway.oauth.token_endpoint import TOKEN_PATH, TokenEndpoint, settings_for_audience
from gateway.policy.engine import PolicyEngine, ReloadOutcome
from gateway.policy.hours import WorkingHours
from gateway.policy.reloader import PolicyReloader
from gateway.protocol.eras import MODERN_ERA
from gateway.registry.model import Agent, Lifecycle, LifecycleEvent
from gateway.registry.service import Registry
from gateway.resource_updates import ResourceUpdateRelay
from gateway.store import open_store
from gateway.tasks.gate import TaskGate
from gateway.tasks.model import Task
from gateway.tasks.service import TaskService
from gateway.tasks.token_check import TaskTokenCheck
from gateway.tasks.tokens import TaskTokenIssuer
from gateway.telemetry import Telemetry
from gateway.transport.endpoint import McpEndpoint
from gateway.transport.sessions import SessionRegistry
from gateway.upstream.directory import Directory, Listing
from gateway.upstream.pool import UpstreamPool
from gateway.visibility_pass import VisibilityPass, publish_in_steps
from gateway.webhooks import WebhookSender

log = logging.getLogger("narrowgate")
SWEEP_INTERVAL_S = 5.0
DRAIN_GRACE_S = 5.0  # how long calls in flight at a stop may take to finish (held calls are answered at once)
LIST_CHANGED = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
}


class Gateway:
    """Everything one running gateway holds; the ASGI app is `self.app`."""

    def __init__(self, settings: Settings, catalog: Catalog, tool_schemas: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.background: set[asyncio.Task[None]] = set()
        self.drained = (0, 0)  # (held calls, unfinished calls) answered when the process was stopped
        self.store = open_store(settings.state)
        self.digest_key = DigestKey()  # loaded from the store at start, before anything is recorded
        self.audit = AuditLog(self.store, digests=self.digest_key.keyed)
        self.telemetry = Telemetry.from_env()
        self.build_identity()
        self.build_policy(dict(tool_schemas or {}))
        self.build_tasks()
        self.build_discovery()
        self.pool.on_rebuild = self.on_directory_rebuilt
        self.pool.on_list_changed = self.on_upstream_lists_changed
        limits = settings.limits
        self.sessions = SessionRegistry(limits.session_idle_s, limits.max_sessions_per_agent, limits.max_sessions)
        authorizer = Authorizer(self.policy, self.audit, settings.policy.agent_reasons,
                                on_evaluated=lambda d, s: self.telemetry.record_policy_evaluation(s, d.outcome))
        self.methods = Methods(self.pool, authorizer, self.upstream_auth, TaskGate(self.tasks),
                               self.telemetry, self.build_monitor())
        self.build_approvals(authorizer)
        authenticator = Authenticator(settings, self.verifier, self.registry, self.task_check)
        self.endpoint = McpEndpoint(settings, authenticator, self.methods, self.sessions, self.telemetry)
        self.pool.on_resource_updated = ResourceUpdateRelay(self.methods, self.sessions, self.endpoint.listen_hub,
                                                            self.current_principal).relay
        admin_auth = AdminAuthenticator(settings, self.verifier, self.registry, self.task_check.is_ours)
        self.agents_api = AgentsApi(self.registry, admin_auth)
        self.policies_api = PoliciesApi(self.policy, self.reloader, admin_auth)
        self.app = Starlette(routes=self.routes(), lifespan=self.lifespan)

    def build_identity(self) -> None:
        """Who calls: the agent registry, workload-token verification, and the gateway's own keys."""
        self.registry = Registry(self.store, [])
        self.registry.observe(self.on_agent_change)
        self.verifier = TokenVerifier(self.settings.identity)
        self.secrets = SecretResolver()
        self.upstream_auth = UpstreamAuth(self.settings.base_url, self.secrets, self.settings.tokens.upstream_ttl_s)

    def build_policy(self, tool_schemas: dict[str, Any]) -> None:
        settings = self.settings
        # Input schemas last reported by upstreams (from the store), until they report again.
        self.tool_schemas = tool_schemas
        self.policy = PolicyEngine(
            settings.policies_dir, self.catalog, shadow_dir=settings.policy.shadow, tool_schemas=tool_schemas,
            working_hours=WorkingHours.from_mapping(settings.policy.working_hours),
        )
        watched = [settings.policies_dir, *([settings.policy.shadow] if settings.policy.shadow else [])]
        self.reloader = PolicyReloader(self.policy, watched, settings.policy.watch_interval_s)
        self.reloader.on_change = self.announce_policy_change
        self.reloader.on_outcome = self.audit_policy_reload
        self.schema_update_failures = 0
        # The catalog compile under way on a worker thread (see on_directory_rebuilt), if any.
        self.policy_sync: asyncio.Task[None] | None = None
        self.announce_lock = asyncio.Lock()  # one pass over the sessions at a time, in order

    def build_monitor(self) -> ChainMonitor:
        """Chain monitoring: the catalog's `egress: true` tools count as egress, besides the config's."""
        settings = self.settings.monitoring
        egress = tuple(sorted({*settings.egress_tools, *(t.exposed_name for t in self.catalog.tools.values()
                                                        if t.egress)}))
        settings = replace(settings, egress_tools=egress)
        self.chain = ChainTracker(settings)
        self.detections = DetectionResponder(self.audit, self.registry, self.telemetry, settings,
                                             self.settings.monitoring_webhook_url,
                                             self.settings.monitoring_webhook_secret_env)
        return ChainMonitor(self.chain, self.detections)

    def build_tasks(self) -> None:
        """Task grants: the token endpoint that starts them and the check that honours their tokens."""
        base = self.settings.base_url
        resource, token_url = f"{base}/mcp", f"{base}{TOKEN_PATH}"
        self.tasks = TaskService(self.store, self.registry, self.catalog)
        self.tasks.on_end.append(self.on_task_end)
        self.tasks.on_start.append(self.on_task_start)
        self.task_tokens = TaskTokenIssuer(self.upstream_auth, base, resource, self.settings.tokens.task_ttl_s)
        self.task_check = TaskTokenCheck(self.tasks, self.upstream_auth.public_keys, base, resource)
        # RFC 7523 client assertions may name the token endpoint as their audience.
        self.assertion_verifier = TokenVerifier(settings_for_audience(self.settings.identity, token_url))
        self.token_endpoint = TokenEndpoint(self.verifier, self.registry, self.tasks, self.task_tokens,
                                            resource=resource, token_url=token_url,
                                            assertion_verifier=self.assertion_verifier)

    def build_discovery(self) -> None:
        """Upstream tools as reviewed: quarantine for new and changed definitions, and their review."""
        settings = self.settings.discovery
        self.pool = UpstreamPool(self.catalog, self.upstream_auth, full_resync_s=settings.resync_interval_s,
                                 max_reply_bytes=self.settings.limits.max_upstream_reply_bytes)
        self.reviews = ToolReviews(self.store, self.audit)
        self.resource_reviews = ResourceReviews(self.store, self.audit)
        self.pool.reconcile = self.reconcile_listings
        self.pool.resource_status = self.resource_reviews.status
        self.resource_reviews.on_decided.append(self.apply_resource_reviews)
        self.applied_catalog = self.catalog  # the one the policy engine and task grants use now
        self.effective_stale = True
        self.review_webhook = WebhookSender(settings.webhook_url, settings.webhook_secret_env, "tool review")
        self.reviews.on_decided.append(self.apply_reviews)
        self.reviews.on_quarantined.append(
            lambda review: self.review_webhook.send(review_webhook_payload(review, self.settings.base_url)))
        self.resource_reviews.on_quarantined.append(
            lambda review: self.review_webhook.send(resource_webhook_payload(review, self.settings.base_url)))

    def reconcile_listings(self, listings: dict[str, Listing]) -> Catalog:
        """The pool's view of the catalog: every listed tool as reviewed (approved, quarantined, rejected)."""
        if self.reviews.reconcile(self.catalog, {sid: listing.tools for sid, listing in listings.items()}):
            self.effective_stale = True
            self.run_in_background(self.reviews.save())
        if self.resource_reviews.reconcile(self.catalog, listings):
            self.run_in_background(self.resource_reviews.save())
        if not self.effective_stale:
            return self.pool.catalog  # what this returned last time
        self.effective_stale = False
        effective = self.reviews.effective(self.catalog)
        self.telemetry.set_quarantined_tools(sum(1 for t in effective.tools.values() if t.status == "quarantined"))
        return effective

    async def apply_reviews(self) -> None:
        """After a review decision: rebuild the catalog everyone uses, then tell agents whose list changed."""
        self.effective_stale = True
        self.pool.rebuild()
        await self.announce_list_changed({"tools"})

    async def apply_resource_reviews(self) -> None:
        """After a resource review decision: rebuild the directory, then tell agents to list again."""
        self.pool.rebuild()
        await self.announce_list_changed({"resources"})

    def current_principal(self, principal: Principal) -> Principal | None:
        """`principal` with its agent record as it is now; None if the agent may no longer act."""
        agent = self.registry.get(principal.agent_id)
        if agent is None or agent.effective_state(self.registry.clock()) is not Lifecycle.ACTIVE:
            return None
        return replace(principal, agent=agent)

    def run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def build_approvals(self, authorizer: Authorizer) -> None:
        """Step-up approvals: requests people decide in the console, the admin API or the CLI."""
        settings = self.settings.approvals
        self.approval_settings = settings
        self.approvals = ApprovalService(self.store, self.registry, self.audit, settings, digests=self.digest_key)
        self.tasks.on_end.append(self.approvals.task_ended)
        self.approvals.on_change.append(self.telemetry.set_approvals_pending)
        self.approval_webhook = WebhookSender(settings.webhook_url, settings.webhook_secret_env, "approval")
        self.approvals.on_new.append(
            lambda approval: self.approval_webhook.send(approval_webhook_payload(approval, self.settings.base_url)))
        self.methods.step_up = StepUpFlow(self.approvals, authorizer, self.tasks, self.telemetry, settings,
                                          self.settings.base_url)

    def routes(self) -> list[BaseRoute]:
        from gateway.admin.approvals_api import ApprovalsApi
        from gateway.admin.catalog_api import CatalogApi
        from gateway.admin.keys_api import KeysApi
        from gateway.admin.tasks_api import TasksApi
        from gateway.console.pages import Console

        admin_auth = self.agents_api.auth
        tasks_api = TasksApi(self.tasks, self.task_tokens, self.registry, admin_auth)
        keys_api = KeysApi(self.upstream_auth, admin_auth)
        return [
            Route("/mcp", self.endpoint, methods=["GET", "POST", "DELETE"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/.well-known/oauth-protected-resource", self.resource_metadata, methods=["GET"]),
            Route("/.well-known/oauth-protected-resource/mcp", self.resource_metadata, methods=["GET"]),
            Route(METADATA_PATH, self.authorization_server_metadata, methods=["GET"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/oauth/revocations", self.revocations, methods=["GET"]),
            *self.token_endpoint.routes(),
            *self.agents_api.routes(),
            *self.policies_api.routes(),
            *tasks_api.routes(),
            *keys_api.routes(),
            *ApprovalsApi(self.approvals, admin_auth, self.settings.base_url).routes(),
            *CatalogApi(self.reviews, admin_auth, self.resource_reviews).routes(),
            *Console(self.approvals, self.registry, self.tasks, self.store, admin_auth, self.settings,
                     self.reviews, self.resource_reviews).routes(),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.store.migrate()
        await self.digest_key.load(self.store)
        await self.audit.open()
        await self.registry.reload()
        if self.settings.agents_file is not None:
            report = await self.registry.load_agents_file(self.settings.agents_file)
            log.info("agents file %s: %s", self.settings.agents_file, report)
        await self.verifier.start()
        await self.assertion_verifier.start()
        await self.upstream_auth.start(self.store)
        await self.tasks.open()
        await self.approvals.open()
        await self.reviews.open()
        await self.resource_reviews.open()
        # One re-typing of the policy set for the whole start (not one per upstream listed), so one
        # "policy version ... in force" line at most.
        self.pool.on_rebuild = None
        await self.pool.start()
        self.pool.on_rebuild = self.on_directory_rebuilt
        self.on_directory_rebuilt(self.pool.directory)
        await self.policy_catalog_synced()  # serve with the schemas the upstreams report
        self.reloader.start()
        sweeper = asyncio.create_task(self.sweep_inactive_agents())
        down = [sid for sid, client in self.pool.clients.items() if not client.available]
        if down:
            log.warning("started with upstream(s) down: %s (retrying in the background)", ", ".join(down))
        # Long-lived start-up objects (catalog, keys, registry) leave the collector's view, so the
        # periodic full collections that cause tail-latency spikes have far less to walk.
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
            await self.secrets.close()
            await self.detections.close()
            await self.approvals.close()
            await self.review_webhook.close()
            await self.approval_webhook.close()
            await self.tasks.close()
            await self.verifier.close()
            await self.assertion_verifier.close()
            await asyncio.gather(*self.background, return_exceptions=True)
            await self.reviews.save()
            await self.resource_reviews.save()
            await self.audit.close()
            await self.store.close()
            self.telemetry.shutdown()
            held, cut = self.drained
            log.info("Narrowgate stopped: %d held call(s) and %d unfinished call(s) answered with a shutting-down "
                     "error; audit log flushed; upstreams stopped", held, cut)

    async def drain(self) -> None:
        """On SIGINT/SIGTERM, before the lifespan ends: answer every open /mcp request."""
        self.drained = await self.endpoint.drain(DRAIN_GRACE_S)

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
            self.run_in_background(self.store.save_tool_schemas(changed))
        if catalog is not self.applied_catalog:
            self.applied_catalog = catalog
            self.tasks.set_catalog(approved_only(catalog))  # tasks are granted reviewed tools only
        # Compiling against thousands of tools takes seconds: on a worker thread, calls meanwhile
        # decided by the last good bundle (a tool whose entry changed is denied until the swap).
        task = asyncio.create_task(self.apply_policy_catalog(catalog))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
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

    def announce_policy_change(self) -> None:
        """A new policy set can change what each agent may see: tell agents to list again."""
        self.run_in_background(self.announce_list_changed({"tools", "prompts", "resources"}))

    def on_agent_change(self, agent: Agent, event: LifecycleEvent) -> None:
        """Every lifecycle change is audited; a suspended or retired agent loses its sessions at once."""
        self.audit.record(AuditEvent(
            kind="agent", action=event.action or "change", actor=event.actor, agent_id=agent.id, owner=agent.owner,
            detail={"from": event.from_state.value if event.from_state else None, "to": event.to_state.value,
                    "reason": event.reason, "fields": list(event.fields)},
        ))
        if event.from_state != event.to_state and agent.state in (Lifecycle.SUSPENDED, Lifecycle.RETIRED):
            self.chain.forget_agent(agent.id)  # a resumed agent starts with a clean record
            closed = self.close_agent_streams(agent.id)
            log.warning("agent %s is %s (%s by %s); closed %d session(s)", agent.id, agent.state.value,
                        event.reason, event.actor, closed)

    async def sweep_inactive_agents(self) -> None:
        """Expiry fires no event: close the sessions of agents that have expired since they connected."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = self.registry.clock()
            connected = {s.principal.agent_id for s in self.sessions.all()}
            connected |= {listener.principal.agent_id for listener in self.endpoint.listen_hub.listeners}
            for agent_id in connected:
                agent = self.registry.get(agent_id)
                if agent is not None and agent.effective_state(now) is not Lifecycle.ACTIVE:
                    self.close_agent_streams(agent_id)
                    log.warning("agent %s expired; closed its sessions", agent_id)

    def close_agent_streams(self, agent_id: str) -> int:
        """Close the agent's sessions and listen streams; the number of sessions closed."""
        self.endpoint.listen_hub.close_agent(agent_id)
        return self.sessions.close_agent(agent_id)

    async def healthz(self, request: Request) -> Response:
        upstreams = {sid: client.available for sid, client in self.pool.clients.items()}
        # The gateway itself is up either way (200); "degraded" says some upstream is not.
        status = "ok" if all(upstreams.values()) else "degraded"
        policy = {"version": self.policy.version, "reload_failures": self.reloader.failures,
                  "schema_update_failures": self.schema_update_failures}
        return JSONResponse({"status": status, "version": __version__, "upstreams": upstreams, "policy": policy})

    async def resource_metadata(self, request: Request) -> Response:
        """RFC 9728 protected-resource metadata for `/mcp`."""
        return JSONResponse({
            "resource": f"{self.settings.base_url}/mcp",
            "authorization_servers": [self.settings.base_url],
            "bearer_methods_supported": ["header"],
            "resource_name": "Narrowgate MCP gateway",
        })

    async def authorization_server_metadata(self, request: Request) -> Response:
        """RFC 8414: where agents exchange workload tokens for task tokens."""
        return JSONResponse(authorization_server_metadata(self.settings.base_url))

    def on_task_start(self, task: Task) -> None:
        self.audit.record(AuditEvent(
            kind="task", action="start", actor=task.started_by, agent_id=task.agent_id, task_id=task.id,
            detail={"purpose": task.purpose, "tools": list(task.tools), "deadline": task.deadline,
                    "budget": task.budget},
        ))

    def on_task_end(self, task: Task) -> None:
        """Every upstream token minted for an ended task is refused until it would have expired anyway."""
        self.upstream_auth.revocations.revoke_task(task.id, until=time.time() + self.upstream_auth.ttl_s + 5)
        self.sessions.close_task(task.agent_id, task.id)  # their token is dead: free the agent's session slots
        self.chain.forget_task(task.id)
        self.audit.record(AuditEvent(
            kind="task", action=task.state.value, actor="narrowgate", agent_id=task.agent_id,
            task_id=task.id, detail={"reason": task.end_reason, "calls": task.calls_made},
        ))
        log.info("task %s of agent %s ended (%s): its grants and upstream tokens are revoked",
                 task.id, task.agent_id, task.state.value)

    async def metrics(self, request: Request) -> Response:
        """Prometheus text exposition of the gateway's metrics."""
        body, content_type = self.telemetry.metrics_response()
        return Response(body, media_type=content_type)

    async def jwks(self, request: Request) -> Response:
        """The public keys upstreams verify per-call tokens with (current, and previous during overlap)."""
        return JSONResponse(self.upstream_auth.jwks(), headers={"Cache-Control": "max-age=60"})

    async def revocations(self, request: Request) -> Response:
        """Tasks (and token ids) whose minted upstream tokens must be refused until they expire."""
        return JSONResponse(self.upstream_auth.revocations.snapshot(), headers={"Cache-Control": "no-store"})

    async def on_upstream_lists_changed(self, kinds: set[str]) -> None:
        """An upstream's tools, prompts or resources changed: audit it, then tell the agents."""
        self.audit.record(AuditEvent(kind="catalog", action="lists_changed", actor="narrowgate",
                                     detail={"kinds": sorted(kinds), "tools": sorted(self.pool.directory.tools)}))
        await self.announce_list_changed(kinds)

    async def announce_list_changed(self, kinds: set[str]) -> None:
        for kind in sorted(kinds):
            if kind == "tools":
                await self.announce_tool_changes()
                continue
            message = {"jsonrpc": "2.0", "method": LIST_CHANGED[kind]}
            await publish_in_steps(self.sessions.all(), message)
            self.endpoint.listen_hub.publish(message["method"])

    async def announce_tool_changes(self) -> None:
        """Tell each open session or listener whose visible tools changed, and nobody else (a tool in
        quarantine changes no one's list; its approval changes only the lists of agents who may use it).

        Once the policy engine has the current catalog; computed once per distinct caller and in
        small steps (see VisibilityPass), so thousands of sessions do not hold up calls."""
        await self.policy_catalog_synced()
        method = LIST_CHANGED["tools"]
        async with self.announce_lock:
            visibility = VisibilityPass(self.methods.visible_tool_names_async)
            for session in list(self.sessions.all()):
                if await visibility.changed(session, session.protocol_version, session.client_info):
                    session.publish({"jsonrpc": "2.0", "method": method})
            for listener in list(self.endpoint.listen_hub.listeners):
                if await visibility.changed(listener, MODERN_ERA, listener.client_info):
                    listener.notify(method)
