"""People's MCP clients through an external authorization server, and RFC 9470 step-up by re-authentication,
end to end: a real `narrowgate serve`, the real test identity provider (discovery + JWKS over HTTP, real
signed access tokens), the real `mcp` SDK client, a real verifying upstream (gateway.verifier) and the demo
payments upstream. Nothing is mocked: every answer below is what the gateway process said on the wire.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from gateway.config import ConfigError, settings_from_mapping
from gateway.verifier import bearer_token
from tests.support.clients import ERAS, mcp_client
from tests.support.identity_provider import TestIdentityProvider, generate_key
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, REPO, Gateway, cedar_copy, free_port, start_listening, stop
from tests.test_cluster_sessions import Stream, answer, get_stream, wait_for

CLIENT_ID = "https://client.example.com/oauth/client-metadata.json"  # a Client ID Metadata Document URL
AGENT = "inspector-client"
CHAIN_CLIENT = "https://chain.example.com/client.json"  # a person's own client, used by the chain test alone
CHAIN_AGENT = "chain-client"
BOT_CLIENT = "https://bot.example.com/client.json"  # one process acting for many people (shared: true)
BOT_AGENT = "team-bot"
MAILER = "mailer"  # a workload (OIDC token from People.workloads) whose claims are principal tags
ALICE = "alice-0001"  # in group finance
BOB = "bob-0002"  # admitted by his verified email domain, in no group
MALLORY = "mallory-0003"  # no entitlement: no group, unverified email
CAROL = "carol-0004"  # admitted by her verified email domain; reads sensitive data in the chain test
DAVE = "dave-0005"  # admitted by his verified email domain; the same client right after Carol
LISTENER = "lisa-0006"  # listens for resource updates through listener-client until her admission is withdrawn
LATE = "larry-0007"  # listens through listener-client with an access token past its exp (within the clock skew)
EGRESS = "vrf__received"  # an egress tool (the catalog's egress flag)
ACCEPT = "application/json, text/event-stream"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
WORKLOAD_TOKEN = "token-workload"  # a development static token: a workload, no person
PAYMENTS_SERVER = REPO / "examples" / "demo_upstreams" / "payments_server.py"
RESOURCE_SERVER = REPO / "tests" / "fixtures" / "upstreams" / "resource_server.py"
PUBLIC = "file:///data/public/a.txt"  # a resource of the files upstream
VERIFYING_SERVER = REPO / "examples" / "verifying_upstream" / "server.py"
REFUND = "pay__refund_payment"
TRANSFER = "pay__transfer_funds"
BIG_PAYMENT = "P-5003"  # 2,500 EUR in the demo ledger
DOCS_POLICIES = REPO / "docs" / "policies.md"

POLICIES = {
    "70-people": """
// Only people in finance may add (a policy that reads context.user).
@id("add-needs-finance")
forbid (principal, action == Action::"vrf__add", resource)
unless { context.user.present && context.user.groups.contains("finance") };

// The shipped example: refunds over 100 need acr = mfa within the last 5 minutes (RFC 9470).
@id("refunds-over-100-need-recent-mfa")
@step_up("reauth")
@acr_values("mfa")
@max_age("300")
@reason("refunds over 100 need a multi-factor sign-in within the last 5 minutes")
forbid (principal, action == Action::"pay__refund_payment", resource)
when { context.input has amount && context.input.amount.greaterThan(decimal("100.0")) }
unless { context.user.acr == "mfa" && context.request.time - context.user.auth_time <= 300 };

// Refunds over 1000 need a person's approval as well: re-authentication first, then the approval.
@id("refunds-over-1000-need-approval")
@step_up("pending")
@reason("refunds over 1000 need an approval")
forbid (principal, action == Action::"pay__refund_payment", resource)
when { context.input has amount && context.input.amount.greaterThan(decimal("1000.0")) }
unless { context.approval.granted };

// Every transfer needs a sign-in within the last 10 minutes, whatever the method (max_age only).
@id("transfers-need-a-recent-sign-in")
@step_up("reauth")
@max_age("10m")
forbid (principal, action == Action::"pay__transfer_funds", resource)
unless { context.request.time - context.user.auth_time <= 600 };

// A person's token claims are no principal tags: an unverified email must not pass for a checked one.
@id("claims-are-no-view-of-the-person")
forbid (principal, action == Action::"vrf__echo", resource)
when { context.input has text && context.input.text == "trust my token's claims?" }
unless { principal.claims.hasTag("email") && principal.claims.getTag("email") like "*@example.com" };

// Chain signals read per person (context.chain) and per client agent (context.chain.agent).
@id("echo-probe-after-my-sensitive-read")
forbid (principal, action == Action::"vrf__echo", resource)
when { context.input has text && context.input.text == "after my sensitive read?" && context.chain.sensitive_read };

@id("echo-probe-after-the-clients-sensitive-read")
forbid (principal, action == Action::"vrf__echo", resource)
when { context.input has text && context.input.text == "after the client's sensitive read?" &&
       context.chain.agent.sensitive_read };
