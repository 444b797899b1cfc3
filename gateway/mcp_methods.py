"""MCP methods: answer what the gateway owns (lists, ping, logging level), route the rest upstream."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp.shared.inbound import mcp_param_headers
from mcp_types import SERVER_INFO_META_KEY

from gateway.approvals.step_up import HoldingSink, StepUpCall, StepUpFlow, without_approval_round
from gateway.authorization import Authorizer
from gateway.catalog.model import HttpTransport, ServerEntry, ToolEntry
from gateway.chain.monitor import ChainMonitor
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.identity.principal import Principal
from gateway.policy.engine import Decision, RequestFacts
from gateway.policy.paths import CanonicalizationError, canonical_path
from gateway.policy.tool_listing import ToolLister
from gateway.protocol.capabilities import INSTRUCTIONS, MODERN_CAPABILITIES, SERVER_INFO
from gateway.protocol.eras import MODERN_ERA
from gateway.protocol.errors import INVALID_PARAMS, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND, UPSTREAM_UNAVAILABLE, RpcError
from gateway.protocol.log_levels import LOG_LEVELS
from gateway.tasks.gate import BUILTIN_TOOLS, TaskGate, task_facts
from gateway.tasks.model import Task
from gateway.telemetry import NOOP_SPAN, RequestSpan, Telemetry
from gateway.transport.sessions import AgentSession
from gateway.upstream.base import CallContext
from gateway.upstream.directory import ResourceRoute, Withheld
from gateway.upstream.pool import UpstreamPool
from gateway.verifier import argument_digest


@dataclass(slots=True)
class RequestContext:
    principal: Principal
    era: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any] | None
    session: AgentSession | None
    sink: HoldingSink | None  # also the upstream call's CallSink
    trace_id: str | None = None
    span: RequestSpan = NOOP_SPAN
    # What this request came to, for metrics and the span.
    decision: str | None = None
    approved: bool = False  # the decision that let the call through used a person's approval
    upstream: str | None = None


Reply = dict[str, Any]
Handler = Callable[["Methods", RequestContext, dict[str, Any]], Awaitable[Reply]]


class Methods:
    def __init__(self, pool: UpstreamPool, authorizer: Authorizer, auth: UpstreamAuth,
                 tasks: TaskGate, telemetry: Telemetry, monitor: ChainMonitor,
                 step_up: StepUpFlow | None = None) -> None:
        self.telemetry = telemetry
        self.monitor = monitor
        self.pool = pool
        self.authorizer = authorizer
        self.lister = ToolLister(authorizer.engine)
        self.upstream_auth = auth
        self.tasks = tasks
        self.step_up = step_up  # approvals; without it StepUp is refused

    async def handle(self, ctx: RequestContext, method: str, params: dict[str, Any]) -> Reply:
        """The reply body for one request: {"result": ...} or {"error": ...}; RpcError for gateway errors."""
        handler = HANDLERS.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return await handler(self, ctx, params)

    # Owned by the gateway ----------------------------------------------------------------------

    async def ping(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        return {"result": {}}

    async def discover(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        return {"result": {
            "supportedVersions": [MODERN_ERA],
            "capabilities": MODERN_CAPABILITIES,
            "instructions": INSTRUCTIONS,
            "_meta": {SERVER_INFO_META_KEY: SERVER_INFO},
        }}

    # Lists hold exactly what this agent could use now (one batch of policy decisions each).

    async def list_tools(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        tools = self.pool.directory.tools
        visible = await self.visible_tools_async(ctx.principal, self.facts(ctx))
        if ctx.session is not None:
            ctx.session.tools_seen = visible
        listed = [view.definition for name, view in tools.items() if name in visible]
        return {"result": {"tools": listed + self.tasks.builtin_tools(ctx.principal)}}

    async def visible_tools_async(self, principal: Principal, facts: RequestFacts) -> frozenset[str]:
        """What this caller may list: its grant's tools that are approved (never quarantined or rejected)
        and that policy allows, or would allow with an approval. The tool index is built on a worker
        thread and Cedar is asked once per class of tools (gateway.policy.tool_listing)."""
        return await self.lister.visible(principal, self.listable_entries(principal), facts)

    def listable_entries(self, principal: Principal) -> list[ToolEntry]:
        tools = self.pool.directory.tools
        return [view.entry for n in self.tasks.visible(principal, tools) if (view := tools[n]).entry.approved]

    async def visible_tool_names_async(self, principal: Principal, era: str,
                                       client_info: dict[str, Any] | None) -> frozenset[str]:
        """visible_tools_async outside a request (to tell agents when their list changed); empty if the task ended."""
        try:
            return await self.visible_tools_async(principal, self.facts_for(principal, era, client_info,
                                                                            self.tasks.facts(principal)))
        except RpcError:
            return frozenset()

    async def list_prompts(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        prompts = self.pool.directory.prompts
        pairs = [(view.server_id, name) for name, view in prompts.items()]
        visible = self.authorizer.visible_prompts(ctx.principal, pairs, self.facts(ctx))
        return {"result": {"prompts": [view.definition for name, view in prompts.items() if name in visible]}}

    async def list_resources(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        """Approved resources routed to the server listing them (see gateway.upstream.directory)."""
        views = self.pool.directory.resource_list
        visible = self.authorizer.visible_resources(ctx.principal, [(v.server_id, v.uri) for v in views],
                                                    self.facts(ctx))
        return {"result": {"resources": [v.definition for v in views if v.uri in visible]}}

    async def list_templates(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        directory = self.pool.directory
        pairs = [(t.server_id, t.definition["uriTemplate"]) for t in directory.templates]
        visible = self.authorizer.visible_resources(ctx.principal, pairs, self.facts(ctx))
        listed = [t.definition for t in directory.templates if t.definition["uriTemplate"] in visible]
        return {"result": {"resourceTemplates": listed}}

    async def set_log_level(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        level = params.get("level")
        if level not in LOG_LEVELS:
            raise RpcError(INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}")
        if ctx.session is not None:
            ctx.session.log_level = level
        return {"result": {}}

    # Routed upstream -------------------------------------------------------------------------

    async def call_tool(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "tools/call needs a string name")
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "tools/call arguments must be an object")
        if name in BUILTIN_TOOLS:
            return await self.tasks.call_builtin(ctx.principal, name, arguments or {})
        view = self.pool.directory.tools.get(name)
        if view is None:
            await self.monitor.probe(ctx.principal, name)
            raise self.missing_tool(name)
        ctx.span.set(tool_name=name, upstream=view.entry.server_id)
        ctx.upstream = view.entry.server_id  # refusals before the upstream is called are labelled with it too
        try:
            task = self.tasks.admit(ctx.principal, name)
        except RpcError:
            if ctx.principal.task_id is not None:
                await self.monitor.probe(ctx.principal, name)  # asking for a tool outside the task
            raise
        self.monitor.admit(ctx.principal, name)
        try:
            decision = await self.decide(ctx, view.entry, arguments, params, task)
        finally:
            outcome = "approved" if ctx.approved and ctx.decision == "allow" else ctx.decision or "deny"
            await self.monitor.observe(ctx.principal, view.entry, outcome)
        if isinstance(decision, dict):
            return decision  # waiting for a person: the agent is told where and how to retry
        self.tasks.consume(ctx.principal)
        # The upstream gets exactly the arguments the policy judged (paths normalized, NFC).
        if decision.canonical_arguments is not None:
            arguments = decision.canonical_arguments
        server = self.pool.catalog.servers[view.entry.server_id]
        call_ctx = self.call_context(ctx, server)
        if view.param_headers:
            call_ctx.headers.update(mcp_param_headers(view.param_headers, arguments or {}))
        if isinstance(server.transport, HttpTransport):
            with self.telemetry.stage("mint"):
                # A token for this one tool, this upstream and this argument set; never the agent's own.
                call_ctx.auth = await self.upstream_auth.for_call(
                    server, ctx.principal, view.entry.name, decision.args_digest or argument_digest(arguments),
                    ctx.principal.task_id,
                    ctx.trace_id or secrets.token_hex(16))
        upstream_params = {**without_approval_round(params), "name": view.entry.name}
        if arguments is not None:
            upstream_params["arguments"] = arguments
        with self.telemetry.stage("upstream_call", upstream=server.id):
            self.telemetry.inject(call_ctx.headers)
            try:
                return await self.pool.call(view.entry.server_id, "tools/call", upstream_params, call_ctx)
            except RpcError as exc:
                self.telemetry.record_upstream_error(server.id, str(exc.code))
                raise

    async def decide(self, ctx: RequestContext, entry: ToolEntry, arguments: dict[str, Any] | None,
                     params: dict[str, Any], task: Task | None) -> Decision | Reply:
        """The policy stage (and, on StepUp, the approval): its outcome goes on the span either way."""
        facts = self.facts_for(ctx.principal, ctx.era, ctx.client_info, task_facts(task))
        decision: Decision | None = None
        try:
            with self.telemetry.stage("policy"):
                decision = await self.authorizer.check_tool(ctx.principal, entry, arguments, facts, ctx.trace_id)
                self.note_decision(ctx, decision)
                if not decision.allowed:
                    raise self.authorizer.refusal(decision)  # the policy stage span records it as its error
                return decision
        except RpcError:
            if decision is None or decision.outcome != "step_up" or self.step_up is None:
                raise
        outcome = await self.step_up.resolve(StepUpCall(
            principal=ctx.principal, era=ctx.era, entry=entry, arguments=arguments, refused=decision,
            facts=facts, params=params, url_elicitation=supports_url_elicitation(ctx.client_capabilities),
            sink=ctx.sink, trace_id=ctx.trace_id, refresh=lambda: self.facts(ctx)))
        if isinstance(outcome, dict):
            return outcome
        self.note_decision(ctx, outcome)
        ctx.approved = True
        return outcome

    @staticmethod
    def note_decision(ctx: RequestContext, decision: Decision) -> None:
        ctx.decision = decision.outcome
        ctx.span.set(decision=decision.outcome, decision_id=decision.decision_id, policy_ids=list(decision.policy_ids))

    def missing_tool(self, name: str) -> RpcError:
        entry = self.pool.catalog.tools.get(name)
        if entry is None:
            return RpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        if entry.server_id in self.pool.listings:
            return RpcError(UPSTREAM_UNAVAILABLE, f"Tool {name} is not offered by its upstream right now")
        reason = self.pool.down_reason(entry.server_id)
        suffix = f" ({reason})" if reason else ""
        return RpcError(UPSTREAM_UNAVAILABLE, f"Tool {name} is unavailable: its upstream is down{suffix}")

    async def get_prompt(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        name = params.get("name")
        view = self.pool.directory.prompts.get(name) if isinstance(name, str) else None
        if view is None or not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name}")
        await self.authorizer.prompt(ctx.principal, view.server_id, name, self.facts(ctx), ctx.trace_id)
        return await self.forward(ctx, view.server_id, "prompts/get", {**params, "name": view.upstream_name})

    async def read_resource(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        _, route = await self.resource_route(ctx, params.get("uri"))
        # The upstream gets the URI that was judged (its own listed spelling of it for a listed resource).
        return await self.forward(ctx, route.server_id, "resources/read", {**params, "uri": route.upstream_uri})

    async def subscribe(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        canonical, route = await self.resource_route(ctx, params.get("uri"))
        reply = await self.forward(ctx, route.server_id, "resources/subscribe", {**params, "uri": route.upstream_uri})
        if "result" in reply and ctx.session is not None:
            ctx.session.subscriptions.add(canonical)  # updates are matched, and re-checked, by canonical URI
        return reply

    async def unsubscribe(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        uri = params.get("uri")
        if ctx.session is not None and isinstance(uri, str):
            ctx.session.subscriptions.discard(canonical_or_self(uri))
        # Other agents may still be subscribed upstream; the gateway stops relaying to this one.
        return {"result": {}}

    async def complete(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise RpcError(INVALID_PARAMS, "completion/complete needs a ref")
        directory = self.pool.directory
        if ref.get("type") == "ref/prompt":
            view = directory.prompts.get(ref.get("name", ""))
            if view is None:
                raise RpcError(INVALID_PARAMS, f"Unknown prompt: {ref.get('name')}")
            await self.authorizer.prompt(ctx.principal, view.server_id, ref["name"], self.facts(ctx), ctx.trace_id)
            upstream_params = {**params, "ref": {**ref, "name": view.upstream_name}}
            return await self.forward(ctx, view.server_id, "completion/complete", upstream_params)
        uri = ref.get("uri")
        server_id = directory.server_for_template(uri) if isinstance(uri, str) else None
        if server_id is not None:  # a template, named exactly as its (approved) upstream lists it
            await self.authorizer.resource(ctx.principal, server_id, str(uri), self.facts(ctx), ctx.trace_id)
            return await self.forward(ctx, server_id, "completion/complete", params)
        _, route = await self.resource_route(ctx, uri, missing=INVALID_PARAMS)
        upstream_params = {**params, "ref": {**ref, "uri": route.upstream_uri}}
        return await self.forward(ctx, route.server_id, "completion/complete", upstream_params)

    async def resource_route(self, ctx: RequestContext, uri: Any,
                             missing: int | None = None) -> tuple[str, ResourceRoute]:
        """The canonical URI and who serves it, once policy allows this caller to read it (recorded).

        The same decision for reads, subscriptions in both eras and completions: a URI with no
        single meaning, or one nobody may serve (awaiting review, claimed twice), is refused and
        recorded; an unknown one is "not found"."""
        if not isinstance(uri, str):
            raise RpcError(INVALID_PARAMS, "a string uri is required")
        facts = self.facts(ctx)
        try:
            canonical = canonical_path(uri)
        except CanonicalizationError as exc:
            raise await self.authorizer.refuse_resource(ctx.principal, escaped(uri), f"no single meaning: {exc}",
                                                        facts, ctx.trace_id) from None
        route = self.pool.directory.route(canonical)
        if isinstance(route, Withheld):
            raise await self.authorizer.refuse_resource(ctx.principal, canonical, f"not served: {route.reason}",
                                                        facts, ctx.trace_id, route.why)
        if route is None:
            # 2026-07-28 (SEP-2164) answers an unknown resource with invalid params; 2025-11-25 with -32002.
            code = missing or (INVALID_PARAMS if ctx.era == MODERN_ERA else RESOURCE_NOT_FOUND)
            raise RpcError(code, f"Resource not found: {uri}", {"uri": uri})
        ctx.upstream = route.server_id
        await self.authorizer.resource(ctx.principal, route.server_id, canonical, facts, ctx.trace_id)
        return canonical, route

    async def authorize_subscriptions(self, ctx: RequestContext, uris: list[str]) -> list[str]:
        """The canonical URIs of those a `subscriptions/listen` stream may follow: each goes through the
        same decision as a read; refused and unknown ones are left out of the acknowledgement."""
        allowed: list[str] = []
        for uri in uris:
            try:
                canonical, _ = await self.resource_route(ctx, uri)
            except RpcError:
                continue
            if canonical not in allowed:
                allowed.append(canonical)
        return allowed

    async def subscription_allowed(self, principal: Principal, era: str, client_info: dict[str, Any] | None,
                                   server_id: str, canonical: str) -> bool:
        """Before relaying an update: would this subscriber still be allowed to read it? (recorded if not)"""
        try:
            facts = self.facts_for(principal, era, client_info, self.tasks.facts(principal))
        except RpcError:
            return False  # its task has ended
        return await self.authorizer.recheck_resource(principal, server_id, canonical, facts)

    def facts(self, ctx: RequestContext) -> RequestFacts:
        return self.facts_for(ctx.principal, ctx.era, ctx.client_info, self.tasks.facts(ctx.principal))

    def facts_for(self, principal: Principal, era: str, client_info: dict[str, Any] | None,
                  task: dict[str, Any] | None) -> RequestFacts:
        return self.authorizer.facts(era, client_info, task, self.monitor.context(principal))

    async def forward(self, ctx: RequestContext, server_id: str, method: str, params: dict[str, Any]) -> Reply:
        """An authorized prompt, resource, completion or subscription request, on to its upstream with the
        trace, once it fits the caller's rate limits (everything that reaches an upstream is counted)."""
        ctx.upstream = server_id  # a rate-limited refusal is labelled with the upstream it would have reached
        self.monitor.admit(ctx.principal, None)
        call_ctx = self.call_context(ctx, self.pool.catalog.servers[server_id])
        self.telemetry.inject(call_ctx.headers)
        return await self.pool.call(server_id, method, params, call_ctx)

    @staticmethod
    def call_context(ctx: RequestContext, server: ServerEntry) -> CallContext:
        """How to call `server` for this request (the caller adds the trace where its span is current)."""
        ctx.upstream = server.id
        return CallContext(era=ctx.era, timeout_s=server.timeout_s, sink=ctx.sink,
                           client_capabilities=ctx.client_capabilities, client_info=ctx.client_info)


