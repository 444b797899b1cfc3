"""People's MCP clients end to end (issue 17 sections 1 and 2): a real `narrowgate serve`, a real certified OpenID
provider (npm `oidc-provider`, tests/support/oidc_provider.py), the `mcp` SDK's own OAuth client and a real upstream
that verifies every per-call token (examples/verifying_upstream).

The SDK does the whole MCP authorization flow against the gateway: 401 -> RFC 9728 metadata (naming the provider)
-> the provider's metadata -> dynamic registration -> authorization with PKCE S256 and `resource` = the gateway's
/mcp (the person signs in and consents in `Browser`, over HTTP) -> token -> the retried request. The operator binds
the registered client id to an agent record (admin API) with the people who may act through it.

RFC 9470: the SDK (2.3) answers an `insufficient_user_authentication` 401 by authorizing again, but does not read the
challenge's `acr_values`/`max_age`; the test's response hook records the challenge and its redirect handler adds
them to that authorization request (RFC 9470 section 4), see tests/support/oidc_provider.py.

The `plain` deployment runs the provider with bare access tokens (server.mjs --plain: no email, groups, acr, amr or
auth_time) and strict provider settings (require_typ, single_audience): what the gateway answers the other tokens a
real provider signs (an ID token, a client-credentials token, a token for two APIs) and a re-authentication policy
it cannot meet without auth_time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from tests.support.admin import unique
from tests.support.oidc_provider import (
    APP_CLIENT,
    MACHINE_CLIENT,
    OTHER_API,
    TWO_APIS_CLIENT,
    Browser,
    OidcProvider,
    RegisteredClient,
    SdkOAuth,
    client_credentials_token,
    exchange_code,
    register_client,
    sdk_oauth,
    token_by_hand,
)
from tests.support.processes import ADMIN_TOKEN, REPO, Gateway, cedar_copy, free_port, start_listening, stop

VERIFYING_SERVER = REPO / "examples" / "verifying_upstream" / "server.py"
MODERN, LEGACY = "2026-07-28", "legacy"  # the SDK's names for the two protocol eras (2025-11-25 is "legacy")
SERVER = "vrf"
STATIC_APP = APP_CLIENT.client_id
STEP_UP_POLICY = """
@id("echo-needs-recent-mfa")
@step_up("reauth") @acr_values("mfa") @max_age("300")
@reason("echo needs a multi-factor sign-in within the last 5 minutes")
forbid (principal, action == Action::"vrf__echo", resource)
unless { context.user.acr == "mfa" && context.request.time - context.user.auth_time <= 300 };
"""


@dataclass
class Deployment:
    gateway: Gateway
    provider: OidcProvider
    record: Path
    client: RegisteredClient  # registered at the provider, bound to an agent for people in "support"

    def upstream_claims(self, tool: str) -> list[dict[str, Any]]:
        """The verified per-call token claims of every call of `tool` the upstream accepted."""
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        entries = [json.loads(line) for line in lines if line.strip()]
        return [e["claims"] for e in entries if e["tool"] == tool and e["outcome"] == "accepted"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("people-e2e"), plain=False, people={"groups": ["support"]}) as running:
        yield running


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The provider with access tokens as bare as real ones can be (server.mjs --plain: no email, groups, acr, amr or
    auth_time) and the strictest settings: RFC 9068 typ, one audience only, and the static client `narrowgate-app`
    named as an audience of this resource (as Entra ID names an API by its client id)."""
    strict = {"require_typ": "at+jwt", "single_audience": True, "audiences": [STATIC_APP]}
    with deployed(tmp_path_factory.mktemp("people-plain"), plain=True, people={"subjects": ["alice"]},
                  **strict) as running:
        yield running


