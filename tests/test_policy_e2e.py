"""Cedar decides every request, seen from the outside: real gateway processes, real MCP clients, real HTTP.

Three long-lived gateways share the behaviour upstream (tests/conftest.py) under different server ids
and risk tiers, so one upstream tool can be `read` in one server and `privileged` in another:

* `main`:   servers alpha and beta (beta's copy of the upstream serves its resource as behaviour://beta:
            a URI two servers list is served by neither); agent-a entitled to alpha, agent-b to beta; custom
            input policies;
            working hours set so that now is inside; a shadow candidate that forbids alpha__progress.
* `watched`: the file watcher on (0.2 s) over a policy directory the tests edit.
* `ops`:    watcher off (SIGHUP and the admin endpoint reload it); generic agent reasons; working hours
            set so that now is outside; no lifecycle forbid, so only the registry refuses a suspended agent.

Nothing is mocked: every answer asserted below is what a gateway process said on the wire or logged.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.shared.exceptions import MCPError
from mcp_types import ErrorData, PromptReference

from tests.support.clients import ERAS, mcp_client
from tests.support.processes import (
    ADMIN_TOKEN,
    BEHAVIOUR_SERVER,
    NARROWGATE,
    Gateway,
    behaviour_manifest,
    cedar_copy,
    start_listening,
    static_agent,
    stop,
)

ACCESS_DENIED = -32030
APPROVAL_REQUIRED = -32031
INVALID_PARAMS = -32602
DECISION_ID = re.compile(r"dec_[0-9a-f]{16}")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WAIT_S = 15.0
STEP_UP_MESSAGE = "Approval required: this tool needs an approval before it runs"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

ALPHA_RISKS = {"echo": "read", "progress": "read", "log": "write", "whoami": "privileged"}
BETA_RISKS = {"echo": "privileged", "progress": "read"}

# Input policies for the main gateway. `has` guards: until an upstream has reported a tool's input
# schema, `context.input` is an empty record, and an unguarded attribute fails validation at start.
# Both shapes are used: `forbid when {has && bad}` and the fail-closed `forbid unless {has && good}`.
MAIN_POLICIES = """\
@id("no-password-echo")
@reason("echo must not carry passwords")
forbid (principal, action == Action::"alpha__echo", resource)
when { context.input has text && context.input.text like "*password*" };

@id("no-secret-dirs")
@reason("the secret directories are off limits")
forbid (principal, action == Action::"alpha__echo", resource)
when { context.input has text &&
       (context.input.text like "/data/secret/*" || context.input.text like "/data/caf\u00e9/*") };

@id("at-most-five-steps")
@reason("at most five steps")
forbid (principal, action == Action::"alpha__progress", resource)
unless { context.input has steps && context.input.steps <= 5 };

@id("overflowing-forbid")
@reason("the overflow reason must never reach an agent")
forbid (principal, action == Action::"beta__progress", resource)
when { context.input has steps && context.input.steps * 1000000000000 > 5000000000000000 };
"""
SHADOW_EXTRA = """\
@id("candidate-no-progress")
@reason("candidate: no progress for anyone")
forbid (principal, action == Action::"alpha__progress", resource);
"""
OPS_POLICIES = """\
@id("no-forbidden-words")
@reason("internal reason text: rule 17b")
forbid (principal, action == Action::"alpha__echo", resource)
when { context.input has text && context.input.text like "*forbidden*" };

@id("permit-everything-for-agent-s")
permit (principal == Agent::"agent-s", action, resource);
"""
SWITCH_OFF_ECHO = """\
@id("echo-switched-off")
@reason("echo is switched off")
forbid (principal, action == Action::"alpha__echo", resource);
"""
BROKEN = """\
@id("fine")
permit (principal, action, resource) when { true };

