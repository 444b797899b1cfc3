"""OIDC JWTs from one configured issuer: keys by discovery or an explicit `jwks_uri`."""

from __future__ import annotations

from types import MappingProxyType

from gateway.identity.jwks import (
    HttpFetcher,
    KeyFetchError,
    KeySource,
    UnverifiedToken,
    check_algorithm,
    decode_with_key,
    url_loader,
)
from gateway.identity.verified import TokenRejected, VerifiedToken
from gateway.json_values import JsonValue
from gateway.registry.model import IdentityKind
from gateway.settings.errors import ConfigError
from gateway.settings.identity import OidcIssuer, check_fetch_url


class OidcIssuerVerifier:
    def __init__(
        self, config: OidcIssuer, fetcher: HttpFetcher, *, audience: str | tuple[str, ...], leeway: float,
        min_refresh_interval_s: float, kind: IdentityKind = "oidc", label: str = "OIDC issuer",
    ) -> None:
        self.config = config
        self.kind: IdentityKind = kind  # oidc: workloads; client: people's clients (gateway.identity.people)
        self.name = f"{label} {config.issuer}"
        self._fetcher = fetcher
        self._audience = audience
        self._leeway = leeway
        # Found once by discovery, then kept: the jwks_uri of an issuer does not move between refreshes.
        self._jwks_uri = config.jwks_uri
        self.keys = KeySource(self.name, self._load_jwks, min_refresh_interval_s=min_refresh_interval_s)

    async def verify(self, token: str, unverified: UnverifiedToken) -> VerifiedToken:
        check_algorithm(unverified.alg, self.config.algorithms, self.name)
        key = await self.keys.key_for(unverified.require_kid())
        claims = decode_with_key(
            token,
            unverified.alg,
            key,
            audience=self._audience,
            leeway=self._leeway,
            required_claims=self.config.required_claims,
            issuer=self.config.issuer,
        )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("token lacks the required claim 'sub'")
        return VerifiedToken(
            kind=self.kind,
            issuer=self.config.issuer,
            subject=subject,
            claims=MappingProxyType(claims),
            expires_at=float(claims["exp"]),
        )

    async def _load_jwks(self) -> JsonValue:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        return await url_loader(self._fetcher, self._jwks_uri)()

    async def _discover(self) -> str:
        url = self.config.discovery_url
        document = await self._fetcher.get_json(url)
        if not isinstance(document, dict):
            raise KeyFetchError(f"{url}: not a discovery document")
        # OpenID Connect Discovery 4.3: the document must name exactly the issuer it was fetched for.
        if document.get("issuer") != self.config.issuer:
            raise KeyFetchError(f"{url}: names issuer {str(document.get('issuer'))[:200]!r}, not the configured one")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise KeyFetchError(f"{url}: no jwks_uri")
        try:
            return check_fetch_url(jwks_uri, f"{url} jwks_uri")
        except ConfigError as exc:
            raise KeyFetchError(str(exc)) from None
