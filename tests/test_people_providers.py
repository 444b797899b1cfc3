"""People's tokens shaped like Okta's, Microsoft Entra ID's and Auth0's, through the per-provider settings of
`identity.authorization_servers[]`: `client_id_claims`, `audiences` and `claims` (docs/delegation.md).

A real `narrowgate serve`, real test identity providers (discovery + JWKS over HTTP, real signed tokens, one
per provider) and the real verifying upstream. The tokens carry the claims each vendor documents; the
gateway's answers and the Cedar decisions are what the process said on the wire.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from gateway.config import ConfigError, settings_from_mapping
from tests.support.identity_provider import TestIdentityProvider
from tests.support.processes import Gateway, cedar_copy, free_port, stop
from tests.test_people_e2e import STEP_UP_POLICY
from tests.test_people_gateway import MODERN, call_tool, challenge_of, open_session, refused, verifying_upstream

ALICE, BOB = "alice-0001", "bob-0002"
OKTA_CLIENT = "0oa1b2c3d4e5f6g7h8i9"  # Okta client ids look like this; access tokens carry it in `cid`
ENTRA_CLIENT = "5f0c7d1e-3b2a-4c8d-9e6f-1a2b3c4d5e6f"  # the MCP client's app registration (v2 `azp`, v1 `appid`)
ENTRA_API_URI = "api://narrowgate-gateway"  # the gateway API's Application ID URI
ENTRA_API_GUID = "b8a3f1e2-6c4d-4e5f-8a9b-0c1d2e3f4a5b"  # the gateway API's application (client) id
OTHER_API_GUID = "0d4e7a6b-2c1f-4a3e-9b8d-7e6f5a4b3c2d"  # another API of the same tenant
AUTH0_CLIENT = "https://client.example.com/oauth/client-metadata.json"
NS = "https://gw.example.com/"  # the namespace of Auth0 custom claims

# add needs finance (from the person's groups); echo needs mfa within 5 minutes (acr and auth_time)
POLICIES = {"70-providers": """
@id("add-needs-finance")
forbid (principal, action == Action::"vrf__add", resource)
unless { context.user.present && context.user.groups.contains("finance") };
""" + STEP_UP_POLICY}


@dataclass
class Providers:
    gateway: Gateway
    okta: TestIdentityProvider  # configured with client_id_claims: [cid]
    plain: TestIdentityProvider  # an Okta-like server configured with the defaults
    entra: TestIdentityProvider
    auth0: TestIdentityProvider

    def okta_token(self, idp: TestIdentityProvider, sub: str = ALICE, **claims: Any) -> str:
        """An Okta custom authorization server's access token: the client in `cid`, `uid` the user id."""
        return idp.mint(sub=sub, cid=OKTA_CLIENT, uid="00u1a2b3c4", scp=["openid"], ver=1, groups=["finance"],
                        **claims)

    def entra_v2(self, aud: str, **claims: Any) -> str:
        """An Entra ID v2.0 access token: `aud` a GUID or Application ID URI, the client in `azp`, no auth_time."""
        return self.entra.mint(sub="pairwise-sub-alice", aud=aud, azp=ENTRA_CLIENT, ver="2.0", scp="access_as_user",
                               tid="72f988bf-0000-0000-0000-000000000000", oid="1e2d3c4b-0000-0000-0000-0000000000aa",
                               groups=["finance"], **claims)

    def auth0_token(self, sub: str, **namespaced: Any) -> str:
        """An Auth0 access token: `azp` the client, the person's fields in namespaced claims set by an Action."""
        return self.auth0.mint(sub=sub, azp=AUTH0_CLIENT, scope="openid email",
                               **{f"{NS}{name}": value for name, value in namespaced.items()})