@id("broken")
permit (principal, action, resource) when { 1 + };
"""
BROKEN_LINE = 4  # where the broken policy starts


# --- helpers -------------------------------------------------------------------------------------


def token_for(agent_id: str) -> str:
    return f"token-{agent_id}"


def manifest(server_id: str, port: int, risks: dict[str, str]) -> dict[str, Any]:
    spec = behaviour_manifest(server_id, {"url": f"http://127.0.0.1:{port}/mcp"}, timeout_s=10, tools=tuple(risks))
    for tool in spec["tools"]:
        tool["risk"] = risks[tool["name"]]
    return spec


def noon_zone() -> str:
    """A fixed-offset time zone in which it is about noon now, far from any day boundary."""
    offset = 12 - datetime.now(UTC).hour  # -11 .. 12; Etc/GMT signs are inverted
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def make_gateway(workdir: Path, manifests: list[dict[str, Any]], agents: dict[str, list[str]], policies: Path,
                 policy: dict[str, Any]) -> Gateway:
    agents_file = workdir / "policy-agents.yaml"
    agents_file.write_text(yaml.safe_dump({"agents": [static_agent(a, s) for a, s in agents.items()]}))
    return Gateway(workdir, manifests, tokens={a: token_for(a) for a in agents},
                   extra_config={"policies": str(policies), "agents_file": str(agents_file), "policy": policy,
                                 # Held step-up calls give up at once: these tests check the decision, not the
                                 # approval flow (tests/test_approvals_e2e.py does).
                                 "approvals": {"hold_timeout": "0.2s"}})


async def rpc_error(call: Awaitable[Any]) -> ErrorData:
    with pytest.raises(MCPError) as caught:
        await call
    return caught.value.error


def assert_refused(error: ErrorData, code: int, message: str) -> str:
    """The agent-facing refusal: code, exact message, and a decision id in data; returns the id."""
    assert error.code == code, error
    assert error.message == message, error
    assert isinstance(error.data, dict), error
    assert error.data["decision"] == {ACCESS_DENIED: "deny", APPROVAL_REQUIRED: "step_up"}[code]
    decision_id = error.data["decisionId"]
    assert DECISION_ID.fullmatch(decision_id), decision_id
    return str(decision_id)


async def step_up_refusal(call: Awaitable[Any], message: str = STEP_UP_MESSAGE) -> str:
    """A step-up the agent is told about: a model-readable error result naming the approval; returns the
    decision id."""
    result = await call
    assert result.is_error, result
    text = result.content[0].text
    assert text.startswith(message + ". A person must approve this exact call"), text
    approval = (result.meta or {})["narrowgate/approval"]
    assert approval["state"] == "pending" and approval["id"] in text and approval["url"] in text
    decision_id = approval["decisionId"]
    assert DECISION_ID.fullmatch(decision_id), decision_id
    return str(decision_id)


def wait_until(predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def wait_until_async(predicate: Callable[[], Awaitable[Any]], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def logged_decision(gateway: Gateway, decision_id: str, outcome: str, agent: str, target: str) -> str:
    """The gateway's log line for a decision (waits for it to be written)."""
    pattern = re.compile(rf"decision {decision_id} {outcome} agent={re.escape(agent)} {re.escape(target)} .*")
    match = wait_until(lambda: pattern.search(gateway.log_text()), f"log line for {decision_id}")
    return str(match.group(0))


def new_decisions(gateway: Gateway, since: int, outcome: str, agent: str, target: str) -> list[str]:
    pattern = re.compile(rf"decision ({DECISION_ID.pattern}) {outcome} agent={re.escape(agent)} {re.escape(target)} ")
    return pattern.findall(gateway.log_text()[since:])


