"""Check an MCP endpoint with the mcp SDK's own client, in both protocol eras.

``python -m bench.conformance http://127.0.0.1:PORT/mcp [--tool echo] [--token T]``

Lists tools and calls the echo tool once with ``mode="legacy"`` (2025-11-25 handshake) and once
with ``mode="auto"`` (probes ``server/discover``, 2026-07-28). Exits non-zero on any mismatch.
Meant for the bench upstream and for the gateway in front of it; not on the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def _transport(url: str, token: str | None) -> Any:
    if token is None:
        return streamable_http_client(url)
    client = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
    return streamable_http_client(url, http_client=client)


async def check(url: str, tool: str, mode: str, token: str | None) -> str:
    """Return a one-line summary; raise AssertionError on a wrong answer."""
    async with Client(_transport(url, token), mode=mode) as client:  # type: ignore[arg-type]
        session = client.session
        era = "2026-07-28" if session.discover_result is not None else "2025-11-25"
        tools = [t.name for t in (await client.list_tools()).tools]
        assert tool in tools, f"{tool!r} not in tools/list: {tools}"
        result = await client.call_tool(tool, {"text": f"hello {mode}"})
        text = getattr(result.content[0], "text", None)
        assert not result.is_error and text == f"hello {mode}", f"bad echo result: {result}"
        return f"mode={mode}: era {era}, tools {tools}, echo ok"


async def _main(args: argparse.Namespace) -> int:
    failures = 0
    for mode in ("legacy", "auto"):
        try:
            print(await asyncio.wait_for(check(args.url, args.tool, mode, args.token), 30))
        except Exception as exc:  # report every failure, keep going
            failures += 1
            print(f"mode={mode}: FAILED: {type(exc).__name__}: {exc}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SDK-client conformance check of an MCP endpoint")
    parser.add_argument("url")
    parser.add_argument("--tool", default="echo")
    parser.add_argument("--token", default=None)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
