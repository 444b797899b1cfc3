"""A real, certified OpenID provider for the tests, a person who signs in to it, and the `mcp` SDK's OAuth client.

`OidcProvider` runs npm `oidc-provider` (tests/oidc_provider/server.mjs, pinned by its package-lock.json and
installed by tests/provision.py) on the conformance suite's Node 22 as a subprocess on a free loopback port;
`start()` returns once its discovery document answers. Its configuration (server.mjs): dynamic registration,
authorization code + PKCE S256 only, RFC 8707 resource indicators giving RS256 JWT access tokens whose `aud`
is the resource, with the person's email, groups, acr, amr and auth_time; max_age, prompt=login and
acr_values make a signed-in person authenticate again. `plain=True` (server.mjs --plain) leaves all of those
claims out of access tokens and adds no acr_values check, as stingy real providers do. Static clients: a machine
(client credentials), an app, and one whose access tokens name a second API (MACHINE_CLIENT, APP_CLIENT,
TWO_APIS_CLIENT). People: "alice" (group "support", verified email) and
"bob" (no group, unverified email); acr "pwd" or "mfa".

`Browser` is that person's browser: a cookie jar (their session at the provider) that follows an authorization
URL to the client's redirect URI, answering the provider's login and consent pages over plain HTTP (the
interaction routes of server.mjs), and records what each page asked.

`sdk_oauth()` builds the SDK's own `OAuthClientProvider` with that browser behind its redirect and callback
handlers, so `httpx2.AsyncClient(auth=...)` under `streamable_http_client` runs the whole MCP authorization
flow: 401 -> RFC 9728 metadata -> authorization server metadata -> dynamic registration -> authorization with
PKCE and `resource` -> token -> the retried request. The SDK (2.3) reacts to an RFC 9470
`insufficient_user_authentication` 401 by authorizing again but does not read its `acr_values`/`max_age`;
`StepUpChallenges` (an httpx response hook) records such challenges and the redirect handler adds them to the
next authorization request, as RFC 9470 section 4 asks of the client.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
import jwt
from mcp.client.auth import OAuthClientProvider, PKCEParameters
from mcp.client.auth.utils import extract_field_from_www_auth
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.provision import NODE_22, OIDC_PROVIDER_DIR, oidc_provider_ready
from tests.support.processes import free_port, stop, wait_ready

SERVER_SCRIPT = OIDC_PROVIDER_DIR / "server.mjs"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never dialled: the browser stops at it and hands the code over
MAX_HOPS = 12  # redirects and pages in one authorization; more is a loop


class OidcProviderError(RuntimeError):
    """The provider could not start, or an authorization did not end at the redirect URI."""


@dataclass
class OidcProvider:
    """npm `oidc-provider` as a subprocess: issuer http://127.0.0.1:<port>."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    plain: bool = False  # server.mjs --plain: access tokens without email, groups, acr, amr or auth_time

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "oidc-provider.log"

    def start(self, timeout_s: float = 30) -> OidcProvider:
        if not (NODE_22.is_file() and oidc_provider_ready()):
            raise OidcProviderError(f"{NODE_22} or {OIDC_PROVIDER_DIR}/node_modules is missing: run `make test` "
                                    "(tests/provision.py installs them)")
        self.port = self.port or free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([str(NODE_22), str(SERVER_SCRIPT), str(self.port),
                                             *(["--plain"] if self.plain else [])], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=OIDC_PROVIDER_DIR,
                                            env={**os.environ, "NODE_ENV": "test"})
        wait_ready(self.process, self._discovery_answers, "oidc-provider", self.log_text, timeout_s)
        return self

    def _discovery_answers(self) -> bool:
        try:
            return bool(self.discovery()["issuer"] == self.issuer)
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False

    def discovery(self) -> dict[str, Any]:
        url = f"{self.issuer}/.well-known/openid-configuration"
        with urllib.request.urlopen(url, timeout=2) as response:
            document: dict[str, Any] = json.load(response)
        return document

    def jwks(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.discovery()["jwks_uri"], timeout=2) as response:
            keys: dict[str, Any] = json.load(response)
        return keys

    def verify_access_token(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of an access token this provider signed for `audience` (RFC 9068: typ at+jwt), checked
        against its JWKS; raises on anything else."""
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            raise jwt.InvalidTokenError(f"not an RFC 9068 access token: typ {header.get('typ')!r}")
        key = next(k for k in self.jwks()["keys"] if k["kid"] == header["kid"])
        claims: dict[str, Any] = jwt.decode(token, jwt.PyJWK(key), algorithms=["RS256"], audience=audience,
                                            issuer=self.issuer)
        return claims

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    client_secret: str


# server.mjs's static clients (secret `<id>-secret`): a machine (client credentials only), an app, and an app whose
# access tokens name OTHER_API as well as the requested resource.
MACHINE_CLIENT, APP_CLIENT, TWO_APIS_CLIENT = (RegisteredClient(name, f"{name}-secret") for name in (
    "narrowgate-machine", "narrowgate-app", "narrowgate-two-apis"))
OTHER_API = "https://other-api.example/"


def client_credentials_token(provider: OidcProvider, client: RegisteredClient, resource: str) -> str:
    """An access token a client gets for itself (RFC 6749 4.4, RFC 8707 `resource`): no person signed in."""
    response = httpx2.post(provider.discovery()["token_endpoint"], data={
        "grant_type": "client_credentials", "resource": resource, "client_id": client.client_id,
        "client_secret": client.client_secret}, timeout=10)
    token: str = response.raise_for_status().json()["access_token"]
    return token


def register_client(provider: OidcProvider, redirect_uri: str = REDIRECT_URI) -> RegisteredClient:
    """RFC 7591 dynamic registration of a native client, as the SDK registers one."""
    response = httpx2.post(provider.discovery()["registration_endpoint"], json={
        "client_name": "narrowgate-tests-by-hand", "redirect_uris": [redirect_uri], "application_type": "native",
        "grant_types": ["authorization_code"], "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_post"}, timeout=10)
    if response.status_code != 201:
        raise OidcProviderError(f"registration refused: {response.status_code} {response.text[:500]}")
    return RegisteredClient(response.json()["client_id"], response.json()["client_secret"])


async def token_by_hand(provider: OidcProvider, client: RegisteredClient, browser: Browser, resource: str,
                        **extra: str) -> str:
    """An access token for `resource` by the code flow with PKCE, step by step (no SDK): what a client that asks
    for another resource gets. `extra` goes into the authorization request (e.g. max_age, acr_values)."""
    response = await exchange_code(provider, client, browser, resource, **extra)
    token: str = response.raise_for_status().json()["access_token"]
    return token


async def exchange_code(provider: OidcProvider, client: RegisteredClient, browser: Browser, resource: str,
                        verifier: str | None = None, **extra: str) -> httpx2.Response:
    """Authorize in `browser` with PKCE and exchange the code at the token endpoint (with `verifier` if given,
    else the right one); the token endpoint's answer."""
    pkce = PKCEParameters.generate()
    document = provider.discovery()
    params = {"response_type": "code", "client_id": client.client_id, "redirect_uri": browser.redirect_uri,
              "state": "state-1", "scope": "openid email groups", "resource": resource,
              "code_challenge": pkce.code_challenge, "code_challenge_method": "S256", **extra}
    result = await browser.authorize(f"{document['authorization_endpoint']}?{urlencode(params)}")
    if (result.state, result.iss) != ("state-1", provider.issuer):  # RFC 9207: the issuer answers
        raise OidcProviderError(f"authorization response from {result.iss!r} with state {result.state!r}")
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(document["token_endpoint"], data={
            "grant_type": "authorization_code", "code": result.code, "redirect_uri": browser.redirect_uri,
            "resource": resource, "client_id": client.client_id, "client_secret": client.client_secret,
            "code_verifier": verifier or pkce.code_verifier})


@contextmanager
def running_provider(workdir: Path) -> Iterator[OidcProvider]:
    """A started provider for the duration of a `with` block (a module-scoped fixture's body)."""
    provider = OidcProvider(workdir).start()
    try:
        yield provider
    finally:
        provider.stop()


@dataclass
class Browser:
    """A person's browser at the provider: who signs in (`user`, with `acr`), their session cookies there, and
    every login or consent page the provider showed (`pages`: {"prompt", "reasons", "params"})."""

    user: str = "alice"
    acr: str = "pwd"
    redirect_uri: str = REDIRECT_URI
    pages: list[dict[str, Any]] = field(default_factory=list)
    cookies: httpx2.Cookies = field(default_factory=httpx2.Cookies)

    async def authorize(self, url: str) -> AuthorizationCodeResult:
        """Follow an authorization URL to the redirect URI, signing in and consenting on the way."""
        async with httpx2.AsyncClient(cookies=self.cookies, follow_redirects=False, timeout=10) as http:
            try:
                return await self._follow(http, url)
            finally:
                self.cookies = http.cookies  # the session the provider set (or renewed) outlives this request

    async def _follow(self, http: httpx2.AsyncClient, url: str) -> AuthorizationCodeResult:
        response = await http.get(url)
        for _ in range(MAX_HOPS):
            location = self._next_location(response)
            if location.startswith(self.redirect_uri):
                return self._callback(location)
            if urlsplit(location).path.startswith("/interaction/"):
                response = await self._answer_page(http, location)
            else:
                response = await http.get(location)
        raise OidcProviderError(f"authorization did not reach {self.redirect_uri} in {MAX_HOPS} steps")

    @staticmethod
    def _next_location(response: httpx2.Response) -> str:
        if response.status_code not in (302, 303) or "location" not in response.headers:
            raise OidcProviderError(f"the provider answered {response.status_code}: {response.text[:500]}")
        return urljoin(str(response.url), response.headers["location"])

    async def _answer_page(self, http: httpx2.AsyncClient, page_url: str) -> httpx2.Response:
        page = (await http.get(page_url)).raise_for_status().json()
        self.pages.append(page)
        if page["prompt"] == "login":
            return await http.post(f"{page_url}/login", data={"user": self.user, "acr": self.acr})
        return await http.post(f"{page_url}/consent")

    @staticmethod
    def _callback(location: str) -> AuthorizationCodeResult:
        query = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
        if "code" not in query:
            raise OidcProviderError(f"authorization refused: {query.get('error')}: {query.get('error_description')}")
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


class MemoryTokenStorage:
    """The SDK's `TokenStorage`, in memory: what the client registered and the tokens it holds."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class StepUpChallenges:
    """RFC 9470 challenges the client received (`seen`), and the one its next authorization must answer."""

    seen: list[dict[str, str]] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)

    async def on_response(self, response: httpx2.Response) -> None:
        if response.status_code != 401:
            return
        if extract_field_from_www_auth(response, "error") != "insufficient_user_authentication":
            return
        challenge = {name: value for name in ("acr_values", "max_age")
                     if (value := extract_field_from_www_auth(response, name)) is not None}
        self.seen.append(challenge)
        self.pending = challenge

    def add_to(self, authorization_url: str) -> str:
        """The authorization URL with the pending challenge's parameters (once)."""
        challenge, self.pending = self.pending, {}
        return f"{authorization_url}&{urlencode(challenge)}" if challenge else authorization_url


@dataclass
class SdkOAuth:
    """The SDK's OAuth client for one MCP server URL, its storage and the browser behind it."""

    provider: OAuthClientProvider
    storage: MemoryTokenStorage
    browser: Browser
    step_ups: StepUpChallenges
    authorization_urls: list[str]

    def http_client(self) -> httpx2.AsyncClient:
        """An HTTP client for `streamable_http_client` that authorizes with the SDK's OAuth client."""
        return httpx2.AsyncClient(auth=self.provider, timeout=httpx2.Timeout(30, read=120),
                                  event_hooks={"response": [self.step_ups.on_response]})

    @property
    def access_token(self) -> str:
        assert self.storage.tokens is not None, "no token yet"
        return self.storage.tokens.access_token


def sdk_oauth(server_url: str, browser: Browser, *, registered: RegisteredClient | None = None,
              client_name: str = "narrowgate-tests") -> SdkOAuth:
    """The SDK's `OAuthClientProvider` for `server_url`, its redirect handler driving `browser`; with `registered`,
    the client it already registered at the provider (else it registers itself during the flow)."""
    storage = MemoryTokenStorage()
    step_ups = StepUpChallenges()
    codes: list[AuthorizationCodeResult] = []
    authorization_urls: list[str] = []

    async def redirect_handler(authorization_url: str) -> None:
        authorization_url = step_ups.add_to(authorization_url)
        authorization_urls.append(authorization_url)
        codes.append(await browser.authorize(authorization_url))

    async def callback_handler() -> AuthorizationCodeResult:
        return codes.pop()

    metadata = OAuthClientMetadata(client_name=client_name, redirect_uris=[browser.redirect_uri],  # type: ignore[list-item]
                                   grant_types=["authorization_code"], response_types=["code"],
                                   token_endpoint_auth_method="client_secret_post")
    if registered is not None:
        storage.client_info = OAuthClientInformationFull(client_id=registered.client_id,
                                                         client_secret=registered.client_secret,
                                                         **metadata.model_dump(exclude_none=True))
    provider = OAuthClientProvider(server_url, metadata, storage, redirect_handler=redirect_handler,
                                   callback_handler=callback_handler)
    return SdkOAuth(provider, storage, browser, step_ups, authorization_urls)