""",
}


@dataclass
class People:
    gateway: Gateway
    idp: TestIdentityProvider
    record: Path  # the verifying upstream's record of every call
    verifying_url: str
    spans: OtlpReceiver  # the gateway's traces
    workloads: TestIdentityProvider  # an OIDC issuer of workload tokens (agent MAILER)

    def token(self, sub: str, *, groups: list[str] | None = None, acr: str | None = None,
              auth_age_s: int = 3600, client_id: str = CLIENT_ID, **claims: Any) -> str:
        """A person's access token for this gateway's /mcp, as the provider issues it to `client_id`."""
        now = int(time.time())
        return self.idp.mint(sub=sub, client_id=client_id, groups=groups or [], acr=acr, amr=["pwd"],
                             auth_time=now - auth_age_s, **claims)

    def records(self) -> list[dict[str, Any]]:
        text = self.record.read_text() if self.record.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def audit(self) -> list[dict[str, Any]]:
        config = self.gateway.workdir / "gateway.yaml"
        out = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(config)], capture_output=True,
                             text=True, timeout=60, cwd=self.gateway.workdir)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def client_agent(issuer: str) -> dict[str, Any]:
    """The agent record of the client application, as an operator declares it in the agents file."""
    return {
        "id": AGENT, "owner": "devtools@example.com", "purpose": "people's MCP Inspector", "state": "active",
        "entitlement": {"servers": ["vrf", "pay"], "require_task": False},
        "identities": [{"kind": "client", "issuer": issuer, "subject": CLIENT_ID,
                        "people": {"groups": ["finance"], "email_domains": ["example.com"]}}],
    }


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[People]:
    workdir = tmp_path_factory.mktemp("people")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    record = workdir / "verifying-upstream.jsonl"
    with contextlib.ExitStack() as running:  # stopped in reverse order, whatever fails on the way
        spans = running.enter_context(OtlpReceiver())
        idp = TestIdentityProvider(f"{base}/mcp", keys=[generate_key("RS256")])
        running.callback(idp.close)
        workloads = TestIdentityProvider(f"{base}/mcp", keys=[generate_key("RS256")])  # a workload OIDC issuer
        running.callback(workloads.close)
        upstream, verifying_url = verifying_upstream(base, record)
        running.callback(stop, upstream)
        payments, payments_port = start_listening([sys.executable, str(PAYMENTS_SERVER), "--port", "0"])
        running.callback(stop, payments)
        gateway = people_gateway(workdir, port, idp.issuer, verifying_url, payments_port, spans, workloads.issuer)
        running.callback(gateway.stop)
        gateway.start()
        yield People(gateway, idp, record, verifying_url, spans, workloads)


def verifying_upstream(gateway_base: str, record: Path) -> tuple[subprocess.Popen[bytes], str]:
    """examples/verifying_upstream on a port fixed in advance (its audience is its own URL); its /mcp URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    process, _ = start_listening([sys.executable, str(VERIFYING_SERVER), "--port", str(port),
                                  "--jwks-url", f"{gateway_base}/.well-known/jwks.json", "--audience", url,
                                  "--issuer", gateway_base, "--record", str(record)])
    return process, url


def people_gateway(workdir: Path, port: int, issuer: str, verifying_url: str, payments_port: int,
                   spans: OtlpReceiver, workload_issuer: str) -> Gateway:
    """The gateway (not started): the provider as external authorization server, the client's agent, a workload."""
    manifests = [
        {"id": "vrf", "owner": "tools@example.com", "description": "verifies every per-call token",
         "transport": {"url": verifying_url}, "timeout_s": 10,
         "tools": [*({"name": name, "risk": "read", "data_classes": ["internal"]} for name in ("echo", "add")),
                   {"name": "received", "risk": "read", "data_classes": ["internal"], "egress": True}]},
        {"id": "pay", "owner": "payments@example.com", "description": "demo payments",
         "transport": {"url": f"http://127.0.0.1:{payments_port}/mcp"}, "timeout_s": 10,
         # read: keeps the shipped after-hours step-up out of these tests
         "tools": [{"name": name, "risk": "read", "data_classes": ["financial"]}
                   for name in ("refund_payment", "transfer_funds")]},
        files_manifest(),
    ]
    gateway = Gateway(workdir, manifests, tokens={"workload": WORKLOAD_TOKEN}, port=port,
                      env={"OTEL_EXPORTER_OTLP_ENDPOINT": spans.endpoint,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "100",
                           "OTEL_SERVICE_NAME": "narrowgate-people"})
    agents = workdir / "people-agents.yaml"
    agents.write_text(yaml.safe_dump({"agents": [
        client_agent(issuer),
        {**client_agent(issuer), "id": CHAIN_AGENT, "purpose": "people's own client, in the chain test",
         "identities": [{"kind": "client", "issuer": issuer, "subject": CHAIN_CLIENT,
                         "people": {"email_domains": ["example.com"]}}]},
        {**client_agent(issuer), "id": BOT_AGENT, "purpose": "a team bot: one process acting for many people",
         "identities": [{"kind": "client", "issuer": issuer, "subject": BOT_CLIENT, "shared": True,
                         "people": {"email_domains": ["example.com"]}}]},
        {"id": "workload", "owner": "ops@example.com", "purpose": "a workload with a static token",
         "state": "active", "entitlement": {"servers": ["vrf", "pay", "files"], "require_task": False},
         "identities": [{"kind": "static", "issuer": "narrowgate", "subject": "workload"}]},
        {"id": MAILER, "owner": "ops@example.com", "purpose": "a workload whose OIDC token carries an email",
         "state": "active", "entitlement": {"servers": ["vrf"], "require_task": False},
         "identities": [{"kind": "oidc", "issuer": workload_issuer, "subject": MAILER}]},
        {"id": "listener", "owner": "devtools@example.com", "purpose": "a client whose people listen for updates",
         "state": "active", "entitlement": {"servers": ["files"], "require_task": False},
         "identities": [{"kind": "client", "issuer": issuer, "subject": "listener-client",
                         "people": {"subjects": [LISTENER, LATE]}}]},
    ]}))
    gateway.extra_config = {
        "identity": {"clock_skew_s": 5, "authorization_servers": [{"issuer": issuer}],
                     "oidc_issuers": [{"issuer": workload_issuer}],
                     "scopes_supported": ["openid", "email"]},
        "agents_file": str(agents),
        "policies": str(cedar_copy(workdir / "cedar", **POLICIES)),
        "approvals": {"admins_may_approve": True},
    }
    return gateway


def files_manifest() -> dict[str, Any]:
    """A stdio resource upstream following `ops.jsonl` in the catalog directory (its cwd): a test appends
    {"op": "update", "uri": ...} there to make it announce a resource update."""
    return {"id": "files", "owner": "files-owner@example.com", "description": "resource updates",
            "transport": {"command": "${PYTHON}", "args": [str(RESOURCE_SERVER), "--name", "files",
                                                           "--template", "file:///data/{+path}",
                                                           "--control-file", "ops.jsonl"]},
            "timeout_s": 10, "tools": [{"name": "read_file", "risk": "read", "data_classes": ["internal"]}]}


# --- raw HTTP helpers ------------------------------------------------------------------------------


def headers(token: str, **extra: str) -> dict[str, str]:
    return {"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {token}", **extra}


def open_session(gw: Gateway, token: str) -> httpx2.Response:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "people", "version": "0"}}}
    return httpx2.post(gw.url, json=init, headers=headers(token))


def call_tool(gw: Gateway, token: str, era: str, name: str, arguments: dict[str, Any]) -> httpx2.Response:
    """tools/call over raw HTTP in either era (a 2025-11-25 session opened first)."""
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if era == MODERN:
        params["_meta"] = {PROTOCOL_VERSION_META_KEY: MODERN, CLIENT_CAPABILITIES_META_KEY: {},
                           CLIENT_INFO_META_KEY: {"name": "people", "version": "0"}}
        extra = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": name}
    else:
        opened = open_session(gw, token)
        assert opened.status_code == 200, opened.text
        extra = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": LEGACY}
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    return httpx2.post(gw.url, json=body, headers=headers(token, **extra))


