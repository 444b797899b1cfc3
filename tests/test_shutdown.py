"""Stopping the gateway: SIGTERM and SIGINT drain, and `narrowgate demo` never leaves a child behind.

A real `narrowgate serve` holds a real MCP SDK client's call for an approval when the signal comes:
the client must get a clear JSON-RPC error, the process must exit 0 with one log line for the
signal, no traceback and no uvicorn "Exception in ASGI application", and the audit log must hold
what happened just before. `narrowgate demo` is stopped by SIGTERM, SIGINT and SIGKILL; no child
process (the HTTP payments upstream, the stdio tickets upstream) may outlive it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequestParams, ElicitResult

from tests.support.admin import bearer
from tests.support.clients import ERAS, mcp_client
from tests.support.demo import DemoProcess, descendants, wait_gone
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, behaviour_manifest

SHUTTING_DOWN = -32050
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def pending_approvals(gw: Gateway) -> list[dict[str, Any]]:
    response = httpx2.get(f"{gw.base}/admin/v1/approvals?state=pending", headers=bearer(ADMIN_TOKEN), timeout=10)
    return list(response.json()["approvals"])


async def wait_until_held(gw: Gateway, era: str, timeout_s: float = 20) -> None:
    """Until the call holds: its approval request exists and the gateway decided the call StepUp as often
    as the era takes (2026-07-28: once for the input_required round, once for the retry that holds)."""
    decisions = 1 if era == "legacy" else 2
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (gw.log_text().count("step_up agent=agent-a tool=stop__echo") >= decisions
                and await asyncio.to_thread(pending_approvals, gw)):
            await asyncio.sleep(0.3)  # from the decision to the wait itself
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the call was never held:\n{gw.log_text()[-3000:]}")


async def accept_but_never_decide(context: Any, params: ElicitRequestParams) -> ElicitResult:
    """A client that can be sent to the console (so the call holds) whose person never decides."""
    return ElicitResult(action="accept")


def audit_records(workdir: Path, config: Path) -> list[dict[str, Any]]:
    exported = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(config)], cwd=workdir,
                              capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in exported.stdout.splitlines()]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
async def test_a_held_call_gets_a_clear_error_and_the_gateway_exits_0(
        tmp_path: Path, behaviour_http: int, sig: int, era: str) -> None:
    manifest = behaviour_manifest("stop", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, tools=("echo", "log"))
    manifest["tools"][0]["risk"] = "privileged"  # echo: held by the shipped step-up policy until a person decides
    gw = Gateway(tmp_path, [manifest], extra_config={"approvals": {"keepalive": "1s"}}).start()
    assert gw.process is not None
    try:
        async with mcp_client(gw.url, "token-agent-a", era, elicitation_callback=accept_but_never_decide) as client:
            done = await client.call_tool("stop__log", {"message": "just before the stop", "level": "info"})
            assert not done.is_error
            held = asyncio.create_task(client.call_tool("stop__echo", {"text": "held at the stop"}))
            await wait_until_held(gw, era)
            started = time.monotonic()
            gw.process.send_signal(sig)
            with pytest.raises(MCPError) as stopped:
                await asyncio.wait_for(held, 15)
            answered_in = time.monotonic() - started
    except BaseException:
        gw.stop()
        raise
    assert stopped.value.error.code == SHUTTING_DOWN
    assert "shutting down" in stopped.value.error.message and "did not run" in stopped.value.error.message
    assert answered_in < 3, "a held call is answered at once, not after the drain grace"
    assert gw.process.wait(timeout=20) == 0
    log = gw.log_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert "KeyboardInterrupt" not in log
    name = signal.Signals(sig).name
    assert log.count(f"{name} received") == 1, log[-3000:]
    assert "Narrowgate stopped: 1 held call(s)" in log
    records = audit_records(tmp_path, tmp_path / "gateway.yaml")
    assert any(r["tool"] == "stop__log" and r["decision"] == "allow" for r in records), "audit not flushed"
    assert any(r["tool"] == "stop__echo" and r["decision"] == "step_up" for r in records)


@pytest.mark.timeout(60)
async def test_an_idle_gateway_stops_on_sigterm_with_exit_0_and_two_lines(tmp_path: Path, behaviour_http: int) -> None:
    manifest = behaviour_manifest("idle", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, tools=("echo",))
    gw = Gateway(tmp_path, [manifest]).start()
    assert gw.process is not None
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        assert not (await client.call_tool("idle__echo", {"text": "hi"})).is_error
    before = gw.log_text()
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(timeout=20) == 0
    after = gw.log_text()[len(before):]
    assert [line.split(": ", 1)[1] for line in after.splitlines() if "narrowgate:" in line] == [
        "SIGTERM received: stopping (new connections refused, open calls answered)",
        "Narrowgate stopped: 0 held call(s) and 0 unfinished call(s) answered with a shutting-down error; "
        "audit log flushed; upstreams stopped",
    ]
    assert "Traceback" not in after


@pytest.mark.timeout(60)
async def test_a_call_in_flight_finishes_while_new_connections_are_refused(tmp_path: Path, behaviour_http: int) -> None:
    """Raw JSON-RPC over HTTP here: the SDK client lists tools again after a call, which a stopped gateway
    cannot answer; what matters is the reply to the call that was in flight."""
    manifest = behaviour_manifest("busy", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, tools=("slow",))
    gw = Gateway(tmp_path, [manifest]).start()
    assert gw.process is not None
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "busy__slow", "arguments": {"seconds": 2}, "_meta": meta}}
    headers = {**bearer("token-agent-a"), "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "busy__slow"}
    async with httpx2.AsyncClient(timeout=20) as http:
        running = asyncio.create_task(http.post(gw.url, json=body, headers=headers))
        await asyncio.sleep(0.5)
        gw.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        with pytest.raises(httpx2.ConnectError):
            await http.get(f"{gw.base}/healthz")  # no new connection once the stop began
        reply = (await asyncio.wait_for(running, 15)).json()
    assert reply["result"]["content"][0]["text"] == "slept 2.0", reply
    assert gw.process.wait(timeout=20) == 0
    assert "0 held call(s) and 0 unfinished call(s)" in gw.log_text()


# --- narrowgate demo: no child outlives it -------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: signal.Signals(s).name)
def test_no_demo_child_survives_the_demo(tmp_path: Path, sig: int) -> None:
    demo = DemoProcess.start(tmp_path)
    try:
        children = descendants(demo.process.pid)
        commands = " ".join(command for _, command in children)
        assert "payments_server.py" in commands and "tickets_server.py" in commands, commands
        demo.process.send_signal(sig)
        code = demo.process.wait(timeout=30)
    finally:
        demo.stop()
    survivors = wait_gone([pid for pid, _ in children], timeout_s=15)
    assert not survivors, f"outlived the demo after {signal.Signals(sig).name}: {survivors}"
    if sig != signal.SIGKILL:
        assert code == 0
        output = demo.output()
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