def admin_get(gateway: Gateway, path: str) -> dict[str, Any]:
    response = httpx2.get(f"{gateway.base}/admin/v1/{path}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def healthz(gateway: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = httpx2.get(f"{gateway.base}/healthz").json()
    return body


async def echo(gateway: Gateway, agent: str, text: str, mode: str = "legacy", tool: str = "alpha__echo") -> str:
    async with mcp_client(gateway.url, token_for(agent), mode) as client:
        result = await client.call_tool(tool, {"text": text})
    assert not result.is_error, result
    return str(result.content[0].text)


async def echo_outcome(gateway: Gateway, agent: str, text: str) -> str:
    """"allow" or the refusal's message, for polling a decision that is about to change."""
    async with mcp_client(gateway.url, token_for(agent), "legacy") as client:
        try:
            result = await client.call_tool("alpha__echo", {"text": text})
        except MCPError as exc:
            return exc.error.message
    assert result.content[0].text == text
    return "allow"


# --- gateways ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def beta_http() -> Iterator[int]:
    """A second behaviour upstream for beta, serving its resource as behaviour://beta."""
    process, port = start_listening([sys.executable, str(BEHAVIOUR_SERVER), "--port", "0"],
                                    env={"BEHAVIOUR_RESOURCE_URI": "behaviour://beta"})
    yield port
    stop(process)


@pytest.fixture(scope="module")
def main_gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, beta_http: int) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("policy-main")
    live = cedar_copy(workdir / "cedar", **{"60-e2e": MAIN_POLICIES})
    shadow = cedar_copy(workdir / "candidate", **{"60-e2e": MAIN_POLICIES, "70-candidate": SHADOW_EXTRA})
    hours = {"start": "00:00", "end": "23:59", "days": ALL_DAYS, "timezone": noon_zone()}
    gateway = make_gateway(
        workdir,
        [manifest("alpha", behaviour_http, ALPHA_RISKS), manifest("beta", beta_http, BETA_RISKS)],
        {"agent-a": ["alpha"], "agent-b": ["beta"]},
        live,
        {"shadow": str(shadow), "working_hours": hours, "watch_interval_s": 0},
    ).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def watched_gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("policy-watched")
    gateway = make_gateway(workdir, [manifest("alpha", behaviour_http, ALPHA_RISKS)], {"agent-a": ["alpha"]},
                           cedar_copy(workdir / "cedar"), {"watch_interval_s": 0.2}).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def ops_gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("policy-ops")
    policies = cedar_copy(workdir / "cedar", drop=("10-lifecycle.cedar",), **{"60-ops": OPS_POLICIES})
    hours = {"start": "00:00", "end": "00:01", "days": ALL_DAYS, "timezone": noon_zone()}
    gateway = make_gateway(workdir, [manifest("alpha", behaviour_http, ALPHA_RISKS)],
                           {"agent-a": ["alpha"], "agent-s": []}, policies,
                           {"watch_interval_s": 0, "agent_reasons": "generic", "working_hours": hours}).start()
    yield gateway
    gateway.stop()


def policies_dir(gateway: Gateway) -> Path:
    return Path(gateway.extra_config["policies"]) / "policies"


# --- allow, deny, step-up ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_entitled_read_tool_is_allowed_and_logged(main_gw: Gateway, mode: str) -> None:
    since = len(main_gw.log_text())
    assert await echo(main_gw, "agent-a", f"hello {mode}", mode) == f"hello {mode}"
    ids = wait_until(lambda: new_decisions(main_gw, since, "allow", "agent-a", "tool=alpha__echo"), "allow logged")
    assert len(ids) == 1
    assert "policies=permit-entitled-tools" in logged_decision(main_gw, ids[0], "allow", "agent-a", "tool=alpha__echo")


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(("tool", "arguments"), [("beta__progress", {"steps": 1}), ("beta__echo", {"text": "x"})])
async def test_tool_of_a_server_outside_the_entitlement_is_denied(
    main_gw: Gateway, mode: str, tool: str, arguments: dict[str, Any]
) -> None:
    # beta__echo is privileged: outside the entitlement that is a plain deny, never "ask for approval".
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        error = await rpc_error(client.call_tool(tool, arguments))
    decision_id = assert_refused(error, ACCESS_DENIED, "Access denied: denied by policy")
    logged_decision(main_gw, decision_id, "deny", "agent-a", f"tool={tool}")


@pytest.mark.parametrize("mode", ERAS)
async def test_privileged_tool_needs_approval(main_gw: Gateway, mode: str) -> None:
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        decision_id = await step_up_refusal(client.call_tool("alpha__whoami", {}))
    line = logged_decision(main_gw, decision_id, "step_up", "agent-a", "tool=alpha__whoami")
    assert "policies=step-up-privileged-destructive" in line


@pytest.mark.parametrize("mode", ERAS)
async def test_one_upstream_tool_has_the_risk_tier_of_its_server(main_gw: Gateway, mode: str) -> None:
    # The same upstream `echo`: read as alpha__echo, privileged as beta__echo.
    assert await echo(main_gw, "agent-a", "read tier", mode) == "read tier"
    async with mcp_client(main_gw.url, token_for("agent-b"), mode) as client:
        await step_up_refusal(client.call_tool("beta__echo", {"text": "privileged tier"}))
        assert (await client.call_tool("beta__progress", {"steps": 2})).content[0].text == "done 2"


