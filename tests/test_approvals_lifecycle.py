"""Held approvals whose call is gone, and clients that cannot be told: a real gateway process, real MCP
clients (the `mcp` SDK, in this process or in one of its own that gets killed), a real upstream.

* A held call's request lives only as long as a call waits on it. A client that gives up (its own
  timeout), is killed mid-call, or a gateway that is killed and restarted, leaves a request nobody can
  use: it is abandoned (audited), drops out of the inbox, and approving it afterwards grants nothing.
  A client that only lost its connection and resumes the stream in time keeps its request.
* A request in pending mode (the agent was told to retry the identical call) survives all of that.
* `@step_up` without a mode is "auto": a client that cannot send its person to the console (no URL
  elicitation) gets the pending answer at once instead of hanging; `@step_up("hold")` still holds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequestParams, ElicitResult, LoggingMessageNotificationParams

from tests.support.admin import bearer
from tests.support.clients import ERAS, mcp_client
from tests.support.processes import ADMIN_TOKEN, REPO, Gateway, behaviour_manifest, cedar_copy
from tests.test_stream_resumption import open_session, parse_events

ACCESS_DENIED = -32030
OWNER_TOKEN = "lifecycle-owner-token"  # tests@example.com, the test agents' owner
EXTRA_POLICIES = """\
@id("log-needs-approval-auto")
@reason("writing to the log needs an approval")
@step_up
forbid (principal, action == Action::"life__log", resource)
unless { context.approval.granted };

@id("echo-needs-approval-hold")
@reason("this tool needs an approval before it runs")
@step_up("hold")
forbid (principal, action == Action::"life__echo", resource)
unless { context.approval.granted };