def listed_tools(gw: Gateway, token: str) -> set[str]:
    params = {"_meta": {PROTOCOL_VERSION_META_KEY: MODERN, CLIENT_CAPABILITIES_META_KEY: {},
                        CLIENT_INFO_META_KEY: {"name": "people", "version": "0"}}}
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": params}
    response = httpx2.post(gw.url, json=body, headers=headers(token, **{"MCP-Protocol-Version": MODERN,
                                                                         "Mcp-Method": "tools/list"}))
    assert response.status_code == 200, response.text
    return {tool["name"] for tool in response.json()["result"]["tools"]}


def assert_no_token(gw: Gateway, token: str, response: httpx2.Response) -> None:
    signature = token.rpartition(".")[2]
    for text in (response.text, " ".join(response.headers.values()), gw.log_text()):
        assert token not in text and signature not in text


def refused(gw: Gateway, token: str, status: int, *fragments: str) -> str:
    response = open_session(gw, token)
    assert response.status_code == status, response.text
    assert_no_token(gw, token, response)
    reason = str(response.json()["error_description"])
    for fragment in fragments:
        assert fragment in reason, reason
    return reason


def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def challenge_of(response: httpx2.Response) -> str:
    assert response.status_code == 401, response.text
    return response.headers["www-authenticate"]


# --- the protected resource names the external authorization server --------------------------------


def test_resource_metadata_names_the_external_authorization_server_and_the_gateway(people: People) -> None:
    gw = people.gateway
    document = httpx2.get(f"{gw.base}/.well-known/oauth-protected-resource").json()
    assert document["resource"] == gw.url
    assert document["authorization_servers"] == [people.idp.issuer, gw.base]
    assert document["scopes_supported"] == ["email", "openid"]
    # The 401 for no token points there, as for workloads.
    response = httpx2.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                           headers={"Accept": ACCEPT, "Content-Type": "application/json"})
    assert challenge_of(response) == f'Bearer resource_metadata="{gw.base}/.well-known/oauth-protected-resource"'


# --- accepted: the person through the client ------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_a_person_calls_through_the_client_and_the_upstream_token_names_person_and_agent(
    people: People, mode: str
) -> None:
    text = f"hello from alice over {mode}"
    async with mcp_client(people.gateway.url, people.token(ALICE, groups=["finance"]), mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"vrf__echo", "vrf__add", REFUND} <= names
        result = await client.call_tool("vrf__echo", {"text": text})
    assert not result.is_error, result
    entries = [e for e in people.records() if (e["arguments"] or {}).get("text") == text]
    assert len(entries) == 1 and entries[0]["outcome"] == "accepted", entries
    claims = entries[0]["claims"]  # verified at the upstream by gateway.verifier
    assert claims["sub"] == ALICE
    assert claims["sub_iss"] == people.idp.issuer
    assert claims["act"] == {"sub": AGENT, "client_id": CLIENT_ID}
    assert claims["aud"] == people.verifying_url
    # The person's own access token never reached the upstream.
    assert bearer_token(entries[0]["authorization"]).count(".") == 2
    assert entries[0]["authorization"] != f"Bearer {people.token(ALICE)}"


async def test_context_user_is_seen_by_a_real_cedar_policy(people: People) -> None:
    gw = people.gateway
    async with mcp_client(gw.url, people.token(ALICE, groups=["finance"]), ERAS[1]) as client:
        result = await client.call_tool("vrf__add", {"a": 2, "b": 3})
    assert not result.is_error and result.content[0].text == "5", result
    # Bob is let through the client (verified email domain) but is not in finance: the policy denies.
    bob = people.token(BOB, email="bob@example.com", email_verified=True)
    async with mcp_client(gw.url, bob, ERAS[1]) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "vrf__add" not in names and "vrf__echo" in names
        with pytest.raises(MCPError, match="Access denied"):
            await client.call_tool("vrf__add", {"a": 2, "b": 3})
    # A workload (no person): context.user.present is false.
    response = call_tool(gw, WORKLOAD_TOKEN, MODERN, "vrf__add", {"a": 1, "b": 1})
    assert response.json()["error"]["message"].startswith("Access denied"), response.text


def test_audit_records_name_the_agent_and_the_person(people: People) -> None:
    token = people.token(BOB, email="bob@example.com", email_verified=True)
    response = call_tool(people.gateway, token, MODERN, "vrf__add", {"a": 40, "b": 2})
    decision_id = response.json()["error"]["data"]["decisionId"]
    (record,) = [r for r in people.audit() if r.get("decision_id") == decision_id]
    assert record["agent_id"] == AGENT and record["decision"] == "deny"
    assert record["detail"]["user"] == BOB
    assert record["detail"]["user_issuer"] == people.idp.issuer
    assert "bob@example.com" not in json.dumps(record)  # never the email (nor the token)
    assert token.rpartition(".")[2] not in json.dumps(record)
    # The call's span names both as well.
    def traced(spans: list[ReceivedSpan]) -> bool:
        return any(s.attributes.get("narrowgate.decision.id") == decision_id for s in spans)
    (span,) = [s for s in people.spans.wait_for_spans(traced, timeout_s=20)
               if s.attributes.get("narrowgate.decision.id") == decision_id]
    assert span.attributes["narrowgate.agent.id"] == AGENT
    assert span.attributes["narrowgate.user.sub"] == BOB
    assert span.attributes["narrowgate.user.issuer"] == people.idp.issuer
    assert "bob@example.com" not in repr(span.attributes)


# --- refused ---------------------------------------------------------------------------------------


def test_a_token_for_another_resource_is_refused_and_the_reason_logged_without_the_token(people: People) -> None:
    other = "https://api.example.com/other-mcp"
    token = people.token(ALICE, groups=["finance"], aud=other)
    reason = refused(people.gateway, token, 401, "audience", other, "another resource")
    assert people.gateway.url in reason
    wait_until(lambda: f"token refused: {reason}" in people.gateway.log_text())  # logs are written off the loop
    assert_no_token(people.gateway, token, open_session(people.gateway, token))
    # An ID token (audience: the client) is no access token for this gateway either.
    refused(people.gateway, people.token(ALICE, groups=["finance"], aud=CLIENT_ID), 401, "audience")
    # The gateway's base URL (the workload audience) is not the resource either.
    refused(people.gateway, people.token(ALICE, groups=["finance"], aud=people.gateway.base), 401, "audience")
    # The same checks as for workload tokens: expiry (with the configured skew) and the provider's own keys.
    expired = people.token(ALICE, groups=["finance"], exp=int(time.time()) - 60)
    refused(people.gateway, expired, 401, "expired")
    stranger_key = generate_key("RS256", kid=people.idp.keys[0].kid)
    forged = people.idp.mint(sub=ALICE, client_id=CLIENT_ID, groups=["finance"], key=stranger_key)
    refused(people.gateway, forged, 401, "signature")


