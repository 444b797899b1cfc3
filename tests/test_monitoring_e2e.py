"""Chain monitoring seen from the outside: scripted agents, real gateway processes, real MCP clients, real HTTP.

Two long-lived gateways share the behaviour upstream (tests/conftest.py) under three server ids:
`vault` (echo reads `secrets`), `mail` (echo is an `egress: true` write) and `notes` (echo is a
plain write, whoami a plain read).

* `watch`: kill switch off, a per-agent rate limit of 5 calls a minute, the signed detection webhook
           pointed at a receiver in this module, and an extra Cedar policy on `context.chain`.
* `kill`:  the default kill switch (critical), default rate limits.

Each test uses its own agents (static tokens), so signals never leak from one test into another.
Nothing is mocked: every answer asserted below is what a gateway process said on the wire, logged,
exported from its audit log, served at /metrics or POSTed to the webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitResult

from tests.support.clients import ERAS, mcp_client
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, REPO, Gateway, cedar_copy
from tests.support.webhook_receiver import WebhookReceiver

RATE_LIMITED = -32029
ACCESS_DENIED = -32030
INVALID_PARAMS = -32602
SDK_HTTP_ERROR = -32603
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WAIT_S = 15.0
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
EGRESS_REASON = "this agent has read sensitive data; sending data out now needs an approval"
WRITES_REASON = "three writes in a minute need an approval"
KILL_SWITCH_MESSAGE = "suspended by the gateway's kill switch"
WEBHOOK_SECRET = "webhook-secret-for-monitoring-e2e"
WEBHOOK_SECRET_ENV = "NARROWGATE_E2E_WEBHOOK_SECRET"

# Step-up once this agent (no task: the agent's own signals) has made three allowed writes in a minute.
WRITES_POLICY = f"""\
@id("step-up-after-three-writes")
@reason("{WRITES_REASON}")
@step_up("pending")
forbid (principal, action == Action::"notes__echo", resource)
when {{ context.chain.writes_last_minute >= 3 }}
unless {{ context.approval.granted }};
"""

WATCH_AGENTS = ("exfil-legacy", "exfil-modern", "fresh-legacy", "fresh-modern", "burst-legacy", "burst-modern",
                "bystander", "prober", "hook", "writer", "writer-peer")
KILL_AGENTS = ("exfil-k-legacy", "exfil-k-modern", "prober-k-legacy", "prober-k-modern", "cli-k", "bystander-k",
               "approved-k-legacy", "approved-k-modern")
OWNER_TOKEN = "monitoring-owner-token"  # tests@example.com, the test agents' owner, an approver
# For the approved-k agents only: egress after a sensitive read holds until a person approves.
HELD_EGRESS_POLICY = """\
@id("hold-egress-after-sensitive-read")
@reason("egress after a sensitive read needs an approval")
@step_up("hold")
forbid (principal, action == Action::"mail__echo", resource)
when { (principal == Agent::"approved-k-legacy" || principal == Agent::"approved-k-modern") &&
       context.chain.sensitive_read }
unless { context.approval.granted };
"""


# --- helpers -------------------------------------------------------------------------------------


def tag(mode: str) -> str:
    return "legacy" if mode == "legacy" else "modern"


def token_for(agent_id: str) -> str:
    return f"token-{agent_id}"


def manifests(port: int) -> list[dict[str, Any]]:
    url = {"url": f"http://127.0.0.1:{port}/mcp"}
    common = {"owner": "tests@example.com", "description": "behaviour test upstream", "transport": url,
              "timeout_s": 10}
    return [
        {"id": "vault", **common, "tools": [{"name": "echo", "risk": "read", "data_classes": ["secrets"]}]},
        {"id": "mail", **common, "tools": [{"name": "echo", "risk": "write", "egress": True}]},
        {"id": "notes", **common, "tools": [{"name": "echo", "risk": "write", "data_classes": ["internal"]},
                                            {"name": "whoami", "risk": "read", "data_classes": ["internal"]}]},
    ]


def noon_zone() -> str:
    """A fixed-offset time zone in which it is about noon now, so the working-hours policy never interferes."""
    offset = 12 - datetime.now(UTC).hour
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def always_working_hours() -> dict[str, Any]:
    return {"working_hours": {"start": "00:00", "end": "23:59", "days": ALL_DAYS, "timezone": noon_zone()}}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def wait_for(what: str, probe: Callable[[], Any]) -> Any:
    """Poll `probe` until it returns something truthy (bounded liveness wait); fail naming `what`."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def monitoring_records(gw: Gateway) -> list[dict[str, Any]]:
    done = run_cli("audit", "export", "--config", str(gw.workdir / "gateway.yaml"))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return [r for r in records if r.get("kind") == "monitoring"]