@contextmanager
def deployed(workdir: Path, *, plain: bool, people: dict[str, list[str]], **server: Any) -> Iterator[Deployment]:
    """A gateway trusting a freshly started provider (`server`: more keys of its authorization_servers entry), with a
    verifying upstream and one client registered at the provider, bound to an agent for `people`."""
    gateway_port, upstream_port = free_port(), free_port()
    base = f"http://127.0.0.1:{gateway_port}"
    upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
    record = workdir / "verifying-upstream.jsonl"
    upstream, _ = start_listening([
        sys.executable, str(VERIFYING_SERVER), "--port", str(upstream_port), "--jwks-url",
        f"{base}/.well-known/jwks.json", "--audience", upstream_url, "--issuer", base, "--record", str(record)])
    manifest = {"id": SERVER, "owner": "tools@example.com", "description": "verifies every per-call token",
                "transport": {"url": upstream_url}, "timeout_s": 10,
                "tools": [{"name": name, "risk": "read", "data_classes": ["internal"]} for name in ("echo", "add")]}
    provider = OidcProvider(workdir, plain=plain)
    gateway = Gateway(workdir, [manifest], port=gateway_port)
    try:
        provider.start()
        gateway.extra_config = {
            "policies": str(cedar_copy(workdir / "cedar", people_step_up=STEP_UP_POLICY)),
            "identity": {"audience": f"{base}/mcp", "clock_skew_s": 5,
                         "authorization_servers": [{"issuer": provider.issuer, **server}],
                         "advertise_authorization_servers": "external",
                         "scopes_supported": ["openid", "email", "groups"]}}
        gateway.start()
        client = register_client(provider)
        bind_client(gateway, provider, client.client_id, unique("support-client"), people)
        yield Deployment(gateway, provider, record, client)
    finally:
        gateway.stop()
        provider.stop()
        stop(upstream)


def bind_client(gateway: Gateway, provider: OidcProvider, client_id: str, agent_id: str,
                people: dict[str, list[str]] | None = None) -> None:
    """The operator registers a client application as an agent (admin API): `people` (default: the group "support")
    act through it."""
    body = {"id": agent_id, "owner": "team-support@example.com", "purpose": "people e2e: a person's MCP client",
            "state": "active",
            "identities": [{"kind": "client", "issuer": provider.issuer, "subject": client_id,
                            "people": people or {"groups": ["support"]}}],
            "entitlement": {"servers": [SERVER], "require_task": False}}
    response = httpx2.post(f"{gateway.base}/admin/v1/agents", json=body,
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 201, response.text


@asynccontextmanager
async def signed_in(oauth: SdkOAuth, url: str, mode: str = MODERN) -> AsyncIterator[Client]:
    """The SDK client on `url`, authorizing through `oauth` (the whole flow runs on its first request)."""
    async with (
        oauth.http_client() as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def raw_call(deployment: Deployment, token: str, tool: str, arguments: dict[str, Any]) -> httpx2.Response:
    """One 2026-07-28 tools/call with `token`, no SDK: what the gateway answers a given token."""
    meta = {PROTOCOL_VERSION_META_KEY: MODERN, CLIENT_CAPABILITIES_META_KEY: {},
            CLIENT_INFO_META_KEY: {"name": "people-e2e", "version": "0"}}
    return httpx2.post(deployment.gateway.url, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json", "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
        "Mcp-Name": tool}, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                 "params": {"name": tool, "arguments": arguments, "_meta": meta}}, timeout=10)


async def assert_refused_through_the_sdk(oauth: SdkOAuth, url: str, mode: str = MODERN) -> None:
    """The SDK's flow completes (a token is held) but the gateway refuses the call: the client gets an error."""
    with pytest.raises(ExceptionGroup) as refused:
        async with signed_in(oauth, url, mode) as client:
            await client.call_tool(f"{SERVER}__add", {"a": 1, "b": 2})
    assert refused.group_contains(MCPError)
    assert oauth.storage.tokens is not None


def assert_forbidden(deployment: Deployment, token: str, fragment: str) -> str:
    """403 access_denied for this token, the reason in the answer and in the log, the token in neither."""
    response = raw_call(deployment, token, f"{SERVER}__add", {"a": 1, "b": 2})
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "access_denied" and fragment in body["error_description"], body
    assert deployment.gateway.logged(fragment)
    assert_not_logged(deployment, token)
    return str(body["error_description"])


def assert_not_logged(deployment: Deployment, token: str) -> None:
    signature = token.rpartition(".")[2]
    log = deployment.gateway.log_text()
    assert token not in log and signature not in log


def tool_text(result: Any) -> str:
    assert not result.is_error, result
    return str(result.content[0].text)


# --- section 1: a person's MCP client through the external provider ----------------------------------------------


