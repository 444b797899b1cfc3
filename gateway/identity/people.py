"""People's MCP clients: access tokens from an external authorization server (any OpenID provider).

A person signs in at the provider through an MCP client (authorization code + PKCE, RFC 8707
`resource` = this gateway's `/mcp`); the client presents the resulting JWT access token. It is verified
exactly like a workload's OIDC token (same keys cache, pinned algorithms, exp/nbf/iat with the clock
skew) by `OidcIssuerVerifier`, with one difference that matters: its audience must be this gateway's
resource. A token the provider issued for another resource (another API, another MCP server) or an ID
token (audience: the client) is refused, and the log says for which audience it was issued.

Per provider, the configuration says which other audience values also name that resource there (Entra
ID: the API's Application ID URI or client id), where the client id is, and which claims hold the person's
groups, email, acr, amr and auth_time (`identity.authorization_servers[]`, docs/identity.md).

It must also be an access token for a person: an ID token (`nonce`, `at_hash`, `c_hash`: claims only ID
tokens carry) or a machine's token (client credentials: `sub` is the client itself, RFC 9068 section 2.2; Entra
ID `idtyp: app`; Auth0 `gty: client-credentials`) is refused. Per provider, `require_typ` pins the JWT `typ`
header (RFC 9068 `at+jwt`) and `single_audience` refuses a token that names other audiences besides this one
(another API that received it could replay it here).

The verified token names two identities: the client (`client_id`, else `azp`, or as configured; a Client ID Metadata
Document URL is just a client id that is an https URL), which the registry binds to an agent record
(identity kind `client`), and the person (`sub`), who becomes `Principal.user`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.identity.jwks import HttpFetcher, KeySource, UnverifiedToken
from gateway.identity.oidc import OidcIssuerVerifier
from gateway.identity.user import client_id_of, user_from_claims
from gateway.identity.verified import AudienceRejected, TokenRejected, VerifiedToken
from gateway.registry.model import Agent
from gateway.registry.service import NO_AGENT
from gateway.settings.identity import AuthorizationServer


class AuthorizationServerVerifier:
    """Access tokens of one external authorization server, for this gateway's resource."""

    def __init__(self, config: AuthorizationServer, fetcher: HttpFetcher, *, resource: str, leeway: float,
                 min_refresh_interval_s: float) -> None:
        self.config = config
        self.resource = resource
        self.leeway = leeway  # identity.clock_skew_s: also bounds how far auth_time may lie after iat
        # The resource, or a value the operator configured as naming it at this provider: nothing else.
        self._oidc = OidcIssuerVerifier(config.as_oidc_issuer(), fetcher, audience=(resource, *config.audiences),
                                        leeway=leeway, min_refresh_interval_s=min_refresh_interval_s, kind="client",
                                        label="authorization server")

    @property
    def keys(self) -> KeySource:
        return self._oidc.keys

    async def verify(self, token: str, unverified: UnverifiedToken) -> VerifiedToken:
        try:
            verified = await self._oidc.verify(token, unverified)
        except AudienceRejected:
            raise AudienceRejected(self._wrong_audience(unverified)) from None
        self._refuse_other_token_kinds(unverified)
        client_id = client_id_of(verified.claims, self.config.client_id_claims)
        if client_id is None:
            raise TokenRejected(f"access token names no client (none of {', '.join(self.config.client_id_claims)}; "
                                f"see client_id_claims of {self.config.issuer})")
        if machine := machine_token_reason(verified.claims, client_id):
            raise TokenRejected(f"token of client {client_id[:300]!r} names no person: {machine}; a person's MCP "
                                "client presents the access token it got when the person signed in")
        user = user_from_claims(verified.claims, client_id, self.config.claims, self.leeway)
        # The registry binds the client; the person rides along as the user.
        return replace(verified, subject=client_id, user=user)

    def _refuse_other_token_kinds(self, unverified: UnverifiedToken) -> None:
        """Only an access token (of the configured `typ`, for this resource alone if so configured) passes."""
        reason = (id_token_reason(unverified.claims) or typ_reason(unverified.header, self.config.require_typ)
                  or self._audiences_reason(unverified.claims))
        if reason:
            raise TokenRejected(reason)

    def _audiences_reason(self, claims: Mapping[str, Any]) -> str:
        audience = claims.get("aud")
        named = {a for a in audience if isinstance(a, str)} if isinstance(audience, list) else set()
        if not self.config.single_audience or len(named) < 2:
            return ""
        return (f"token names {len(named)} audiences and single_audience of {self.config.issuer} is on: another "
                "resource that received it could replay it here; ask the provider for a token for this resource alone")

    def _wrong_audience(self, unverified: UnverifiedToken) -> str:
        # The audience is not secret and tells the operator which resource the client asked a token for.
        audience = unverified.claims.get("aud")
        named = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        shown = ", ".join(a for a in named if isinstance(a, str))
        others = f" nor one of the audiences configured for {self.config.issuer}" if self.config.audiences else ""
        return (f"token audience {shown[:200]!r} is not this gateway's resource {self.resource}{others} (RFC 8707): "
                f"it was issued for another resource")