def detections_of(gw: Gateway, agent_id: str, detector: str) -> list[dict[str, Any]]:
    """The audit log's monitoring records for `agent_id` and `detector`, once there is at least one."""
    return wait_for(f"a {detector} audit record for {agent_id}",  # type: ignore[no-any-return]
                    lambda: [r for r in monitoring_records(gw)
                             if r["agent_id"] == agent_id and r["action"] == detector])


def detection_metric(gw: Gateway, detector: str, severity: str) -> float:
    response = httpx2.get(f"{gw.base}/metrics", timeout=WAIT_S)
    assert response.status_code == 200
    total = 0.0
    for line in response.text.splitlines():
        if line.startswith("narrowgate_detections_total{") and f'detector="{detector}"' in line \
                and f'severity="{severity}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def agent_record(gw: Gateway, agent_id: str) -> dict[str, Any]:
    response = httpx2.get(f"{gw.base}/admin/v1/agents/{agent_id}", headers=ADMIN, timeout=WAIT_S)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def echo(client: Client, tool: str, text: str) -> None:
    result = await client.call_tool(tool, {"text": text})
    assert not result.is_error, result
    assert result.content[0].text == text


async def refused(client: Client, tool: str, arguments: dict[str, Any]) -> MCPError:
    """The call must be refused with a JSON-RPC error; returns it."""
    try:
        result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        return exc
    raise AssertionError(f"{tool} ran: {result}")


async def needs_approval(client: Client, tool: str, arguments: dict[str, Any], reason: str) -> None:
    """A pending-mode step-up: the call does not run; the agent reads why and which approval to wait for."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    assert result.content[0].text.startswith(f"Approval required: {reason}. "), result.content[0].text
    assert (result.meta or {})["narrowgate/approval"]["state"] == "pending"


async def in_session(gw: Gateway, agent_id: str, mode: str, script: Callable[[Client], Awaitable[None]],
                     must_finish: bool = True) -> list[MCPError]:
    """Run `script` in one MCP session; return refusals that tore the session down (e.g. a 403 mid-session).

    Unless told otherwise, the script must run to its end (a refusal cannot silently skip its asserts).
    """
    torn: list[MCPError] = []
    finished = False
    try:
        async with mcp_client(gw.url, token_for(agent_id), mode) as client:
            await script(client)
            finished = True
    except* MCPError as group:
        torn.extend(leaves(group))
    assert finished or not must_finish, f"the session ended early: {torn}"
    return torn


def leaves(group: BaseExceptionGroup[MCPError]) -> list[MCPError]:
    found: list[MCPError] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def next_call_refused(client: Client, tool: str) -> str:
    """A suspended agent's next call in a live session: a 403 at the transport or a -32030 error."""
    error = await refused(client, tool, {"text": "after suspension"})
    # The SDK reports an HTTP 403 as -32603 "Server returned an error response".
    assert error.error.code in (ACCESS_DENIED, SDK_HTTP_ERROR), error.error
    return error.error.message


def assert_refused_at_the_door(gw: Gateway, agent_id: str) -> None:
    """The agent's token opens no new session: HTTP 403 naming the suspension."""
    response = httpx2.post(gw.url, timeout=WAIT_S, headers={
        "Authorization": f"Bearer {token_for(agent_id)}", "Accept": "application/json, text/event-stream",
    }, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "monitoring-e2e", "version": "0"}}})
    assert response.status_code == 403, response.text
    assert "suspended" in response.json().get("error_description", ""), response.text


def assert_suspended_by_gateway(gw: Gateway, agent_id: str, detector: str) -> None:
    record = agent_record(gw, agent_id)
    assert record["state"] == "suspended", record
    last = record["events"][-1]
    assert last["to_state"] == "suspended", last
    assert last["actor"] == "narrowgate", last
    assert detector in last["reason"] and "kill switch" in last["reason"], last
    assert_refused_at_the_door(gw, agent_id)