@pytest.mark.parametrize("mode", ERAS)
async def test_unknown_tool_is_distinguishable_from_a_denied_tool(main_gw: Gateway, mode: str) -> None:
    since = len(main_gw.log_text())
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        unknown = await rpc_error(client.call_tool("alpha__no_such_tool", {}))
        # Offered upstream but not catalogued: quarantined, so a real Cedar decision denies it.
        uncatalogued = await rpc_error(client.call_tool("alpha__crash", {}))
        denied = await rpc_error(client.call_tool("beta__progress", {"steps": 1}))
    assert unknown.code == INVALID_PARAMS, unknown
    assert unknown.message == "Unknown tool: alpha__no_such_tool"
    assert not (isinstance(unknown.data, dict) and "decisionId" in unknown.data)
    decision_id = assert_refused(uncatalogued, ACCESS_DENIED, "Access denied: this tool is not approved for use")
    assert_refused(denied, ACCESS_DENIED, "Access denied: denied by policy")
    # An unknown tool is not a policy decision: nothing is logged as one; the quarantined one is.
    log = main_gw.log_text()[since:]
    assert "tool=alpha__no_such_tool" not in log
    assert "policies=forbid-unapproved-tools" in logged_decision(main_gw, decision_id, "deny", "agent-a",
                                                                 "tool=alpha__crash")


# --- filtered lists ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_lists_show_exactly_what_the_agent_may_use(main_gw: Gateway, mode: str) -> None:
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        a_tools = {tool.name for tool in (await client.list_tools()).tools}
        a_prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
        a_resources = {str(resource.uri) for resource in (await client.list_resources()).resources}
    async with mcp_client(main_gw.url, token_for("agent-b"), mode) as client:
        b_tools = {tool.name for tool in (await client.list_tools()).tools}
        b_prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
        b_resources = {str(resource.uri) for resource in (await client.list_resources()).resources}
    # Step-up tools (alpha__whoami, beta__echo) are listed: they are callable with an approval. Input
    # policies (alpha__echo, alpha__progress, beta__progress) never hide a tool.
    assert a_tools == {"alpha__echo", "alpha__progress", "alpha__log", "alpha__whoami"}
    assert b_tools == {"beta__echo", "beta__progress"}
    assert a_prompts == {"alpha__greet"}
    assert b_prompts == {"beta__greet"}
    assert a_resources == {"behaviour://status"}
    assert b_resources == {"behaviour://beta"}


@pytest.mark.parametrize("mode", ERAS)
async def test_prompt_and_resource_outside_the_entitlement_are_denied(main_gw: Gateway, mode: str) -> None:
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        prompt = await client.get_prompt("alpha__greet", {"name": "Ada"})
        resource = await client.read_resource("behaviour://status")
        other_prompt = await rpc_error(client.get_prompt("beta__greet", {"name": "Ada"}))
    assert "Ada" in prompt.messages[0].content.text
    assert resource.contents[0].text == "ok"
    prompt_id = assert_refused(other_prompt, ACCESS_DENIED, "Access denied: denied by policy")
    logged_decision(main_gw, prompt_id, "deny", "agent-a", "prompt=beta__greet")
    async with mcp_client(main_gw.url, token_for("agent-b"), mode) as client:
        other_resource = await rpc_error(client.read_resource("behaviour://status"))
    resource_id = assert_refused(other_resource, ACCESS_DENIED, "Access denied: denied by policy")
    logged_decision(main_gw, resource_id, "deny", "agent-b", "resource=behaviour://status")


@pytest.mark.parametrize("mode", ERAS)
async def test_completion_outside_the_entitlement_is_denied(main_gw: Gateway, mode: str) -> None:
    ref = PromptReference(type="ref/prompt", name="beta__greet")
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        error = await rpc_error(client.complete(ref, {"name": "name", "value": "A"}))
    decision_id = assert_refused(error, ACCESS_DENIED, "Access denied: denied by policy")
    logged_decision(main_gw, decision_id, "deny", "agent-a", "prompt=beta__greet")


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_subscribe_outside_the_entitlement_is_denied(main_gw: Gateway) -> None:
    # resources/subscribe exists only in the 2025-11-25 era.
    async with mcp_client(main_gw.url, token_for("agent-b"), "legacy") as client:
        error = await rpc_error(client.subscribe_resource("behaviour://status"))
    decision_id = assert_refused(error, ACCESS_DENIED, "Access denied: denied by policy")
    logged_decision(main_gw, decision_id, "deny", "agent-b", "resource=behaviour://status")


