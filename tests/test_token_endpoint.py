"""`POST /oauth/token` over real HTTP: RFC 8693 token exchange and RFC 7523 client credentials.

The endpoint runs in a real uvicorn server on a free loopback port (in the tests' event loop, so
the store, registry and verifier are used from the loop they belong to). Workload tokens come
from the real test OIDC provider and are checked by the real TokenVerifier. The gateway's signing
keyring is stood in for by `LocalSigner` from tests.test_tasks (an EC key generated in the test).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import uvicorn
from starlette.applications import Starlette

from gateway.identity.verifier import TokenVerifier
from gateway.oauth.metadata import authorization_server_metadata
from gateway.oauth.token_endpoint import TokenEndpoint, settings_for_audience
from gateway.registry.service import Registry
from gateway.settings.identity import identity_settings_from_mapping
from gateway.store import Store, open_store
from gateway.tasks.model import TaskEnded, TaskState
from gateway.tasks.service import TaskService
from gateway.tasks.tokens import TaskTokenIssuer, verify_task_token
from tests.support.identity_provider import TestIdentityProvider, TestTrustDomain, forge, free_port, generate_key
from tests.test_tasks import LocalSigner, add_agents, make_catalog

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
RESOURCE = f"{BASE}/mcp"
TOKEN_URL = f"{BASE}/oauth/token"


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: it runs inside pytest's loop, and pytest owns SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Gateway:
    idp: TestIdentityProvider
    registry: Registry
    tasks: TaskService
    signer: LocalSigner
    http: aiohttp.ClientSession
    store: Store

    async def post(self, form: dict[str, str], *, content_type: str | None = None) -> tuple[int, dict[str, Any],
                                                                                              aiohttp.ClientResponse]:
        kwargs: dict[str, Any] = {"data": form}
        if content_type is not None:
            kwargs = {"data": "&".join(f"{k}={v}" for k, v in form.items()), "headers": {"Content-Type": content_type}}
        async with self.http.post(TOKEN_URL, **kwargs) as response:
            return response.status, await response.json(content_type=None), response

    async def error(self, form: dict[str, str], error: str, status: int = 400, *fragments: str) -> str:
        code, body, response = await self.post(form)
        assert (code, body.get("error")) == (status, error), body
        assert response.headers["Cache-Control"] == "no-store"
        assert set(body) == {"error", "error_description"}
        for fragment in fragments:
            assert fragment in body["error_description"], body
        for secret in (form.get("subject_token"), form.get("client_assertion")):
            if secret and len(secret) > 20:
                assert secret.rpartition(".")[2] not in body["error_description"]
        return str(body["error_description"])

    def claims(self, token: str) -> dict[str, Any]:
        return verify_task_token(token, self.signer.public_keys(), BASE, RESOURCE)


@pytest.fixture
def idp() -> Iterator[TestIdentityProvider]:
    provider = TestIdentityProvider(RESOURCE, keys=[generate_key("ES256")])
    yield provider
    provider.close()


@pytest.fixture
async def gateway(tmp_path: Path, idp: TestIdentityProvider, caplog: pytest.LogCaptureFixture
                  ) -> AsyncIterator[Gateway]:
    caplog.set_level("DEBUG")
    store = open_store(f"sqlite:///{tmp_path}/gw.db")
    await store.migrate()
    registry = await Registry.open(store)
    await add_agents(registry, issuer=idp.issuer)
    tasks = TaskService(store, registry, make_catalog())
    await tasks.open()
    http = aiohttp.ClientSession()
    settings = identity_settings_from_mapping(
        {"oidc_issuers": [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri}], "clock_skew_s": 0,
         "spiffe_trust_domains": [{"trust_domain": "example.org", "bundle_file": str(
             TestTrustDomain("example.org", RESOURCE).write_bundle(tmp_path / "bundle.json"))}]},
        tmp_path, default_audience=RESOURCE,
    )
    verifier = TokenVerifier(settings, http)
    assertion_verifier = TokenVerifier(settings_for_audience(settings, TOKEN_URL), http)
    signer = LocalSigner()
    endpoint = TokenEndpoint(verifier, registry, tasks, TaskTokenIssuer(signer, BASE, RESOURCE, ttl_s=900),
                             resource=RESOURCE, token_url=TOKEN_URL, assertion_verifier=assertion_verifier)
    server = QuietServer(uvicorn.Config(Starlette(routes=endpoint.routes()), host="127.0.0.1", port=PORT,
                                        log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    yield Gateway(idp, registry, tasks, signer, http, store)
    server.should_exit = True
    await serving
    await http.close()
    await verifier.close()
    await assertion_verifier.close()
    await tasks.close()
    await store.close()
    # Secrets never reach the logs: no log line carries a JWT signature segment.
    for record in caplog.records:
        assert "eyJ" not in record.getMessage(), record.getMessage()


def exchange(subject_token: str, /, **overrides: str) -> dict[str, str]:
    form = {"grant_type": EXCHANGE, "subject_token": subject_token, "subject_token_type": JWT_TYPE,
            "scope": "gh__read_issue docs__search", "purpose": "triage issue 12", "deadline": "600"}
    form.update(overrides)
    return {k: v for k, v in form.items() if v != "<drop>"}


def client_credentials(assertion: str, /, **overrides: str) -> dict[str, str]:
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, "scope": "gh__comment", "purpose": "post the summary"}
    form.update(overrides)
    return {k: v for k, v in form.items() if v != "<drop>"}


# --- happy paths -------------------------------------------------------------------------------


async def test_token_exchange_issues_a_task_token(gateway: Gateway) -> None:
    form = exchange(gateway.idp.mint(sub="wl:bot-a"), budget="5", resource=RESOURCE)
    status, body, response = await gateway.post(form)
    assert status == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "gh__read_issue docs__search"
    assert 0 < body["expires_in"] <= 600
    claims = gateway.claims(body["access_token"])
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    assert claims["sub"] == "bot-a" and claims["task_id"] == body["task_id"]
    assert claims["scope"] == body["scope"] and claims["aud"] == RESOURCE and claims["iss"] == BASE
    task = gateway.tasks.check(body["task_id"])
    assert (task.agent_id, task.purpose, task.budget) == ("bot-a", "triage issue 12", 5)
    assert task.started_by == "token-exchange:wl:bot-a"
    assert claims["exp"] <= task.deadline


async def test_client_credentials_with_a_jwt_assertion_for_the_token_endpoint(gateway: Gateway) -> None:
    assertion = gateway.idp.mint(sub="wl:bot-a", aud=TOKEN_URL)
    status, body, _ = await gateway.post(client_credentials(assertion, client_id="bot-a", expires_in="120"))
    assert status == 200, body
    assert "issued_token_type" not in body
    assert body["scope"] == "gh__comment" and body["expires_in"] <= 120
    claims = gateway.claims(body["access_token"])
    assert (claims["sub"], claims["task_id"]) == ("bot-a", body["task_id"])
    assert gateway.tasks.check(body["task_id"]).started_by == "client-credentials:wl:bot-a"


async def test_client_assertion_may_name_the_gateway_resource_as_audience(gateway: Gateway) -> None:
    status, body, _ = await gateway.post(client_credentials(gateway.idp.mint(sub="wl:bot-a")))
    assert status == 200, body


async def test_trim_grants_the_entitled_part(gateway: Gateway) -> None:
    form = exchange(gateway.idp.mint(sub="wl:bot-a"), scope="gh__read_issue gh__delete_repo", trim="true")
    status, body, _ = await gateway.post(form)
    assert status == 200, body
    assert body["scope"] == "gh__read_issue"
    assert gateway.claims(body["access_token"])["scope"] == "gh__read_issue"


async def test_completed_task_refuses_further_use(gateway: Gateway) -> None:
    _, body, _ = await gateway.post(exchange(gateway.idp.mint(sub="wl:bot-a")))
    await gateway.tasks.complete(body["task_id"], "bot-a", "done")
    with pytest.raises(TaskEnded, match="completed"):
        gateway.tasks.check(body["task_id"])
    assert (await gateway.store.get_task(body["task_id"])).state is TaskState.COMPLETED  # type: ignore[union-attr]


def test_authorization_server_metadata() -> None:
    document = authorization_server_metadata(BASE + "/", assertion_algorithms=["ES256", "RS256"],
                                             scopes=["b", "a"])
    assert document["issuer"] == BASE
    assert document["token_endpoint"] == TOKEN_URL
    assert document["jwks_uri"] == f"{BASE}/.well-known/jwks.json"
    assert document["grant_types_supported"] == [EXCHANGE, "client_credentials"]
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert document["scopes_supported"] == ["a", "b"]
    assert "scopes_supported" not in authorization_server_metadata(BASE)


# --- bad subject tokens ------------------------------------------------------------------------


async def test_forged_subject_token_is_invalid_grant(gateway: Gateway) -> None:
    claims = gateway.idp.claims(sub="wl:bot-a")
    forged = forge({"alg": "ES256", "kid": gateway.idp.keys[0].kid}, claims, b"\x01" * 64)
    await gateway.error(exchange(forged), "invalid_grant", 400, "signature")
    stranger = generate_key("ES256", kid=gateway.idp.keys[0].kid)
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a", key=stranger)), "invalid_grant", 400, "signature")


async def test_expired_subject_token_is_invalid_grant(gateway: Gateway) -> None:
    import time

    token = gateway.idp.mint(sub="wl:bot-a", iat=int(time.time()) - 600, exp=int(time.time()) - 60)
    await gateway.error(exchange(token), "invalid_grant", 400, "expired")


async def test_garbage_subject_token_is_invalid_grant(gateway: Gateway) -> None:
    await gateway.error(exchange("not-a-token"), "invalid_grant", 400)


async def test_subject_token_for_another_audience_is_invalid_grant(gateway: Gateway) -> None:
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a", aud="https://elsewhere/mcp")),
                        "invalid_grant", 400, "audience")


async def test_foreign_issuer_is_invalid_grant(gateway: Gateway) -> None:
    foreign = TestIdentityProvider(RESOURCE, keys=[generate_key("ES256")])
    try:
        await gateway.error(exchange(foreign.mint(sub="wl:bot-a")), "invalid_grant", 400, "not trusted")
    finally:
        foreign.close()


async def test_foreign_spiffe_trust_domain_is_invalid_grant(gateway: Gateway) -> None:
    svid = TestTrustDomain("evil.example", RESOURCE).mint_svid()
    await gateway.error(exchange(svid), "invalid_grant", 400, "evil.example", "not trusted")


async def test_identity_bound_to_no_agent_is_invalid_grant(gateway: Gateway) -> None:
    await gateway.error(exchange(gateway.idp.mint(sub="wl:nobody")), "invalid_grant", 400, "no agent")


@pytest.mark.parametrize("verb", ["suspend", "retire"])
async def test_inactive_agent_is_invalid_grant(gateway: Gateway, verb: str) -> None:
    await getattr(gateway.registry, verb)("bot-a", "alice", "incident")
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a")), "invalid_grant", 400, "bot-a")


# --- bad client assertions (RFC 7523: invalid_client, 401) -------------------------------------


async def test_bad_client_assertions_are_invalid_client(gateway: Gateway) -> None:
    forged = forge({"alg": "ES256", "kid": gateway.idp.keys[0].kid}, gateway.idp.claims(sub="wl:bot-a"), b"x" * 64)
    await gateway.error(client_credentials(forged), "invalid_client", 401, "signature")
    await gateway.error(client_credentials(gateway.idp.mint(sub="wl:bot-a", aud="https://elsewhere")),
                        "invalid_client", 401, "audience")
    await gateway.error(client_credentials("<drop>"), "invalid_client", 401, "client_assertion")
    await gateway.error(client_credentials(gateway.idp.mint(sub="wl:bot-a"), client_assertion_type="basic"),
                        "invalid_client", 401, ASSERTION_TYPE)
    await gateway.error(client_credentials(gateway.idp.mint(sub="wl:nobody")), "invalid_client", 401, "no agent")
    await gateway.error(client_credentials(gateway.idp.mint(sub="wl:bot-a"), client_id="bot-b"),
                        "invalid_client", 401, "client_id")


# --- bad scope and task parameters -------------------------------------------------------------


async def test_tools_outside_the_entitlement_are_invalid_scope_naming_them(gateway: Gateway) -> None:
    description = await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a"),
                                               scope="gh__read_issue gh__delete_repo"), "invalid_scope", 400,
                                      "gh__delete_repo", "entitlement")
    assert "gh__read_issue" not in description
    assert await gateway.tasks.list() == []  # refused, not silently trimmed


async def test_unknown_tools_are_invalid_scope(gateway: Gateway) -> None:
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a"), scope="gh__read_issue nope__x"),
                        "invalid_scope", 400, "nope__x")
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a"), scope="<drop>"), "invalid_scope", 400,
                        "scope is required")
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a"), scope="gh__delete_repo", trim="true"),
                        "invalid_scope", 400, "none of the requested tools")


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"purpose": "<drop>"}, "purpose is required"),
    ({"purpose": "  "}, "purpose is required"),
    ({"deadline": "soon"}, "deadline"),
    ({"deadline": "-5"}, "deadline"),
    ({"expires_in": "60"}, "not both"),
    ({"budget": "0"}, "budget"),
    ({"budget": "1.5"}, "budget"),
    ({"trim": "maybe"}, "trim"),
    ({"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "subject_token_type"),
    ({"subject_token_type": "<drop>"}, "subject_token_type"),
    ({"subject_token": "<drop>"}, "subject_token"),
    ({"actor_token": "x", "actor_token_type": JWT_TYPE}, "actor_token"),
    ({"requested_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "requested_token_type"),
])
async def test_malformed_requests_are_invalid_request(gateway: Gateway, overrides: dict[str, str],
                                                      fragment: str) -> None:
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a"), **overrides), "invalid_request", 400, fragment)


async def test_another_resource_is_invalid_target(gateway: Gateway) -> None:
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a"), resource="https://elsewhere/mcp"),
                        "invalid_target", 400, RESOURCE)
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a"), audience="https://elsewhere/mcp"),
                        "invalid_target", 400)


async def test_grant_type_errors(gateway: Gateway) -> None:
    await gateway.error({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type",
                        400, "password")
    await gateway.error({"scope": "x"}, "invalid_request", 400, "grant_type is required")


async def test_body_must_be_a_form_without_repeats(gateway: Gateway) -> None:
    status, body, _ = await gateway.post({"grant_type": EXCHANGE}, content_type="application/json")
    assert (status, body["error"]) == (400, "invalid_request")
    async with gateway.http.post(TOKEN_URL, data="grant_type=a&grant_type=b",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
        assert response.status == 400
        assert "repeated" in (await response.json())["error_description"]
    async with gateway.http.post(TOKEN_URL, data="x=" + "a" * 70_000,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
        assert response.status == 400
    async with gateway.http.get(TOKEN_URL) as response:
        assert response.status == 405


async def test_a_task_whose_token_cannot_be_signed_is_revoked(gateway: Gateway,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(claims: dict[str, Any], typ: str) -> str:
        raise RuntimeError("keyring unavailable")

    monkeypatch.setattr(gateway.signer, "sign", broken)
    await gateway.error(exchange(gateway.idp.mint(sub="wl:bot-a")), "server_error", 500, "could not be signed")
    [task] = await gateway.tasks.list()
    assert task.state is TaskState.REVOKED  # no orphaned active task without a token