@id("progress-needs-approval-pending")
@reason("progress reports need an approval")
@step_up("pending")
forbid (principal, action == Action::"life__progress", resource)
unless { context.approval.granted };
"""
# life__echo is privileged (the shipped `@step_up` rule asks) and held by the explicit hold rule above, whatever
# the client.


def lifecycle_gateway(workdir: Path, behaviour_http: int) -> Gateway:
    manifest = behaviour_manifest("life", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=10,
                                  tools=("echo", "log", "progress"))
    manifest["tools"][0]["risk"] = "privileged"
    return Gateway(workdir, [manifest], tokens={"agent-a": "token-agent-a"}, extra_config={
        "policies": str(cedar_copy(workdir / "cedar", **{"70-tests": EXTRA_POLICIES})),
        "admin": {"tokens": [{"name": "test-admin", "token": ADMIN_TOKEN},
                             {"name": "tests@example.com", "token": OWNER_TOKEN, "role": "approver"}]},
        "approvals": {"keepalive": "1s"},
    })


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    gateway = lifecycle_gateway(tmp_path_factory.mktemp("lifecycle"), behaviour_http).start()
    yield gateway
    gateway.stop()


# --- helpers -------------------------------------------------------------------------------------


def api(gw: Gateway, method: str, path: str, **body: Any) -> httpx2.Response:
    return httpx2.request(method, f"{gw.base}/admin/v1/approvals{path}", headers=bearer(OWNER_TOKEN),
                          json=body if method == "POST" else None, timeout=10)


def pending_ids(gw: Gateway, tool: str) -> list[str]:
    listed = api(gw, "GET", "?state=pending&agent=agent-a").json()["approvals"]
    return [a["id"] for a in listed if a["tool"] == tool]


async def wait_for_pending(gw: Gateway, tool: str, besides: frozenset[str] = frozenset(),
                           timeout_s: float = 15) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [i for i in await asyncio.to_thread(pending_ids, gw, tool) if i not in besides]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pending approval for {tool}")


async def wait_for_state(gw: Gateway, approval_id: str, state: str, timeout_s: float = 25) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    shown: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shown = (await asyncio.to_thread(api, gw, "GET", f"/{approval_id}")).json()
        if shown["state"] == state:
            return shown
        await asyncio.sleep(0.2)
    raise AssertionError(f"{approval_id} is {shown.get('state')}, not {state}: {shown}")


def audited_actions(gw: Gateway, approval_id: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "gateway", "audit", "export", "--config",
                          str(gw.workdir / "gateway.yaml")], capture_output=True, text=True, timeout=60,
                         cwd=gw.workdir)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return [r["action"] for r in records if r["kind"] == "approval" and r["detail"]["approval_id"] == approval_id]


def one_call(gw: Gateway, era: str, tool: str, arguments: dict[str, Any]) -> subprocess.Popen[bytes]:
    """An SDK client in a process of its own, making one call (tests/fixtures/clients/one_call.py)."""
    return subprocess.Popen([sys.executable, "-m", "tests.fixtures.clients.one_call", gw.url, "token-agent-a", era,
                             tool, json.dumps(arguments)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def approval_meta(result: Any) -> dict[str, Any]:
    return dict((result.meta or {})["narrowgate/approval"])


async def assert_grants_nothing(gw: Gateway, abandoned_id: str, arguments: dict[str, Any]) -> None:
    """Approving the abandoned request is refused, and the identical call is held on a new request."""
    late = api(gw, "POST", f"/{abandoned_id}/approve")
    assert late.status_code == 409 and "abandoned" in late.json()["error"], late.text
    assert abandoned_id not in pending_ids(gw, "life__echo")  # the inbox shows what can still be decided
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        again = asyncio.create_task(client.call_tool("life__echo", arguments))
        fresh = await wait_for_pending(gw, "life__echo")
        assert fresh != abandoned_id
        await asyncio.sleep(1)
        assert not again.done()  # no grant was left behind: the identical call waits for a person
        assert api(gw, "POST", f"/{fresh}/deny", comment="test over").status_code == 200
        with pytest.raises(MCPError) as refused:
            await asyncio.wait_for(again, 15)
    assert refused.value.error.code == ACCESS_DENIED


# --- a held call whose client is gone ------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_a_client_killed_during_a_held_call_abandons_the_request(gw: Gateway, era: str) -> None:
    arguments = {"text": f"killed-{era}-{time.time_ns()}"}
    client = one_call(gw, era, "life__echo", arguments)
    try:
        approval_id = await wait_for_pending(gw, "life__echo")
        await asyncio.sleep(1.5)  # held (keepalives flowing), so the stream is open when the client dies
        assert client.poll() is None
    finally:
        client.kill()  # SIGKILL: no cancel notification, no DELETE, the connection just closes
        client.wait()
    # 2026-07-28: the closed connection cancels the call; 2025-11-25: nobody resumed the stream in time.
    shown = await wait_for_state(gw, approval_id, "abandoned")
    assert shown["end_reason"].startswith("abandoned: the agent's")
    assert "abandoned" in audited_actions(gw, approval_id)
    await assert_grants_nothing(gw, approval_id, arguments)


async def test_a_held_call_whose_stream_is_resumed_in_time_is_not_abandoned(gw: Gateway) -> None:
    # 2025-11-25: a client that only lost its connection resumes the call's stream with Last-Event-ID.
    arguments = {"text": f"resumed-{time.time_ns()}"}
    call = {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
            "params": {"name": "life__echo", "arguments": arguments}}
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, gw.url)
        async with http.stream("POST", gw.url, json=call, headers=session) as response:
            buffer = ""
            async for chunk in response.aiter_text():
                buffer += chunk
                if any("id" in event for event in parse_events(buffer)):
                    break  # the stream has an event id to resume from: drop the connection now
        last_id = [event for event in parse_events(buffer) if "id" in event][-1]["id"]
        approval_id = await wait_for_pending(gw, "life__echo")
        await asyncio.sleep(3)  # disconnected for a while, within the grace
        resumed = asyncio.create_task(http.get(gw.url, headers={**session, "Accept": "text/event-stream",
                                                                "Last-Event-ID": last_id}))
        await asyncio.sleep(1)
        assert api(gw, "POST", f"/{approval_id}/approve").status_code == 200  # still decidable
        answer = await asyncio.wait_for(resumed, 15)
    messages = [json.loads(event["data"]) for event in parse_events(answer.text) if event.get("data")]
    [final] = [m for m in messages if m.get("id") == 11]
    assert final["result"]["content"][0]["text"] == arguments["text"]
    assert api(gw, "GET", f"/{approval_id}").json()["state"] == "used"


@pytest.mark.parametrize("era", ERAS)
async def test_a_client_that_gives_up_abandons_the_request(gw: Gateway, era: str) -> None:
    arguments = {"text": f"gave-up-{era}-{time.time_ns()}"}
    async with mcp_client(gw.url, "token-agent-a", era) as client:
        started = time.monotonic()
        with pytest.raises(MCPError) as timed_out:
            await client.call_tool("life__echo", arguments, read_timeout_seconds=2)
        assert time.monotonic() - started < 10 and "timed out" in str(timed_out.value).lower()
    [abandoned] = [a for a in api(gw, "GET", "?state=abandoned").json()["approvals"]
                   if a["preview"] == arguments]
    shown = await wait_for_state(gw, abandoned["id"], "abandoned", timeout_s=5)
    assert "ended before it could use the approval" in shown["end_reason"]
    await assert_grants_nothing(gw, abandoned["id"], arguments)


# --- clients that cannot be told, and the auto mode ----------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_a_client_that_cannot_be_told_gets_the_pending_answer_at_once(gw: Gateway, era: str) -> None:
    arguments = {"message": f"cannot-be-told-{era}-{time.time_ns()}", "level": "info"}
    async with mcp_client(gw.url, "token-agent-a", era) as client:  # no elicitation callback
        started = time.monotonic()
        first = await asyncio.wait_for(client.call_tool("life__log", arguments), 5)
        assert time.monotonic() - started < 5
        assert first.is_error and "retry the identical call" in text_of(first)
        meta = approval_meta(first)
        assert meta["state"] == "pending" and meta["url"].endswith(f"/console/approvals/{meta['id']}")
        assert api(gw, "GET", f"/{meta['id']}").json()["mode"] == "pending"
        assert api(gw, "POST", f"/{meta['id']}/approve").status_code == 200
        done = await client.call_tool("life__log", arguments)
        assert not done.is_error and text_of(done) == "logged"


@pytest.mark.parametrize("era", ERAS)
async def test_a_client_that_can_be_sent_to_the_console_is_held(gw: Gateway, era: str) -> None:
    sent_to: list[str] = []

    async def on_elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        sent_to.append(params.url)  # type: ignore[union-attr]
        approval_id = params.url.rsplit("/", 1)[-1]  # type: ignore[union-attr]
        assert (await asyncio.to_thread(api, gw, "POST", f"/{approval_id}/approve")).status_code == 200
        return ElicitResult(action="accept")

    arguments = {"message": f"told-{era}-{time.time_ns()}", "level": "info"}
    async with mcp_client(gw.url, "token-agent-a", era, elicitation_callback=on_elicit) as client:
        done = await asyncio.wait_for(client.call_tool("life__log", arguments), 20)
    assert not done.is_error and text_of(done) == "logged"
    assert len(sent_to) == 1 and "/console/approvals/apr_" in sent_to[0]


async def test_an_explicit_hold_holds_even_a_client_that_cannot_be_told(gw: Gateway) -> None:
    logged: list[str] = []
    progress: list[str] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logged.append(str(params.data))

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    arguments = {"text": f"explicit-hold-{time.time_ns()}"}
    async with mcp_client(gw.url, "token-agent-a", "legacy", logging_callback=on_log) as client:
        held = asyncio.create_task(client.call_tool("life__echo", arguments, progress_callback=on_progress))
        approval_id = await wait_for_pending(gw, "life__echo")
        await asyncio.sleep(1.5)
        assert not held.done()
        # Not silent: the client is told, in the ways it can hear, where the person decides.
        url = f"{gw.base}/console/approvals/{approval_id}"
        assert any(url in line for line in logged) and any(url in line for line in progress), (logged, progress)
        assert api(gw, "POST", f"/{approval_id}/approve").status_code == 200
        result = await asyncio.wait_for(held, 15)
    assert not result.is_error and text_of(result) == arguments["text"]


# --- a gateway restart ---------------------------------------------------------------------------


async def test_a_restart_abandons_held_requests_and_keeps_pending_ones(tmp_path: Path, behaviour_http: int) -> None:
    gateway = lifecycle_gateway(tmp_path, behaviour_http).start()
    try:
        held_arguments = {"text": f"restart-{time.time_ns()}"}
        async with mcp_client(gateway.url, "token-agent-a", "legacy") as client:
            pending = await client.call_tool("life__progress", {"steps": 1})
        pending_id = approval_meta(pending)["id"]
        before = api(gateway, "GET", f"/{pending_id}").json()
        held = one_call(gateway, "legacy", "life__echo", held_arguments)
        try:
            held_id = await wait_for_pending(gateway, "life__echo")
            assert gateway.process is not None
            gateway.process.kill()  # no orderly shutdown: the new process must find and settle it
            gateway.process.wait()
            output, _ = held.communicate(timeout=30)
            assert b"CALLING" in output and b"RESULT" not in output  # the call died with the gateway
        finally:
            held.kill()
            held.wait()
        gateway.start()
        shown = await wait_for_state(gateway, held_id, "abandoned", timeout_s=5)
        assert "the gateway restarted" in shown["end_reason"]
        assert "abandoned" in audited_actions(gateway, held_id)
        assert pending_ids(gateway, "life__echo") == []
        after = api(gateway, "GET", f"/{pending_id}").json()
        assert after["state"] == "pending"  # the agent was told to retry: still worth deciding
        assert after["args_digest"] == before["args_digest"]  # the digest key survives the restart
        await assert_grants_nothing(gateway, held_id, held_arguments)
        assert api(gateway, "POST", f"/{pending_id}/approve").status_code == 200
        async with mcp_client(gateway.url, "token-agent-a", "2026-07-28") as client:
            retried = await client.call_tool("life__progress", {"steps": 1})
        assert not retried.is_error
    finally:
        gateway.stop()