async def test_the_sdk_client_signs_the_person_in_and_calls_as_them_once_its_client_id_is_bound(
    deployment: Deployment,
) -> None:
    gateway, provider = deployment.gateway, deployment.provider
    metadata = httpx2.get(f"{gateway.base}/.well-known/oauth-protected-resource", timeout=5).json()
    assert (metadata["resource"], metadata["authorization_servers"]) == (gateway.url, [provider.issuer])

    oauth = sdk_oauth(gateway.url, Browser(user="alice", acr="pwd"))  # registers itself: a client nobody bound yet
    await assert_refused_through_the_sdk(oauth, gateway.url, LEGACY)
    assert oauth.storage.client_info is not None
    client_id = oauth.storage.client_info.client_id
    claims = provider.verify_access_token(oauth.access_token, gateway.url)  # aud = the gateway's /mcp
    assert (claims["sub"], claims["client_id"]) == ("alice", client_id)
    (authorization,) = oauth.authorization_urls
    asked = {name: values[0] for name, values in parse_qs(urlsplit(authorization).query).items()}
    assert (asked["resource"], asked["code_challenge_method"]) == (gateway.url, "S256")
    assert [page["prompt"] for page in oauth.browser.pages] == ["login", "consent"]
    unbound = assert_forbidden(deployment, oauth.access_token, "is not registered as an agent")
    assert client_id in unbound

    agent_id = unique("alices-client")
    bind_client(gateway, provider, client_id, agent_id)
    async with signed_in(oauth, gateway.url, LEGACY) as client:  # the same token, now its client is bound
        assert tool_text(await client.call_tool(f"{SERVER}__add", {"a": 1, "b": 2})) == "3"
    assert len(oauth.authorization_urls) == 1
    (upstream,) = [c for c in deployment.upstream_claims("add") if c["act"]["client_id"] == client_id]
    assert (upstream["sub"], upstream["sub_iss"]) == ("alice", provider.issuer)
    assert upstream["act"]["sub"] == agent_id


async def test_a_token_for_another_resource_is_refused_and_the_reason_logged_without_it(
    deployment: Deployment,
) -> None:
    other = f"{deployment.gateway.base}/other/mcp"
    token = await token_by_hand(deployment.provider, deployment.client, Browser(user="alice"), other)
    assert deployment.provider.verify_access_token(token, other)["aud"] == other
    response = raw_call(deployment, token, f"{SERVER}__add", {"a": 1, "b": 2})
    assert response.status_code == 401, response.text
    assert "audience" in response.json().get("error_description", "")
    assert deployment.gateway.logged(f"token refused: token audience '{other}' is not this gateway's resource")
    assert_not_logged(deployment, token)


async def test_a_person_the_client_is_not_for_is_refused(deployment: Deployment) -> None:
    oauth = sdk_oauth(deployment.gateway.url, Browser(user="bob"), registered=deployment.client)
    await assert_refused_through_the_sdk(oauth, deployment.gateway.url)
    assert deployment.provider.verify_access_token(oauth.access_token, deployment.gateway.url)["sub"] == "bob"
    reason = assert_forbidden(deployment, oauth.access_token, "person 'bob' may not act through client")
    assert deployment.client.client_id in reason


# --- section 2: step-up by re-authentication (RFC 9470) ------------------------------------------------------------


