"""Task grants and per-call upstream tokens end to end: real processes, real HTTP, nothing mocked.

A real gateway subprocess trusts the real test IdP (OIDC discovery + JWKS over HTTP). Agents are
registered through the admin API with `require_task: true` unless said otherwise. Two real
upstreams sit behind the gateway:

- `vrf`: `examples/verifying_upstream/server.py`, which verifies every call's bearer token with the
  shipped `gateway.verifier` (JWKS, audience = its own /mcp URL, issuer, revocations) and records
  what it received, accepted or refused, to a JSON-lines file;
- `behav`: the behaviour upstream, whose `whoami` tool echoes every request header it received.

Task tokens come from POST /oauth/token (RFC 8693 token exchange and RFC 7523 client credentials);
MCP traffic goes through the real `mcp` SDK client. Minted per-call tokens are taken from what the
upstreams received and checked again in the test with `gateway.verifier.UpstreamTokenVerifier`
pointed at the gateway's JWKS and revocation list.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from gateway.verifier import TokenRefused, UpstreamTokenVerifier, argument_digest, bearer_token
from tests.support.clients import ERAS, mcp_client
from tests.support.identity_provider import TestIdentityProvider, generate_key
from tests.support.processes import (
    ADMIN_TOKEN,
    REPO,
    Gateway,
    behaviour_manifest,
    free_port,
    start_listening,
    stop,
)

VERIFYING_SERVER = REPO / "examples" / "verifying_upstream" / "server.py"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
COMPLETE = "narrowgate__complete_task"
FAIL = "narrowgate__fail_task"
BUILTINS = {COMPLETE, FAIL}
ACCEPT = "application/json, text/event-stream"
AGENT = "task-agent"
AGENT_SUB = "repo:acme/task-agent:ref:refs/heads/main"
LOOSE_AGENT = "loose-agent"  # require_task false: a bare workload token calls within the entitlement
LOOSE_SUB = "repo:acme/loose-agent:ref:refs/heads/main"
STATIC_AGENT, STATIC_TOKEN = "agent-a", "token-agent-a"  # the Gateway helper's development token
WAIT_S = 20.0


# --- the deployment ------------------------------------------------------------------------------


@dataclass
class Deployment:
    gateway: Gateway
    idp: TestIdentityProvider
    verifying_url: str  # the verifying upstream's /mcp: its resource URI, hence the audience of its tokens
    behaviour_url: str
    record: Path

    @property
    def base(self) -> str:
        return self.gateway.base

    @property
    def token_url(self) -> str:
        return f"{self.base}/oauth/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.base}/.well-known/jwks.json"

    @property
    def revocations_url(self) -> str:
        return f"{self.base}/oauth/revocations"

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]

    def verifier(self, audience: str, revocations: bool = False) -> UpstreamTokenVerifier:
        """A tool owner's verifier, as the docs show it, for the upstream at `audience`."""
        return UpstreamTokenVerifier(self.jwks_url, audience, self.base,
                                     revocations_url=self.revocations_url if revocations else None)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("tasks-e2e")
    gateway_port, verifying_port = free_port(), free_port()
    base = f"http://127.0.0.1:{gateway_port}"
    idp = TestIdentityProvider(f"{base}/mcp", keys=[generate_key("RS256")])
    verifying_url = f"http://127.0.0.1:{verifying_port}/mcp"
    behaviour_url = f"http://127.0.0.1:{behaviour_http}/mcp"
    record = workdir / "verifying-upstream.jsonl"
    upstream = start_verifying_upstream(base, verifying_port, record)
    manifests = [
        {"id": "vrf", "owner": "tools@example.com", "description": "verifies every per-call token",
         "transport": {"url": verifying_url}, "timeout_s": 10,
         "credentials": {"mode": "gateway-token"},  # the default, spelled out: aud = its URL
         "tools": [{"name": name, "risk": "read", "data_classes": ["internal"]}
                   for name in ("echo", "add", "received")]},
        behaviour_manifest("behav", {"url": behaviour_url}, timeout_s=10),
    ]
    gateway = Gateway(workdir, manifests, tokens={STATIC_AGENT: STATIC_TOKEN}, port=gateway_port)
    gateway.extra_config = {"identity": {"audience": f"{base}/mcp", "clock_skew_s": 5,
                                         "oidc_issuers": [{"issuer": idp.issuer}]}}
    try:
        gateway.start()
        deployment = Deployment(gateway, idp, verifying_url, behaviour_url, record)
        register(deployment, AGENT, AGENT_SUB, require_task=True)
        register(deployment, LOOSE_AGENT, LOOSE_SUB, require_task=False)
        yield deployment
    finally:
        gateway.stop()
        stop(upstream)
        idp.close()


