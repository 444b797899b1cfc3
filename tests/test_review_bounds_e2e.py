"""An upstream cannot grow the gateway's review table without bound: a real shifting upstream adds
tool names to a real `narrowgate serve`; people review through the admin API, an agent lists and
calls with a real MCP client. Over discovery.max_pending_reviews_per_server a new name is refused
(never in the queue, never listed or callable, recorded once, the owners told); an undecided tool
the upstream stops listing is dropped from memory at the first list change after
discovery.forget_unlisted_after and, if it comes back, is quarantined as new."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from gateway.protocol.errors import INVALID_PARAMS
from tests import test_quarantine_e2e
from tests.support.changes import control, wait_for_state
from tests.support.processes import NARROWGATE, Gateway, static_agent
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_quarantine_e2e import (
    agent,
    decide,
    gateway_for,
    logged,
    names,
    refused,
    review,
    reviews,
    shifting_manifest,
    until_quarantined,
    upstream_calls,
)

LISTEN = "2026-07-28"
shifting, shifting_log = test_quarantine_e2e.shifting, test_quarantine_e2e.shifting_log  # the upstream fixtures


def bounded_gateway(workdir: Path, port: int, **discovery: Any) -> Gateway:
    gateway = gateway_for(workdir, [shifting_manifest("docs", port, "auto")], [static_agent("agent-a", ["docs"])],
                          {"agent-a": "token-a"})
    gateway.extra_config["discovery"] = {"resync_interval": "1s", **discovery}
    return gateway


def catalog_records(gateway: Gateway, action: str) -> list[dict[str, Any]]:
    export = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(gateway.workdir / "gateway.yaml")],
                            capture_output=True, text=True, timeout=60, check=True)
    records = [json.loads(line) for line in export.stdout.splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "catalog" and r["action"] == action]


async def add(port: int, *tools: str) -> None:
    for name in tools:
        await control(port, {"op": "add", "name": name, "description": f"Generated {name}."})


async def until_gone(gateway: Gateway, tool: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while tool in await anyio.to_thread.run_sync(reviews, gateway):
        assert time.monotonic() < deadline, f"{tool} still reviewed"
        await anyio.sleep(0.2)


async def test_over_the_cap_a_new_name_is_refused_recorded_and_never_exposed(
        tmp_path: Path, shifting: int, shifting_log: Path) -> None:
    receiver = WebhookReceiver().start()
    gateway = bounded_gateway(tmp_path / "gw", shifting, max_pending_reviews_per_server=2,
                              webhook_url=receiver.url, webhook_secret_env="REVIEW_HOOK_SECRET")
    gateway.env = {"REVIEW_HOOK_SECRET": "review-secret"}
    gateway.start()
    try:
        await wait_for_state(shifting, timeout_s=15, at_least=True, listeners=1)
        await add(shifting, "gen_a", "gen_b")
        await until_quarantined(gateway, "docs__gen_a", "docs__gen_b")
        await add(shifting, "gen_c", "gen_d")
        assert "docs" in await logged(gateway, "new tool names it lists are refused", timeout_s=10)
        headers, body = receiver.wait_for(lambda payload: payload.get("type") == "tool_review_cap_reached")
        assert json.loads(body)["upstream_name"] == "gen_c" and receiver.signature_ok(headers, body, "review-secret")
        await anyio.sleep(2.5)  # re-syncs: a refused name is recorded once, not at every one
        queue = reviews(gateway)
        assert "docs__gen_c" not in queue and "docs__gen_d" not in queue
        assert sorted(r["detail"]["name"] for r in catalog_records(gateway, "tool_refused")) == ["gen_c", "gen_d"]
        async with agent(gateway, "token-a", LISTEN) as (client, _):
            assert "docs__gen_c" not in await names(client)
            with pytest.raises(MCPError) as caught:
                await client.call_tool("docs__gen_c", {"text": "x"})
            assert caught.value.error.code == INVALID_PARAMS
        assert "gen_c" not in upstream_calls(shifting_log)
        # A person's decision frees a place: the first refused name is admitted, quarantined.
        decide(gateway, "docs", "gen_a", "reject", expected_sha256=review(gateway, "docs", "gen_a")["current_hash"])
        await until_quarantined(gateway, "docs__gen_c")
        assert "docs__gen_d" not in reviews(gateway)
    finally:
        gateway.stop()
        receiver.stop()


async def test_an_unlisted_quarantined_tool_is_forgotten_and_a_returning_name_is_quarantined_again(
        tmp_path: Path, shifting: int, shifting_log: Path) -> None:
    gateway = bounded_gateway(tmp_path / "gw", shifting, forget_unlisted_after="2s").start()
    try:
        await wait_for_state(shifting, timeout_s=15, at_least=True, listeners=1)
        await add(shifting, "gen_x", "gen_ok")
        await until_quarantined(gateway, "docs__gen_x", "docs__gen_ok")
        decide(gateway, "docs", "gen_ok", "approve", risk="read", data_classes=["internal"],
               expected_sha256=review(gateway, "docs", "gen_ok")["current_hash"])
        for name in ("gen_x", "gen_ok"):
            await control(shifting, {"op": "remove", "name": name})
        await anyio.sleep(2.5)
        await add(shifting, "gen_y")  # the next list change after the window forgets it
        await until_gone(gateway, "docs__gen_x")
        assert reviews(gateway)["docs__gen_ok"]["status"] == "approved"  # decided reviews stay
        await logged(gateway, "dropped from memory")
        assert [r["detail"]["name"] for r in catalog_records(gateway, "tool_review_forgotten")] == ["gen_x"]
        await add(shifting, "gen_x")
        back = (await until_quarantined(gateway, "docs__gen_x"))["docs__gen_x"]
        assert back["change"] == "new"
        async with agent(gateway, "token-a", LISTEN) as (client, _):
            assert "docs__gen_x" not in await names(client)
            await refused(client, "docs__gen_x", {"text": "x"})
        assert "gen_x" not in upstream_calls(shifting_log)
    finally:
        gateway.stop()