def client(agent_id: str, issuer: str, client_id: str, people: dict[str, list[str]]) -> dict[str, Any]:
    return {"id": agent_id, "owner": "devtools@example.com", "purpose": f"{agent_id} for people", "state": "active",
            "entitlement": {"servers": ["vrf"], "require_task": False},
            "identities": [{"kind": "client", "issuer": issuer, "subject": client_id, "people": people}]}


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Providers]:
    workdir = tmp_path_factory.mktemp("providers")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as running:
        idps = {name: TestIdentityProvider(f"{base}/mcp") for name in ("okta", "plain", "entra", "auth0")}
        for idp in idps.values():
            running.callback(idp.close)
        upstream, verifying_url = verifying_upstream(base, workdir / "verifying-upstream.jsonl")
        running.callback(stop, upstream)
        manifest = {"id": "vrf", "owner": "tools@example.com", "description": "verifies every per-call token",
                    "transport": {"url": verifying_url}, "timeout_s": 10,
                    "tools": [{"name": name, "risk": "read", "data_classes": ["internal"]} for name in ("echo", "add")]}
        gateway = Gateway(workdir, [manifest], tokens={}, port=port)
        agents = workdir / "provider-agents.yaml"
        finance = {"groups": ["finance"], "subjects": [BOB]}
        agents.write_text(yaml.safe_dump({"agents": [
            client("okta-client", idps["okta"].issuer, OKTA_CLIENT, finance),
            client("plain-client", idps["plain"].issuer, OKTA_CLIENT, finance),
            client("entra-client", idps["entra"].issuer, ENTRA_CLIENT, finance),
            client("auth0-client", idps["auth0"].issuer, AUTH0_CLIENT, finance),
        ]}))
        gateway.extra_config = {
            "identity": {"clock_skew_s": 5, "authorization_servers": [
                {"issuer": idps["okta"].issuer, "client_id_claims": ["cid"]},
                {"issuer": idps["plain"].issuer},
                {"issuer": idps["entra"].issuer, "client_id_claims": ["azp", "appid"],
                 "audiences": [ENTRA_API_URI, ENTRA_API_GUID]},
                {"issuer": idps["auth0"].issuer, "claims": {field: f"{NS}{field}" for field in (
                    "groups", "email", "email_verified", "acr", "amr", "auth_time")}},
            ]},
            "agents_file": str(agents),
            "policies": str(cedar_copy(workdir / "cedar", **POLICIES)),
        }
        running.callback(gateway.stop)
        gateway.start()
        yield Providers(gateway, idps["okta"], idps["plain"], idps["entra"], idps["auth0"])


def add(gw: Gateway, token: str) -> dict[str, Any]:
    response = call_tool(gw, token, MODERN, "vrf__add", {"a": 2, "b": 3})
    assert response.status_code == 200, response.text
    return dict(response.json())


def allowed(answer: dict[str, Any]) -> bool:
    if "result" in answer and not answer["result"].get("isError"):
        assert answer["result"]["content"][0]["text"] == "5", answer
        return True
    assert answer["error"]["message"].startswith("Access denied"), answer
    return False


# --- Okta: the client id in `cid` -----------------------------------------------------------------------


def test_okta_cid_names_the_client_only_where_configured(providers: Providers) -> None:
    gw = providers.gateway
    assert allowed(add(gw, providers.okta_token(providers.okta)))
    # The same token shape from a provider left at the defaults names no client: refused, saying where it looked.
    refused(gw, providers.okta_token(providers.plain), 401, "names no client", "none of client_id, azp",
            providers.plain.issuer)
    # Where cid is configured, it is the only place looked at: a client_id claim there is not read.
    only_client_id = providers.okta.mint(sub=ALICE, client_id=OKTA_CLIENT, groups=["finance"])
    refused(gw, only_client_id, 401, "none of cid")
    # A cid that is not a string is no client id either.
    refused(gw, providers.okta.mint(sub=ALICE, cid=["0oa1b2c3d4e5f6g7h8i9"], groups=["finance"]), 401, "none of cid")
    # A cid bound to no agent is the usual 403.
    unbound = providers.okta.mint(sub=ALICE, cid="0oaSomeoneElse", groups=["finance"])
    refused(gw, unbound, 403, "0oaSomeoneElse", "not registered as an agent")


