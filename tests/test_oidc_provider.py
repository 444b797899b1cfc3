"""The test OpenID provider (npm `oidc-provider`, tests/support/oidc_provider.py) and the browser that signs in to it,
alone, without the gateway: what the people e2e tests (tests/test_people_e2e.py) rely on it to do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from mcp.client.auth import PKCEParameters

from tests.support.oidc_provider import (
    Browser,
    OidcProvider,
    OidcProviderError,
    RegisteredClient,
    exchange_code,
    register_client,
    running_provider,
    token_by_hand,
)

RESOURCE = "http://127.0.0.1:9/mcp"  # a resource indicator: the provider never calls it
OTHER_RESOURCE = "http://127.0.0.1:9/other/mcp"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with running_provider(tmp_path_factory.mktemp("oidc-provider")) as started:
        yield started


async def access_token(provider: OidcProvider, client: RegisteredClient, browser: Browser, resource: str = RESOURCE,
                       **extra: str) -> dict[str, Any]:
    """Authorize in `browser` and exchange the code: the verified claims of the access token for `resource`."""
    return provider.verify_access_token(await token_by_hand(provider, client, browser, resource, **extra),
                                        resource)


def test_discovery_describes_a_code_flow_provider_with_pkce_registration_and_step_up(provider: OidcProvider) -> None:
    document = provider.discovery()
    assert document["issuer"] == provider.issuer
    assert document["response_types_supported"] == ["code"]
    # client_credentials for the static narrowgate-machine client: a token without a person (the gateway refuses it)
    assert document["grant_types_supported"] == ["authorization_code", "client_credentials"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["registration_endpoint"] == f"{provider.issuer}/reg"
    assert document["authorization_response_iss_parameter_supported"] is True
    assert set(document["acr_values_supported"]) == {"pwd", "mfa"}
    assert {"email", "email_verified", "groups", "acr", "auth_time"} <= set(document["claims_supported"])
    assert [key["alg"] for key in provider.jwks()["keys"]] == ["RS256"]


async def test_a_code_flow_with_pkce_and_resource_gives_a_signed_jwt_for_that_resource(
    provider: OidcProvider,
) -> None:
    client = register_client(provider)
    browser = Browser(user="alice", acr="pwd")
    before = int(time.time())
    claims = await access_token(provider, client, browser)
    assert [page["prompt"] for page in browser.pages] == ["login", "consent"]
    assert claims["aud"] == RESOURCE
    assert claims["client_id"] == client.client_id
    assert {name: claims[name] for name in ("sub", "email", "email_verified", "groups", "acr", "amr")} == {
        "sub": "alice", "email": "alice@example.com", "email_verified": True, "groups": ["support"],
        "acr": "pwd", "amr": ["pwd"]}
    assert before <= claims["auth_time"] <= claims["iat"] < claims["exp"]

    other = await access_token(provider, client, browser, OTHER_RESOURCE)
    assert other["aud"] == OTHER_RESOURCE  # the audience is the resource asked for, and only that one
    with pytest.raises(jwt.InvalidAudienceError):
        provider.verify_access_token(await token_by_hand(provider, client, browser, OTHER_RESOURCE),
                                     RESOURCE)


async def test_a_person_without_groups_and_unverified_email_says_so_in_the_token(
    provider: OidcProvider,
) -> None:
    claims = await access_token(provider, register_client(provider), Browser(user="bob"))
    assert (claims["sub"], claims["groups"], claims["email_verified"]) == ("bob", [], False)


async def test_acr_values_and_max_age_make_the_person_authenticate_again(
    provider: OidcProvider,
) -> None:
    client = register_client(provider)
    browser = Browser(user="alice", acr="pwd")
    first = await access_token(provider, client, browser)
    again = await access_token(provider, client, browser)
    assert [page["prompt"] for page in browser.pages] == ["login", "consent", "consent"]  # the session answered
    assert (again["auth_time"], again["acr"]) == (first["auth_time"], "pwd")

    browser.acr = "mfa"
    stronger = await access_token(provider, client, browser, acr_values="mfa")
    assert "acr_values" in new_login_page(browser, 3)["reasons"]
    assert (stronger["acr"], stronger["amr"]) == ("mfa", ["pwd", "otp"])

    while int(time.time()) <= stronger["auth_time"]:  # auth_time counts whole seconds: let one pass to see it move
        time.sleep(0.05)
    pages = len(browser.pages)
    recent = await access_token(provider, client, browser, max_age="0")
    # OpenID Connect Core 3.1.2.1: max_age=0 is prompt=login, and the provider says it took it so
    assert new_login_page(browser, pages)["params"]["prompt"] == "login"
    assert recent["auth_time"] > stronger["auth_time"]
    assert recent["acr"] == "mfa"


def new_login_page(browser: Browser, seen: int) -> dict[str, Any]:
    """The login page among those the browser was shown after the first `seen` ones (there must be one)."""
    return next(page for page in browser.pages[seen:] if page["prompt"] == "login")


async def test_pkce_is_required_and_checked(provider: OidcProvider) -> None:
    client = register_client(provider)
    browser = Browser()
    with pytest.raises(OidcProviderError, match="invalid_request"):  # no code_challenge at all
        await exchange_code(provider, client, browser, RESOURCE, code_challenge="", code_challenge_method="")
    with pytest.raises(OidcProviderError, match="invalid_request"):
        await exchange_code(provider, client, browser, RESOURCE, code_challenge_method="plain")
    wrong = await exchange_code(provider, client, browser, RESOURCE,
                                verifier=PKCEParameters.generate().code_verifier)
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