# --- context.input policies and canonicalization -----------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_string_input_policy_allows_below_and_denies_above(main_gw: Gateway, mode: str) -> None:
    assert await echo(main_gw, "agent-a", "my pass word", mode) == "my pass word"
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        error = await rpc_error(client.call_tool("alpha__echo", {"text": "the password is hunter2"}))
    decision_id = assert_refused(error, ACCESS_DENIED, "Access denied: echo must not carry passwords")
    line = logged_decision(main_gw, decision_id, "deny", "agent-a", "tool=alpha__echo")
    assert "policies=no-password-echo" in line
    assert "hunter2" not in main_gw.log_text()  # decisions are logged without argument values


@pytest.mark.parametrize("mode", ERAS)
async def test_integer_input_policy_allows_below_and_denies_above(main_gw: Gateway, mode: str) -> None:
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        assert (await client.call_tool("alpha__progress", {"steps": 5})).content[0].text == "done 5"
        above = await rpc_error(client.call_tool("alpha__progress", {"steps": 6}))
        # The number is typed by the schema before Cedar sees it: 6.0 is the integer 6.
        typed = await rpc_error(client.call_tool("alpha__progress", {"steps": 6.0}))
    assert_refused(above, ACCESS_DENIED, "Access denied: at most five steps")
    assert_refused(typed, ACCESS_DENIED, "Access denied: at most five steps")


WALKAROUNDS = [
    "/data/secret/x",
    "/data/public/../secret/x",
    "/data//secret/x",
    "/data/./secret/x",
    "/data/public/../../data/secret/x",
    "/data/secret/./x",
    unicodedata.normalize("NFD", "/data/caf\u00e9/menu"),
]


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("text", WALKAROUNDS, ids=["plain", "dotdot", "double-slash", "dot", "deep-dotdot",
                                                   "inner-dot", "nfd"])
async def test_like_patterns_are_not_walked_around(main_gw: Gateway, mode: str, text: str) -> None:
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        error = await rpc_error(client.call_tool("alpha__echo", {"text": text}))
    decision_id = assert_refused(error, ACCESS_DENIED, "Access denied: the secret directories are off limits")
    assert "policies=no-secret-dirs" in logged_decision(main_gw, decision_id, "deny", "agent-a", "tool=alpha__echo")


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(("sent", "received"), [
    ("/data/public/../public/report", "/data/public/report"),
    ("/data//public/./report", "/data/public/report"),
    (unicodedata.normalize("NFD", "/data/public/caf\u00e9"), "/data/public/caf\u00e9"),
])
async def test_upstream_receives_the_canonical_arguments(main_gw: Gateway, mode: str, sent: str,
                                                         received: str) -> None:
    assert sent != received
    assert await echo(main_gw, "agent-a", sent, mode) == received


# --- fail closed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_a_forbid_that_errors_denies(main_gw: Gateway, mode: str) -> None:
    async with mcp_client(main_gw.url, token_for("agent-b"), mode) as client:
        assert (await client.call_tool("beta__progress", {"steps": 3})).content[0].text == "done 3"
        # 10**8 * 10**12 overflows a Cedar Long: the forbid errors, Cedar skips it, the gateway denies.
        error = await rpc_error(client.call_tool("beta__progress", {"steps": 10**8}))
    decision_id = assert_refused(error, ACCESS_DENIED, "Access denied: denied by policy")
    line = logged_decision(main_gw, decision_id, "deny", "agent-b", "tool=beta__progress")
    assert "policies=overflowing-forbid" in line and "errors=1" in line
    assert re.search(rf"decision {decision_id} evaluation error \(denied, fail closed\):.*overflow", main_gw.log_text())


@pytest.mark.parametrize("mode", ERAS)
async def test_arguments_that_do_not_fit_the_schema_are_denied(main_gw: Gateway, mode: str) -> None:
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        beyond_long = await rpc_error(client.call_tool("alpha__progress", {"steps": 2**63}))
        wrong_type = await rpc_error(client.call_tool("alpha__progress", {"steps": "three"}))
    for error in (beyond_long, wrong_type):
        assert_refused(error, ACCESS_DENIED, "Access denied: arguments do not match the tool's schema")