# --- Entra ID: the API's Application ID URI or GUID as audience -------------------------------------------


def test_entra_tokens_for_the_configured_api_audiences_are_accepted(providers: Providers) -> None:
    gw = providers.gateway
    for audience in (ENTRA_API_URI, ENTRA_API_GUID):
        assert allowed(add(gw, providers.entra_v2(audience))), audience
    # A v1.0 token: the client in appid (the second of client_id_claims), the URI as audience.
    v1 = providers.entra.mint(sub="pairwise-sub-alice", aud=ENTRA_API_URI, appid=ENTRA_CLIENT, ver="1.0",
                              groups=["finance"], acr="1", amr=["pwd", "mfa"])
    assert allowed(add(gw, v1))


def test_entra_tokens_for_another_api_are_refused(providers: Providers) -> None:
    gw = providers.gateway
    reason = refused(gw, providers.entra_v2(OTHER_API_GUID), 401, "audience", OTHER_API_GUID, "another resource",
                     f"nor one of the audiences configured for {providers.entra.issuer}")
    assert gw.url in reason
    assert gw.logged(f"token refused: {reason}")
    # Microsoft Graph's audience, and a near miss of the Application ID URI, are other resources too.
    refused(gw, providers.entra_v2("00000003-0000-0000-c000-000000000000"), 401, "another resource")
    refused(gw, providers.entra_v2(f"{ENTRA_API_URI}/"), 401, "another resource")
    # The audiences belong to Entra's entry only: another provider's token for the same GUID is refused.
    refused(gw, providers.okta_token(providers.okta, aud=ENTRA_API_GUID), 401, "another resource")


# --- Auth0: namespaced claims mapped into context.user ----------------------------------------------------


def test_auth0_namespaced_claims_reach_context_user_and_cedar_decides_on_them(providers: Providers) -> None:
    gw, now = providers.gateway, int(time.time())
    # Groups from the namespaced claim both admit Alice through the client (people.groups) and pass the policy.
    alice = providers.auth0_token(ALICE, groups=["finance"], acr="mfa", amr=["pwd", "mfa"], auth_time=now - 10)
    assert allowed(add(gw, alice))
    echoed = call_tool(gw, alice, MODERN, "vrf__echo", {"text": "hi"})
    assert echoed.status_code == 200 and "result" in echoed.json(), echoed.text
    # The standard names are not read where a mapping is configured: Bob's plain `groups` is not his groups.
    bob = providers.auth0.mint(sub=BOB, azp=AUTH0_CLIENT, groups=["finance"], acr="mfa", auth_time=now)
    assert not allowed(add(gw, bob))
    assert_no_auth_time(call_tool(gw, bob, MODERN, "vrf__echo", {"text": "x"}))
    # A namespaced acr below the policy's gets the RFC 9470 challenge; a fresh mfa sign-in passes.
    pwd = providers.auth0_token(BOB, acr="pwd", auth_time=now - 10)
    challenge = challenge_of(call_tool(gw, pwd, MODERN, "vrf__echo", {"text": "x"}))
    assert 'acr_values="mfa"' in challenge and "max_age=300" in challenge, challenge
    mfa = providers.auth0_token(BOB, acr="mfa", auth_time=now - 10)
    assert call_tool(gw, mfa, MODERN, "vrf__echo", {"text": "x"}).status_code == 200


