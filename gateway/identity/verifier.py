"""Workload tokens -> `VerifiedToken`: OIDC JWTs from configured issuers, SPIFFE JWT-SVIDs by trust domain.

Routing uses the unverified claims only to pick the keys; everything is then verified with those keys:
- `iss` names a configured OIDC issuer -> that issuer's keys, `iss` checked exactly;
- `iss` names a configured authorization server (people's clients, gateway.identity.people) -> its keys,
  audience = this gateway's resource;
- otherwise `sub` is a SPIFFE ID -> the bundle of ITS trust domain (JWT-SVIDs often carry no `iss`),
  so a key of one trust domain can never vouch for an identity in another;
- otherwise the token is refused.

Successful verifications are cached by the SHA-256 of the token until the token's `exp`, so an
agent's repeated calls cost one hash and one dict lookup. A cached token stays accepted until its
`exp` even if its signing key is rotated out meanwhile; tokens are short-lived for exactly this.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TypedDict

import aiohttp

from gateway.expiring_cache import ExpiringCache
from gateway.identity.jwks import HttpFetcher, KeySource, UnverifiedToken, parse_unverified
from gateway.identity.oidc import OidcIssuerVerifier
from gateway.identity.people import AuthorizationServerVerifier
from gateway.identity.spiffe import SPIFFE_SCHEME, SpiffeTrustDomainVerifier, parse_spiffe_id
from gateway.identity.verified import AudienceRejected, TokenRejected, VerifiedToken
from gateway.settings.identity import IdentitySettings
from gateway.state.token_cache import TokenCache

log = logging.getLogger("narrowgate.identity")
# Tokens, not agents (~0.7 KiB each): a task exchange brings a fresh JWT every time. Used-up ones
# leave as new ones arrive; beyond this many live tokens, a call costs a signature check.
DEFAULT_CACHE_SIZE = 4096


class VerifiedTokenCache(ExpiringCache[bytes, VerifiedToken]):
    """Verified tokens by SHA-256 digest, each good until its token's exp (past it: verified afresh,
    which applies the clock skew exactly as for an uncached token); evicting one only costs a new
    signature check."""

    def __init__(self, max_size: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(max_size, _expiry, clock)


def _expiry(verified: VerifiedToken) -> float:
    return verified.expires_at


class IssuerOptions(TypedDict):
    """The keyword arguments every issuer's verifier (OIDC, SPIFFE) takes from the identity settings."""

    audience: str
    leeway: float
    min_refresh_interval_s: float


class TokenVerifier:
    def __init__(
        self,
        settings: IdentitySettings,
        http_session: aiohttp.ClientSession | None = None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache: TokenCache[VerifiedToken] | None = None,
    ) -> None:
        """`http_session`: the gateway's client session; without one, the verifier opens its own on demand."""
        self.settings = settings
        self._fetcher = HttpFetcher(http_session)
        common: IssuerOptions = {
            "audience": settings.audience,
            "leeway": settings.clock_skew_s,
            "min_refresh_interval_s": settings.key_refresh_min_interval_s,
        }
        self._oidc = {c.issuer: OidcIssuerVerifier(c, self._fetcher, **common) for c in settings.oidc_issuers}
        self._spiffe = {
            c.trust_domain: SpiffeTrustDomainVerifier(c, self._fetcher, **common) for c in settings.spiffe_trust_domains
        }
        self._people = {
            c.issuer: AuthorizationServerVerifier(c, self._fetcher, resource=settings.resource,
                                                  leeway=settings.clock_skew_s,
                                                  min_refresh_interval_s=settings.key_refresh_min_interval_s)
            for c in settings.authorization_servers
        }
        self.cache: TokenCache[VerifiedToken] = cache if cache is not None else VerifiedTokenCache(cache_size)
        self.periodic_refresh_s = settings.key_refresh_interval_s
        self._refresher: asyncio.Task[None] | None = None

    @property
    def key_sources(self) -> tuple[KeySource, ...]:
        return (tuple(v.keys for v in self._oidc.values()) + tuple(v.keys for v in self._spiffe.values())
                + tuple(v.keys for v in self._people.values()))

    async def start(self) -> None:
        """Warm the key caches; a source that cannot be reached now is logged and retried on demand."""
        results = await asyncio.gather(*(source.refresh(force=True) for source in self.key_sources))
        for source, loaded in zip(self.key_sources, results, strict=True):
            if not loaded:
                log.warning("%s: no keys at start; tokens from it are refused until its keys can be fetched",
                            source.name)
        if self.key_sources and self.periodic_refresh_s > 0:
            self._refresher = asyncio.create_task(self._refresh_periodically())

    async def _refresh_periodically(self) -> None:
        """Re-read every key set now and then, so a key withdrawn upstream stops being trusted."""
        while True:
            await asyncio.sleep(self.periodic_refresh_s)
            await asyncio.gather(*(source.refresh(force=True) for source in self.key_sources))
            self.cache.clear()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        for source in self.key_sources:
            await source.close()
        await self._fetcher.close()

    async def verify(self, token: str, digest: bytes | None = None) -> VerifiedToken:
        digest = digest or hashlib.sha256(token.encode()).digest()
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        verified = await self._verify_uncached(token)
        self._check_delegation_audience(verified)
        self.cache.put(digest, verified)
        return verified

    def _check_delegation_audience(self, verified: VerifiedToken) -> None:
        """A token accepted when any one of its audiences matches (RFC 7519) could be an actor token and a login
        at once: the delegation verifier takes a token for the delegation audience ALONE, and every other
        verifier refuses a token that names it at all (gateway.oauth.delegation)."""
        delegation = self.settings.delegation_audience.rstrip("/")
        if not delegation:
            return
        raw = verified.claims.get("aud")
        audiences = {str(a).rstrip("/") for a in (raw if isinstance(raw, list) else [raw])}
        if self.settings.audience.rstrip("/") == delegation:
            if audiences != {delegation}:
                raise AudienceRejected("token audience is not the delegation audience alone; an actor token must "
                                       "name no other audience")
        elif delegation in audiences:
            raise AudienceRejected("token audience includes the delegation audience; an actor token is good for "
                                   "one delegation and nothing else")

    async def _verify_uncached(self, token: str) -> VerifiedToken:
        unverified = parse_unverified(token)
        issuer = unverified.claims.get("iss")
        oidc = self._oidc.get(issuer) if isinstance(issuer, str) else None
        if oidc is not None:
            return await oidc.verify(token, unverified)
        people = self._people.get(issuer) if isinstance(issuer, str) else None
        if people is not None:
            return await people.verify(token, unverified)
        subject = unverified.claims.get("sub")
        if isinstance(subject, str) and subject.startswith(SPIFFE_SCHEME):
            return await self._verify_svid(token, unverified, subject)
        if isinstance(issuer, str):
            raise TokenRejected(f"token issuer {issuer[:200]!r} is not trusted")
        raise TokenRejected("token names no trusted issuer and no SPIFFE ID")

    async def _verify_svid(self, token: str, unverified: UnverifiedToken, spiffe_id: str) -> VerifiedToken:
        parsed = parse_spiffe_id(spiffe_id)
        if parsed is None:
            raise TokenRejected("token subject is not a valid SPIFFE ID")
        domain = self._spiffe.get(parsed[0])
        if domain is None:
            raise TokenRejected(f"SPIFFE trust domain {parsed[0]!r} is not trusted")
        return await domain.verify(token, unverified, spiffe_id)
