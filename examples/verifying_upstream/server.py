"""An MCP server that trusts nothing but Narrowgate's per-call tokens.

    python examples/verifying_upstream/server.py --port 0 \\
        --jwks-url http://127.0.0.1:8080/.well-known/jwks.json \\
        --audience http://127.0.0.1:9000/mcp --issuer http://127.0.0.1:8080 \\
        [--revocations-url http://127.0.0.1:8080/oauth/revocations] [--record calls.jsonl]

Streamable HTTP at /mcp; with --port 0 it prints "LISTENING <port>" once it accepts connections.
Every tool first verifies the call's bearer token with gateway.verifier (signature via the
gateway's JWKS, typ, issuer, audience = this server, expiry, scope = this tool, args_sha256 =
these arguments, unused jti, task not revoked) and answers with a tool error if any check fails.

Tools:
    echo(text)        returns text
    add(a, b)         returns a + b
    received()        what this server has received so far (it verifies its own token too)

Every call is recorded, accepted or refused, in memory (see `received`) and, with --record, as
one JSON line per call: {"tool", "arguments", "authorization", "outcome", "reason", "claims", "caller"}.
"authorization" is the raw header, so tests can prove which credential reached the upstream; "caller"
is whom the call is for, [sub_iss, sub, is a person] (gateway.verifier.caller_of): a person's sub may
equal an agent id, so an upstream keys its own records by both, never by sub alone.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# Runnable from a checkout without installing: the verifier is one file with no gateway imports.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from gateway.verifier import TokenRefused, UpstreamTokenVerifier, bearer_token, caller_of

server = MCPServer("verifying-upstream", version="1.0.0", log_level="WARNING")
verifier: UpstreamTokenVerifier | None = None
record_path: Path | None = None
received_calls: list[dict[str, Any]] = []


async def authorize(ctx: Context, tool: str) -> dict[str, Any]:
    """Verify this call's token; raise a ToolError (the client sees is_error) when it is refused."""
    assert verifier is not None, "main() configures the verifier"
    headers = ctx.headers or {}
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    # Hash the arguments as they arrived on the wire, before the SDK validated or coerced them.
    params = ctx.request_context.params or {}
    arguments = params.get("arguments")
    entry: dict[str, Any] = {"tool": tool, "arguments": arguments, "authorization": authorization}
    try:
        claims = await verifier.averify(bearer_token(authorization), tool, arguments)
    except TokenRefused as refused:
        remember({**entry, "outcome": "refused", "reason": refused.reason, "claims": None, "caller": None})
        raise ToolError(f"token refused: {refused.reason}") from None
    remember({**entry, "outcome": "accepted", "reason": None, "claims": claims, "caller": list(caller_of(claims))})
    return claims


def remember(entry: dict[str, Any]) -> None:
    received_calls.append(entry)
    if record_path is not None:
        with record_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, separators=(",", ":")) + "\n")


@server.tool()
async def echo(text: str, ctx: Context) -> str:
    """Return text unchanged."""
    await authorize(ctx, "echo")
    return text


@server.tool()
async def add(a: int, b: int, ctx: Context) -> int:
    """Return a + b."""
    await authorize(ctx, "add")
    return a + b


@server.tool()
async def received(ctx: Context) -> list[dict[str, Any]]:
    """Every call this server has received so far, oldest first (this one included)."""
    await authorize(ctx, "received")
    return received_calls


class AnnouncingServer(uvicorn.Server):
    """Prints ``LISTENING <port>`` (flushed) once it accepts connections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            print(f"LISTENING {sockets[0].getsockname()[1]}", flush=True)


def main(argv: list[str] | None = None) -> None:
    global verifier, record_path
    parser = argparse.ArgumentParser(description="An MCP server that verifies Narrowgate's per-call tokens.")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--jwks-url", required=True, help="the gateway's /.well-known/jwks.json")
    parser.add_argument("--audience", required=True, help="this server's resource URI, as the gateway's catalog has it")
    parser.add_argument("--issuer", required=True, help="the gateway's issuer URL")
    parser.add_argument("--revocations-url", help="the gateway's /oauth/revocations, to honour ended tasks")
    parser.add_argument("--record", type=Path, help="append one JSON line per call received")
    args = parser.parse_args(argv)
    verifier = UpstreamTokenVerifier(args.jwks_url, args.audience, args.issuer,
                                     revocations_url=args.revocations_url)
    record_path = args.record
    app = server.streamable_http_app(host=args.host)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    anyio.run(AnnouncingServer(config).serve, [sock])


if __name__ == "__main__":
    main(sys.argv[1:])
