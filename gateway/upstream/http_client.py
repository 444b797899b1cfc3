"""A Streamable HTTP client for one upstream MCP server, speaking either protocol era.

Requests go through the lean HTTP/1.1 client of `http1.py` (kept-alive connections, one header
block built per upstream, one write per request, httptools reading the reply): ~100k instructions
per round trip where aiohttp took ~400k (docs/performance-cuts.md). A handshake-era
session is opened lazily and re-opened when the upstream forgets it (404).

Side traffic is relayed only from a call's own response stream, where the upstream put it for
that call; a server-to-client request on the session-wide GET stream names no call and is refused.
Every message read is capped at `limits.max_upstream_reply_bytes` while it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import orjson
from mcp.shared.inbound import NAME_BEARING_METHODS, encode_header_value

from gateway.catalog.model import HttpTransport, ServerEntry
from gateway.protocol.capabilities import GATEWAY_CLIENT_CAPABILITIES, GATEWAY_CLIENT_INFO
from gateway.protocol.eras import LEGACY_ERA, MODERN_ERA
from gateway.protocol.errors import REQUEST_TIMEOUT, UPSTREAM_ERROR, UPSTREAM_UNAVAILABLE, RpcError
from gateway.protocol.http_token import FRAMING_HEADERS
from gateway.protocol.sse import Event, decode_events
from gateway.settings.limits import DEFAULT_MAX_UPSTREAM_REPLY_BYTES
from gateway.upstream.base import (
    SESSION_NOTIFICATIONS,
    VERBOSE_LOGGING,
    CallContext,
    SessionEventHandler,
    legacy_params,
    log,
    modern_params,
    refusal,
)
from gateway.upstream.deadlines import Deadlines
from gateway.upstream.http1 import (
    ACCEPT_ENCODING,
    ConnectFailed,
    Disconnected,
    Exchange,
    Http1Client,
    Origin,
    Reply,
    header_lines,
    origin_of,
)
from gateway.upstream.reply_limit import ReplyTooLarge, capped_sse_lines

ACCEPT_BOTH = "application/json, text/event-stream"
SHORT_TIMEOUT_S = 10.0  # requests that serve no agent's call: handshake, notifications, session end
MAX_RESUMES = 20
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
AuthProvider = Callable[[], Awaitable[dict[str, str]]]
# Requests with no side effect upstream: safe to send again after a dropped connection.
RESENDABLE = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list", "ping",
                        "server/discover", "prompts/get", "resources/read", "completion/complete"})
# A pooled connection idle longer than this is not reused: below the 5 s idle timeout of uvicorn and
# Node's http server, so a connection the upstream has closed is not handed out even after the
# gateway stalled (the age is checked when a connection is picked, not on a timer).
KEEPALIVE_S = 4.0


class HttpUpstream:
    def __init__(self, server: ServerEntry, on_event: SessionEventHandler, discovery_auth: AuthProvider,
                 max_reply_bytes: int = DEFAULT_MAX_UPSTREAM_REPLY_BYTES) -> None:
        if not isinstance(server.transport, HttpTransport):
            raise TypeError(f"upstream {server.id!r} is not an HTTP upstream")
        self.server_id = server.id
        # Credentials for requests that call no tool (handshake, lists, notification streams).
        self.discovery_auth = discovery_auth
        self.url = server.transport.url
        self.protocol = server.transport.protocol
        static_headers = dict(server.transport.headers)
        # Built once, not per call: what every request carries, and what a modern-era one adds.
        self._base_headers = {**static_headers, "Accept": ACCEPT_BOTH, "Content-Type": "application/json"}
        self._modern_headers = {**self._base_headers, "MCP-Protocol-Version": MODERN_ERA}
        self._legacy_headers: tuple[str | None, dict[str, str]] | None = None  # (session id, headers)
        self._legacy_block: tuple[str | None, str] | None = None  # (session id, POST head)
        # Names the catalog sets (lower case): a per-call header of the same name replaces the catalog's.
        self._static_names = frozenset(name.lower() for name in static_headers)
        self.on_event = on_event
        self.max_reply_bytes = max_reply_bytes
        self.eras: set[str] = set()
        self.session_id: str | None = None
        self.http: Http1Client | None = None
        self._modern_block = ""
        self.ids = itertools.count(1)
        self.deadlines = Deadlines()  # the calls' timeouts
        self.probe_lock = asyncio.Lock()
        self.next_probe_at = 0.0
        self.backoff_s = RECONNECT_MIN_S
        self.background: set[asyncio.Task[object]] = set()
        self.listen_task: asyncio.Task[None] | None = None
        self.updates_task: asyncio.Task[None] | None = None
        self.closed = False
        self.last_error: str | None = None  # why the last connection attempt failed (no secret values)
        self.reopened = 0  # notification streams opened again after a drop: what was said meanwhile is lost

    @property
    def available(self) -> bool:
        return bool(self.eras)

    async def start(self) -> None:
        try:  # built whole before it is kept: a half-built client would send requests without a head
            http = Http1Client(origin_of(self.url), KEEPALIVE_S)  # no cookies, so none pass between calls
            modern_block = self.head_block("POST", self._modern_headers, http.origin)
        except ValueError as exc:  # the message names a header, never its value
            log.warning("upstream %s has no usable URL or headers: %s", self.server_id, exc)
            return
        self.http, self._modern_block = http, modern_block
        try:
            await self.ensure_ready()
        except RpcError as exc:
            log.warning("upstream %s is not reachable yet: %s", self.server_id, exc.message)

    async def close(self) -> None:
        self.closed = True
        for task in (self.listen_task, self.updates_task):
            if task is not None:
                task.cancel()
        for background in list(self.background):
            background.cancel()
        if self.http is not None:
            if self.session_id:
                with contextlib.suppress(OSError, TimeoutError, RpcError, ValueError):
                    headers = {**self.legacy_headers(), **await self.discovery_auth()}
                    async with asyncio.timeout(SHORT_TIMEOUT_S), self.http.request(
                            self.head_block("DELETE", headers), None):
                        pass
            self.http.close()

    # Readiness -------------------------------------------------------------------------------

    async def ensure_ready(self) -> None:
        if self.eras:
            return
        async with self.probe_lock:
            if self.eras:
                return
            now = time.monotonic()
            if now < self.next_probe_at:
                raise RpcError(UPSTREAM_UNAVAILABLE, f"upstream {self.server_id!r} is unavailable")
            try:
                await self.probe()
            except RpcError as exc:  # e.g. its credentials could not be read (SecretUnavailable)
                self.next_probe_at = now + self.backoff_s  # do not ask Vault again every resync
                self.backoff_s = min(self.backoff_s * 2, RECONNECT_MAX_S)
                self.last_error = exc.message
                raise
            except (TimeoutError, OSError, ValueError) as exc:
                self.next_probe_at = now + self.backoff_s
                self.backoff_s = min(self.backoff_s * 2, RECONNECT_MAX_S)
                self.last_error = None
                raise RpcError(UPSTREAM_UNAVAILABLE, f"upstream {self.server_id!r} is unavailable") from exc
            self.backoff_s = RECONNECT_MIN_S
            self.last_error = None

    async def probe(self) -> None:
        """Find which eras the upstream speaks: server/discover, then initialize."""
        eras: set[str] = set()
        if self.protocol in ("auto", MODERN_ERA) and await self.discover():
            eras.add(MODERN_ERA)
        if self.protocol in ("auto", LEGACY_ERA):
            try:
                await self.initialize()
                eras.add(LEGACY_ERA)
            except (RpcError, ValueError):
                if not eras:
                    raise
        if not eras:
            raise ValueError("upstream answered neither server/discover nor initialize")
        self.eras = eras
        log.info("upstream %s connected (%s)", self.server_id, ", ".join(sorted(eras)))
        if self.listen_task is None or self.listen_task.done():
            listen = self.listen_modern if MODERN_ERA in eras else self.listen_legacy
            self.listen_task = asyncio.create_task(listen())
        if MODERN_ERA in eras and LEGACY_ERA in eras and (self.updates_task is None or self.updates_task.done()):
            # Resource updates for handshake-era subscriptions arrive on the session's GET stream.
            self.updates_task = asyncio.create_task(self.listen_legacy())

    async def discover(self) -> bool:
        body = {"jsonrpc": "2.0", "id": 0, "method": "server/discover",
                "params": modern_params({}, _gateway_ctx())}
        try:
            reply = await self.post_modern(body, "server/discover", None)
        except RpcError:
            return False
        versions = (reply.get("result") or {}).get("supportedVersions") or []
        return MODERN_ERA in versions

    async def initialize(self) -> None:
        self.session_id = None
        body = {
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": LEGACY_ERA, "capabilities": GATEWAY_CLIENT_CAPABILITIES,
                       "clientInfo": GATEWAY_CLIENT_INFO},
        }
        headers = {**self._base_headers, **await self.discovery_auth()}
        async with asyncio.timeout(SHORT_TIMEOUT_S), self.client().request(
                self.head_block("POST", headers), orjson.dumps(body)) as resp:
            reply = await self.read_reply(resp, 0, None)
            session_id = resp.headers.get("mcp-session-id")
        if "result" not in reply:
            raise RpcError(UPSTREAM_ERROR, f"upstream {self.server_id!r} refused initialize")
        self.session_id = session_id
        await self.send_legacy({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if "logging" in (reply["result"].get("capabilities") or {}):
            # One upstream session serves many agents: take every log line, filter per agent session.
            await self.send_legacy(VERBOSE_LOGGING)

    # Calls -----------------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        if not self.eras:  # ready: no coroutine to await
            await self.ensure_ready()
        request_id = next(self.ids)
        era = ctx.era if ctx.era in self.eras else next(iter(self.eras))
        try:
            with self.deadlines.within(ctx.timeout_s):  # asyncio.timeout's behaviour on shared timers
                return await self.send(era, request_id, method, params, ctx)
        except TimeoutError:
            self.cancel_upstream(era, request_id, "timed out at the gateway")
            raise RpcError(REQUEST_TIMEOUT, f"upstream {self.server_id!r} did not answer within "
                                            f"{ctx.timeout_s:g}s") from None
        except asyncio.CancelledError:
            self.cancel_upstream(era, request_id, "cancelled by the agent")
            raise
        except ReplyTooLarge:
            self.cancel_upstream(era, request_id, "message over the gateway's size limit")
            raise
        except OSError as exc:  # refused, dropped or not HTTP (http1's ConnectFailed, Disconnected, BadResponse)
            self.mark_down()
            raise RpcError(UPSTREAM_UNAVAILABLE, f"upstream {self.server_id!r} is unavailable") from exc
        except ValueError as exc:  # a reply or an event that is not JSON (orjson.JSONDecodeError)
            raise RpcError(UPSTREAM_ERROR, f"upstream {self.server_id!r} sent a malformed reply") from exc

    async def send(self, era: str, request_id: int, method: str, params: dict[str, Any],
                   ctx: CallContext) -> dict[str, Any]:
        """One request. A request without side effects whose pooled connection turns out to be one
        the upstream closed meanwhile (disconnected or reset; not a refused connect) is sent once
        more, on a new connection. A tools/call is never sent twice: it may have reached the upstream
        (see docs/performance.md, "Reload stalls")."""
        try:
            return await self.send_once(era, request_id, method, params, ctx)
        except Disconnected as exc:
            if method not in RESENDABLE or not exc.stale:  # stale: kept alive, no byte of a reply came
                raise
            log.info("upstream %s dropped a kept-alive connection (%s); %s sent again", self.server_id,
                     type(exc).__name__, method)
            return await self.send_once(era, request_id, method, params, ctx, fresh=True)

    def send_once(self, era: str, request_id: int, method: str, params: dict[str, Any],
                  ctx: CallContext, fresh: bool = False) -> Awaitable[dict[str, Any]]:
        """The request in `era`, to be awaited (a plain function handing on the coroutine: one frame fewer)."""
        if era == MODERN_ERA:
            body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": modern_params(params, ctx)}
            return self.post_modern(body, method, ctx, fresh)
        return self.call_legacy(request_id, method, legacy_params(params), ctx, fresh)

    async def call_legacy(
        self, request_id: int, method: str, params: dict[str, Any], ctx: CallContext, fresh: bool = False
    ) -> dict[str, Any]:
        body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        for attempt in range(2):
            if self.session_id is None:
                await self.initialize()
            head = self.per_call_head(self.legacy_block(), self.legacy_headers(),
                                      {**(ctx.auth or await self.discovery_auth()), **ctx.headers})
            async with self.client().request(head, body, fresh) as resp:
                if resp.status == 404 and attempt == 0:
                    self.session_id = None  # the upstream forgot our session: open a new one
                    continue
                return await self.read_reply(resp, request_id, ctx)
        raise RpcError(UPSTREAM_ERROR, f"upstream {self.server_id!r} keeps losing its session")

    async def post_modern(self, body: dict[str, Any], method: str, ctx: CallContext | None,
                          fresh: bool = False) -> dict[str, Any]:
        auth = ctx.auth if ctx is not None and ctx.auth is not None else await self.discovery_auth()
        headers = {**auth, "Mcp-Method": method}  # what this call adds to the upstream's fixed block
        name_key = NAME_BEARING_METHODS.get(method)
        if name_key is not None and isinstance(name := body["params"].get(name_key), str):
            headers["Mcp-Name"] = encode_header_value(name)
        if ctx is not None:
            headers.update(ctx.headers)
        head = self.per_call_head(self._modern_block, self._modern_headers, headers)
        if ctx is None:
            async with asyncio.timeout(SHORT_TIMEOUT_S):
                return await self.post(head, orjson.dumps(body), body["id"], None, fresh)
        async with self.client().request(head, orjson.dumps(body), fresh) as resp:  # post(), one await fewer
            return await self.read_reply(resp, body["id"], ctx)

    async def post(self, head: str, data: bytes, request_id: int, ctx: CallContext | None,
                   fresh: bool) -> dict[str, Any]:
        async with self.client().request(head, data, fresh) as resp:
            return await self.read_reply(resp, request_id, ctx)

    async def read_reply(self, resp: Reply, request_id: int, ctx: CallContext | None) -> dict[str, Any]:
        """The JSON-RPC reply in a response. A reply left unread (over the cap, malformed) is not
        drained: leaving the request's `async with` closes its connection."""
        ctype = resp.content_type
        if ctype == "application/json":
            body = self.ready_body(resp)  # all of it came with the head: no read_body coroutine
            reply = orjson.loads(body if body is not None else await self.read_body(resp))
            if isinstance(reply, dict) and ("result" in reply or "error" in reply):
                return reply
            raise RpcError(UPSTREAM_ERROR, f"upstream {self.server_id!r} sent a malformed reply")
        if ctype == "text/event-stream" and resp.status == 200:
            return await self.read_stream(resp, request_id, ctx)
        raise RpcError(UPSTREAM_ERROR, f"upstream {self.server_id!r} answered HTTP {resp.status}")

    def ready_body(self, resp: Reply) -> bytes | None:
        """A JSON body that has all arrived (not compressed), under the cap; None: read it with read_body."""
        limit = self.max_reply_bytes
        length = resp.content_length
        if length is not None and length > limit:
            raise ReplyTooLarge(self.server_id, limit)
        ready = resp.ready_body()
        if ready is not None and len(ready) > limit:
            raise ReplyTooLarge(self.server_id, limit)
        return ready

    async def read_body(self, resp: Reply) -> bytes:
        """A JSON body ready_body found still arriving (or compressed), read up to the cap and no further
        (ready_body checked its Content-Length)."""
        limit = self.max_reply_bytes
        # Counted chunk by chunk, after inflating: a compressed body may inflate past its Content-Length.
        body = bytearray()
        while chunk := await resp.read_chunk():
            body += chunk
            if len(body) > limit:
                raise ReplyTooLarge(self.server_id, limit)
        return bytes(body)

    def events(self, resp: Reply) -> AsyncIterator[Event]:
        """The SSE events of a response, each capped while it is read."""
        return decode_events(capped_sse_lines(resp.read_chunk, self.max_reply_bytes, self.server_id))

    async def read_stream(self, resp: Reply, request_id: int, ctx: CallContext | None) -> dict[str, Any]:
        """Relay side traffic until the reply arrives; resume with Last-Event-ID if the stream drops."""
        last_event_id: str | None = None
        retry_ms = 0
        resumed: Exchange | None = None
        try:
            for _ in range(MAX_RESUMES):
                async for event in self.events(resp):
                    if event.id is not None:
                        last_event_id = event.id
                    if event.retry is not None:
                        retry_ms = event.retry
                    if not event.data.strip():
                        continue
                    reply = await self.handle_stream_message(orjson.loads(event.data), request_id, ctx)
                    if reply is not None:
                        return reply
                if last_event_id is None or self.session_id is None:
                    break
                await asyncio.sleep(min(retry_ms, 5000) / 1000)
                if resumed is not None:
                    resumed.finish()
                resumed = self.resume_request(last_event_id, await self.discovery_auth())
                resp = await resumed.__aenter__()
                if resp.status != 200 or resp.content_type != "text/event-stream":
                    raise RpcError(UPSTREAM_ERROR, f"upstream {self.server_id!r} could not resume its stream")
        finally:
            if resumed is not None:
                resumed.finish()  # a resumed stream is ours to end (the first one is the caller's)
        raise RpcError(UPSTREAM_ERROR, f"upstream {self.server_id!r} closed the stream without a reply")

    def resume_request(self, last_event_id: str, auth: dict[str, str]) -> Exchange:
        return self.http_get_stream({**auth, "Last-Event-ID": last_event_id})

    async def handle_stream_message(
        self, message: object, request_id: int, ctx: CallContext | None
    ) -> dict[str, Any] | None:
        if not isinstance(message, dict):
            return None
        if "method" not in message:
            return message if message.get("id") == request_id else None
        if "id" in message:
            self.spawn(self.answer_server_request(message, ctx))
        elif ctx is not None and ctx.sink is not None:
            await ctx.sink.notify(message)
        return None

    async def answer_server_request(self, message: dict[str, Any], ctx: CallContext | None) -> None:
        if ctx is None or ctx.sink is None:
            reply = refusal(message["id"], "cannot relay this request")
        else:
            reply = await ctx.sink.ask(message)
        await self.send_legacy(reply)

    # Handshake-era plumbing ------------------------------------------------------------------

    def legacy_headers(self) -> dict[str, str]:
        """A handshake-era request's headers for the current session (shared: copy before changing)."""
        cached = self._legacy_headers
        if cached is not None and cached[0] == self.session_id:
            return cached[1]
        headers = {**self._base_headers, "MCP-Protocol-Version": LEGACY_ERA}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        self._legacy_headers = (self.session_id, headers)
        return headers

    def legacy_block(self) -> str:
        """legacy_headers() as a POST head, built once per session."""
        cached = self._legacy_block
        if cached is not None and cached[0] == self.session_id:
            return cached[1]
        block = self.head_block("POST", self.legacy_headers())
        self._legacy_block = (self.session_id, block)
        return block

    def head_block(self, method: str, headers: dict[str, str], origin: Origin | None = None) -> str:
        """A request line and header lines (Content-Length and the blank line are the client's).
        A Host or Accept-Encoding in the catalog's headers is sent instead of the client's own;
        the message's framing (Content-Length, Transfer-Encoding) is the client's alone."""
        origin = origin or self.client().origin
        own = {"host": f"Host: {origin.authority}\r\n", "accept-encoding": f"Accept-Encoding: {ACCEPT_ENCODING}\r\n"}
        for name in headers:
            own.pop(name.lower(), None)
        sent = {k: v for k, v in headers.items() if k.lower() not in FRAMING_HEADERS}
        return f"{method} {origin.target} HTTP/1.1\r\n{''.join(own.values())}{header_lines(sent)}"

    def per_call_head(self, block: str, fixed: dict[str, str], extra: dict[str, str]) -> str:
        """`block` (built from `fixed`) with this call's headers; one the catalog also names replaces it."""
        if self._static_names and not self._static_names.isdisjoint(replaced := {name.lower() for name in extra}):
            block = self.head_block("POST", {k: v for k, v in fixed.items() if k.lower() not in replaced})
        return block + header_lines(extra)

    def client(self) -> Http1Client:
        if self.http is None:
            raise ConnectFailed(f"upstream {self.server_id!r} has no usable URL")
        return self.http

    async def send_legacy(self, message: dict[str, Any]) -> None:
        """POST a notification or a reply to the upstream's session; it answers 202."""
        with contextlib.suppress(OSError, TimeoutError):
            head = self.per_call_head(self.legacy_block(), self.legacy_headers(), await self.discovery_auth())
            async with asyncio.timeout(SHORT_TIMEOUT_S), self.client().request(head, orjson.dumps(message)):
                pass

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        if LEGACY_ERA in self.eras:
            await self.send_legacy({"jsonrpc": "2.0", "method": method, "params": params})

    def cancel_upstream(self, era: str, request_id: int, reason: str) -> None:
        # Modern era: closing the response stream is the cancellation.
        if era == LEGACY_ERA and not self.closed:
            self.spawn(self.notify("notifications/cancelled", {"requestId": request_id, "reason": reason}))

    async def listen_legacy(self) -> None:
        """Hold the session's GET stream for list changes and resource updates."""
        only_updates = MODERN_ERA in self.eras  # list changes then come from listen_modern
        await self.hold_stream(LEGACY_ERA, self.http_get_stream, only_updates)

    async def listen_modern(self) -> None:
        """Hold a `subscriptions/listen` stream for list changes."""
        await self.hold_stream(MODERN_ERA, self.http_listen_stream, False)

    def http_get_stream(self, auth: dict[str, str]) -> Exchange:
        """The session's GET stream; its status and headers within SHORT_TIMEOUT_S (its body has no deadline)."""
        headers = {**self.legacy_headers(), **auth, "Accept": "text/event-stream"}
        return self.client().request(self.head_block("GET", headers), None, head_timeout_s=SHORT_TIMEOUT_S)

    def http_listen_stream(self, auth: dict[str, str]) -> Exchange:
        params = {"notifications": {"toolsListChanged": True, "promptsListChanged": True,
                                    "resourcesListChanged": True}}
        body = {"jsonrpc": "2.0", "id": "narrowgate-listen", "method": "subscriptions/listen",
                "params": modern_params(params, _gateway_ctx())}
        head = self.per_call_head(self._modern_block, self._modern_headers,
                                  {**auth, "Mcp-Method": "subscriptions/listen"})
        return self.client().request(head, orjson.dumps(body), head_timeout_s=SHORT_TIMEOUT_S)

    async def hold_stream(self, era: str, open_stream: Callable[[dict[str, str]], Exchange],
                          only_updates: bool) -> None:
        delay, dropped = RECONNECT_MIN_S, False
        while not self.closed and era in self.eras:
            sent_session = self.session_id
            try:
                async with open_stream(await self.discovery_auth()) as resp:
                    if resp.status == 404 and era == LEGACY_ERA and sent_session is not None:
                        # The upstream forgot our session (it restarted): open a new one, listen again.
                        if self.session_id == sent_session:
                            await self.initialize()
                    elif resp.status in (404, 405):
                        return  # the upstream offers no such stream
                    elif resp.status == 200 and resp.content_type == "text/event-stream":
                        delay, self.reopened = RECONNECT_MIN_S, self.reopened + dropped
                        async for event in self.events(resp):
                            await self.on_listen_event(event.data, era, only_updates)
            except (OSError, ValueError, TimeoutError, RpcError) as exc:
                log.debug("upstream %s notification stream dropped: %s", self.server_id, exc)
            dropped = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def on_listen_event(self, data: str, era: str, only_updates: bool) -> None:
        if not data.strip():
            return
        message = orjson.loads(data)
        if not isinstance(message, dict) or "method" not in message:
            return
        if "id" in message:
            # A server-to-client request on a session-wide stream names no call: no agent gets it.
            if era == LEGACY_ERA:
                self.spawn(self.send_legacy(refusal(message["id"], "cannot tie this request to a call")))
            return
        method = message["method"]
        if method not in SESSION_NOTIFICATIONS:
            if method != "notifications/subscriptions/acknowledged":
                log.debug("upstream %s: %s on a session stream names no call; not relayed", self.server_id, method)
            return
        if not only_updates or method == "notifications/resources/updated":
            await self.on_event(self.server_id, message)

    def mark_down(self) -> None:
        self.eras = set()
        self.session_id = None

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def _gateway_ctx() -> CallContext:
    return CallContext(era=MODERN_ERA, timeout_s=10, client_capabilities={})