def test_a_client_id_not_registered_as_an_agent_is_403(people: People) -> None:
    stranger = "https://stranger.example.net/client.json"
    token = people.idp.mint(sub=ALICE, client_id=stranger, groups=["finance"])
    refused(people.gateway, token, 403, stranger, "not registered as an agent")
    # azp names the client when client_id is absent.
    refused(people.gateway, people.idp.mint(sub=ALICE, azp=stranger, groups=["finance"]), 403, stranger)
    # A token naming no client at all is no person's client token.
    refused(people.gateway, people.idp.mint(sub=ALICE, groups=["finance"]), 401, "names no client")


def test_a_person_without_an_entitlement_through_the_client_is_403(people: People) -> None:
    gw = people.gateway
    reason = refused(gw, people.token(MALLORY, groups=["sales"]), 403, MALLORY, CLIENT_ID, AGENT)
    assert "not in any of its allowed groups" in reason
    # An email in the allowed domain counts only when the provider says it is verified.
    refused(gw, people.token(MALLORY, email="mallory@example.com", email_verified=False), 403, MALLORY)
    assert open_session(gw, people.token(MALLORY, email="mallory@example.com", email_verified=True)).status_code == 200


# --- RFC 9470: step-up by re-authentication --------------------------------------------------------


@pytest.mark.parametrize("era", [LEGACY, MODERN])
def test_refund_over_100_is_challenged_then_a_fresh_mfa_token_passes(people: People, era: str) -> None:
    gw = people.gateway
    old = people.token(ALICE, groups=["finance"], acr="pwd", auth_age_s=3600)
    response = call_tool(gw, old, era, REFUND, {"payment_id": BIG_PAYMENT, "amount": 150})
    challenge = challenge_of(response)
    assert challenge.startswith('Bearer error="insufficient_user_authentication"'), challenge
    assert 'acr_values="mfa"' in challenge and "max_age=300" in challenge
    assert "multi-factor sign-in within the last 5 minutes" in challenge
    assert f'resource_metadata="{gw.base}/.well-known/oauth-protected-resource"' in challenge
    assert response.json()["error"]["data"]["decision"] == "step_up"
    # Small refunds need nothing more.
    small = call_tool(gw, old, era, REFUND, {"payment_id": BIG_PAYMENT, "amount": 5})
    assert small.status_code == 200 and "result" in small.json(), small.text
    # The retried call with a fresh token (recent auth_time, the asked acr) passes...
    fresh = people.token(ALICE, groups=["finance"], acr="mfa", auth_age_s=10)
    passed = call_tool(gw, fresh, era, REFUND, {"payment_id": BIG_PAYMENT, "amount": 150})
    assert passed.status_code == 200, passed.text
    assert passed.json()["result"]["structuredContent"]["refund"] == 150.0
    # ...and the old token keeps being challenged.
    assert "insufficient_user_authentication" in challenge_of(
        call_tool(gw, old, era, REFUND, {"payment_id": BIG_PAYMENT, "amount": 150}))
    # MFA long ago, or a recent sign-in without MFA, is not enough either.
    for stale in (people.token(ALICE, groups=["finance"], acr="mfa", auth_age_s=900),
                  people.token(ALICE, groups=["finance"], acr="pwd", auth_age_s=10)):
        challenge_of(call_tool(gw, stale, era, REFUND, {"payment_id": BIG_PAYMENT, "amount": 150}))


async def test_the_sdk_client_sees_the_challenge_and_passes_after_reauthentication(people: People) -> None:
    gw = people.gateway
    old = people.token(ALICE, groups=["finance"], acr="pwd")
    async with mcp_client(gw.url, old, ERAS[1]) as client:
        with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the 401 as its own error
            await client.call_tool(REFUND, {"payment_id": BIG_PAYMENT, "amount": 120})
    fresh = people.token(ALICE, groups=["finance"], acr="mfa", auth_age_s=5)
    async with mcp_client(gw.url, fresh, ERAS[1]) as client:
        result = await client.call_tool(REFUND, {"payment_id": BIG_PAYMENT, "amount": 120})
    assert not result.is_error, result


def test_a_workload_can_never_satisfy_reauthentication(people: People) -> None:
    response = call_tool(people.gateway, WORKLOAD_TOKEN, MODERN, REFUND, {"payment_id": BIG_PAYMENT, "amount": 150})
    error = response.json()["error"]
    assert error["message"].startswith("Access denied") and "acts for no person" in error["message"], error
    assert error["data"]["decision"] == "deny"
    assert "www-authenticate" not in response.headers
    # Nor is a tool that always needs a recent sign-in listed for it, while a person sees it (signing in helps).
    assert TRANSFER not in listed_tools(people.gateway, WORKLOAD_TOKEN)
    assert TRANSFER in listed_tools(people.gateway, people.token(ALICE, groups=["finance"], auth_age_s=3600))


def test_max_age_alone_asks_for_a_recent_sign_in_whatever_the_method(people: People) -> None:
    gw, arguments = people.gateway, {"from_account": "acct-payroll", "to_account": "acct-ops", "amount": 1}
    challenge = challenge_of(call_tool(gw, people.token(ALICE, groups=["finance"], acr="mfa"), MODERN, TRANSFER,
                                       arguments))
    assert "max_age=600" in challenge and "acr_values" not in challenge, challenge
    passed = call_tool(gw, people.token(ALICE, groups=["finance"], auth_age_s=30), MODERN, TRANSFER, arguments)
    assert passed.status_code == 200 and "result" in passed.json(), passed.text