def test_a_claim_of_the_wrong_type_is_ignored_and_logged(providers: Providers) -> None:
    gw, now = providers.gateway, int(time.time())
    # Groups as a list holding a non-string: no groups at all (Bob is admitted by subject, then denied).
    odd_groups = providers.auth0_token(BOB, groups=["finance", 7], acr="mfa", auth_time=now)
    assert not allowed(add(gw, odd_groups))
    assert gw.logged(f"{providers.auth0.issuer}: access-token claim '{NS}groups' (the person's groups) is list, "
                     "not a list of strings: ignored")
    # auth_time as a string: unknown, so no re-authentication policy can be met, however fresh the sign-in: a plain
    # deny that says so, not a challenge the client would answer in vain.
    odd_time = providers.auth0_token(BOB, acr="mfa", auth_time=str(now))
    assert_no_auth_time(call_tool(gw, odd_time, MODERN, "vrf__echo", {"text": "x"}))
    assert gw.logged(f"claim '{NS}auth_time' (the person's auth_time) is str, not a number (epoch seconds): ignored")
    # A string "true" is not a verified email: Carol's example.com address admits nobody (no grant by email).
    carol = providers.auth0_token("carol-0003", email="carol@example.com", email_verified="true")
    refused(gw, carol, 403, "carol-0003", "not in any of its allowed groups")
    assert gw.logged(f"claim '{NS}email_verified' (the person's email_verified) is str, not a boolean: ignored")
    # A well-typed token of the same person is still admitted: only the bad claim was dropped.
    assert open_session(gw, providers.auth0_token(BOB, groups=["finance"])).status_code == 200


def assert_no_auth_time(response: httpx2.Response) -> None:
    """Denied, not challenged: without a readable auth_time a new sign-in cannot meet a max_age."""
    assert response.status_code == 200 and "www-authenticate" not in response.headers, response.text
    assert "carries no auth_time the gateway can read" in response.json()["error"]["message"], response.text


# --- configuration ------------------------------------------------------------------------------------------


def test_provider_settings_are_validated(tmp_path: Path) -> None:
    issuer = "https://login.example.com"
    base = {"listen": "127.0.0.1:8080"}

    def servers(**entry: Any) -> dict[str, Any]:
        return {**base, "identity": {"authorization_servers": [{"issuer": issuer, **entry}]}}

    default = settings_from_mapping(servers(), tmp_path).identity.authorization_servers[0]
    assert default.client_id_claims == ("client_id", "azp") and default.audiences == ()
    assert default.claims.groups == "groups" and default.claims.auth_time == "auth_time"
    assert (default.require_typ, default.single_audience) == ("", False)
    strict = settings_from_mapping(servers(require_typ="application/at+jwt", single_audience=True), tmp_path)
    assert (strict.identity.authorization_servers[0].require_typ, strict.identity.authorization_servers[0]
            .single_audience) == ("at+jwt", True)
    legacy = settings_from_mapping(servers(groups_claim="roles"), tmp_path).identity.authorization_servers[0]
    assert legacy.claims.groups == legacy.groups_claim == "roles"
    same = settings_from_mapping(servers(groups_claim="roles", claims={"groups": "roles"}), tmp_path)
    assert same.identity.authorization_servers[0].groups_claim == "roles"
    refusals = [
        (servers(audiences=["*"]), "not an exact audience"),
        (servers(audiences=["api://gw*"]), "not an exact audience"),
        (servers(audiences=[""]), "non-empty strings"),
        (servers(audiences="api://gw"), "must be a list"),
        (servers(audiences=["http://127.0.0.1:8080/oauth/delegate"]), "delegation audience"),
        (servers(client_id_claims=[]), "at least one claim"),
        (servers(claims={"group": "roles"}), "unknown key"),
        (servers(claims={"acr": ""}), "claims.acr must be a non-empty claim name"),
        (servers(claims=["groups"]), "must be a mapping"),
        (servers(claims=[]), "must be a mapping"),
        (servers(groups_claim="roles", claims={"groups": "teams"}), "name different claims"),
        (servers(require_typ="at+jwt; x=1"), "require_typ must be a JWT typ"),
        (servers(require_typ=True), "require_typ must be a JWT typ"),
        (servers(single_audience="yes"), "single_audience must be true or false"),
    ]
    for config, fragment in refusals:
        with pytest.raises(ConfigError, match=fragment):
            settings_from_mapping(config, tmp_path)
