"""The MCP method table: answer what the gateway owns (lists, ping, logging level) here, and send what goes
upstream through the stages (gateway.calls.pipeline)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp_types import SERVER_INFO_META_KEY

from gateway.approvals.step_up import StepUpFlow
from gateway.calls import pipeline
from gateway.calls.admit import Admit
from gateway.calls.approve import Approve
from gateway.calls.call import Reply, RequestContext, ToolCall
from gateway.calls.credential import Credential
from gateway.calls.decide import Decide
from gateway.calls.forward import Forward
from gateway.calls.observe import Observe
from gateway.calls.rate_limit import RateLimit
from gateway.catalog.model import ToolEntry
from gateway.chain.monitor import ChainMonitor
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.identity.principal import Principal
from gateway.policy.authorizer import Authorizer
from gateway.policy.engine import RequestFacts
from gateway.policy.paths import CanonicalizationError, canonical_path
from gateway.policy.tool_listing import ToolLister
from gateway.protocol.capabilities import INSTRUCTIONS, MODERN_CAPABILITIES, SERVER_INFO
from gateway.protocol.eras import MODERN_ERA
from gateway.protocol.errors import INVALID_PARAMS, METHOD_NOT_FOUND, UPSTREAM_UNAVAILABLE, RpcError
from gateway.protocol.log_levels import LOG_LEVELS
from gateway.tasks.gate import BUILTIN_TOOLS, TaskGate
from gateway.telemetry import Telemetry
from gateway.upstream.pool import UpstreamPool

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
        decide = Decide(authorizer, tasks, monitor, pool, telemetry)
        self.stages = pipeline.Stages(
            admit=Admit(tasks, monitor), rate_limit=RateLimit(monitor), decide=decide,
            approve=Approve(decide, step_up), credential=Credential(auth, pool, telemetry),
            forward=Forward(pool, telemetry), observe=Observe(monitor, tasks))

    def handle(self, ctx: RequestContext, method: str, params: dict[str, Any]) -> Awaitable[Reply]:
        """The reply body for one request, to be awaited: {"result": ...} or {"error": ...}; RpcError for gateway
        errors (an unknown method at once, the rest when awaited). The handler's coroutine is handed on, not
        awaited here: one frame fewer per request."""
        handler = HANDLERS.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return handler(self, ctx, params)

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
        visible = await self.visible_tools_async(ctx.principal, await self.facts(ctx))
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
            facts = await self.facts_for(principal, era, client_info, self.tasks.facts(principal))
            return await self.visible_tools_async(principal, facts)
        except RpcError:
            return frozenset()

    async def list_prompts(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        prompts = self.pool.directory.prompts
        pairs = [(view.server_id, name) for name, view in prompts.items()]
        visible = self.authorizer.visible_prompts(ctx.principal, pairs, await self.facts(ctx))
        return {"result": {"prompts": [view.definition for name, view in prompts.items() if name in visible]}}

    async def list_resources(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        """Approved resources routed to the server listing them (see gateway.upstream.directory)."""
        views = self.pool.directory.resource_list
        visible = self.authorizer.visible_resources(ctx.principal, [(v.server_id, v.uri) for v in views],
                                                    await self.facts(ctx))
        return {"result": {"resources": [v.definition for v in views if v.uri in visible]}}

    async def list_templates(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        directory = self.pool.directory
        pairs = [(t.server_id, t.definition["uriTemplate"]) for t in directory.templates]
        visible = self.authorizer.visible_resources(ctx.principal, pairs, await self.facts(ctx))
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
            await self.stages.observe.probe(ctx.principal, name)
            raise self.missing_tool(name)
        if self.telemetry.tracing_enabled:  # off: the span is a no-op
            ctx.span.set(tool_name=name, upstream=view.entry.server_id)
        entry = view.entry
        ctx.record.upstream = entry.server_id  # refusals before the upstream is called are labelled with it too
        return await pipeline.call_tool(self.stages, ToolCall(ctx, name, view, arguments, params, ctx.principal, entry))

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
        return await pipeline.get_prompt(self.stages, ctx, name, view, params)

    async def read_resource(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        return await pipeline.read_resource(self.stages, ctx, params)

    async def subscribe(self, ctx: RequestContext, params: dict[str, Any]) -> Reply:
        canonical, route = await self.stages.decide.resource(ctx, params.get("uri"))
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
            await self.stages.decide.prompt(ctx, view.server_id, ref["name"])
            upstream_params = {**params, "ref": {**ref, "name": view.upstream_name}}
            return await self.forward(ctx, view.server_id, "completion/complete", upstream_params)
        uri = ref.get("uri")
        server_id = directory.server_for_template(uri) if isinstance(uri, str) else None
        if server_id is not None:  # a template, named exactly as its (approved) upstream lists it
            await self.stages.decide.template(ctx, server_id, str(uri))
            return await self.forward(ctx, server_id, "completion/complete", params)
        _, route = await self.stages.decide.resource(ctx, uri, missing=INVALID_PARAMS)
        upstream_params = {**params, "ref": {**ref, "uri": route.upstream_uri}}
        return await self.forward(ctx, route.server_id, "completion/complete", upstream_params)

    async def authorize_subscriptions(self, ctx: RequestContext, uris: list[str]) -> list[str]:
        """The canonical URIs of those a `subscriptions/listen` stream may follow: each goes through the
        same decision as a read; refused and unknown ones are left out of the acknowledgement."""
        allowed: list[str] = []
        for uri in uris:
            try:
                canonical, _ = await self.stages.decide.resource(ctx, uri)
            except RpcError:
                continue
            if canonical not in allowed:
                allowed.append(canonical)
        return allowed

    async def subscription_allowed(self, principal: Principal, era: str, client_info: dict[str, Any] | None,
                                   server_id: str, canonical: str) -> bool:
        """Before relaying an update: would this subscriber still be allowed to read it? (recorded if not)"""
        try:
            facts = await self.facts_for(principal, era, client_info, self.tasks.facts(principal))
        except RpcError:
            return False  # its task has ended
        return await self.authorizer.recheck_resource(principal, server_id, canonical, facts)

    async def facts(self, ctx: RequestContext) -> RequestFacts:
        return await self.stages.decide.facts(ctx)

    async def facts_for(self, principal: Principal, era: str, client_info: dict[str, Any] | None,
                        task: dict[str, Any] | None) -> RequestFacts:
        return await self.stages.decide.facts_for(principal, era, client_info, task)

    async def forward(self, ctx: RequestContext, server_id: str, method: str, params: dict[str, Any]) -> Reply:
        """An authorized completion or subscription request on to its upstream, once it fits the caller's rate
        limits (everything that reaches an upstream is counted)."""
        await self.stages.rate_limit.request(ctx, server_id)
        return await self.stages.forward.request(ctx, server_id, method, params)


def canonical_or_self(uri: str) -> str:
    try:
        return canonical_path(uri)
    except CanonicalizationError:
        return uri


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