def test_reauthentication_first_then_the_approval_flow(people: People) -> None:
    gw = people.gateway
    old = people.token(ALICE, groups=["finance"], acr="pwd")
    challenge_of(call_tool(gw, old, MODERN, REFUND, {"payment_id": BIG_PAYMENT, "amount": 1500}))
    fresh = people.token(ALICE, groups=["finance"], acr="mfa", auth_age_s=5)
    response = call_tool(gw, fresh, MODERN, REFUND, {"payment_id": BIG_PAYMENT, "amount": 1500})
    assert response.status_code == 200, response.text
    text = json.dumps(response.json())
    assert "Approval id" in text, text  # the approval flow as today: a person decides, then the agent retries


def test_the_reauth_step_up_is_audited_with_its_reason(people: People) -> None:
    old = people.token(ALICE, groups=["finance"], acr="pwd")
    response = call_tool(people.gateway, old, MODERN, REFUND, {"payment_id": BIG_PAYMENT, "amount": 130})
    decision_id = response.json()["error"]["data"]["decisionId"]
    (record,) = [r for r in people.audit() if r.get("decision_id") == decision_id]
    assert record["decision"] == "step_up" and record["policy_ids"] == ["refunds-over-100-need-recent-mfa"]
    detail = record["detail"]
    assert detail["step_up"] == "reauth" and detail["acr_values"] == "mfa" and detail["max_age"] == 300
    assert "multi-factor" in detail["reason"]
    assert detail["user"] == ALICE and record["agent_id"] == AGENT


# --- configuration, policies and bindings refused with a reason --------------------------------------


def test_identity_settings_for_external_authorization_servers(tmp_path: Path) -> None:
    issuer = "https://login.example.com"
    base = {"listen": "127.0.0.1:8080", "identity": {"authorization_servers": [{"issuer": issuer}]}}
    settings = settings_from_mapping(base, tmp_path).identity
    assert settings.resource == "http://127.0.0.1:8080/mcp"  # people's tokens must name /mcp
    assert settings.authorization_servers[0].groups_claim == "groups"
    assert settings.advertised_issuers("http://gw") == [issuer, "http://gw"]
    only = {**base, "identity": {**base["identity"], "advertise_authorization_servers": "external"}}
    assert settings_from_mapping(only, tmp_path).identity.advertised_issuers("http://gw") == [issuer]
    refused = [
        ({"advertise_authorization_servers": "some"}, "advertise_authorization_servers"),
        ({"oidc_issuers": [{"issuer": issuer}]}, "configured twice"),  # one issuer, one meaning
        ({"authorization_servers": [{"issuer": "http://login.example.com"}]}, "https"),
        ({"authorization_servers": [{"issuer": issuer, "algorithms": ["HS256"]}]}, "HS256"),
        ({"authorization_servers": [{"issuer": issuer, "groups_claim": ""}]}, "groups_claim"),
        ({"authorization_servers": [{"issuer": issuer, "audience": "x"}]}, "unknown key"),
    ]
    for change, fragment in refused:
        with pytest.raises(ConfigError, match=fragment):
            settings_from_mapping({**base, "identity": {**base["identity"], **change}}, tmp_path)


