"""Workload identity end to end: a real gateway process, a real test IdP, a real MCP client over HTTP.

Agents are registered through the admin API (real HTTP) or declared in a GitOps agents file; their
tokens are minted by `TestIdentityProvider` (OIDC discovery + JWKS over HTTP) or by a SPIFFE
`TestTrustDomain` whose bundle file the gateway reads. Nothing is mocked: every answer below is
what the gateway process said on the wire.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from tests.support.clients import ERAS, mcp_client
from tests.support.identity_provider import (
    TestIdentityProvider,
    TestTrustDomain,
    forge,
    forge_hmac,
    generate_key,
)
from tests.support.processes import ADMIN_TOKEN, Gateway, behaviour_manifest, free_port, static_agent

TRUST_DOMAIN = "example.org"
SPIFFE_PATH = "/ns/prod/sa/agent"
DEV_TOKEN = "token-dev-agent"
DEV_SUSPENDED_TOKEN = "token-dev-suspended"
ACCEPT = "application/json, text/event-stream"
MODERN = "2026-07-28"
GITOPS_SUB = "gitops-agent-subject"
K8S_SUB = "system:serviceaccount:payments:reconciler"
K8S_NAMESPACE_CLAIM = "kubernetes.io/namespace"
GH_SUB = "repo:acme/deployer:ref:refs/heads/main"
GH_REPOSITORY_ID = 123456789
GH_WORKFLOW_REF = "acme/deployer/.github/workflows/deploy.yml@refs/heads/main"
BAD_INPUT_SUB = "bad-input-agent"
WAIT_S = 20.0


# --- helpers -------------------------------------------------------------------------------------


def oidc_identity(issuer: str, subject: str, claims: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "oidc", "issuer": issuer, "subject": subject, "claims": claims or {}}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Admin:
    """The admin API of one gateway, over real HTTP with the admin token."""

    def __init__(self, gateway: Gateway) -> None:
        self.base = f"{gateway.base}/admin/v1/agents"
        self.auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def create(self, agent_id: str, identities: list[dict[str, Any]], state: str = "active",
               **extra: Any) -> dict[str, Any]:
        body = {"id": agent_id, "owner": "team-e2e@example.com", "purpose": f"identity e2e: {agent_id}",
                "state": state, "identities": identities,
                "entitlement": {"servers": ["behav"], "require_task": False}, **extra}
        response = httpx2.post(self.base, json=body, headers=self.auth)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def action(self, agent_id: str, action: str, reason: str = "identity e2e test") -> httpx2.Response:
        return httpx2.post(f"{self.base}/{agent_id}/{action}", json={"reason": reason}, headers=self.auth)

    def change(self, agent_id: str, action: str) -> dict[str, Any]:
        response = self.action(agent_id, action)
        assert response.status_code == 200, response.text
        changed: dict[str, Any] = response.json()
        return changed


def post_initialize(gateway: Gateway, token: str | None) -> httpx2.Response:
    """A raw 2025-11-25 initialize at /mcp with `token` as bearer."""
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "identity-e2e", "version": "0"}}}
    return httpx2.post(gateway.url, json=body, headers=headers)


def assert_no_token_echo(response: httpx2.Response, token: str, gateway: Gateway) -> None:
    """Neither the answer nor the gateway's log carries the token (or its signature)."""
    signature = token.rpartition(".")[2]
    for text in (response.text, " ".join(response.headers.values()), gateway.log_text()):
        assert token not in text
        assert len(signature) < 8 or signature not in text


def assert_unauthorized(gateway: Gateway, token: str, *fragments: str) -> str:
    """401 with the RFC 9728 challenge; returns the stated reason."""
    response = post_initialize(gateway, token)
    assert response.status_code == 401, response.text
    challenge = response.headers.get("www-authenticate", "")
    expected = f'Bearer resource_metadata="{gateway.base}/.well-known/oauth-protected-resource"'
    assert challenge == expected, challenge
    assert_no_token_echo(response, token, gateway)
    reason = str(response.json().get("error_description", ""))
    for fragment in fragments:
        assert fragment in reason, reason
    return reason


def assert_forbidden(gateway: Gateway, token: str, *fragments: str) -> str:
    """403 for a valid credential that may not act; returns the stated reason."""
    response = post_initialize(gateway, token)
    assert response.status_code == 403, response.text
    assert_no_token_echo(response, token, gateway)
    body = response.json()
    assert body["error"] == "access_denied"
    reason = str(body.get("error_description", ""))
    for fragment in fragments:
        assert fragment in reason, reason
    return reason


