"""`/mcp`: the agent-facing Streamable HTTP endpoint, both protocol eras, on raw ASGI.

The body is read once (with a size cap), parsed once, and the request is either answered by the
gateway or routed upstream. A reply goes out as plain JSON unless something arrives for the agent
before it (progress, a log line, a relayed question), in which case the response becomes an SSE
stream, as the spec allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from mcp.shared.inbound import (
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.types import Receive, Scope, Send

from gateway.calls.call import CallRecord, RequestContext
from gateway.calls.methods import Methods
from gateway.config import Settings
from gateway.identity.authenticator import AccessRefused, AuthenticationError, Authenticator
from gateway.identity.principal import Principal
from gateway.json_values import JsonValue
from gateway.protocol.capabilities import INSTRUCTIONS, SERVER_CAPABILITIES, SERVER_INFO
from gateway.protocol.eras import ERA_ONLY, LEGACY_ERA, MODERN_ERA
from gateway.protocol.errors import (
    HEADER_MISMATCH,
    HTTP_STATUS_FOR_CODE,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REAUTHENTICATION_REQUIRED,
    REQUEST_CANCELLED,
    SHUTTING_DOWN,
    RpcError,
)
from gateway.protocol.jsonrpc import Message, parse_message
from gateway.protocol.sse import PING_FRAME, SSE_HEADERS
from gateway.state.sessions import AgentSessions
from gateway.telemetry import RequestSpan, Telemetry
from gateway.transport.envelope import duplicated_param_header, names_repeat, plainly_agrees
from gateway.transport.listen import ListenHub, requested_uris
from gateway.transport.origin import OriginPolicy
from gateway.transport.param_headers import check_param_headers
from gateway.transport.responses import ResponseChannel, send_bytes, send_json_error, wait_disconnect
from gateway.transport.sessions import AgentSession, SessionLimitReached, SessionStoreUnavailable, StreamItem

log = logging.getLogger("narrowgate.transport")
PING_INTERVAL_S = 15.0
CACHEABLE = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list",
                       "resources/read", "server/discover"})
UPSTREAM_ROUTED = frozenset({"tools/call", "prompts/get", "resources/read", "completion/complete"})
DRAIN_SLICE_S = 0.1
# A 2026-07-28 request's connection is watched (a disconnect cancels the request) once the request has run this
# long: nearly every call has ended by then. Counted in process (a running loop with 50 other timers), a request's
# watch costs 3.0k instructions as DisconnectWatches keeps it, against 47.5k for a watcher task per request and
# 32.0k for a timer per request. A disconnect before then is seen the moment the watch starts.
WATCH_AFTER_S = 1.0
# Methods that change a session's record (kept by AgentSessions.save, shared in a fleet).
RECORD_METHODS = frozenset({"logging/setLevel", "resources/subscribe", "resources/unsubscribe"})


class BodyTooLarge(Exception):
    pass


# The header names agents and their proxies send on nearly every request (uvicorn gives them lowercased).
KNOWN_HEADER_NAMES = (
    "host", "origin", "accept", "accept-encoding", "accept-language", "authorization", "connection", "content-type",
    "content-length", "transfer-encoding", "user-agent", "cache-control", "keep-alive", "last-event-id",
    "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "traceparent", "tracestate", "baggage",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded", "via",
)


class HeaderNames(dict[bytes, str]):
    """Raw header name -> the name as a str, for the known names (a lookup costs a fifth of decoding); any other
    name is decoded and lowercased each time and never kept, so names made up before the Host check and
    authentication cannot fill it."""

    def __init__(self, known: tuple[str, ...] = KNOWN_HEADER_NAMES) -> None:
        super().__init__((name.encode("latin-1"), name) for name in known)

    def __missing__(self, raw: bytes) -> str:
        # Lowercased as the duplicate checks lowercase (an ASGI server sends names lowercased, but only ASCII):
        # two names that are one to them are one key here (gateway.transport.envelope.names_repeat).
        return raw.decode("latin-1").lower()


HEADER_NAMES = HeaderNames()


def decoded_headers(raw_headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """A request's headers by name, one value each (the last). Optional whitespace around a field value is not
    part of it (RFC 9110 5.5). Names come from HEADER_NAMES (the same few on every request); values are decoded
    afresh (they hold tokens)."""
    names = HEADER_NAMES
    return {names[k]: v.decode("latin-1").strip() for k, v in raw_headers}


class McpEndpoint:
    def __init__(
        self, settings: Settings, authenticator: Authenticator, methods: Methods,
        sessions: AgentSessions[Principal, AgentSession],
        telemetry: Telemetry,
    ) -> None:
        self.telemetry = telemetry
        self.settings = settings
        self.authenticator = authenticator
        self.methods = methods
        self.sessions = sessions
        self.origins = OriginPolicy(settings)
        self.max_body = settings.limits.max_body_bytes
        self.max_depth = settings.limits.max_json_depth
        self.resource_metadata = f"{settings.base_url}/.well-known/oauth-protected-resource"
        self.listen_hub = ListenHub()
        # Every request being answered, with its context: what a stop must answer before it ends.
        self.running: dict[asyncio.Task[object], RequestContext] = {}
        self.watches = DisconnectWatches()  # 2026-07-28 requests' connections
        self.stopping = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.stopping:  # a request on a connection kept alive from before the stop
            await send_json_error(send, 503, None, RpcError(SHUTTING_DOWN, "The gateway is shutting down; "
                                                            "retry once it is back"))
            return
        headers = decoded_headers(scope["headers"])
        if not self.origins.host_ok(headers.get("host")):
            await send_bytes(send, 421, b"Invalid Host header", "text/plain")
            return
        if not self.origins.origin_ok(headers.get("origin")):
            await send_bytes(send, 403, b"Invalid Origin header", "text/plain")
            return
        verb = scope["method"]
        if verb == "POST":
            await self.post(scope, receive, send, headers)
            return
        principal = await self.authenticated(send, headers)
        if principal is None:
            return
        if verb == "GET":
            await self.get(receive, send, headers, principal)
        elif verb == "DELETE":
            await self.delete(send, headers, principal)
        else:
            await send_bytes(send, 405, b"", "text/plain", [(b"allow", b"GET, POST, DELETE")])

    async def authenticated(self, send: Send, headers: dict[str, str]) -> Principal | None:
        """The caller, or None once the 401/403 answer has been sent."""
        try:
            return await self.authenticator.authenticate(headers.get("authorization"))
        except AuthenticationError as exc:
            await self.unauthorized(send, str(exc))
        except AccessRefused as exc:
            body = orjson.dumps({"error": "access_denied", "error_description": str(exc)})
            await send_bytes(send, 403, body, "application/json")
        return None

    async def unauthorized(self, send: Send, reason: str) -> None:
        challenge = f'Bearer resource_metadata="{self.resource_metadata}"'
        body = orjson.dumps({"error": "invalid_token", "error_description": reason})
        await send_bytes(send, 401, body, "application/json", [(b"www-authenticate", challenge.encode())])

    async def reauthenticate(self, send: Send, request_id: object, error: dict[str, Any]) -> None:
        """RFC 9470: 401 with `insufficient_user_authentication` (the policy's acr_values / max_age), in both
        eras; the JSON-RPC error in the body says the same to a client that reads only the body."""
        data = error.get("data")
        data = data if isinstance(data, dict) else {}
        challenge = f'Bearer {data.get("challenge", "")}, resource_metadata="{self.resource_metadata}"'
        body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": error})
        await send_bytes(send, 401, body, "application/json", [(b"www-authenticate", challenge.encode())])

    # POST ------------------------------------------------------------------------------------

    async def post(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        accept = headers.get("accept", "")
        if "application/json" not in accept and "*/*" not in accept:
            await send_json_error(send, 406, None, RpcError(INVALID_REQUEST, "Not Acceptable: "
                                                            "Accept must include application/json"))
            return
        try:
            raw = await read_body(receive, headers, self.max_body)
        except BodyTooLarge:
            await send_json_error(send, 413, None, RpcError(INVALID_REQUEST, f"Request body exceeds "
                                                            f"{self.max_body} bytes"))
            return
        try:
            message = parse_message(raw, self.max_depth)
        except RpcError as exc:
            await send_json_error(send, 400, None, exc)
            return
        params = message.params or {}
        tracing = self.telemetry.tracing_enabled  # off: the span is a no-op, nothing below need be built for it
        attributes: dict[str, Any] = {}
        if tracing:  # only a recorded span reads them
            attributes = {"mcp.method.name": message.method or "response",
                          "mcp.session.id": headers.get("mcp-session-id"),
                          "jsonrpc.request.id": None if message.id is None else str(message.id)}  # None: skipped
        with self.telemetry.request_span(
            message.method or "response", traceparent=headers.get("traceparent"),
            tracestate=headers.get("tracestate"), meta=params.get("_meta") if isinstance(params, dict) else None,
            attributes=attributes,
        ) as span:
            if tracing:
                with self.telemetry.stage("authenticate"):
                    principal = await self.authenticated(send, headers)
            else:  # no span to open: skip the no-op stage's three calls
                principal = await self.authenticated(send, headers)
            if principal is None:
                span.error("unauthenticated", "refused at authentication")
                return
            if tracing:
                span.set(agent_id=principal.agent_id, task_id=principal.task_id,
                         owner=principal.agent.owner if principal.agent is not None else None)
                if principal.user is not None:
                    span.set(user_sub=principal.user.subject, user_issuer=principal.user.issuer)
            if is_modern(headers, message):
                await self.post_modern(scope, receive, send, headers, principal, message, span)
            else:
                await self.post_legacy(receive, send, headers, principal, message, span)

    async def post_legacy(
        self, receive: Receive, send: Send, headers: dict[str, str], principal: Principal, message: Message,
        span: RequestSpan,
    ) -> None:
        if message.method == "initialize":
            await self.initialize(send, principal, message)
            return
        session = await self.session_for(send, headers, principal, message.id)
        if session is None:
            return
        if message.kind == "notification":
            self.on_notification(session, message)
            await send_bytes(send, 202, b"", "application/json")
            return
        if message.kind == "response":
            future = session.asks.pop(str(message.id), None)
            if future is not None and not future.done():
                future.set_result(message.body)
            await send_bytes(send, 202, b"", "application/json")
            return
        channel = self.response_channel(send, headers, session, LEGACY_ERA, message, receive)
        ctx = RequestContext(principal, LEGACY_ERA, session.client_capabilities, session.client_info, session, channel,
                             span.trace_id, span, CallRecord())
        await self.serve_request(channel, ctx, message, receive=receive)
        if message.method in RECORD_METHODS:
            await self.sessions.save(session)

    async def initialize(self, send: Send, principal: Principal, message: Message) -> None:
        params = message.params or {}
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LEGACY_ERA
        capabilities = given if isinstance(given := params.get("capabilities"), dict) else {}
        info = given if isinstance(given := params.get("clientInfo"), dict) else None
        try:
            session = await self.sessions.create(principal, version, capabilities, info)
        except (SessionLimitReached, SessionStoreUnavailable) as exc:
            log.info("refused a new session for agent %s: %s", principal.agent_id, exc.message)
            await send_json_error(send, exc.status, message.id, exc)
            return
        result = {"protocolVersion": version, "capabilities": SERVER_CAPABILITIES,
                  "serverInfo": SERVER_INFO, "instructions": INSTRUCTIONS}
        body = orjson.dumps({"jsonrpc": "2.0", "id": message.id, "result": result})
        await send_bytes(send, 200, body, "application/json", [(b"mcp-session-id", session.id.encode())])

    async def session_for(
        self, send: Send, headers: dict[str, str], principal: Principal, request_id: object
    ) -> AgentSession | None:
        session_id = headers.get("mcp-session-id")
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await send_json_error(send, 400, request_id,
                                  RpcError(INVALID_REQUEST, f"Unsupported protocol version: {version}"))
            return None
        if not session_id:
            await send_json_error(send, 400, request_id,
                                  RpcError(INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required"))
            return None
        # A session belongs to the principal that opened it; to anyone else it does not exist.
        session = await self.sessions.get(session_id, principal)
        if session is None:
            await send_json_error(send, 404, request_id, RpcError(INVALID_REQUEST, "Session not found"))
            return None
        return session

    def on_notification(self, session: AgentSession, message: Message) -> None:
        if message.method == "notifications/cancelled":
            request_id = (message.params or {}).get("requestId")
            task = session.in_flight.get(request_id) if isinstance(request_id, str | int) else None
            if task is not None:
                task.cancel("cancelled by the agent")

    async def post_modern(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], principal: Principal,
        message: Message, span: RequestSpan,
    ) -> None:
        if message.kind != "request":
            # The modern era has no client notifications or replies on this wire: accept and drop.
            await send_bytes(send, 202, b"", "application/json")
            return
        rejection = self.modern_rejection(scope, headers, message)
        if rejection is not None:
            error = RpcError(rejection.code, rejection.message, rejection.data)
            await send_json_error(send, HTTP_STATUS_FOR_CODE.get(rejection.code, 400), message.id, error)
            return
        meta = (message.params or {}).get("_meta") or {}
        listening = message.method == "subscriptions/listen"
        channel = None if listening else self.response_channel(send, headers, None, MODERN_ERA, message, receive)
        ctx = RequestContext(
            principal, MODERN_ERA, _dict(meta.get("io.modelcontextprotocol/clientCapabilities")),
            _dict(meta.get("io.modelcontextprotocol/clientInfo")) or None, None, channel, span.trace_id, span,
            CallRecord(),
        )
        if channel is None:
            await self.listen(receive, send, ctx, message)
            return
        await self.serve_request(channel, ctx, message, receive=receive)

    def modern_rejection(
        self, scope: Scope, headers: dict[str, str], message: Message
    ) -> InboundLadderRejection | None:
        if names_repeat(headers, scope["headers"]):
            raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            duplicated = find_duplicated_routing_header(raw_headers) or duplicated_param_header(raw_headers)
            if duplicated is not None:
                return InboundLadderRejection(HEADER_MISMATCH, f"{duplicated} header appears more than once")
        if not plainly_agrees(message.body, headers):
            verdict = classify_inbound_request(message.body, headers=headers)
            if isinstance(verdict, InboundLadderRejection):
                return verdict
        if message.method == "tools/call":
            params = message.params or {}
            view = self.methods.pool.directory.tools.get(params.get("name", ""))
            arguments = params.get("arguments")
            if view is not None and isinstance(arguments, dict):
                return check_param_headers(view.definition.get("inputSchema"), arguments, headers)
        return None

    @staticmethod
    def response_channel(send: Send, headers: dict[str, str], session: AgentSession | None, era: str,
                         message: Message, receive: Receive | None) -> ResponseChannel:
        """Where the reply (and any side traffic before it) goes. A session's reply can be resumed
        elsewhere: its channel watches the connection (held calls)."""
        if session is not None:
            log_level = session.log_level
        else:
            log_level = ((message.params or {}).get("_meta") or {}).get(LOG_LEVEL_META_KEY)
        return ResponseChannel(send, "text/event-stream" in headers.get("accept", ""), session, era,
                               log_level, receive if session is not None else None)

    async def serve_request(
        self, channel: ResponseChannel, ctx: RequestContext, message: Message, receive: Receive | None,
    ) -> None:
        assert message.method is not None
        started = time.perf_counter()
        reply = await self.run_method(ctx, message, receive)
        if ctx.era == MODERN_ERA and "result" in reply and message.method != "subscriptions/listen":
            reply = {"result": modern_result(message.method, reply["result"])}
        error_type = str(reply["error"].get("code")) if "error" in reply else None
        if error_type is not None and ctx.span is not None:
            ctx.span.error(error_type, "the request ended with a JSON-RPC error")
        self.telemetry.record_request(message.method, ctx.record.decision, ctx.record.upstream,
                                      time.perf_counter() - started, error_type)
        if error_type == str(REAUTHENTICATION_REQUIRED) and not channel.streaming:
            await self.reauthenticate(channel.send, message.id, reply["error"])
            return
        await channel.finish(message.id, reply)

    async def run_method(self, ctx: RequestContext, message: Message, receive: Receive | None) -> dict[str, Any]:
        method = message.method or ""
        if ERA_ONLY.get(method, ctx.era) != ctx.era:
            return {"error": RpcError(METHOD_NOT_FOUND, f"Method not found: {method}").to_error()}
        task = asyncio.current_task()
        assert task is not None
        watched = False
        self.running[task] = ctx
        if ctx.session is not None:
            ctx.session.in_flight[message.id] = task
        elif receive is not None and method in UPSTREAM_ROUTED:
            self.watches.add(task, receive)
            watched = True
        try:
            return await self.methods.handle(ctx, method, message.params or {})
        except RpcError as exc:
            return {"error": exc.to_error()}
        except asyncio.CancelledError:
            if task.cancelling():
                task.uncancel()
                if self.stopping:
                    return {"error": stopped_error(ctx).to_error()}
                return {"error": {"code": REQUEST_CANCELLED, "message": "Request cancelled"}}
            raise
        finally:
            self.running.pop(task, None)
            if ctx.session is not None:
                ctx.session.in_flight.pop(message.id, None)
            if watched:
                self.watches.remove(task)

    # stopping ----------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> tuple[int, int]:
        """Answer every open request before the process stops: (held calls answered, calls cut short).

        A call waiting for a person's approval is answered at once (nobody will decide it in time);
        any other call gets `grace_s` to finish. Then open streams end, so connections can close.
        """
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        held: set[asyncio.Task[object]] = set()
        while self.running and loop.time() < deadline:
            for task, ctx in list(self.running.items()):
                if ctx.record.decision == "step_up" and task not in held:  # decided StepUp, waiting for a person
                    held.add(task)
                    task.cancel("the gateway is stopping")
            await asyncio.wait(list(self.running), timeout=min(DRAIN_SLICE_S, max(deadline - loop.time(), 0)))
        late = [task for task in self.running if task not in held]
        for task in self.running:
            task.cancel("the gateway is stopping")
        if self.running:
            await asyncio.wait(list(self.running), timeout=1.0)
        self.sessions.release_local()  # ends the GET streams served here
        for agent_id in {listener.principal.agent_id for listener in self.listen_hub.listeners}:
            self.listen_hub.close_agent(agent_id)
        return len(held), len(late)

    # GET / DELETE / listen ---------------------------------------------------------------------

    async def get(self, receive: Receive, send: Send, headers: dict[str, str], principal: Principal) -> None:
        if "mcp-session-id" not in headers and headers.get(MCP_PROTOCOL_VERSION_HEADER) in MODERN_PROTOCOL_VERSIONS:
            await send_bytes(send, 405, b"", "text/plain", [(b"allow", b"POST")])
            return
        if "text/event-stream" not in headers.get("accept", ""):
            await send_bytes(send, 406, b"Accept must include text/event-stream", "text/plain")
            return
        session = await self.session_for(send, headers, principal, None)
        if session is None:
            return
        resumed = await session.resume(headers.get("last-event-id"))
        if resumed is None:
            await send_bytes(send, 404, b"Unknown Last-Event-ID", "text/plain")
            return
        log, queue = resumed
        try:
            await stream_queue(receive, send, queue)
        finally:
            log.followers.discard(queue)

    async def listen(self, receive: Receive, send: Send, ctx: RequestContext, message: Message) -> None:
        """`subscriptions/listen` (2026-07-28): a stream of change notifications for this agent; the
        resources it may follow are decided like reads first."""
        params = message.params or {}
        try:
            allowed = await self.methods.authorize_subscriptions(ctx, requested_uris(params))
        except RpcError as exc:
            await send_json_error(send, HTTP_STATUS_FOR_CODE.get(exc.code, 400), message.id, exc)
            return
        listener = self.listen_hub.open(ctx.principal, message.id, params, allowed, ctx.client_info)
        listener.tools_seen = await self.methods.visible_tool_names_async(ctx.principal, MODERN_ERA, ctx.client_info)
        try:
            await stream_queue(receive, send, listener.queue)
        finally:
            self.listen_hub.close(listener)

    async def delete(self, send: Send, headers: dict[str, str], principal: Principal) -> None:
        session = await self.session_for(send, headers, principal, None)
        if session is None:
            return
        await self.sessions.close(session.id)
        await send_bytes(send, 200, b"", "application/json")


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_modern(headers: dict[str, str], message: Message) -> bool:
    """Which era a POST belongs to: a session or a handshake version means 2025-11-25."""
    if "mcp-session-id" in headers:
        return False
    version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
    if version in MODERN_PROTOCOL_VERSIONS:
        return True
    return message.method != "initialize" and version not in HANDSHAKE_PROTOCOL_VERSIONS


def modern_result(method: str, result: object) -> JsonValue:
    """Modern-era results carry resultType, and list results say how long they may be cached."""
    if not isinstance(result, dict):
        return result
    extra: dict[str, Any] = {}
    if "resultType" not in result:
        extra["resultType"] = "complete"
    if method in CACHEABLE:
        # What an agent sees is decided per agent, so no answer may be served from a shared cache.
        extra["cacheScope"] = "private"
        if "ttlMs" not in result:
            extra["ttlMs"] = 0
    return {**result, **extra}


async def stream_queue(receive: Receive, send: Send, queue: asyncio.Queue[StreamItem]) -> None:
    """Relay a queue as an SSE response until the queue ends (None) or the agent goes away."""
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await send({"type": "http.response.body", "body": PING_FRAME, "more_body": True})
    disconnected = asyncio.create_task(wait_disconnect(receive))
    try:
        while not disconnected.done():
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, disconnected}, timeout=PING_INTERVAL_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                frame = getter.result()
                if frame is None:
                    break
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            else:
                getter.cancel()
                if not done:
                    await send({"type": "http.response.body", "body": PING_FRAME, "more_body": True})
    finally:
        disconnected.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def cancel_on_disconnect(receive: Receive, task: asyncio.Task[object]) -> None:
    await wait_disconnect(receive)
    task.cancel("agent closed the stream")


class DisconnectWatches:
    """Cancels a 2026-07-28 request when its agent's connection closes, watched from WATCH_AFTER_S on: a request
    waits here as a dict entry, and one timer for all of them starts a watcher task only for the few still
    running then (3.0k instructions a request, against 32.0k for a timer per request - the loop's heap compares
    TimerHandles in Python - and 47.5k for a watcher task per request: see WATCH_AFTER_S)."""

    def __init__(self) -> None:
        self.waiting: dict[asyncio.Task[object], tuple[Receive, float]] = {}  # in start order
        self.watchers: dict[asyncio.Task[object], asyncio.Task[None]] = {}
        self.timer: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Task[object], receive: Receive) -> None:
        loop = asyncio.get_running_loop()
        self.waiting[task] = (receive, loop.time())
        if self.timer is None:
            self.timer = loop.call_later(WATCH_AFTER_S, self.sweep)

    def remove(self, task: asyncio.Task[object]) -> None:
        """The request has ended: its entry or its watcher goes."""
        if self.waiting.pop(task, None) is None:
            watcher = self.watchers.pop(task, None)
            if watcher is not None:
                watcher.cancel()

    def sweep(self) -> None:
        """Watch every request that has run WATCH_AFTER_S; come back when the oldest of the others has."""
        loop = asyncio.get_running_loop()
        self.timer = None
        due = loop.time() - WATCH_AFTER_S
        watch: list[tuple[asyncio.Task[object], Receive]] = []
        for task, (receive, since) in self.waiting.items():  # oldest first: stop at the first not due, copy nothing
            if since > due:
                self.timer = loop.call_at(since + WATCH_AFTER_S, self.sweep)
                break
            watch.append((task, receive))
        for task, receive in watch:
            del self.waiting[task]
            self.watchers[task] = loop.create_task(cancel_on_disconnect(receive, task))


def stopped_error(ctx: RequestContext) -> RpcError:
    """What a request still open when the gateway stops is told: plainly, and what to do next."""
    if ctx.record.decision == "step_up":
        return RpcError(SHUTTING_DOWN, "The gateway is shutting down: this call was waiting for a person's approval "
                                       "and did not run. Retry it once the gateway is back.",
                        {"reason": "shutdown", "held": True})
    return RpcError(SHUTTING_DOWN, "The gateway is shutting down: this call was cut short before it finished "
                                   "(the upstream may or may not have completed it). Check, then retry once the "
                                   "gateway is back.", {"reason": "shutdown", "held": False})


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}