def test_policy_validate_refuses_misused_reauth_annotations(tmp_path: Path) -> None:
    bad = """\
@id("reauth-asks-nothing")
@step_up("reauth")
forbid (principal, action, resource) when { context.user.acr == "none" };

@id("acr-without-reauth")
@step_up
@acr_values("mfa")
forbid (principal, action, resource) when { context.user.acr == "none" };

@id("max-age-unreadable")
@step_up("reauth")
@max_age("soon")
forbid (principal, action, resource) when { context.user.acr == "none" };

@id("reauth-on-methods")
@step_up("reauth")
@acr_values("mfa")
forbid (principal, action, resource) unless { context.user.amr.contains("mfa") };
"""
    cedar = cedar_copy(tmp_path / "cedar", **{"70-bad": bad})
    config = Gateway(tmp_path, [], extra_config={"policies": str(cedar)}).write_config()
    done = subprocess.run([str(NARROWGATE), "policy", "validate", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done
    where = cedar / "policies" / "70-bad.cedar"
    assert f'{where}:1: @step_up("reauth") needs @acr_values and/or @max_age' in done.stdout, done.stdout
    assert f'{where}:5: @acr_values only applies to a policy with @step_up("reauth")' in done.stdout
    assert f"{where}:10: @max_age must be seconds or a duration" in done.stdout
    assert f'{where}:15: a @step_up("reauth") policy cannot read context.user.amr' in done.stdout, done.stdout


def test_the_admin_api_binds_a_client_and_requires_who_may_act_through_it(people: People) -> None:
    agents = f"{people.gateway.base}/admin/v1/agents"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client = {"kind": "client", "issuer": people.idp.issuer, "subject": "vscode-client"}
    body = {"id": "vscode", "owner": "devtools@example.com", "purpose": "VS Code for people", "state": "active",
            "entitlement": {"servers": ["vrf"], "require_task": False}, "identities": [client]}
    missing = httpx2.post(agents, json=body, headers=auth)
    assert missing.status_code == 400 and "who may act through it" in missing.text, missing.text
    empty = httpx2.post(agents, json={**body, "identities": [{**client, "people": {}}]}, headers=auth)
    assert empty.status_code == 400 and "at least one group, subject or email domain" in empty.text, empty.text
    misplaced = {"kind": "oidc", "issuer": people.idp.issuer, "subject": "w", "people": {"groups": ["x"]}}
    wrong = httpx2.post(agents, json={**body, "identities": [misplaced]}, headers=auth)
    assert wrong.status_code == 400 and "only to an identity of kind client" in wrong.text, wrong.text
    shared_workload = {"kind": "oidc", "issuer": people.idp.issuer, "subject": "w", "shared": True}
    wrong = httpx2.post(agents, json={**body, "identities": [shared_workload]}, headers=auth)
    assert wrong.status_code == 400 and "shared applies only to an identity of kind client" in wrong.text, wrong.text
    not_a_flag = httpx2.post(agents, json={**body, "identities": [{**client, "shared": "yes",
                                                                   "people": {"groups": ["x"]}}]}, headers=auth)
    assert not_a_flag.status_code == 400 and "must be true or false" in not_a_flag.text, not_a_flag.text
    bound = {**client, "people": {"subjects": [MALLORY], "email_domains": ["@Example.ORG"]}}
    created = httpx2.post(agents, json={**body, "identities": [bound]}, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["identities"][0]["people"] == {"groups": [], "subjects": [MALLORY],
                                                        "email_domains": ["example.org"]}
    # Bound at once: Mallory, named by subject, may act through this client (and not through the other one).
    token = people.idp.mint(sub=MALLORY, client_id="vscode-client")
    assert open_session(people.gateway, token).status_code == 200
    refused(people.gateway, people.idp.mint(sub=BOB, client_id="vscode-client"), 403, BOB, "vscode")


def test_policy_test_cases_can_name_the_person_and_their_sign_in(tmp_path: Path) -> None:
    """The docs' reauth example, decided offline by `narrowgate policy test` with `user:` in the cases."""
    section = DOCS_POLICIES.read_text().split("## Step-up by re-authentication (RFC 9470)")[1]
    policy = section.split("```cedar\n")[1].split("```")[0]
    cases = yaml.safe_load(section.split("```yaml\n")[1].split("```")[0])["cases"]
    cedar = cedar_copy(tmp_path / "cedar", **{"70-reauth": policy})
    for shipped in (cedar / "tests").glob("*.yaml"):  # their catalogs lack the refund tool the policy names
        shipped.unlink()
    (cedar / "tests" / "reauth.yaml").write_text(yaml.safe_dump({
        "catalog": [{"id": "payments", "owner": "payments@example.com",
                     "tools": [{"name": "refund_payment", "risk": "write", "data_classes": ["financial"]}]}],
        "schemas": {"payments__refund_payment": {"type": "object", "required": ["payment_id", "amount"],
                                                 "properties": {"payment_id": {"type": "string"},
                                                                "amount": {"type": "number"}}}},
        "agents": {"payer": {"entitled_servers": ["payments"]}},
        "cases": cases,
    }))
    config = Gateway(tmp_path, [], extra_config={"policies": str(cedar)}).write_config()
    done = subprocess.run([str(NARROWGATE), "policy", "test", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for case in cases:
        assert case["name"] in done.stdout
    # The same cases with the expectations swapped fail: the person's sign-in really decides.
    wrong = [{**case, "expect": "allow" if case["expect"] != "allow" else "deny"} for case in cases]
    (cedar / "tests" / "reauth.yaml").write_text(yaml.safe_dump({**yaml.safe_load(
        (cedar / "tests" / "reauth.yaml").read_text()), "cases": wrong}))
    failed = subprocess.run([str(NARROWGATE), "policy", "test", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert failed.returncode != 0
    assert f"{len(cases)} failed" in failed.stdout + failed.stderr, failed.stdout + failed.stderr


def test_a_persons_client_token_never_opens_the_admin_api(people: People) -> None:
    """An access token issued to a client for /mcp is not an admin credential, whatever roles it claims."""
    agents = f"{people.gateway.base}/admin/v1/agents"
    stranger = people.idp.mint(sub=ALICE, client_id="unbound-client", roles=["narrowgate-admin"])
    response = httpx2.get(agents, headers={"Authorization": f"Bearer {stranger}"})
    assert response.status_code == 403 and "cannot use the admin API" in response.text, response.text
    bound = people.token(ALICE, groups=["finance"], roles=["narrowgate-admin"])
    assert httpx2.get(agents, headers={"Authorization": f"Bearer {bound}"}).status_code == 403


def test_a_persons_client_token_cannot_be_exchanged_for_a_task_token(people: People) -> None:
    """A task token for the client's agent would carry no person: refused, admitted person or not."""
    for token in (people.token(ALICE, groups=["finance"]), people.token(MALLORY)):
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": token,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "scope": "vrf__echo",
                "purpose": "launder the person out"}
        response = httpx2.post(f"{people.gateway.base}/oauth/token", data=form)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant"
        assert "cannot be exchanged" in response.json()["error_description"]


def test_an_approval_binds_the_person_not_only_the_client(people: People) -> None:
    """Alice's approved refund cannot be spent by Bob calling the same tool with the same arguments."""
    gw, arguments = people.gateway, {"payment_id": BIG_PAYMENT, "amount": 1234}
    alice = people.token(ALICE, groups=["finance"], acr="mfa", auth_age_s=5)
    bob = people.token(BOB, email="bob@example.com", email_verified=True, acr="mfa", auth_age_s=5)
    first = call_tool(gw, alice, MODERN, REFUND, arguments).json()
    approval_id = first["result"]["_meta"]["narrowgate/approval"]["id"]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    shown = httpx2.get(f"{gw.base}/admin/v1/approvals/{approval_id}", headers=admin).json()
    assert shown["user"] == f"{people.idp.issuer} {ALICE}" and shown["agent_id"] == AGENT
    decided = httpx2.post(f"{gw.base}/admin/v1/approvals/{approval_id}/approve", json={"comment": "ok"}, headers=admin)
    assert decided.status_code == 200, decided.text
    # Bob, through the same client, with the same call: a request of his own, not Alice's approval.
    other = call_tool(gw, bob, MODERN, REFUND, arguments).json()
    assert other["result"]["_meta"]["narrowgate/approval"]["id"] != approval_id, other
    # Alice's identical retry uses her approval and runs.
    done = call_tool(gw, alice, MODERN, REFUND, arguments).json()
    assert done["result"]["structuredContent"]["refund"] == 1234.0, done


def test_the_cli_binds_a_client_with_who_may_act_through_it(people: People) -> None:
    gw = people.gateway

    def agents(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(NARROWGATE), "agents", "--gateway", gw.base, "--admin-token", ADMIN_TOKEN, *args],
                              capture_output=True, text=True, timeout=60, cwd=gw.workdir)

    base = ("add", "cursor", "--owner", "devtools@example.com", "--purpose", "Cursor for people", "--activate",
            "--server", "vrf", "--no-require-task", "--client", people.idp.issuer, "cursor-client")
    refused_add = agents(*base)
    assert refused_add.returncode != 0 and "at least one group, subject or email domain" in refused_add.stderr
    added = agents(*base, "--person-subject", MALLORY, "--person-email-domain", "example.org")
    assert added.returncode == 0, added.stdout + added.stderr
    shown = httpx2.get(f"{gw.base}/admin/v1/agents/cursor", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert shown["identities"] == [{"kind": "client", "issuer": people.idp.issuer, "subject": "cursor-client",
                                    "claims": {}, "people": {"groups": [], "subjects": [MALLORY],
                                                             "email_domains": ["example.org"]}}]
    assert open_session(gw, people.idp.mint(sub=MALLORY, client_id="cursor-client")).status_code == 200
    bot = agents("add", "slackbot", "--owner", "devtools@example.com", "--purpose", "a team bot", "--activate",
                 "--server", "vrf", "--no-require-task", "--client", people.idp.issuer, "slack-bot-client",
                 "--person-email-domain", "example.com", "--shared-client")
    assert bot.returncode == 0, bot.stdout + bot.stderr
    shown = httpx2.get(f"{gw.base}/admin/v1/agents/slackbot", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert shown["identities"][0]["shared"] is True, shown


# --- chain monitoring: each person's own signals ----------------------------------------------------


def test_chain_signals_and_detections_are_each_persons_own(people: People) -> None:
    """Carol's sensitive read through the client neither colours Dave's context.chain nor makes his egress call
    look like exfiltration; her own egress call is held and detected, and the detection names her."""
    gw = people.gateway
    carol = people.token(CAROL, email="carol@example.com", email_verified=True, client_id=CHAIN_CLIENT)
    dave = people.token(DAVE, email="dave@example.com", email_verified=True, client_id=CHAIN_CLIENT)

    def echo(token: str, text: str) -> dict[str, Any]:
        return dict(call_tool(gw, token, MODERN, "vrf__echo", {"text": text}).json())

    # Dave is known before Carol reads: a person with no record yet may be the reader (held like the client).
    assert "result" in echo(dave, "hello before the read")
    read = call_tool(gw, carol, MODERN, REFUND, {"payment_id": BIG_PAYMENT, "amount": 1})  # financial: sensitive
    assert "result" in read.json() and not read.json()["result"].get("isError"), read.text

    assert "result" in echo(dave, "after my sensitive read?")  # Dave's own record: nothing sensitive read
    assert echo(carol, "after my sensitive read?")["error"]["message"].startswith("Access denied")
    # context.chain.agent stays the client agent's, across everyone using it.
    assert echo(dave, "after the client's sensitive read?")["error"]["message"].startswith("Access denied")
    # Dave's egress call passes (no approval asked: the shipped no-egress-after-sensitive-read sees his record).
    dave_egress = call_tool(gw, dave, MODERN, EGRESS, {}).json()
    assert "result" in dave_egress and "narrowgate/approval" not in dave_egress["result"].get("_meta", {}), dave_egress
    carol_egress = call_tool(gw, carol, MODERN, EGRESS, {}).json()
    assert "result" in carol_egress, carol_egress
    assert "narrowgate/approval" in carol_egress["result"]["_meta"], carol_egress  # held: she read sensitive data
    detections = [r for r in people.audit() if r["kind"] == "monitoring" and r["action"] == "sensitive_then_egress"]
    assert [(r["agent_id"], r["task_id"], r["detail"]["user"], r["detail"]["user_issuer"]) for r in detections
            if r["agent_id"] == CHAIN_AGENT] == [(CHAIN_AGENT, None, CAROL, people.idp.issuer)], detections
    # Erin starts using the client after Carol's read: with no record of her own, she may be the reader, so her
    # first egress call is held too (never "nothing sensitive" for a person the gateway knows nothing of).
    erin = people.token("erin-0008", email="erin@example.com", email_verified=True, client_id=CHAIN_CLIENT)
    erin_egress = call_tool(gw, erin, MODERN, EGRESS, {}).json()
    assert "narrowgate/approval" in erin_egress["result"]["_meta"], erin_egress


def test_a_shared_client_holds_one_persons_egress_after_anothers_sensitive_read(people: People) -> None:
    """A team bot (binding `shared: true`) is one process acting for everyone: what it read for Carol is in the
    process that answers Dave, so Dave's egress call through it is held and detected (the client's signals)."""
    gw = people.gateway
    carol = people.token(CAROL, email="carol@example.com", email_verified=True, client_id=BOT_CLIENT)
    dave = people.token(DAVE, email="dave@example.com", email_verified=True, client_id=BOT_CLIENT)
    assert "result" in call_tool(gw, dave, MODERN, "vrf__echo", {"text": "hello, bot"}).json()  # Dave is known
    read = call_tool(gw, carol, MODERN, REFUND, {"payment_id": BIG_PAYMENT, "amount": 1}).json()
    assert "result" in read and not read["result"].get("isError"), read
    held = call_tool(gw, dave, MODERN, EGRESS, {}).json()
    assert "narrowgate/approval" in held["result"]["_meta"], held
    detections = [r for r in people.audit() if r["kind"] == "monitoring" and r["action"] == "sensitive_then_egress"
                  and r["agent_id"] == BOT_AGENT]
    assert [(r["task_id"], r["detail"]["user"]) for r in detections] == [(None, DAVE)], detections
    shown = httpx2.get(f"{gw.base}/admin/v1/agents/{BOT_AGENT}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert shown.json()["identities"][0]["shared"] is True, shown.text


def test_a_persons_token_claims_are_not_principal_tags(people: People) -> None:
    """principal.claims would expose the person's unverified email (and every other string claim) to policies;
    context.user is the one checked view of the person, so a person's principal carries no claim tags."""
    gw = people.gateway
    unverified = people.token(ALICE, groups=["finance"], email="alice@example.com", email_verified=False,
                              preferred_username="alice@example.com", upn="alice@example.com")
    response = call_tool(gw, unverified, MODERN, "vrf__echo", {"text": "trust my token's claims?"}).json()
    assert response["error"]["message"].startswith("Access denied"), response
    assert response["error"]["data"]["decision"] == "deny"
    # The same policy allows a workload whose token carries such a claim: a workload's claims are its tags.
    workload = people.workloads.mint(sub=MAILER, email="mailer@example.com")
    allowed = call_tool(gw, workload, MODERN, "vrf__echo", {"text": "trust my token's claims?"}).json()
    assert "result" in allowed and not allowed["result"].get("isError"), allowed
    elsewhere = people.workloads.mint(sub=MAILER, email="mailer@example.org")  # and it is the claim that decides
    assert call_tool(gw, elsewhere, MODERN, "vrf__echo", {"text": "trust my token's claims?"}).json()["error"][
        "data"]["decision"] == "deny"


def test_a_person_whose_sub_equals_an_agent_id_is_told_apart_at_the_upstream(people: People) -> None:
    """sub_iss is in every upstream token: the gateway's issuer for an agent id, the provider for a person."""
    gw = people.gateway
    namesake = people.token("workload", email="w@example.com", email_verified=True)  # sub = an agent's id
    person_text, agent_text = "from the person named workload", "from the agent workload"
    assert "result" in call_tool(gw, namesake, MODERN, "vrf__echo", {"text": person_text}).json()
    assert "result" in call_tool(gw, WORKLOAD_TOKEN, MODERN, "vrf__echo", {"text": agent_text}).json()
    entries = {e["arguments"]["text"]: e for e in people.records()
               if e["tool"] == "echo" and e["arguments"].get("text") in (person_text, agent_text)}
    person, agent = entries[person_text], entries[agent_text]
    assert person["claims"]["sub"] == agent["claims"]["sub"] == "workload"
    assert person["caller"] == [people.idp.issuer, "workload", True]
    assert agent["caller"] == [gw.base, "workload", False]
    assert agent["claims"]["sub_iss"] == agent["claims"]["iss"] == gw.base


def test_an_auth_time_in_the_future_is_unknown_and_never_meets_max_age(people: People) -> None:
    """auth_time after the token's iat would satisfy `now - auth_time <= 300` for the token's whole life."""
    gw = people.gateway
    future = people.token(ALICE, groups=["finance"], acr="mfa", auth_age_s=-3600)  # "signs in" in an hour
    response = call_tool(gw, future, MODERN, REFUND, {"payment_id": BIG_PAYMENT, "amount": 160})
    assert "carries no auth_time the gateway can read" in response.json()["error"]["message"], response.text
    wait_until(lambda: "auth_time is 3600 s after the token was issued" in gw.log_text())
    # Within the clock skew of iat it is a sign-in like any other.
    skewed = people.token(ALICE, groups=["finance"], acr="mfa", auth_age_s=-2)
    passed = call_tool(gw, skewed, MODERN, REFUND, {"payment_id": BIG_PAYMENT, "amount": 160})
    assert passed.status_code == 200 and "result" in passed.json(), passed.text


def test_a_provider_that_never_sends_auth_time_is_a_configuration_warning_once(people: People) -> None:
    gw, arguments = people.gateway, {"from_account": "acct-payroll", "to_account": "acct-ops", "amount": 1}
    warning = f"needs auth_time, but {people.idp.issuer} sent an access token without a usable one"
    for _ in range(2):  # no auth_time: max_age can never be met (a deny, with the reason)
        token = people.idp.mint(sub=ALICE, client_id=CLIENT_ID, groups=["finance"], acr="mfa")
        denied = call_tool(gw, token, MODERN, TRANSFER, arguments)
        assert "carries no auth_time" in denied.json()["error"]["message"], denied.text
    # A later request's log line, once written, shows every earlier one is written too (logs go out in order).
    marker = "https://marker.example/after-the-warning"
    open_session(gw, people.token(ALICE, groups=["finance"], aud=marker))
    wait_until(lambda: marker in gw.log_text())
    assert gw.log_text().count(warning) == 1



def test_email_domains_match_in_ascii_only(people: People) -> None:
    """str.lower() folds U+212A KELVIN SIGN to "k": a@\u212a\u212a.example must not pass for kk.example."""
    agents = f"{people.gateway.base}/admin/v1/agents"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client = {"kind": "client", "issuer": people.idp.issuer, "subject": "kelvin-client"}
    body = {"id": "kelvin", "owner": "devtools@example.com", "purpose": "email domains in ASCII",
            "state": "active", "entitlement": {"servers": ["vrf"], "require_task": False}}
    non_ascii = {**body, "identities": [{**client, "people": {"email_domains": ["\u212a\u212a.example"]}}]}
    refused_binding = httpx2.post(agents, json=non_ascii, headers=auth)
    assert refused_binding.status_code == 400 and "A-label" in refused_binding.text, refused_binding.text
    ascii_binding = {**body, "identities": [{**client, "people": {"email_domains": ["KK.example"]}}]}
    created = httpx2.post(agents, json=ascii_binding, headers=auth)
    assert created.status_code == 201, created.text

    def person(email: str) -> str:
        return people.idp.mint(sub=f"kelvin-{len(email)}", client_id="kelvin-client", email=email, email_verified=True)

    refused(people.gateway, person("a@\u212a\u212a.example"), 403, "kelvin")
    refused(people.gateway, person("a@\u212ak.EXAMPLE"), 403)
    assert open_session(people.gateway, person("a@Kk.Example")).status_code == 200


async def test_resource_updates_stop_once_the_person_may_no_longer_act(people: People) -> None:
    """A held session keeps the principal that opened it: past the person's token exp, or once the client's
    binding no longer admits them, updates stop (re-checked at each delivery), while others keep hearing them."""
    gw = people.gateway
    lisa = people.idp.mint(sub=LISTENER, client_id="listener-client")
    larry = people.idp.mint(sub=LATE, client_id="listener-client", exp=int(time.time()) - 1)  # within the skew

    def announce() -> None:
        with (gw.workdir / "catalog" / "ops.jsonl").open("a", encoding="utf-8") as ops:
            ops.write(json.dumps({"op": "update", "uri": PUBLIC}) + "\n")

    def updates(stream: Stream) -> int:
        return sum(1 for m in stream.messages() if m.get("method") == "notifications/resources/updated")

    async with httpx2.AsyncClient(timeout=30) as http:
        held = [await subscribed(http, gw, token) for token in (larry, lisa, WORKLOAD_TOKEN)]
        async with get_stream(http, gw.url, held[0]) as late, get_stream(http, gw.url, held[1]) as listener, \
                get_stream(http, gw.url, held[2]) as control:
            announce()
            await wait_for(lambda: updates(control) == 1 and updates(listener) == 1, "the first update")
            patched = await http.patch(
                f"{gw.base}/admin/v1/agents/listener", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                json={"identities": [{"kind": "client", "issuer": people.idp.issuer, "subject": "listener-client",
                                      "people": {"subjects": [LATE]}}]})
            assert patched.status_code == 200, patched.text
            announce()
            await wait_for(lambda: updates(control) == 2, "the second update")
            assert late.status == listener.status == 200
            assert updates(late) == 0  # never: its token's exp had passed
            assert updates(listener) == 1  # Lisa is no longer admitted through listener-client


async def subscribed(http: httpx2.AsyncClient, gw: Gateway, token: str) -> dict[str, str]:
    """A 2025-11-25 session subscribed to PUBLIC: the headers of its requests."""
    opened = open_session(gw, token)
    assert opened.status_code == 200, opened.text
    session = {"Authorization": f"Bearer {token}", "Mcp-Session-Id": opened.headers["mcp-session-id"],
               "MCP-Protocol-Version": LEGACY, "Accept": ACCEPT, "Content-Type": "application/json"}
    reply = await answer(http, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe",
                                        "params": {"uri": PUBLIC}}, session)
    assert reply.get("result") == {}, reply
    return session
