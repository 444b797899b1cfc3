"""An agent whose SSE response stream drops can resume it with Last-Event-ID (2025-11-25)."""

from __future__ import annotations

from typing import Any

import httpx2
import orjson

from tests.conftest import TOKEN
from tests.support.processes import Gateway

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream",
           "Content-Type": "application/json"}


async def open_session(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    response = await http.post(url, json=init, headers=HEADERS)
    session = {**HEADERS, "Mcp-Session-Id": response.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    return session


def parse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields:
            events.append(fields)
    return events


async def progress_call_dropped(http: httpx2.AsyncClient, url: str, session: dict[str, str]) -> list[dict[str, Any]]:
    """Call behav__progress (request id 7, 3 steps) and drop its SSE stream after the first progress
    event: the events seen until then."""
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "behav__progress", "arguments": {"steps": 3, "delay": 0.3},
                       "_meta": {"progressToken": "resume-me"}}}
    seen: list[dict[str, Any]] = []
    async with http.stream("POST", url, json=call, headers=session) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            seen = parse_events(buffer)
            if any("data" in e and "progress" in e["data"] for e in seen):
                break  # drop the connection after the first progress event
    return seen


async def test_dropped_post_stream_is_resumed_from_the_last_event_id(gateway: Gateway) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, gateway.url)
        seen = await progress_call_dropped(http, gateway.url, session)
        priming = seen[0]
        assert priming["id"].endswith("-0") and priming.get("retry"), "the stream starts with a priming event"
        last_id = [e for e in seen if "id" in e][-1]["id"]

        resumed = await http.get(gateway.url, headers={**session, "Accept": "text/event-stream",
                                                       "Last-Event-ID": last_id})
        assert resumed.status_code == 200
        messages = [orjson.loads(e["data"]) for e in parse_events(resumed.text) if e.get("data")]
    progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
    final = [m for m in messages if m.get("id") == 7]
    assert progress and progress[-1] == 3
    assert final and final[0]["result"]["content"][0]["text"] == "done 3"


async def test_unknown_last_event_id_is_refused(gateway: Gateway) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, gateway.url)
        response = await http.get(gateway.url, headers={**session, "Accept": "text/event-stream",
                                                        "Last-Event-ID": "p999-1"})
    assert response.status_code == 404