def start_verifying_upstream(base: str, port: int, record: Path) -> subprocess.Popen[bytes]:
    """The verifying upstream on `port`, recording to `record`, for the gateway at `base`. Started first, on
    a port fixed in advance: it fetches the gateway's JWKS only when a call comes."""
    upstream, _ = start_listening([
        sys.executable, str(VERIFYING_SERVER), "--port", str(port),
        "--jwks-url", f"{base}/.well-known/jwks.json", "--audience", f"http://127.0.0.1:{port}/mcp",
        "--issuer", base, "--revocations-url", f"{base}/oauth/revocations", "--record", str(record),
    ])
    return upstream


def register(deployment: Deployment, agent_id: str, subject: str, *, require_task: bool) -> None:
    """An OIDC agent via the admin API: the whole `vrf` server plus two behaviour tools."""
    body = {"id": agent_id, "owner": "team-tasks@example.com", "purpose": f"tasks e2e: {agent_id}",
            "state": "active",
            "identities": [{"kind": "oidc", "issuer": deployment.idp.issuer, "subject": subject, "claims": {}}],
            "entitlement": {"servers": ["vrf"], "tools": ["behav__whoami", "behav__echo"],
                            "require_task": require_task}}
    response = httpx2.post(f"{deployment.base}/admin/v1/agents", json=body,
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 201, response.text


# --- helpers -------------------------------------------------------------------------------------


def marker(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def post_token(deployment: Deployment, form: dict[str, str]) -> httpx2.Response:
    return httpx2.post(deployment.token_url, data=form)


def exchange(deployment: Deployment, subject_token: str, scope: str, **extra: str) -> httpx2.Response:
    """RFC 8693: the workload token in, a task token out."""
    return post_token(deployment, {
        "grant_type": EXCHANGE, "subject_token": subject_token, "subject_token_type": JWT_TYPE,
        "scope": scope, "purpose": "tasks e2e", **extra,
    })


@dataclass
class TaskGrant:
    token: str
    task_id: str
    expires_in: int
    scope: str


def granted(response: httpx2.Response) -> TaskGrant:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert response.headers.get("cache-control") == "no-store"
    return TaskGrant(body["access_token"], body["task_id"], int(body["expires_in"]), body["scope"])


def start_task(deployment: Deployment, scope: str, deadline_s: float = 120, subject: str = AGENT_SUB) -> TaskGrant:
    grant = granted(exchange(deployment, deployment.idp.mint(sub=subject), scope, deadline=str(deadline_s)))
    assert grant.scope == scope
    return grant


def assert_oauth_error(response: httpx2.Response, status: int, error: str, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    description = str(body.get("error_description", ""))
    for fragment in fragments:
        assert fragment in description, description
    return description


def post_initialize(deployment: Deployment, token: str) -> httpx2.Response:
    """A raw 2025-11-25 initialize at /mcp with `token` as bearer."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "tasks-e2e", "version": "0"}}}
    return httpx2.post(deployment.gateway.url, json=body,
                       headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT,
                                "Content-Type": "application/json"})


def assert_refused_at_the_door(deployment: Deployment, token: str, *fragments: str) -> httpx2.Response:
    """A task token the gateway no longer honours: 401 (token) or 403 (task), never a session."""
    response = post_initialize(deployment, token)
    assert response.status_code in (401, 403), response.text
    assert not response.headers.get("mcp-session-id")
    assert token not in response.text
    for fragment in fragments:
        assert fragment in response.text, response.text
    return response


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def call_refused(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    """The call does not run: a JSON-RPC/HTTP error (MCPError) or a tool error; returns the message."""
    try:
        async with asyncio.timeout(WAIT_S):
            result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        return str(exc)
    assert result.is_error, result
    return " ".join(getattr(block, "text", "") for block in result.content)


async def assert_session_refused(deployment: Deployment, token: str, mode: str, tool: str,
                                 arguments: dict[str, Any]) -> None:
    """A real client with `token` gets no session to call `tool` in (the SDK raises MCPError on connect)."""
    called = False
    try:
        async with asyncio.timeout(WAIT_S), mcp_client(deployment.gateway.url, token, mode) as client:
            await client.call_tool(tool, arguments)
            called = True
    except* MCPError:
        pass
    assert not called, f"{tool} was called with a refused token"


def accepted_record(deployment: Deployment, text: str) -> dict[str, Any]:
    """The verifying upstream's record of the one echo call carrying `text`, which it accepted."""
    entries = [e for e in deployment.records() if e["tool"] == "echo" and (e["arguments"] or {}).get("text") == text]
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["outcome"] == "accepted", entry
    return entry


def never_received(deployment: Deployment, text: str) -> bool:
    return not any(json.dumps(text) in json.dumps(e["arguments"]) for e in deployment.records())


async def whoami_headers(client: Client) -> dict[str, str]:
    result = await client.call_tool("behav__whoami", {})
    assert not result.is_error, result
    payload = result.structured_content or json.loads(result.content[0].text)
    payload = payload.get("result", payload)
    assert payload["transport"] == "http", payload
    headers: dict[str, str] = payload["headers"]
    return headers


def unverified_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def refusal(verifier: UpstreamTokenVerifier, token: str, tool: str, arguments: dict[str, Any] | None) -> str:
    with pytest.raises(TokenRefused) as refused:
        verifier.verify(token, tool, arguments)
    return refused.value.reason


async def minted_for_echo(deployment: Deployment, text: str) -> tuple[str, TaskGrant]:
    """A real per-call token the gateway minted for `vrf` echo(text), as the upstream received it."""
    grant = start_task(deployment, "vrf__echo")
    async with mcp_client(deployment.gateway.url, grant.token, ERAS[1]) as client:
        result = await client.call_tool("vrf__echo", {"text": text})
    assert not result.is_error, result
    return bearer_token(accepted_record(deployment, text)["authorization"]), grant


async def minted_for_whoami(deployment: Deployment, grant: TaskGrant | None = None) -> tuple[str, TaskGrant]:
    """A per-call token minted for `behav` whoami() that nobody has verified yet."""
    grant = grant or start_task(deployment, "behav__whoami")
    async with mcp_client(deployment.gateway.url, grant.token, ERAS[1]) as client:
        headers = await whoami_headers(client)
    return bearer_token(headers.get("authorization")), grant


# --- the whole flow --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_exchanged_task_token_lists_calls_a_verifying_upstream_then_completes(
    deployment: Deployment, mode: str
) -> None:
    workload = deployment.idp.mint(sub=AGENT_SUB)
    response = exchange(deployment, workload, "vrf__echo behav__whoami", deadline="120", budget="10",
                        requested_token_type=ACCESS_TOKEN_TYPE)
    grant = granted(response)
    assert response.json()["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert grant.scope == "vrf__echo behav__whoami"
    assert 0 < grant.expires_in <= 120
    text, after = marker("first"), marker("after-complete")
    async with mcp_client(deployment.gateway.url, grant.token, mode) as client:
        # The agent is entitled to all of `vrf`, but the task names two tools: it sees those and the built-ins.
        assert await tool_names(client) == {"vrf__echo", "behav__whoami", *BUILTINS}
        result = await client.call_tool("vrf__echo", {"text": text})
        assert not result.is_error, result
        assert result.content[0].text == text
        headers = await whoami_headers(client)
        # Within the entitlement but not in the task: refused, and never forwarded.
        not_in_task = {"a": uuid.uuid4().int % 10**9, "b": 1}
        outside = await call_refused(client, "vrf__add", not_in_task)
        assert "not part of task" in outside or "Access denied" in outside, outside
        done = await client.call_tool(COMPLETE, {"reason": "tasks e2e done"})
        assert not done.is_error, done
        assert "completed" in done.content[0].text
        refused = await call_refused(client, "vrf__echo", {"text": after})
        assert after not in refused
    # The verifying upstream accepted the gateway's token for exactly this call.
    entry = accepted_record(deployment, text)
    claims = entry["claims"]
    assert claims["iss"] == deployment.base
    assert claims["aud"] == deployment.verifying_url
    assert claims["scope"] == "echo"
    assert claims["sub"] == AGENT
    assert claims["task_id"] == grant.task_id
    assert claims["args_sha256"] == argument_digest({"text": text})
    assert 0 < claims["exp"] - claims["iat"] <= 60
    # Neither the agent's workload token nor its task token reached either upstream.
    upstream_token = bearer_token(entry["authorization"])
    assert jwt.get_unverified_header(upstream_token)["typ"] == "at+jwt"
    received = deployment.record.read_text() + json.dumps(headers)
    for secret in (workload, grant.token):
        assert secret not in received
        assert secret.rpartition(".")[2] not in received
    assert unverified_claims(bearer_token(headers["authorization"]))["aud"] == deployment.behaviour_url
    # After completion: nothing of the task reaches the upstream, and the token opens no new session.
    assert never_received(deployment, after)
    assert not any(e["tool"] == "add" and e["arguments"] == not_in_task for e in deployment.records())
    assert_refused_at_the_door(deployment, grant.token, grant.task_id)


async def test_client_credentials_with_a_jwt_assertion_lists_calls_then_fails_the_task(
    deployment: Deployment,
) -> None:
    assertion = deployment.idp.mint(sub=AGENT_SUB, aud=deployment.token_url)
    response = post_token(deployment, {
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion, "client_id": AGENT, "scope": "vrf__echo vrf__add", "purpose": "rfc 7523",
        "expires_in": "120",
    })
    grant = granted(response)
    assert grant.scope == "vrf__echo vrf__add"
    text, after = marker("cc"), marker("cc-after")
    async with mcp_client(deployment.gateway.url, grant.token, ERAS[0]) as client:
        assert await tool_names(client) == {"vrf__echo", "vrf__add", *BUILTINS}
        assert (await client.call_tool("vrf__echo", {"text": text})).content[0].text == text
        added = await client.call_tool("vrf__add", {"a": 20, "b": 22})
        assert not added.is_error and added.content[0].text == "42", added
        failed = await client.call_tool(FAIL, {"reason": "tasks e2e: giving up on purpose"})
        assert not failed.is_error and "failed" in failed.content[0].text, failed
        await call_refused(client, "vrf__echo", {"text": after})
    claims = accepted_record(deployment, text)["claims"]
    assert (claims["aud"], claims["scope"], claims["task_id"]) == (deployment.verifying_url, "echo", grant.task_id)
    adds = [e for e in deployment.records() if e["tool"] == "add" and e["arguments"] == {"a": 20, "b": 22}]
    assert [e["outcome"] for e in adds] == ["accepted"]
    assert adds[0]["claims"]["scope"] == "add"
    assert adds[0]["claims"]["args_sha256"] == argument_digest({"a": 20, "b": 22})
    assert assertion not in deployment.record.read_text()
    assert grant.token not in deployment.record.read_text()
    assert never_received(deployment, after)
    assert_refused_at_the_door(deployment, grant.token, grant.task_id)


async def test_task_reaching_its_deadline_mid_session_refuses_the_next_call(deployment: Deployment) -> None:
    grant = start_task(deployment, "vrf__echo", deadline_s=3)
    deadline = time.time() + 3  # the task's deadline is at most this (it was set before the answer came)
    before, after = marker("before-deadline"), marker("after-deadline")
    async with mcp_client(deployment.gateway.url, grant.token, ERAS[1]) as client:
        assert (await client.call_tool("vrf__echo", {"text": before})).content[0].text == before
        await asyncio.sleep(max(0.0, deadline - time.time()) + 0.5)
        await call_refused(client, "vrf__echo", {"text": after})
    accepted_record(deployment, before)
    assert never_received(deployment, after)
    assert_refused_at_the_door(deployment, grant.token)
    # The expiry sweep deny-lists the task's upstream tokens too (bounded wait: the sweep is periodic).
    give_up = time.monotonic() + WAIT_S
    while grant.task_id not in httpx2.get(deployment.revocations_url).text:
        assert time.monotonic() < give_up, "the expired task never reached /oauth/revocations"
        await asyncio.sleep(0.5)


# --- bad input -----------------------------------------------------------------------------------


def test_exchange_of_an_invalid_subject_token_is_invalid_grant(deployment: Deployment) -> None:
    for garbage in ("not-a-jwt", deployment.idp.mint(sub=AGENT_SUB)[:-12] + "AAAAAAAAAAAA"):
        assert_oauth_error(exchange(deployment, garbage, "vrf__echo"), 400, "invalid_grant", "subject_token refused")
    expired = deployment.idp.mint(sub=AGENT_SUB, iat=int(time.time()) - 900, exp=int(time.time()) - 600)
    assert_oauth_error(exchange(deployment, expired, "vrf__echo"), 400, "invalid_grant")
    # Control: the same request with a good token is granted.
    granted(exchange(deployment, deployment.idp.mint(sub=AGENT_SUB), "vrf__echo"))


def test_exchange_of_a_foreign_subject_token_is_invalid_grant(deployment: Deployment) -> None:
    foreign_idp = TestIdentityProvider(f"{deployment.base}/mcp")
    try:
        foreign = foreign_idp.mint(sub=AGENT_SUB)  # same subject and audience, an issuer the gateway does not trust
        description = assert_oauth_error(exchange(deployment, foreign, "vrf__echo"), 400, "invalid_grant")
        assert foreign not in description
    finally:
        foreign_idp.close()
    other_audience = deployment.idp.mint(sub=AGENT_SUB, aud="https://some-other-service.example")
    assert_oauth_error(exchange(deployment, other_audience, "vrf__echo"), 400, "invalid_grant")
    unbound = deployment.idp.mint(sub="repo:acme/nobody:ref:refs/heads/main")
    assert_oauth_error(exchange(deployment, unbound, "vrf__echo"), 400, "invalid_grant", "identity refused")


async def test_tools_outside_the_entitlement_are_refused_not_trimmed_unless_asked(deployment: Deployment) -> None:
    workload = deployment.idp.mint(sub=AGENT_SUB)
    scope = "vrf__echo behav__slow"  # behav__slow is catalogued but not in the agent's entitlement
    assert_oauth_error(exchange(deployment, workload, scope), 400, "invalid_scope", "behav__slow")
    assert_oauth_error(exchange(deployment, workload, scope, trim="false"), 400, "invalid_scope", "behav__slow")
    trimmed = granted(exchange(deployment, workload, scope, trim="true"))
    assert trimmed.scope == "vrf__echo"
    async with mcp_client(deployment.gateway.url, trimmed.token, ERAS[1]) as client:
        assert await tool_names(client) == {"vrf__echo", *BUILTINS}
        await call_refused(client, "behav__slow", {"seconds": 0})


async def test_expired_task_token_is_refused(deployment: Deployment) -> None:
    grant = start_task(deployment, "vrf__echo", deadline_s=1)
    assert grant.expires_in <= 1
    exp = unverified_claims(grant.token)["exp"]
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.5)
    assert_refused_at_the_door(deployment, grant.token)
    text = marker("expired-token")
    async with mcp_client(deployment.gateway.url, deployment.idp.mint(sub=AGENT_SUB), ERAS[1]) as client:
        await call_refused(client, "vrf__echo", {"text": text})  # nor does the bare workload token help
    assert never_received(deployment, text)


async def test_task_token_used_after_its_task_completed_is_refused(deployment: Deployment) -> None:
    grant = start_task(deployment, "vrf__echo")
    async with mcp_client(deployment.gateway.url, grant.token, ERAS[0]) as client:
        # Listed first: the SDK validates a result against the listed tools, and lists again if it has none.
        assert COMPLETE in await tool_names(client)
        assert not (await client.call_tool(COMPLETE, {})).is_error
    # A fresh session with the same (unexpired) token: refused at the door and on a call.
    response = assert_refused_at_the_door(deployment, grant.token, grant.task_id)
    assert response.status_code == 403
    assert "completed" in response.text
    text = marker("after-complete")
    for mode in ERAS:
        await assert_session_refused(deployment, grant.token, mode, "vrf__echo", {"text": text})
        # Completing again is not a way back in either.
        await assert_session_refused(deployment, grant.token, mode, COMPLETE, {})
    assert never_received(deployment, text)


async def test_bare_workload_token_of_an_agent_that_requires_tasks_is_refused(deployment: Deployment) -> None:
    text = marker("bare")
    for mode in ERAS:
        async with mcp_client(deployment.gateway.url, deployment.idp.mint(sub=AGENT_SUB), mode) as client:
            assert await tool_names(client) == set()
            message = await call_refused(client, "vrf__echo", {"text": text})
            assert "/oauth/token" in message, message
            await call_refused(client, COMPLETE, {})  # no task, no built-in task tools
    assert never_received(deployment, text)


def test_authorization_server_metadata_is_served_and_the_resource_metadata_points_at_it(
    deployment: Deployment,
) -> None:
    unauthenticated = httpx2.post(deployment.gateway.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                  headers={"Accept": ACCEPT})
    assert unauthenticated.status_code == 401
    challenge = unauthenticated.headers["www-authenticate"]
    resource_metadata_url = challenge.split('resource_metadata="', 1)[1].rstrip('"')
    resource = httpx2.get(resource_metadata_url).json()
    assert resource["resource"] == deployment.gateway.url
    [issuer] = resource["authorization_servers"]
    assert issuer == deployment.base
    # RFC 8414 section 3: the metadata of issuer X lives at X/.well-known/oauth-authorization-server.
    response = httpx2.get(f"{issuer}/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == issuer
    assert metadata["token_endpoint"] == deployment.token_url
    assert metadata["jwks_uri"] == deployment.jwks_url
    assert set(metadata["grant_types_supported"]) >= {EXCHANGE, "client_credentials"}
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    # What it advertises works: the JWKS has public keys only, and the token endpoint issues task tokens.
    keys = httpx2.get(metadata["jwks_uri"]).json()["keys"]
    assert keys and all("d" not in key for key in keys)
    grant = granted(httpx2.post(metadata["token_endpoint"], data={
        "grant_type": EXCHANGE, "subject_token": deployment.idp.mint(sub=AGENT_SUB), "subject_token_type": JWT_TYPE,
        "scope": "vrf__echo", "purpose": "found through discovery"}))
    assert jwt.get_unverified_header(grant.token)["kid"] in {key["kid"] for key in keys}


# --- the shipped verifier on real minted tokens ----------------------------------------------------


async def test_a_replayed_token_is_refused(deployment: Deployment) -> None:
    token, _ = await minted_for_whoami(deployment)
    verifier = deployment.verifier(deployment.behaviour_url)
    claims = verifier.verify(token, "whoami", {})
    assert claims["scope"] == "whoami"
    assert "replayed" in refusal(verifier, token, "whoami", {})
    # The real verifying upstream refuses a replay of a token it already accepted, too.
    text = marker("replay")
    echo_token, _ = await minted_for_echo(deployment, text)
    async with mcp_client(deployment.verifying_url, echo_token, ERAS[0]) as direct:
        replayed = await direct.call_tool("echo", {"text": text})
    assert replayed.is_error
    assert "replayed" in replayed.content[0].text
    outcomes = [e["outcome"] for e in deployment.records() if (e["arguments"] or {}).get("text") == text]
    assert outcomes == ["accepted", "refused"]


async def test_a_token_used_at_another_upstream_is_refused(deployment: Deployment) -> None:
    token, _ = await minted_for_whoami(deployment)  # minted for `behav`
    assert "another upstream" in refusal(deployment.verifier(deployment.verifying_url), token, "whoami", {})
    # Presented straight to the real verifying upstream: refused there as well.
    text = marker("wrong-upstream")
    async with mcp_client(deployment.verifying_url, token, ERAS[1]) as direct:
        result = await direct.call_tool("echo", {"text": text})
    assert result.is_error and "another upstream" in result.content[0].text, result
    # Control: at its own upstream the token is good.
    assert deployment.verifier(deployment.behaviour_url).verify(token, "whoami", {})["aud"] == deployment.behaviour_url


async def test_a_token_used_for_another_tool_is_refused(deployment: Deployment) -> None:
    text = marker("other-tool")
    token, _ = await minted_for_echo(deployment, text)
    verifier = deployment.verifier(deployment.verifying_url)
    assert "another tool" in refusal(verifier, token, "add", {"text": text})
    assert "another tool" in refusal(verifier, token, "received", {"text": text})
    assert verifier.verify(token, "echo", {"text": text})["scope"] == "echo"  # control


async def test_a_token_with_changed_arguments_is_refused(deployment: Deployment) -> None:
    text = marker("args")
    token, _ = await minted_for_echo(deployment, text)
    verifier = deployment.verifier(deployment.verifying_url)
    for changed in ({"text": text + "!"}, {"text": text, "extra": 1}, {}, None):
        assert "arguments differ" in refusal(verifier, token, "echo", changed)
    assert verifier.verify(token, "echo", {"text": text})["args_sha256"] == argument_digest({"text": text})


async def test_after_the_task_ends_the_revocation_list_refuses_tokens_minted_before(
    deployment: Deployment,
) -> None:
    ending = start_task(deployment, "behav__whoami")
    still_active = start_task(deployment, "behav__whoami")
    async with mcp_client(deployment.gateway.url, ending.token, ERAS[1]) as client:
        minted_before_end = bearer_token((await whoami_headers(client)).get("authorization"))
        assert not (await client.call_tool(COMPLETE, {"reason": "revocation test"})).is_error
    control, _ = await minted_for_whoami(deployment, still_active)
    claims = unverified_claims(minted_before_end)
    assert claims["task_id"] == ending.task_id
    assert claims["exp"] > time.time()  # not expired: only the revocation can refuse it
    revoked = httpx2.get(deployment.revocations_url)
    assert revoked.status_code == 200 and ending.task_id in revoked.text
    assert still_active.task_id not in revoked.text
    verifier = deployment.verifier(deployment.behaviour_url, revocations=True)
    assert "revoked" in refusal(verifier, minted_before_end, "whoami", {})
    assert verifier.verify(control, "whoami", {})["task_id"] == still_active.task_id
    # Without the revocation list the same token would still pass: the refusal above is the list's doing.
    assert deployment.verifier(deployment.behaviour_url).verify(minted_before_end, "whoami", {})


# --- the agent's own token stays at the gateway ----------------------------------------------------


async def test_the_agents_own_token_never_reaches_an_upstream(deployment: Deployment) -> None:
    loose = deployment.idp.mint(sub=LOOSE_SUB)
    grant = start_task(deployment, "behav__whoami")
    seen: list[tuple[str, dict[str, str]]] = []
    for secret, agent in ((loose, LOOSE_AGENT), (grant.token, AGENT), (STATIC_TOKEN, STATIC_AGENT)):
        async with mcp_client(deployment.gateway.url, secret, ERAS[0]) as client:
            seen.append((secret, await whoami_headers(client)))
        headers = seen[-1][1]
        token = bearer_token(headers.get("authorization"))
        assert token != secret
        assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
        claims = deployment.verifier(deployment.behaviour_url).verify(token, "whoami", {})
        assert claims["sub"] == agent
    everything = json.dumps([headers for _, headers in seen])
    for secret, _ in seen:
        assert secret not in everything
        assert secret.rpartition(".")[2] not in everything


async def test_per_call_token_carries_the_agents_workload_identity_as_act(deployment: Deployment) -> None:
    """RFC 8693 `act`: the workload identity the agent proved, also when it called with a task token."""
    # Control: with a bare workload token, `act` is that token's identity.
    async with mcp_client(deployment.gateway.url, deployment.idp.mint(sub=LOOSE_SUB), ERAS[1]) as client:
        bare = bearer_token((await whoami_headers(client)).get("authorization"))
    act = deployment.verifier(deployment.behaviour_url).verify(bare, "whoami", {})["act"]
    assert act == {"sub": LOOSE_SUB, "iss": deployment.idp.issuer}
    # With a task token obtained by exchanging the same kind of workload token, it must be no different.
    token, grant = await minted_for_whoami(deployment)
    claims = deployment.verifier(deployment.behaviour_url).verify(token, "whoami", {})
    assert claims["task_id"] == grant.task_id
    assert claims["txn"]
    assert claims["act"]["sub"] == AGENT_SUB, claims["act"]
    assert claims["act"]["iss"] == deployment.idp.issuer, claims["act"]
