"""A minimal reference proxy: the cheapest Python hop we can write, as a floor for the gateway.

``python bench/passthrough.py serve --config CFG`` reads the same config and catalog format as
``narrowgate serve`` (``listen``, ``catalog``, ``auth.static_tokens[].token_env``) and forwards
``POST``/``DELETE /mcp`` to the first manifest's ``transport.url``: it checks the bearer token,
parses the JSON-RPC body once with orjson, strips/adds the ``<namespace>__`` prefix on tool names
(body and ``Mcp-Name``), and passes sessions, the 2026-07-28 envelope and its headers through.
No policy, no audit, no token: ``python -m bench.run`` measures it as the floor beside the gateway.
Raw ASGI on uvicorn (httptools, uvloop) in, one pooled aiohttp client out. Benchmarks only.
"""

from __future__ import annotations

import argparse
import hmac
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn
import yaml

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
FORWARDED = ("accept", "content-type", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name")
RETURNED = ("content-type", "mcp-session-id")


class Passthrough:
    def __init__(self, upstream_url: str, prefix: str, tokens: list[bytes]) -> None:
        self.upstream_url = upstream_url
        self.prefix = prefix
        self.tokens = tokens
        self.http: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.http is not None:
                    await self.http.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            return await _reply(send, 200, [], b"ok")
        if path != "/mcp":
            return await _reply(send, 404, [], b"")
        headers = dict(scope["headers"])
        if not self._authorized(headers.get(b"authorization", b"")):
            return await _reply(send, 401, [(b"www-authenticate", b"Bearer")], b"")
        if method not in ("POST", "DELETE"):
            return await _reply(send, 405, [(b"allow", b"POST, DELETE")], b"")
        body = await _read_body(receive)
        out = {k: headers[k.encode()].decode() for k in FORWARDED if k.encode() in headers}
        if method == "POST":
            body = self._rewrite_request(body, out)
        assert self.http is not None
        async with self.http.request(method, self.upstream_url, data=body or None, headers=out) as resp:
            payload = await resp.read()
            back = [(k.encode(), resp.headers[k].encode()) for k in RETURNED if k in resp.headers]
            if resp.headers.get("content-type", "").startswith("application/json") and payload:
                payload = self._rewrite_response(payload)
            await _reply(send, resp.status, back, payload)

    def _authorized(self, value: bytes) -> bool:
        if not value.lower().startswith(b"bearer "):
            return False
        given = value[7:].strip()
        return any(hmac.compare_digest(given, t) for t in self.tokens)

    def _rewrite_request(self, body: bytes, headers: dict[str, str]) -> bytes:
        msg = orjson.loads(body)
        if isinstance(msg, dict) and msg.get("method") == "tools/call":
            name = msg["params"]["name"]
            if name.startswith(self.prefix):
                msg["params"]["name"] = name[len(self.prefix) :]
                if "mcp-name" in headers:
                    headers["mcp-name"] = msg["params"]["name"]
        return orjson.dumps(msg)

    def _rewrite_response(self, payload: bytes) -> bytes:
        msg = orjson.loads(payload)
        tools = msg.get("result", {}).get("tools") if isinstance(msg, dict) else None
        if not isinstance(tools, list):
            return payload
        for tool in tools:
            tool["name"] = self.prefix + tool["name"]
        return orjson.dumps(msg)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _reply(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def load_app(config_path: Path) -> tuple[Passthrough, str, int]:
    config = yaml.safe_load(config_path.read_text())
    catalog = (config_path.parent / config["catalog"]).resolve()
    manifest = yaml.safe_load(next(iter(sorted(catalog.glob("*.yaml")))).read_text())
    namespace = manifest.get("namespace", manifest["id"])
    prefix = f"{namespace}__" if namespace else ""
    tokens = [os.environ[t["token_env"]].encode() for t in config["auth"]["static_tokens"]]
    host, port = config["listen"].rsplit(":", 1)
    return Passthrough(manifest["transport"]["url"], prefix, tokens), host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="minimal reference MCP proxy (benchmarks only)")
    parser.add_argument("command", choices=("serve",))
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    app, host, port = load_app(args.config)
    uvicorn.run(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        access_log=False, log_level="warning", server_header=False, date_header=False,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
