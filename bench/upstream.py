"""A fast upstream MCP server for benchmarks (Streamable HTTP, JSON responses, both eras).

Written on raw ASGI (served by uvicorn + httptools + uvloop) or on aiohttp.web, not on the
mcp SDK's server machinery, so that it costs as little CPU per call as we can make it and
the benchmark measures the gateway, not the tool server.

Eras:
- 2025-11-25: ``initialize`` -> ``Mcp-Session-Id``; ``notifications/initialized`` -> 202;
  ``tools/list``, ``tools/call``, ``ping``; ``DELETE`` ends the session; ``GET`` -> 405.
- 2026-07-28: stateless; every request carries the ``params._meta`` envelope and the mirrored
  ``MCP-Protocol-Version`` / ``Mcp-Method`` / ``Mcp-Name`` headers, checked with the SDK's pure
  classifier (``mcp.shared.inbound.classify_inbound_request``); ``server/discover``.

Tools: ``echo`` (returns its ``text`` argument) and ``add`` (``a + b``).

Run: ``python -m bench.upstream --port 0`` prints ``LISTENING <port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
)
from mcp_types import PROTOCOL_VERSION_META_KEY, SERVER_INFO_META_KEY
from mcp_types.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)

SERVER_INFO: dict[str, str] = {"name": "narrowgate-bench-upstream", "version": "0.1.0"}
MAX_SESSIONS = 100_000
MAX_BODY = 4 * 1024 * 1024

TOOLS: list[dict[str, Any]] = [
    {
        "name": "echo",
        "description": "Return the given text.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
        "outputSchema": {
            "type": "object",
            "properties": {"sum": {"type": "number"}},
            "required": ["sum"],
        },
        "annotations": {"readOnlyHint": True},
    },
]
CAPABILITIES: dict[str, Any] = {"tools": {"listChanged": False}}

JSON_CT = b"application/json"

# (status, extra headers, body); body b"" means no content.
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]


class RpcError(Exception):
    """A JSON-RPC error answer (code, message)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


# ---------------------------------------------------------------------------- tools


def _text_result(text: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def _call_echo(args: dict[str, Any]) -> dict[str, Any]:
    text = args.get("text")
    if not isinstance(text, str):
        return _text_result("echo: 'text' must be a string", is_error=True)
    return _text_result(text)


def _call_add(args: dict[str, Any]) -> dict[str, Any]:
    a, b = args.get("a"), args.get("b")
    numeric = (int, float)
    if not (isinstance(a, numeric) and isinstance(b, numeric)) or isinstance(a, bool) or isinstance(b, bool):
        return _text_result("add: 'a' and 'b' must be numbers", is_error=True)
    total = a + b
    result = _text_result(str(total))
    result["structuredContent"] = {"sum": total}
    return result


TOOL_IMPLS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"echo": _call_echo, "add": _call_add}


def add_bulk_tools(count: int) -> None:
    """`count` more tools named tool00000..., each an echo: a large catalog for bench/stall.py."""
    for i in range(count):
        name = f"tool{i:05d}"
        TOOLS.append({**TOOLS[0], "name": name, "description": f"Bulk tool {i}: return the given text."})
        TOOL_IMPLS[name] = _call_echo


def _tools_call(params: dict[str, Any]) -> dict[str, Any]:
    name = params.get("name")
    impl = TOOL_IMPLS.get(name) if isinstance(name, str) else None
    if impl is None:
        raise RpcError(INVALID_PARAMS, f"Unknown tool: {name!r}")
    args = params.get("arguments") or {}
    if not isinstance(args, dict):
        raise RpcError(INVALID_PARAMS, "arguments must be an object")
    return impl(args)


# ---------------------------------------------------------------------------- protocol core


def _error_body(req_id: Any, err: RpcError) -> bytes:
    error: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.data is not None:
        error["data"] = err.data
    return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "error": error})


