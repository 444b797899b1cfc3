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

The verified token names two identities: the client (`client_id`, else `azp`, or as configured; a Client ID Metadata
Document URL is just a client id that is an https URL), which the registry binds to an agent record
(identity kind `client`), and the person (`sub`), who becomes `Principal.user`.
"""

from __future__ import annotations

from dataclasses import replace

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
        client_id = client_id_of(verified.claims, self.config.client_id_claims)
        if client_id is None:
            raise TokenRejected(f"access token names no client (none of {', '.join(self.config.client_id_claims)}; "
                                f"see client_id_claims of {self.config.issuer})")
        user = user_from_claims(verified.claims, client_id, self.config.claims)
        # The registry binds the client; the person rides along as the user.
        return replace(verified, subject=client_id, user=user)

    def _wrong_audience(self, unverified: UnverifiedToken) -> str:
        # The audience is not secret and tells the operator which resource the client asked a token for.
        audience = unverified.claims.get("aud")
        named = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        shown = ", ".join(a for a in named if isinstance(a, str))
        others = f" nor one of the audiences configured for {self.config.issuer}" if self.config.audiences else ""
        return (f"token audience {shown[:200]!r} is not this gateway's resource {self.resource}{others} (RFC 8707): "
                f"it was issued for another resource")


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
    for identity in agent.identities:
        if identity.kind == "client" and identity.issuer == verified.issuer and identity.subject == verified.subject:
            grant = identity.people
            if grant is not None and grant.admits(user.subject, user.groups, user.email):
                return
    raise PersonRefused(f"person {user.subject[:200]!r} may not act through client {verified.subject[:300]!r} "
                        f"(agent {agent.id!r}): not in any of its allowed groups, subjects or verified email domains")