@pytest.mark.parametrize("mode", ERAS)
async def test_keys_that_collide_after_nfc_are_denied(main_gw: Gateway, mode: str) -> None:
    # Two spellings of one key: the policy and the upstream could read different values. Refused.
    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        error = await rpc_error(client.call_tool("alpha__echo", {"text": "x", nfc: "1", nfd: "2"}))
    assert_refused(error, ACCESS_DENIED, "Access denied: no single meaning: argument 'café' appears twice once Unicode "
                                         "is normalized")


# --- working hours ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_write_inside_working_hours_is_allowed(main_gw: Gateway, mode: str) -> None:
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        result = await client.call_tool("alpha__log", {"message": "inside hours"})
    assert result.content[0].text == "logged"


@pytest.mark.parametrize("mode", ERAS)
async def test_write_outside_working_hours_needs_approval(ops_gw: Gateway, mode: str) -> None:
    async with mcp_client(ops_gw.url, token_for("agent-a"), mode) as client:
        decision_id = await step_up_refusal(client.call_tool("alpha__log", {"message": "after hours"}),
                                            "Approval required: approval required")
        assert (await client.call_tool("alpha__echo", {"text": "reads are fine"})).content[0].text == "reads are fine"
    line = logged_decision(ops_gw, decision_id, "step_up", "agent-a", "tool=alpha__log")
    assert "policies=step-up-writes-after-hours" in line
    # Callable with an approval, so it stays listed.
    async with mcp_client(ops_gw.url, token_for("agent-a"), mode) as client:
        assert "alpha__log" in {tool.name for tool in (await client.list_tools()).tools}


# --- what the agent is told --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_generic_agent_reasons_hide_the_reason_text(ops_gw: Gateway, mode: str) -> None:
    async with mcp_client(ops_gw.url, token_for("agent-a"), mode) as client:
        error = await rpc_error(client.call_tool("alpha__echo", {"text": "a forbidden word"}))
    decision_id = assert_refused(error, ACCESS_DENIED, "Access denied: denied by policy")
    # The reason text (`@reason("internal reason text: rule 17b")`) is nowhere in what the agent sees; the
    # decision id is left out of the search, since a random hex id can contain "17b".
    shown = str({**error.model_dump(), "data": {k: v for k, v in error.data.items() if k != "decisionId"}})
    assert "internal reason" not in shown and "17b" not in shown
    # The operator still finds which policy it was.
    assert "policies=no-forbidden-words" in logged_decision(ops_gw, decision_id, "deny", "agent-a", "tool=alpha__echo")


# --- reloads ---------------------------------------------------------------------------------------------


async def test_a_good_edit_is_picked_up_by_the_watcher(watched_gw: Gateway) -> None:
    version = healthz(watched_gw)["policy"]["version"]
    added = policies_dir(watched_gw) / "60-switch.cedar"
    notified: list[str] = []

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if isinstance(method, str):
            notified.append(method)

    # One open session throughout: decisions and lists change on its next request.
    async with mcp_client(watched_gw.url, token_for("agent-a"), "legacy", message_handler=on_message) as client:

        async def outcome() -> str:
            try:
                await client.call_tool("alpha__echo", {"text": "probe"})
            except MCPError as exc:
                return exc.error.message
            return "allow"

        async def listed() -> set[str]:
            return {tool.name for tool in (await client.list_tools()).tools}

        assert await outcome() == "allow"
        assert "alpha__echo" in await listed()
        assert "notifications/tools/list_changed" not in notified
        added.write_text(SWITCH_OFF_ECHO)
        try:
            denied = await wait_until_async(lambda: _not_allow(outcome()), "the watcher applies the forbid")
            assert denied == "Access denied: echo is switched off"
            assert await listed() == {"alpha__progress", "alpha__log", "alpha__whoami"}
            assert healthz(watched_gw)["policy"]["version"] != version
            assert "policy reload (files changed)" in watched_gw.log_text()
            # The session is told to list again.
            await wait_until_async(lambda: _true("notifications/tools/list_changed" in notified),
                                   "tools/list_changed reaches the open session")
        finally:
            added.unlink()
        await wait_until_async(lambda: _is_allow(outcome()), "the forbid is gone")
        assert "alpha__echo" in await listed()
    assert healthz(watched_gw)["policy"]["version"] == version


async def _true(value: bool) -> bool:
    return value