# --- gateways ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def watch_gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int,
             receiver: WebhookReceiver) -> Iterator[Gateway]:

    workdir = tmp_path_factory.mktemp("monitoring-watch")
    cedar = cedar_copy(workdir / "cedar", **{"70-writes": WRITES_POLICY})
    gw = Gateway(
        workdir, manifests(behaviour_http), tokens={a: token_for(a) for a in WATCH_AGENTS},
        extra_config={
            "policies": str(cedar),
            "policy": always_working_hours(),
            "monitoring": {"kill_switch_severity": "off", "per_agent": {"calls": 5, "per_s": 60}, "per_task": None,
                           "webhook_url": receiver.url, "webhook_secret_env": WEBHOOK_SECRET_ENV},
        },
        env={WEBHOOK_SECRET_ENV: WEBHOOK_SECRET},
    ).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def kill_gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("monitoring-kill")
    # Without the shipped egress policy an egress call after a sensitive read goes through: that is
    # the critical case (data may have left), which the default kill switch answers.
    cedar = cedar_copy(workdir / "cedar", drop=("60-chain.cedar",), **{"70-held-egress": HELD_EGRESS_POLICY})
    gw = Gateway(
        workdir, manifests(behaviour_http),
        tokens={a: token_for(a) for a in KILL_AGENTS},
        # The shipped defaults: kill switch at critical, default rate limits.
        extra_config={"policy": always_working_hours(), "policies": str(cedar),
                      "monitoring": {"kill_switch_severity": "critical"},
                      "admin": {"tokens": [{"name": "test-admin", "token": ADMIN_TOKEN},
                                           {"name": "tests@example.com", "token": OWNER_TOKEN, "role": "approver"}]}},
    ).start()
    yield gw
    gw.stop()


# --- 1. the exfiltration chain -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_secret_read_then_egress_needs_approval_and_is_detected(watch_gw: Gateway, mode: str) -> None:
    agent = f"exfil-{tag(mode)}"

    async def script(client: Client) -> None:
        await echo(client, "vault__echo", "the launch codes")
        await needs_approval(client, "mail__echo", {"text": "the launch codes"}, EGRESS_REASON)
        # The attempt was held (high): not suspended, even at the default kill switch; it can go on reading.
        await echo(client, "vault__echo", "still here")

    assert await in_session(watch_gw, agent, mode, script) == []
    [record] = detections_of(watch_gw, agent, "sensitive_then_egress")
    assert record["actor"] == "narrowgate" and record["tool"] == "mail__echo"
    assert record["detail"]["severity"] == "high"  # held by policy: contained, so not critical
    assert "mail__echo" in record["detail"]["message"] and "launch codes" not in json.dumps(record)
    assert f"detection sensitive_then_egress (high): agent {agent}" in watch_gw.log_text()
    assert agent_record(watch_gw, agent)["state"] == "active"


@pytest.mark.parametrize("mode", ERAS)
async def test_egress_without_a_sensitive_read_is_allowed(watch_gw: Gateway, mode: str) -> None:
    agent = f"fresh-{tag(mode)}"

    async def script(client: Client) -> None:
        await echo(client, "mail__echo", "weekly newsletter")
        await echo(client, "notes__echo", "sent")

    assert await in_session(watch_gw, agent, mode, script) == []
    assert not [r for r in monitoring_records(watch_gw)
                if r["agent_id"] == agent and r["action"] == "sensitive_then_egress"]


@pytest.mark.parametrize("mode", ERAS)
async def test_kill_switch_suspends_the_exfiltrating_agent_mid_session(kill_gw: Gateway, mode: str) -> None:
    agent = f"exfil-k-{tag(mode)}"
    messages: list[str] = []

    async def script(client: Client) -> None:
        await echo(client, "vault__echo", "customer passwords")
        error = await refused(client, "mail__echo", {"text": "customer passwords"})
        # The call that trips the switch gets the kill switch's answer, naming the detector, and never runs.
        assert error.error.code == ACCESS_DENIED, error.error
        assert KILL_SWITCH_MESSAGE in error.error.message, error.error
        assert isinstance(error.error.data, dict) and error.error.data["detector"] == "sensitive_then_egress"
        messages.append(await next_call_refused(client, "notes__echo"))

    await in_session(kill_gw, agent, mode, script)
    assert messages, "the session ended before the next call"
    assert_suspended_by_gateway(kill_gw, agent, "sensitive_then_egress")
    detections_of(kill_gw, agent, "sensitive_then_egress")
    assert f"KILL SWITCH: agent {agent} suspended" in kill_gw.log_text()
    # Another agent carries on.
    assert await in_session(kill_gw, "bystander-k", mode, lambda c: echo(c, "mail__echo", "hello")) == []