def assert_accepted(gateway: Gateway, token: str) -> None:
    response = post_initialize(gateway, token)
    assert response.status_code == 200, response.text
    assert response.headers.get("mcp-session-id")


async def assert_lists_and_calls(gateway: Gateway, token: str, mode: str, text: str) -> None:
    async with mcp_client(gateway.url, token, mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "behav__echo" in names
        result = await client.call_tool("behav__echo", {"text": text})
    assert not result.is_error
    assert result.content[0].text == text


def wait_until(predicate: Any, timeout_s: float = WAIT_S, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def identity_config(audience: str, issuer: str, bundle: Path | None = None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "audience": audience,
        "clock_skew_s": 5,
        "key_refresh_min_interval_s": 0.5,
        "oidc_issuers": [{"issuer": issuer}],  # keys found by OIDC discovery
        **extra,
    }
    if bundle is not None:
        config["spiffe_trust_domains"] = [{"trust_domain": TRUST_DOMAIN, "bundle_file": str(bundle)}]
    return config


def make_gateway(workdir: Path, upstream_port: int, identity: dict[str, Any] | None = None,
                 port: int | None = None, **kwargs: Any) -> Gateway:
    manifests = [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{upstream_port}/mcp"}, timeout_s=5)]
    gateway = Gateway(workdir, manifests, **kwargs)
    gateway.port = port or free_port()  # the audience names the port, so it is fixed before start
    if identity is not None:
        gateway.extra_config = {**gateway.extra_config, "identity": identity}
    return gateway


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def audience(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def idp(audience: str) -> Iterator[TestIdentityProvider]:
    provider = TestIdentityProvider(audience, keys=[generate_key("RS256"), generate_key("ES256")])
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def domain(audience: str) -> TestTrustDomain:
    return TestTrustDomain(TRUST_DOMAIN, audience)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, port: int, audience: str,
       idp: TestIdentityProvider, domain: TestTrustDomain) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("identity-e2e")
    bundle = domain.write_bundle(workdir / "bundle.json")
    gitops = workdir / "gitops-agents.yaml"
    tokens = {"dev-agent": DEV_TOKEN, "dev-suspended": DEV_SUSPENDED_TOKEN}
    gitops.write_text(yaml.safe_dump({"agents": [
        *(static_agent(agent_id, ["behav"]) for agent_id in tokens),
        {"id": "gitops-agent", "owner": "platform@example.com", "purpose": "declared in git",
         "state": "active", "entitlement": {"servers": ["behav"], "require_task": False},
         "identities": [oidc_identity(idp.issuer, GITOPS_SUB)]},
        {"id": "k8s-reconciler", "owner": "payments@example.com", "purpose": "reconciles payments",
         "entitlement": {"servers": ["behav"], "require_task": False},
         "identities": [oidc_identity(idp.issuer, K8S_SUB, {K8S_NAMESPACE_CLAIM: "payments"})]},
        {"id": "spiffe-agent", "owner": "platform@example.com", "purpose": "SPIRE workload",
         "entitlement": {"servers": ["behav"], "require_task": False},
         "identities": [{"kind": "spiffe", "issuer": f"spiffe://{TRUST_DOMAIN}",
                         "subject": domain.spiffe_id(SPIFFE_PATH)}]},
    ]}))
    gateway = make_gateway(workdir, behaviour_http, identity_config(audience, idp.issuer, bundle), port=port,
                           tokens=tokens)
    gateway.extra_config["agents_file"] = str(gitops)
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Admin:
    return Admin(gw)


@pytest.fixture(scope="module")
def bad_input_agent(admin: Admin, idp: TestIdentityProvider) -> str:
    admin.create("bad-input-agent", [oidc_identity(idp.issuer, BAD_INPUT_SUB)])
    return BAD_INPUT_SUB


# --- accepted identities -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_oidc_agent_registered_through_the_admin_api_lists_and_calls(
    gw: Gateway, admin: Admin, idp: TestIdentityProvider, mode: str
) -> None:
    agent_id, subject = unique("api-agent"), unique("api-subject")
    created = admin.create(agent_id, [oidc_identity(idp.issuer, subject)])
    assert created["state"] == "active"
    await assert_lists_and_calls(gw, idp.mint(sub=subject), mode, f"hello from {agent_id}")
    # An ES256 key of the same issuer works as well.
    await assert_lists_and_calls(gw, idp.mint(sub=subject, key=idp.keys[1]), mode, "es256")


@pytest.mark.parametrize("mode", ERAS)
async def test_oidc_agent_declared_in_the_agents_file_lists_and_calls(
    gw: Gateway, admin: Admin, idp: TestIdentityProvider, mode: str
) -> None:
    shown = httpx2.get(f"{admin.base}/gitops-agent", headers=admin.auth).json()
    assert shown["state"] == "active"
    assert shown["events"][0]["actor"] == "agents-file"
    await assert_lists_and_calls(gw, idp.mint(sub=GITOPS_SUB), mode, "hello from git")


@pytest.mark.parametrize("mode", ERAS)
async def test_spiffe_svid_from_the_bundle_file_lists_and_calls(
    gw: Gateway, domain: TestTrustDomain, mode: str
) -> None:
    await assert_lists_and_calls(gw, domain.mint_svid(SPIFFE_PATH), mode, "hello from SPIRE")


def test_svid_from_a_foreign_trust_domain_is_401(gw: Gateway, domain: TestTrustDomain, audience: str) -> None:
    foreign = TestTrustDomain("evil.example", audience)
    assert_unauthorized(gw, foreign.mint_svid(SPIFFE_PATH), "evil.example", "not trusted")
    # A foreign key claiming an identity inside the trusted domain gets nowhere either.
    impersonation = foreign.mint_svid(sub=domain.spiffe_id(SPIFFE_PATH))
    assert_unauthorized(gw, impersonation, "unknown")


def test_svid_of_an_unbound_spiffe_id_is_403(gw: Gateway, domain: TestTrustDomain) -> None:
    assert_forbidden(gw, domain.mint_svid("/ns/prod/sa/stranger"), "no agent is bound")


# --- claim pins ----------------------------------------------------------------------------------


async def test_kubernetes_binding_with_namespace_pin(gw: Gateway, idp: TestIdentityProvider) -> None:
    good = idp.mint(sub=K8S_SUB, **{K8S_NAMESPACE_CLAIM: "payments"})
    await assert_lists_and_calls(gw, good, ERAS[0], "k8s")
    assert_forbidden(gw, idp.mint(sub=K8S_SUB, **{K8S_NAMESPACE_CLAIM: "default"}), "no agent is bound")
    assert_forbidden(gw, idp.mint(sub=K8S_SUB), "no agent is bound")  # pinned claim absent
    # Same namespace, another service account: the subject is part of the binding.
    assert_forbidden(gw, idp.mint(sub="system:serviceaccount:payments:other", **{K8S_NAMESPACE_CLAIM: "payments"}))


async def test_github_binding_with_repository_id_and_workflow_pins(
    gw: Gateway, admin: Admin, idp: TestIdentityProvider
) -> None:
    pins = {"repository_id": GH_REPOSITORY_ID, "job_workflow_ref": GH_WORKFLOW_REF}  # an integer pin
    created = admin.create("gh-deployer", [oidc_identity(idp.issuer, GH_SUB, pins)])
    assert created["identities"][0]["claims"]["repository_id"] == str(GH_REPOSITORY_ID)
    # GitHub sends repository_id as a string; an integer claim compares the same way.
    for repository_id in (str(GH_REPOSITORY_ID), GH_REPOSITORY_ID):
        token = idp.mint(sub=GH_SUB, repository_id=repository_id, job_workflow_ref=GH_WORKFLOW_REF)
        await assert_lists_and_calls(gw, token, ERAS[1], "github")
    other_repo = idp.mint(sub=GH_SUB, repository_id="987654321", job_workflow_ref=GH_WORKFLOW_REF)
    assert_forbidden(gw, other_repo, "no agent is bound")
    other_workflow = idp.mint(sub=GH_SUB, repository_id=str(GH_REPOSITORY_ID),
                              job_workflow_ref="acme/deployer/.github/workflows/evil.yml@refs/heads/main")
    assert_forbidden(gw, other_workflow, "no agent is bound")
    assert_forbidden(gw, idp.mint(sub=GH_SUB, repository_id=str(GH_REPOSITORY_ID)), "no agent is bound")


# --- bad input through /mcp ----------------------------------------------------------------------


def test_control_a_good_token_of_the_bad_input_agent_is_accepted(
    gw: Gateway, idp: TestIdentityProvider, bad_input_agent: str
) -> None:
    """Every refusal below differs from this accepted token in one defect only."""
    assert_accepted(gw, idp.mint(sub=bad_input_agent))


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    return f"{header}.{payload}.{flipped}"


BAD_TOKENS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "expired": (lambda idp, sub, now: idp.mint(sub=sub, iat=now - 600, exp=now - 60), ("expired",)),
    "not-yet-valid": (lambda idp, sub, now: idp.mint(sub=sub, nbf=now + 120, exp=now + 600), ("not yet valid",)),
    "wrong-issuer": (lambda idp, sub, now: idp.mint(sub=sub, iss="https://evil.example.com"), ("not trusted",)),
    "wrong-audience": (lambda idp, sub, now: idp.mint(sub=sub, aud="https://other-gateway.example"), ("audience",)),
    "unknown-kid": (lambda idp, sub, now: idp.mint(sub=sub, key=generate_key("RS256", kid="never-published")),
                    ("unknown", "never-published")),
    "tampered-signature": (lambda idp, sub, now: _tampered(idp.mint(sub=sub)), ("signature is invalid",)),
    "alg-none": (lambda idp, sub, now: forge({"alg": "none", "typ": "JWT", "kid": idp.keys[0].kid},
                                             idp.claims(sub=sub)), ("not allowed",)),
    "hs256-with-public-key": (lambda idp, sub, now: forge_hmac(idp.claims(sub=sub), idp.keys[0].public_pem(),
                                                               kid=idp.keys[0].kid), ("HS256",)),
    "missing-sub": (lambda idp, sub, now: idp.mint(sub=None), ("'sub'",)),
    "malformed": (lambda idp, sub, now: "not-a-jwt", ("malformed",)),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_is_401_with_resource_metadata(
    gw: Gateway, idp: TestIdentityProvider, bad_input_agent: str, case: str
) -> None:
    build, fragments = BAD_TOKENS[case]
    token = build(idp, bad_input_agent, int(time.time()))
    assert_unauthorized(gw, token, *fragments)


def test_missing_token_is_401_with_resource_metadata(gw: Gateway) -> None:
    response = post_initialize(gw, None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    metadata = httpx2.get(f"{gw.base}/.well-known/oauth-protected-resource").json()
    assert metadata["resource"] == f"{gw.base}/mcp"


def test_valid_token_bound_to_no_agent_is_403_and_recorded(gw: Gateway, idp: TestIdentityProvider) -> None:
    subject = unique("nobody")
    assert_forbidden(gw, idp.mint(sub=subject), "no agent is bound")
    wait_until(lambda: f"identity oidc {subject} refused: no agent is bound" in gw.log_text(), timeout_s=5)


def test_token_of_a_pending_agent_is_403(gw: Gateway, admin: Admin, idp: TestIdentityProvider) -> None:
    agent_id, subject = unique("pending"), unique("pending-subject")
    admin.create(agent_id, [oidc_identity(idp.issuer, subject)], state="pending")
    assert_forbidden(gw, idp.mint(sub=subject), agent_id, "pending")
    admin.change(agent_id, "activate")
    assert_accepted(gw, idp.mint(sub=subject))


def test_token_of_a_retired_agent_is_403(gw: Gateway, admin: Admin, idp: TestIdentityProvider) -> None:
    agent_id, subject = unique("retiree"), unique("retiree-subject")
    admin.create(agent_id, [oidc_identity(idp.issuer, subject)])
    token = idp.mint(sub=subject)
    assert_accepted(gw, token)
    admin.change(agent_id, "retire")
    assert_forbidden(gw, token, "retired")  # the same (cached) token
    assert_forbidden(gw, idp.mint(sub=subject), "retired")  # and a fresh one


def test_agent_past_its_expiry_is_403(gw: Gateway, admin: Admin, idp: TestIdentityProvider) -> None:
    agent_id, subject = unique("expiring"), unique("expiring-subject")
    expires_at = time.time() + 3
    admin.create(agent_id, [oidc_identity(idp.issuer, subject)], expires_at=expires_at)
    token = idp.mint(sub=subject)
    assert_accepted(gw, token)
    wait_until(lambda: time.time() > expires_at + 0.2, timeout_s=10)
    reason = assert_forbidden(gw, token, "retired")
    assert "expire" in reason, reason
    shown = httpx2.get(f"{admin.base}/{agent_id}", headers=admin.auth).json()
    assert (shown["state"], shown["effective_state"]) == ("active", "retired")
    assert_forbidden(gw, idp.mint(sub=subject), "retired")


# --- suspension and retirement on open sessions --------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_suspension_takes_effect_on_the_next_request_of_an_open_session(
    gw: Gateway, admin: Admin, idp: TestIdentityProvider, mode: str
) -> None:
    agent_id, subject = unique("suspendable"), unique("suspendable-subject")
    admin.create(agent_id, [oidc_identity(idp.issuer, subject)])
    token = idp.mint(sub=subject)
    async with mcp_client(gw.url, token, mode) as client:
        assert (await client.call_tool("behav__echo", {"text": "before"})).content[0].text == "before"
        admin.change(agent_id, "suspend")
        # The SDK surfaces the HTTP 403 as an MCPError (not a timeout, not a result).
        with pytest.raises(MCPError) as caught:
            async with asyncio.timeout(WAIT_S):
                await client.call_tool("behav__echo", {"text": "after suspension"})
        assert "after suspension" not in str(caught.value)
    assert_forbidden(gw, token, agent_id, "suspended")
    admin.change(agent_id, "resume")
    await assert_lists_and_calls(gw, token, mode, "resumed")
    # Retired: refused forever, and resume cannot bring it back.
    admin.change(agent_id, "retire")
    assert_forbidden(gw, token, "retired")
    refused = admin.action(agent_id, "resume")
    assert refused.status_code == 409, refused.text
    assert "retired" in refused.json()["error"]
    assert_forbidden(gw, idp.mint(sub=subject), "retired")


async def test_suspension_closes_every_open_session_of_the_agent(
    gw: Gateway, admin: Admin, idp: TestIdentityProvider
) -> None:
    agent_id, subject = unique("two-sessions"), unique("two-sessions-subject")
    admin.create(agent_id, [oidc_identity(idp.issuer, subject)])
    token = idp.mint(sub=subject)
    async with mcp_client(gw.url, token, ERAS[0]) as legacy, mcp_client(gw.url, token, ERAS[1]) as modern:
        for client in (legacy, modern):
            assert not (await client.call_tool("behav__echo", {"text": "ok"})).is_error
        admin.change(agent_id, "suspend")
        for client in (legacy, modern):
            with pytest.raises(MCPError):
                async with asyncio.timeout(WAIT_S):
                    await client.list_tools()


async def open_streams(http: httpx2.AsyncClient, gateway: Gateway, token: str) -> list[Any]:
    """A 2025-11-25 GET stream and a 2026-07-28 `subscriptions/listen` stream, both established."""
    base = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json"}
    init = await http.post(gateway.url, headers=base, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}}})
    assert init.status_code == 200, init.text
    session = {**base, "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    await http.post(gateway.url, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    get_stream = http.stream("GET", gateway.url, headers={**session, "Accept": "text/event-stream"})
    meta = {PROTOCOL_VERSION_META_KEY: MODERN, CLIENT_CAPABILITIES_META_KEY: {},
            CLIENT_INFO_META_KEY: {"name": "e2e", "version": "0"}}
    listen_stream = http.stream(
        "POST", gateway.url,
        headers={**base, "MCP-Protocol-Version": MODERN, "Mcp-Method": "subscriptions/listen"},
        json={"jsonrpc": "2.0", "id": 2, "method": "subscriptions/listen",
              "params": {"notifications": {}, "_meta": meta}},
    )
    streams = []
    for stream in (get_stream, listen_stream):
        response = await stream.__aenter__()
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        streams.append((stream, response))
    return streams


async def assert_streams_end(streams: list[Any], timeout_s: float = WAIT_S) -> None:
    still_open = []
    deadline = time.monotonic() + timeout_s
    try:
        for name, (_, response) in zip(("GET stream", "subscriptions/listen stream"), streams, strict=True):
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    async for _chunk in response.aiter_bytes():
                        pass  # the ack/priming events, then the end of the stream
            except TimeoutError:
                still_open.append(name)
        assert not still_open, f"still open after {timeout_s} s: {', '.join(still_open)}"
    finally:
        for stream, _ in streams:
            await stream.__aexit__(None, None, None)


async def test_suspension_ends_open_get_and_listen_streams(
    gw: Gateway, admin: Admin, idp: TestIdentityProvider
) -> None:
    agent_id, subject = unique("streaming"), unique("streaming-subject")
    admin.create(agent_id, [oidc_identity(idp.issuer, subject)])
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http:
        streams = await open_streams(http, gw, idp.mint(sub=subject))
        admin.change(agent_id, "suspend")
        await assert_streams_end(streams)


async def test_expiry_ends_open_get_and_listen_streams(
    gw: Gateway, admin: Admin, idp: TestIdentityProvider
) -> None:
    """An agent past its expiry is treated as retired, and retirement ends open streams at once."""
    agent_id, subject = unique("expiring-streams"), unique("expiring-streams-subject")
    admin.create(agent_id, [oidc_identity(idp.issuer, subject)], expires_at=time.time() + 2)
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http:
        streams = await open_streams(http, gw, idp.mint(sub=subject))
        await assert_streams_end(streams, timeout_s=6)


def test_suspended_static_development_token_is_refused(gw: Gateway, admin: Admin) -> None:
    assert_accepted(gw, DEV_SUSPENDED_TOKEN)
    admin.change("dev-suspended", "suspend")
    assert_forbidden(gw, DEV_SUSPENDED_TOKEN, "suspended")
    assert_accepted(gw, DEV_TOKEN)  # another static agent is unaffected
    admin.change("dev-suspended", "resume")
    assert_accepted(gw, DEV_SUSPENDED_TOKEN)


# --- keys: rotation and outages (their own IdP and gateway, so other tests keep stable keys) ------


@pytest.fixture(scope="module")
def volatile(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[
    tuple[Gateway, TestIdentityProvider]
]:
    port = free_port()
    audience = f"http://127.0.0.1:{port}"
    provider = TestIdentityProvider(audience)
    gateway = make_gateway(tmp_path_factory.mktemp("volatile"), behaviour_http,
                           identity_config(audience, provider.issuer), port=port)
    gateway.start()
    Admin(gateway).create("rotating-agent", [oidc_identity(provider.issuer, "rotating-subject")])
    yield gateway, provider
    gateway.stop()
    provider.close()


async def test_key_rotation_is_picked_up_without_restart(volatile: tuple[Gateway, TestIdentityProvider]) -> None:
    gateway, provider = volatile
    old_key = provider.keys[0]
    await assert_lists_and_calls(gateway, provider.mint(sub="rotating-subject"), ERAS[1], "old key")
    new_key = provider.rotate()
    assert new_key.kid != old_key.kid
    # The first token with the new kid may land within the refresh rate limit; it must work soon after.
    token = provider.mint(sub="rotating-subject", key=new_key)
    wait_until(lambda: post_initialize(gateway, token).status_code == 200, timeout_s=10)
    await assert_lists_and_calls(gateway, provider.mint(sub="rotating-subject", key=new_key), ERAS[0], "new key")
    assert gateway.process is not None and gateway.process.poll() is None  # the same process throughout
    # The withdrawn key no longer vouches for fresh tokens.
    time.sleep(0.6)
    assert_unauthorized(gateway, provider.mint(sub="rotating-subject", key=old_key, jti=unique("old")), "unknown")


async def test_jwks_down_already_seen_keys_keep_working(volatile: tuple[Gateway, TestIdentityProvider]) -> None:
    gateway, provider = volatile
    assert_accepted(gateway, provider.mint(sub="rotating-subject"))
    provider.stop()
    try:
        time.sleep(0.6)  # past the refresh interval, so the next unknown kid does try (and fail) to fetch
        assert_unauthorized(gateway, provider.mint(sub="rotating-subject", key=generate_key("RS256")), "unknown")
        for n in range(3):  # new tokens (never cached), signed with the key seen before the outage
            fresh = provider.mint(sub="rotating-subject", jti=unique(f"outage-{n}"))
            await assert_lists_and_calls(gateway, fresh, ERAS[n % 2], f"outage {n}")
    finally:
        provider.start()


def test_gateway_started_while_the_idp_is_down_refuses(
    tmp_path_factory: pytest.TempPathFactory, behaviour_http: int
) -> None:
    port = free_port()
    audience = f"http://127.0.0.1:{port}"
    provider = TestIdentityProvider(audience)
    provider.stop()
    gateway = make_gateway(tmp_path_factory.mktemp("idp-down"), behaviour_http,
                           identity_config(audience, provider.issuer), port=port)
    try:
        gateway.start()
        Admin(gateway).create("early-agent", [oidc_identity(provider.issuer, "early-subject")])
        for _ in range(3):
            assert_unauthorized(gateway, provider.mint(sub="early-subject", jti=unique("down")),
                                "no verification keys")
            time.sleep(0.3)
        # Once the IdP is back, the same gateway picks its keys up (no restart).
        provider.start()
        token = provider.mint(sub="early-subject")
        wait_until(lambda: post_initialize(gateway, token).status_code == 200, timeout_s=10)
    finally:
        gateway.stop()
        provider.close()