# OpenID Connect Core: ID tokens carry these; access tokens never do (Keycloak before 24 copied `nonce` into
# access tokens when the client sent one, keycloak/keycloak#26893).
ID_TOKEN_ONLY_CLAIMS = ("nonce", "at_hash", "c_hash")


def id_token_reason(claims: Mapping[str, Any]) -> str:
    """Why this is an ID token (whose audience may still name this resource: Entra ID's API client id), or ""."""
    found = [name for name in ID_TOKEN_ONLY_CLAIMS if name in claims]
    if claims.get("typ") == "ID":  # Keycloak names its token types in a `typ` claim (access tokens: Bearer)
        found.append("typ ID")
    if not found:
        return ""
    return (f"an ID token is not an access token (it carries {', '.join(found)}, claims only ID tokens carry, "
            "OpenID Connect Core 2 and 3.1.3.6)")


def typ_reason(header: Mapping[str, Any], wanted: str) -> str:
    """Why the JWT `typ` header is not the one required (RFC 9068: `at+jwt`), or "" (also when none is required)."""
    typ = header.get("typ")
    if not wanted or (isinstance(typ, str) and typ.lower().removeprefix("application/") == wanted.lower()):
        return ""
    shown = repr(typ[:40]) if isinstance(typ, str) else "absent"
    return f"token typ {shown} is not {wanted!r} (require_typ of this provider; RFC 9068 access tokens are at+jwt)"


def machine_token_reason(claims: Mapping[str, Any], client_id: str) -> str:
    """Why a token was issued to a client for itself (no person signed in), or "" if nothing says so."""
    subject = claims.get("sub")
    if subject == client_id:
        return "its sub is the client id (a client credentials token, RFC 9068 section 2.2)"
    if claims.get("idtyp") == "app":
        return "idtyp is app (a Microsoft Entra ID app-only token)"
    if claims.get("gty") == "client-credentials" or subject == f"{client_id}@clients":
        return "it was granted by client credentials (Auth0 gty client-credentials)"
    return ""


class PersonRefused(Exception):
    """A verified person's token whose client is bound to no agent, or who may not act through it (403)."""


def unbound_client(verified: VerifiedToken, reason: str) -> PersonRefused:
    """The registry found no live agent for the client: say so in the client's terms."""
    if reason == NO_AGENT:
        return PersonRefused(f"client {verified.subject[:300]!r} of {verified.issuer} is not registered as an agent "
                             "(bind it with an identity of kind client)")
    return PersonRefused(f"client {verified.subject[:300]!r}: {reason}")


def check_person(agent: Agent, verified: VerifiedToken) -> None:
    """The person may act through this client only if the client's binding admits them (its `people`)."""
    user = verified.user
    assert user is not None
    if agent.admits_person(verified.issuer, verified.subject, user.subject, user.groups, user.email):
        return
    raise PersonRefused(f"person {user.subject[:200]!r} may not act through client {verified.subject[:300]!r} "
                        f"(agent {agent.id!r}): not in any of its allowed groups, subjects or verified email domains")