async def _not_allow(outcome: Awaitable[str]) -> str | None:
    value = await outcome
    return None if value == "allow" else value


async def _is_allow(outcome: Awaitable[str]) -> bool:
    return await outcome == "allow"


async def test_a_broken_edit_keeps_the_last_good_set_and_is_loud(watched_gw: Gateway) -> None:
    version = healthz(watched_gw)["policy"]["version"]
    failures = healthz(watched_gw)["policy"]["reload_failures"]
    broken = policies_dir(watched_gw) / "61-broken.cedar"
    broken.write_text(BROKEN)
    try:
        status = wait_until(lambda: (s := admin_get(watched_gw, "policies"))["last_reload"]["ok"] is False and s,
                            "the admin API shows the failed reload")
        assert status["version"] == version
        assert any(p.startswith(f"{broken}:{BROKEN_LINE}:") for p in status["last_reload"]["problems"]), status
        health = healthz(watched_gw)
        assert health["policy"]["reload_failures"] > failures
        assert health["policy"]["version"] == version
        assert "POLICY RELOAD FAILED (files changed)" in watched_gw.log_text()
        # The last good set keeps serving: the broken file's permit-everything did not take effect.
        assert await echo_outcome(watched_gw, "agent-a", "still served") == "allow"
        async with mcp_client(watched_gw.url, token_for("agent-a"), "legacy") as client:
            await step_up_refusal(client.call_tool("alpha__whoami", {}))
    finally:
        broken.unlink()
    wait_until(lambda: admin_get(watched_gw, "policies")["last_reload"]["ok"], "the fixed set reloads")
    assert healthz(watched_gw)["policy"]["version"] == version


def admin_reload(gateway: Gateway) -> httpx2.Response:
    return httpx2.post(f"{gateway.base}/admin/v1/policies/reload", headers=ADMIN)


async def test_admin_reload_rejects_a_broken_set_and_applies_a_fixed_one(ops_gw: Gateway) -> None:
    version = healthz(ops_gw)["policy"]["version"]
    failures = healthz(ops_gw)["policy"]["reload_failures"]
    assert httpx2.post(f"{ops_gw.base}/admin/v1/policies/reload").status_code == 401
    target = policies_dir(ops_gw) / "62-admin.cedar"
    target.write_text(BROKEN)
    try:
        rejected = admin_reload(ops_gw)
        assert rejected.status_code == 422, rejected.text
        body = rejected.json()
        assert body["ok"] is False and body["version"] == version
        assert any(p.startswith(f"{target}:{BROKEN_LINE}:") for p in body["problems"]), body
        policy = healthz(ops_gw)["policy"]
        assert (policy["version"], policy["reload_failures"]) == (version, failures + 1)
        assert admin_get(ops_gw, "policies")["last_reload"]["ok"] is False
        assert await echo_outcome(ops_gw, "agent-a", "last good set") == "allow"
        target.write_text(SWITCH_OFF_ECHO)  # fixed: a valid change
        applied = admin_reload(ops_gw)
        assert applied.status_code == 200, applied.text
        assert applied.json()["ok"] is True and applied.json()["changed"] is True
        assert applied.json()["version"] != version
        assert await echo_outcome(ops_gw, "agent-a", "switched off") == "Access denied: denied by policy"
    finally:
        target.unlink()
    restored = admin_reload(ops_gw)
    assert restored.status_code == 200 and restored.json()["version"] == version
    assert await echo_outcome(ops_gw, "agent-a", "back") == "allow"


async def test_sighup_reloads(ops_gw: Gateway) -> None:
    assert ops_gw.process is not None
    version = healthz(ops_gw)["policy"]["version"]
    target = policies_dir(ops_gw) / "63-sighup.cedar"
    target.write_text(SWITCH_OFF_ECHO)
    try:
        # The watcher is off: nothing changes until the signal.
        assert await echo_outcome(ops_gw, "agent-a", "no watcher") == "allow"
        assert healthz(ops_gw)["policy"]["version"] == version
        ops_gw.process.send_signal(signal.SIGHUP)
        await wait_until_async(lambda: _not_allow(echo_outcome(ops_gw, "agent-a", "after SIGHUP")),
                               "SIGHUP applies the forbid")
        assert healthz(ops_gw)["policy"]["version"] != version
        assert "policy reload (SIGHUP)" in ops_gw.log_text()
    finally:
        target.unlink()
    ops_gw.process.send_signal(signal.SIGHUP)
    await wait_until_async(lambda: _is_allow(echo_outcome(ops_gw, "agent-a", "restored")), "SIGHUP restores")
    assert ops_gw.process.poll() is None  # SIGHUP reloads; it does not stop the gateway