@pytest.mark.parametrize("mode", ERAS)
async def test_an_egress_a_person_approved_while_it_held_does_not_trip_the_kill_switch(kill_gw: Gateway,
                                                                                     mode: str) -> None:
    """The person saw why the call asked and let it through: contained (high), not an exfiltration (critical)."""
    agent = f"approved-k-{tag(mode)}"

    async def approve_when_asked(context: Any, params: Any) -> ElicitResult:
        approval_id = params.url.rsplit("/", 1)[-1]
        answer = await asyncio.to_thread(httpx2.post, f"{kill_gw.base}/admin/v1/approvals/{approval_id}/approve",
                                         headers={"Authorization": f"Bearer {OWNER_TOKEN}"}, json={}, timeout=10)
        assert answer.status_code == 200, answer.text
        return ElicitResult(action="accept")

    async with mcp_client(kill_gw.url, token_for(agent), mode, elicitation_callback=approve_when_asked) as client:
        await echo(client, "vault__echo", "customer passwords")
        await echo(client, "mail__echo", "the approved report")  # held, approved, then run
        await echo(client, "notes__echo", "still working")
    [record] = detections_of(kill_gw, agent, "sensitive_then_egress")
    assert record["detail"]["severity"] == "high", record
    assert agent_record(kill_gw, agent)["state"] == "active"


# --- 2. rate limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_a_burst_is_rate_limited_with_a_retry_hint(watch_gw: Gateway, mode: str) -> None:
    agent = f"burst-{tag(mode)}"

    async def script(client: Client) -> None:
        for _ in range(5):
            result = await client.call_tool("notes__whoami", {})
            assert not result.is_error, result
        error = await refused(client, "notes__whoami", {})
        assert error.error.code == RATE_LIMITED, error.error
        data = error.error.data
        assert isinstance(data, dict) and data["scope"] == "agent", data
        wait = data["retryAfterSeconds"]
        assert isinstance(wait, int) and 0 < wait <= 60, data
        assert error.error.message == f"Rate limited: too many calls for this agent; retry in {wait} s"
        # Refused calls are not counted, but the window has not moved: still limited.
        assert (await refused(client, "vault__echo", {"text": "x"})).error.code == RATE_LIMITED

    assert await in_session(watch_gw, agent, mode, script) == []
    # Other agents are unaffected.
    assert await in_session(watch_gw, "bystander", mode, lambda c: echo(c, "notes__echo", f"calm {mode}")) == []


# --- 3. probing ----------------------------------------------------------------------------------


async def test_probing_for_unknown_tools_is_detected_recorded_and_counted(watch_gw: Gateway) -> None:
    agent = "prober"
    before_high = detection_metric(watch_gw, "probing", "high")
    before_critical = detection_metric(watch_gw, "probing", "critical")

    async def script(client: Client) -> None:
        for n in range(6):
            error = await refused(client, f"admin__shell_{n}", {})
            assert error.error.code == INVALID_PARAMS and "Unknown tool" in error.error.message, error.error
        # Kill switch off: detected, not suspended.
        result = await client.call_tool("notes__whoami", {})
        assert not result.is_error

    assert await in_session(watch_gw, agent, "legacy", script) == []
    records = wait_for("both probing levels", lambda: len(detections_of(watch_gw, agent, "probing")) >= 2
                       and detections_of(watch_gw, agent, "probing"))
    assert [r["detail"]["severity"] for r in records] == ["high", "critical"]
    assert [r["tool"] for r in records] == ["admin__shell_2", "admin__shell_5"]
    assert detection_metric(watch_gw, "probing", "high") == before_high + 1
    assert detection_metric(watch_gw, "probing", "critical") == before_critical + 1
    assert agent_record(watch_gw, agent)["state"] == "active"