def escaped(uri: str, limit: int = 500) -> str:
    """A refused URI as logs and the audit record show it: control and non-ASCII characters escaped
    (a newline cannot forge a log line), at most `limit` characters."""
    return ascii(uri)[1:-1][:limit]


def canonical_or_self(uri: str) -> str:
    try:
        return canonical_path(uri)
    except CanonicalizationError:
        return uri


def supports_url_elicitation(capabilities: dict[str, Any]) -> bool:
    """The client declared URL-mode elicitation (`elicitation: {url: {}}`), so it can send a person to a URL."""
    elicitation = capabilities.get("elicitation") if isinstance(capabilities, dict) else None
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)


HANDLERS: dict[str, Handler] = {
    "ping": Methods.ping,
    "server/discover": Methods.discover,
    "tools/list": Methods.list_tools,
    "tools/call": Methods.call_tool,
    "prompts/list": Methods.list_prompts,
    "prompts/get": Methods.get_prompt,
    "resources/list": Methods.list_resources,
    "resources/templates/list": Methods.list_templates,
    "resources/read": Methods.read_resource,
    "resources/subscribe": Methods.subscribe,
    "resources/unsubscribe": Methods.unsubscribe,
    "completion/complete": Methods.complete,
    "logging/setLevel": Methods.set_log_level,
}