# --- shadow mode -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_shadow_candidate_records_disagreements_without_enforcing(main_gw: Gateway, mode: str) -> None:
    since = len(main_gw.log_text())
    async with mcp_client(main_gw.url, token_for("agent-a"), mode) as client:
        result = await client.call_tool("alpha__progress", {"steps": 2})
    assert result.content[0].text == "done 2"  # the candidate would deny; the live set decides
    (decision_id,) = wait_until(lambda: new_decisions(main_gw, since, "allow", "agent-a", "tool=alpha__progress"),
                                "the allow is logged")
    shadow = admin_get(main_gw, "policies/shadow")
    records = [r for r in shadow["disagreements"] if r["decision_id"] == decision_id]
    assert len(records) == 1, shadow
    (record,) = records
    assert record["tool"] == "alpha__progress" and record["agent"] == "agent-a"
    assert record["live"]["outcome"] == "allow"
    assert record["candidate"]["outcome"] == "deny"
    assert record["candidate"]["policy_ids"] == ["candidate-no-progress"]
    assert shadow["status"]["enabled"] is True and shadow["status"]["ok"] is True
    assert f"shadow disagreement {decision_id}: live allow, candidate deny" in main_gw.log_text()
    # Where live and candidate agree, nothing is recorded.
    since = len(main_gw.log_text())
    assert await echo(main_gw, "agent-a", "agreed", mode) == "agreed"
    (agreed_id,) = wait_until(lambda: new_decisions(main_gw, since, "allow", "agent-a", "tool=alpha__echo"),
                              "the agreed allow is logged")
    assert all(r["decision_id"] != agreed_id for r in admin_get(main_gw, "policies/shadow")["disagreements"])


# --- start-up and lifecycle ------------------------------------------------------------------------------


def test_gateway_refuses_to_start_with_a_broken_policy_set(tmp_path: Path, behaviour_http: int) -> None:
    policies = cedar_copy(tmp_path / "cedar", **{"60-broken": BROKEN})
    gateway = make_gateway(tmp_path, [manifest("alpha", behaviour_http, ALPHA_RISKS)], {"agent-a": ["alpha"]},
                           policies, {})
    config = gateway.write_config()
    done = subprocess.run([str(NARROWGATE), "serve", "--config", str(config)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done
    assert "refusing to start, the policy set is invalid" in done.stderr
    assert f"{policies / 'policies' / '60-broken.cedar'}:{BROKEN_LINE}:" in done.stderr
    assert not gateway.healthy()


@pytest.mark.parametrize("mode", ERAS)
async def test_suspension_wins_over_any_policy(ops_gw: Gateway, mode: str) -> None:
    # ops has no lifecycle forbid, and agent-s (entitled to nothing) is allowed only by its own
    # permit-everything policy: only the registry can refuse it.
    agents = f"{ops_gw.base}/admin/v1/agents/agent-s"
    assert await echo(ops_gw, "agent-s", "active", mode) == "active"
    suspended = httpx2.post(f"{agents}/suspend", json={"reason": "policy e2e"}, headers=ADMIN)
    assert suspended.status_code == 200, suspended.text
    try:
        response = httpx2.post(ops_gw.url, headers={
            "Authorization": f"Bearer {token_for('agent-s')}", "Accept": "application/json, text/event-stream",
        }, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "policy-e2e", "version": "0"}}})
        assert response.status_code == 403, response.text
        assert "suspended" in response.json().get("error_description", "")
        # Through the SDK: the refusal surfaces as an MCPError (maybe grouped by the client's task group).
        refused: list[Exception] = []
        try:
            async with mcp_client(ops_gw.url, token_for("agent-s"), mode) as client:
                await client.call_tool("alpha__echo", {"text": "suspended"})
        except* MCPError as group:
            refused.extend(group.exceptions)
        assert refused
    finally:
        resumed = httpx2.post(f"{agents}/resume", json={"reason": "policy e2e done"}, headers=ADMIN)
        assert resumed.status_code == 200, resumed.text