async def test_a_reauthentication_challenge_is_answered_by_signing_in_again_and_the_old_token_stays_challenged(
    deployment: Deployment,
) -> None:
    gateway, provider = deployment.gateway, deployment.provider
    browser = Browser(user="alice", acr="pwd")
    oauth = sdk_oauth(gateway.url, browser, registered=deployment.client)
    async with signed_in(oauth, gateway.url) as client:
        assert tool_text(await client.call_tool(f"{SERVER}__add", {"a": 2, "b": 2})) == "4"
        password_token = oauth.access_token
        assert provider.verify_access_token(password_token, gateway.url)["acr"] == "pwd"

        browser.acr = "mfa"  # at the provider's login page, the person now uses a second factor
        pages = len(browser.pages)
        assert tool_text(await client.call_tool(f"{SERVER}__echo", {"text": "refund 250"})) == "refund 250"

    assert oauth.step_ups.seen == [{"acr_values": "mfa", "max_age": "300"}]
    asked = {name: values[0] for name, values in parse_qs(urlsplit(oauth.authorization_urls[-1]).query).items()}
    assert (asked["acr_values"], asked["max_age"]) == ("mfa", "300")
    login = next(page for page in browser.pages[pages:] if page["prompt"] == "login")
    assert "acr_values" in login["reasons"]
    stepped_up = provider.verify_access_token(oauth.access_token, gateway.url)
    assert (stepped_up["acr"], stepped_up["amr"]) == ("mfa", ["pwd", "otp"])

    old = raw_call(deployment, password_token, f"{SERVER}__echo", {"text": "refund 250"})
    assert old.status_code == 401, old.text
    challenge = old.headers["www-authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="mfa"' in challenge and "max_age=300" in challenge
    assert f'resource_metadata="{gateway.base}/.well-known/oauth-protected-resource"' in challenge
    assert old.json()["error"]["code"] == -32032
    fresh = raw_call(deployment, oauth.access_token, f"{SERVER}__echo", {"text": "refund 250"})
    assert fresh.status_code == 200 and "refund 250" in fresh.text
    assert_not_logged(deployment, password_token)


# --- what a real provider hands out besides a person's access token (server.mjs --plain) ----------------------------


def assert_unauthorized(deployment: Deployment, token: str, fragment: str) -> None:
    """401 for this token, the reason in the answer and in the log (`token refused: ...`), the token in neither."""
    response = raw_call(deployment, token, f"{SERVER}__add", {"a": 1, "b": 2})
    assert response.status_code == 401, response.text
    assert fragment in response.json()["error_description"], response.text
    assert deployment.gateway.logged(f"token refused: {fragment}")
    assert_not_logged(deployment, token)


async def test_an_id_token_is_refused_even_when_its_audience_names_this_resource(plain: Deployment) -> None:
    # The app's client id is configured as an audience of /mcp (Entra ID style), so its ID token's aud passes.
    answer = (await exchange_code(plain.provider, APP_CLIENT, Browser(user="alice"), plain.gateway.url,
                                  nonce="n-0S6_WzA2Mj")).raise_for_status().json()
    assert jwt.decode(answer["id_token"], options={"verify_signature": False})["aud"] == STATIC_APP
    assert_unauthorized(plain, answer["id_token"], "an ID token is not an access token (it carries nonce")
    # Without a nonce nothing in the claims says "ID token"; the RFC 9068 typ the provider puts on access tokens does.
    bare = (await exchange_code(plain.provider, APP_CLIENT, Browser(user="alice"), plain.gateway.url)).json()
    assert "nonce" not in jwt.decode(bare["id_token"], options={"verify_signature": False})
    assert_unauthorized(plain, bare["id_token"], "token typ absent is not 'at+jwt'")
    # The access token of the same exchange passes every check: only its client is not bound here.
    assert_forbidden(plain, answer["access_token"], f"client {STATIC_APP!r}")


async def test_a_client_credentials_token_is_refused_as_naming_no_person(plain: Deployment) -> None:
    token = client_credentials_token(plain.provider, MACHINE_CLIENT, plain.gateway.url)
    claims = plain.provider.verify_access_token(token, plain.gateway.url)  # aud = /mcp, RFC 9068 typ: a real one
    assert claims["sub"] == claims["client_id"] == MACHINE_CLIENT.client_id
    assert_unauthorized(plain, token, f"token of client {MACHINE_CLIENT.client_id!r} names no person: its sub is "
                                      "the client id")


async def test_a_token_that_also_names_another_api_is_refused_when_single_audience_is_on(
    plain: Deployment, deployment: Deployment,
) -> None:
    token = await token_by_hand(plain.provider, TWO_APIS_CLIENT, Browser(user="alice"), plain.gateway.url)
    aud = jwt.decode(token, options={"verify_signature": False})["aud"]
    assert aud == [OTHER_API, plain.gateway.url]  # this resource is named: only single_audience refuses it
    assert_unauthorized(plain, token, "token names 2 audiences and single_audience of")
    # single_audience off (the default): the same kind of token verifies; only its client is not bound there.
    other = await token_by_hand(deployment.provider, TWO_APIS_CLIENT, Browser(user="alice"), deployment.gateway.url)
    assert_forbidden(deployment, other, f"client {TWO_APIS_CLIENT.client_id!r}")


async def test_reauthentication_without_auth_time_is_a_plain_deny_that_says_why_not_a_challenge_loop(
    plain: Deployment,
) -> None:
    oauth = sdk_oauth(plain.gateway.url, Browser(user="alice", acr="mfa"), registered=plain.client)
    async with signed_in(oauth, plain.gateway.url) as client:
        assert tool_text(await client.call_tool(f"{SERVER}__add", {"a": 2, "b": 3})) == "5"
        claims = plain.provider.verify_access_token(oauth.access_token, plain.gateway.url)
        assert not {"auth_time", "acr", "amr", "email", "groups"} & set(claims)
        with pytest.raises(MCPError) as denied:
            await client.call_tool(f"{SERVER}__echo", {"text": "refund 250"})
    assert "carries no auth_time the gateway can read" in str(denied.value)
    assert oauth.step_ups.seen == [] and len(oauth.authorization_urls) == 1  # no challenge, no second sign-in
    response = raw_call(plain, oauth.access_token, f"{SERVER}__echo", {"text": "refund 250"})
    assert response.status_code == 200 and "www-authenticate" not in response.headers
    assert "no auth_time" in response.text
    assert plain.gateway.logged("policies=echo-needs-recent-mfa")