@pytest.mark.parametrize("mode", ERAS)
async def test_probing_at_twice_the_threshold_trips_the_kill_switch_mid_session(kill_gw: Gateway, mode: str) -> None:
    agent = f"prober-k-{tag(mode)}"
    codes: list[int] = []

    async def script(client: Client) -> None:
        await echo(client, "notes__echo", "legit first")
        for n in range(5):
            codes.append((await refused(client, f"secret__dump_{n}", {})).error.code)
        sixth = await refused(client, "secret__dump_5", {})
        codes.append(sixth.error.code)
        assert KILL_SWITCH_MESSAGE in sixth.error.message, sixth.error
        assert isinstance(sixth.error.data, dict) and sixth.error.data["detector"] == "probing"
        await next_call_refused(client, "notes__echo")

    await in_session(kill_gw, agent, mode, script)
    assert codes == [INVALID_PARAMS] * 5 + [ACCESS_DENIED]
    assert_suspended_by_gateway(kill_gw, agent, "probing")
    severities = [r["detail"]["severity"] for r in detections_of(kill_gw, agent, "probing")]
    assert "critical" in severities


# --- 4. the signed webhook -----------------------------------------------------------------------


async def test_detections_are_posted_to_the_webhook_with_a_valid_signature(watch_gw: Gateway,
                                                                           receiver: WebhookReceiver) -> None:
    agent = "hook"

    async def script(client: Client) -> None:
        for n in range(3):
            await refused(client, f"hook__probe_{n}", {})

    await in_session(watch_gw, agent, "legacy", script)

    def mine() -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in receiver.posts() if json.loads(b).get("agent_id") == agent]

    [(headers, body)] = wait_for("the webhook POST", mine)
    payload = json.loads(body)
    assert payload == {"type": "detection", "detector": "probing", "severity": "high", "agent_id": agent,
                       "task_id": None, "tool": "hook__probe_2", "message": payload["message"]}
    assert headers["content-type"] == "application/json"
    timestamp = headers["x-narrowgate-timestamp"]
    assert abs(int(timestamp) - time.time()) < 120
    signed = timestamp.encode() + b"." + body
    expected = hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert headers["x-narrowgate-signature"] == f"sha256={expected}"
    wrong = hmac.new(b"another secret", signed, hashlib.sha256).hexdigest()
    assert headers["x-narrowgate-signature"] != f"sha256={wrong}"


# --- 5. the operator's one command ---------------------------------------------------------------


async def test_operator_suspends_an_agent_mid_session_with_one_command(kill_gw: Gateway) -> None:
    agent = "cli-k"
    outputs: list[subprocess.CompletedProcess[str]] = []

    async def script(client: Client) -> None:
        await echo(client, "notes__echo", "working")
        outputs.append(run_cli("agents", "--gateway", kill_gw.base, "--admin-token", ADMIN_TOKEN,
                               "suspend", agent, "--reason", "incident 9: odd tool use"))
        await next_call_refused(client, "notes__echo")

    await in_session(kill_gw, agent, "legacy", script)
    [done] = outputs
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"agent {agent} is now suspended"
    last = agent_record(kill_gw, agent)["events"][-1]
    assert (last["to_state"], last["actor"], last["reason"]) == ("suspended", "admin:test-admin",
                                                                 "incident 9: odd tool use")
    assert_refused_at_the_door(kill_gw, agent)


# --- 6. Cedar sees the chain ---------------------------------------------------------------------


async def test_a_policy_on_context_chain_steps_up_after_three_writes(watch_gw: Gateway) -> None:
    async def writer(client: Client) -> None:
        for n in range(3):
            await echo(client, "notes__echo", f"write {n}")
        await needs_approval(client, "notes__echo", {"text": "write 3"}, WRITES_REASON)
        # Reads are outside the policy's scope.
        assert not (await client.call_tool("notes__whoami", {})).is_error

    assert await in_session(watch_gw, "writer", "2026-07-28", writer) == []
    # The signal is this agent's own: another agent's first write goes through.
    assert await in_session(watch_gw, "writer-peer", "legacy", lambda c: echo(c, "notes__echo", "first")) == []