def _ok(req_id: Any, result: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return 200, extra or [], orjson.dumps({"jsonrpc": "2.0", "id": req_id, "result": result})


def _fail(status: int, req_id: Any, code: int, message: str, data: Any = None) -> Reply:
    return status, [], _error_body(req_id, RpcError(code, message, data))


class McpCore:
    """Transport-independent request handling: bytes in, (status, headers, bytes) out."""

    def __init__(self) -> None:
        self.sessions: OrderedDict[str, str] = OrderedDict()  # session id -> protocol version

    # -- entry points

    def handle_post(self, headers: dict[str, str], body: bytes) -> Reply:
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _fail(400, None, PARSE_ERROR, "Parse error")
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            return _fail(400, None, INVALID_REQUEST, "Invalid Request: expected one JSON-RPC 2.0 object")
        if "method" not in msg:  # a response or error from the client: accept and ignore
            return 202, [], b""
        if _is_modern(headers, msg):
            return self._modern(headers, msg)
        return self._legacy(headers, msg)

    def handle_delete(self, headers: dict[str, str]) -> Reply:
        sid = headers.get("mcp-session-id")
        if sid is None:
            return 400, [], b""
        if self.sessions.pop(sid, None) is None:
            return 404, [], b""
        return 200, [], b""

    # -- 2025-11-25 (handshake era)

    def _legacy(self, headers: dict[str, str], msg: dict[str, Any]) -> Reply:
        method = msg["method"]
        req_id = msg.get("id")
        if method == "initialize":
            return self._initialize(req_id, msg.get("params"))
        sid = headers.get("mcp-session-id")
        if sid is None:
            return _fail(400, req_id, INVALID_REQUEST, "Bad Request: missing Mcp-Session-Id")
        if sid not in self.sessions:
            return _fail(404, req_id, INVALID_REQUEST, "Session not found")
        if "id" not in msg:  # notification (notifications/initialized, cancelled, ...)
            return 202, [], b""
        try:
            result = self._dispatch(method, msg.get("params") or {}, modern=False)
        except RpcError as err:
            return 200, [], _error_body(req_id, err)
        return _ok(req_id, result)

    def _initialize(self, req_id: Any, params: Any) -> Reply:
        if req_id is None:
            return _fail(400, None, INVALID_REQUEST, "initialize must be a request")
        requested = params.get("protocolVersion") if isinstance(params, dict) else None
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        sid = uuid.uuid4().hex
        self.sessions[sid] = version
        if len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        result = {"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO}
        return _ok(req_id, result, [(b"mcp-session-id", sid.encode())])

    # -- 2026-07-28 (stateless, per-request envelope)

    def _modern(self, headers: dict[str, str], msg: dict[str, Any]) -> Reply:
        req_id = msg.get("id")
        verdict = classify_inbound_request(msg, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            status = ERROR_CODE_HTTP_STATUS.get(verdict.code, 400)
            return _fail(status, req_id, verdict.code, verdict.message, verdict.data)
        if "id" not in msg:
            return 202, [], b""
        try:
            result = self._dispatch(msg["method"], msg.get("params") or {}, modern=True)
        except RpcError as err:
            return ERROR_CODE_HTTP_STATUS.get(err.code, 200), [], _error_body(req_id, err)
        result.setdefault("resultType", "complete")
        result["_meta"] = {SERVER_INFO_META_KEY: SERVER_INFO}
        return _ok(req_id, result)

    # -- methods

    def _dispatch(self, method: str, params: dict[str, Any], *, modern: bool) -> dict[str, Any]:
        if method == "tools/call":
            return _tools_call(params)
        if method == "tools/list":
            result: dict[str, Any] = {"tools": TOOLS}
            if modern:
                result.update(ttlMs=0, cacheScope="private")
            return result
        if method == "ping":
            return {}
        if method == "server/discover" and modern:
            return {
                "supportedVersions": [*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS],
                "capabilities": CAPABILITIES,
                "serverInfo": SERVER_INFO,
                "ttlMs": 0,
                "cacheScope": "private",
            }
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")


def _is_modern(headers: dict[str, str], msg: dict[str, Any]) -> bool:
    if headers.get("mcp-protocol-version") in MODERN_PROTOCOL_VERSIONS:
        return True
    params = msg.get("params")
    if isinstance(params, dict):
        meta = params.get("_meta")
        return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta
    return False


# ---------------------------------------------------------------------------- raw ASGI

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class AsgiApp:
    """Minimal ASGI app: POST/DELETE/GET on ``path``, JSON only."""

    def __init__(self, core: McpCore, path: str = "/mcp", on_startup: Callable[[], None] | None = None) -> None:
        self.core = core
        self.path = path
        self.on_startup = on_startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _asgi_lifespan(receive, send, self.on_startup)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != self.path:
            await _asgi_send(send, (404, [], b""))
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        if method == "POST":
            body = await _asgi_body(receive)
            reply = self.core.handle_post(headers, body) if body is not None else (413, [], b"")
        elif method == "DELETE":
            reply = self.core.handle_delete(headers)
        else:
            reply = (405, [(b"allow", b"POST, DELETE")], b"")
        await _asgi_send(send, reply)


async def _asgi_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _asgi_send(send: Send, reply: Reply) -> None:
    status, extra, body = reply
    headers = [(b"content-length", str(len(body)).encode()), *extra]
    if body:
        headers.append((b"content-type", JSON_CT))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _asgi_lifespan(receive: Receive, send: Send, on_startup: Callable[[], None] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            if on_startup is not None:
                on_startup()
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def serve_asgi(sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        AsgiApp(McpCore(), on_startup=lambda: _announce(sock)),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
    )
    # The socket is already listening: connections made right after the announcement (sent once
    # lifespan startup completes) wait in its backlog until uvicorn accepts them.
    uvicorn.Server(config).run(sockets=[sock])


# ---------------------------------------------------------------------------- aiohttp.web


def serve_aiohttp(sock: socket.socket) -> None:
    import uvloop

    uvloop.run(_aiohttp_main(sock))


async def _aiohttp_main(sock: socket.socket) -> None:
    from aiohttp import web

    core = McpCore()

    async def handle(request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if request.method == "POST":
            reply = core.handle_post(headers, await request.read())
        elif request.method == "DELETE":
            reply = core.handle_delete(headers)
        else:
            reply = (405, [(b"allow", b"POST, DELETE")], b"")
        status, extra, body = reply
        out = {k.decode(): v.decode() for k, v in extra}
        if body:
            out["Content-Type"] = "application/json"
        return web.Response(status=status, body=body or None, headers=out)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/mcp", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    _announce(sock)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- main


def _announce(sock: socket.socket) -> None:
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101, help="0 picks a free port")
    parser.add_argument("--impl", choices=("asgi", "aiohttp"), default="asgi")
    parser.add_argument("--bulk-tools", type=int, default=0,
                        help="also list N tools tool00000... that echo (the reload-stall benchmark)")
    args = parser.parse_args(argv)
    add_bulk_tools(args.bulk_tools)
    sock = _bind(args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        (serve_asgi if args.impl == "asgi" else serve_aiohttp)(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
