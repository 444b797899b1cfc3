"""The gateway as agents see it: a real `mcp` client, both protocol eras, HTTP and stdio upstreams."""

from __future__ import annotations

import json

import jwt
import pytest
from mcp.shared.exceptions import MCPError

from gateway.verifier import argument_digest
from tests.conftest import TOKEN
from tests.support.clients import ERAS, mcp_client
from tests.support.processes import Gateway

pytestmark = pytest.mark.parametrize("mode", ERAS)


async def test_lists_only_catalogued_tools_under_their_namespace(gateway: Gateway, mode: str) -> None:
    async with mcp_client(gateway.url, TOKEN, mode) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
    assert sorted(names) == sorted(
        [f"behav__{n}" for n in ("echo", "slow", "progress", "log", "crash", "whoami")]
        + [f"local__{n}" for n in ("echo", "slow", "progress", "log", "crash")]
    )
    # `whoami` exists on the stdio upstream but is not in its manifest: hidden.
    assert "local__whoami" not in names


@pytest.mark.parametrize("namespace", ["behav", "local"])
async def test_calls_reach_the_right_upstream(gateway: Gateway, mode: str, namespace: str) -> None:
    async with mcp_client(gateway.url, TOKEN, mode) as client:
        result = await client.call_tool(f"{namespace}__echo", {"text": f"hello {namespace} {mode}"})
    assert not result.is_error
    assert result.content[0].text == f"hello {namespace} {mode}"


@pytest.mark.parametrize("namespace", ["behav", "local"])
async def test_progress_notifications_stream_back_to_the_caller(gateway: Gateway, mode: str, namespace: str) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with mcp_client(gateway.url, TOKEN, mode) as client:
        result = await client.call_tool(f"{namespace}__progress", {"steps": 4}, progress_callback=on_progress)
    assert not result.is_error
    assert seen == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("namespace", ["behav", "local"])
async def test_log_notifications_stream_back_to_the_caller(gateway: Gateway, mode: str, namespace: str) -> None:
    logs: list[object] = []

    async def on_log(params: object) -> None:
        logs.append(params)

    async with mcp_client(gateway.url, TOKEN, mode, logging_callback=on_log, log_level="debug") as client:
        result = await client.call_tool(f"{namespace}__log", {"message": "disk nearly full", "level": "warning"})
    assert not result.is_error
    relayed = any(getattr(p, "data", None) == "disk nearly full" for p in logs)
    # Over HTTP the log line arrives on the call's own response stream. On a stdio pipe nothing ties a
    # log line to a call, so it is never relayed (tests/test_upstream_hardening.py has why).
    assert relayed is (namespace == "behav"), logs


async def test_agent_token_never_reaches_the_upstream(gateway: Gateway, mode: str) -> None:
    async with mcp_client(gateway.url, TOKEN, mode) as client:
        result = await client.call_tool("behav__whoami", {})
    received = result.structured_content
    assert received is not None and received["transport"] == "http"
    assert TOKEN not in json.dumps(received)
    # What the upstream got instead: a gateway-minted RFC 9068 token for this one tool and upstream.
    scheme, _, token = received["headers"]["authorization"].partition(" ")
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == gateway.base
    assert claims["aud"] == gateway.manifests[0]["transport"]["url"]
    assert claims["sub"] == "agent-a" and claims["scope"] == "whoami"
    assert claims["exp"] - claims["iat"] <= 60
    assert claims["args_sha256"] == argument_digest({})


async def test_unknown_tool_is_a_clear_error(gateway: Gateway, mode: str) -> None:
    async with mcp_client(gateway.url, TOKEN, mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("behav__no_such_tool", {})
    assert caught.value.error.code == -32602
    assert "Unknown tool: behav__no_such_tool" in caught.value.error.message


async def test_uncatalogued_upstream_tool_is_quarantined_not_called(gateway: Gateway, mode: str) -> None:
    # The stdio upstream offers whoami, which its manifest does not list: it is quarantined, unlisted,
    # and a call to it gets the shipped policy's denial (a real Cedar decision, with its id).
    async with mcp_client(gateway.url, TOKEN, mode) as client:
        assert "local__whoami" not in {t.name for t in (await client.list_tools()).tools}
        with pytest.raises(MCPError) as caught:
            await client.call_tool("local__whoami", {})
    assert caught.value.error.code == -32030
    assert caught.value.error.message == "Access denied: this tool is not approved for use"
    assert caught.value.error.data["decisionId"].startswith("dec_")


async def test_a_uri_two_upstreams_list_is_served_by_neither(gateway: Gateway, mode: str) -> None:
    async with mcp_client(gateway.url, TOKEN, mode) as client:
        uris = [str(r.uri) for r in (await client.list_resources()).resources]
        with pytest.raises(MCPError) as caught:
            await client.read_resource("behaviour://status")
    # Both upstreams offer the same URI: neither may take it over, so it is not listed and a read is
    # refused (and recorded) rather than routed by catalog or sync order.
    assert uris == []
    assert caught.value.error.code == -32030
    assert caught.value.error.message == "Access denied: not served: claimed by more than one upstream"
    assert caught.value.error.data["decisionId"].startswith("dec_")


async def test_prompts_are_namespaced_and_routed(gateway: Gateway, mode: str) -> None:
    async with mcp_client(gateway.url, TOKEN, mode) as client:
        names = sorted(p.name for p in (await client.list_prompts()).prompts)
        prompt = await client.get_prompt("local__greet", {"name": "Ada"})
    assert names == ["behav__greet", "local__greet"]
    assert "Ada" in prompt.messages[0].content.text


async def test_unknown_prompt_and_resource_are_clear_errors(gateway: Gateway, mode: str) -> None:
    async with mcp_client(gateway.url, TOKEN, mode) as client:
        with pytest.raises(MCPError) as prompt_error:
            await client.get_prompt("nobody__greet", {})
        with pytest.raises(MCPError) as resource_error:
            await client.read_resource("behaviour://nowhere")
    assert "Unknown prompt" in prompt_error.value.error.message
    assert "Resource not found" in resource_error.value.error.message
