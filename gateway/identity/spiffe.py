"""SPIFFE JWT-SVIDs: verified with the trust bundle of the trust domain named in their SPIFFE ID."""

from __future__ import annotations

import re
from types import MappingProxyType

from gateway.identity.jwks import (
    HttpFetcher,
    JsonLoader,
    KeySource,
    UnverifiedToken,
    check_algorithm,
    decode_with_key,
    file_loader,
    url_loader,
)
from gateway.identity.verified import TokenRejected, VerifiedToken
from gateway.settings.identity import TRUST_DOMAIN_RE, SpiffeTrustDomain

SPIFFE_SCHEME = "spiffe://"
MAX_SPIFFE_ID_CHARS = 2048
PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+\Z")
# The JWT-SVID spec requires these; `iss` is optional there, so it is not checked.
SVID_REQUIRED_CLAIMS = ("sub", "aud", "exp")


def parse_spiffe_id(value: str) -> tuple[str, str] | None:
    """(trust domain, path) of a workload SPIFFE ID `spiffe://<td>/<path>`, or None if it is not one."""
    if len(value) > MAX_SPIFFE_ID_CHARS or not value.startswith(SPIFFE_SCHEME):
        return None
    trust_domain, slash, path = value[len(SPIFFE_SCHEME) :].partition("/")
    if not slash or not TRUST_DOMAIN_RE.match(trust_domain):
        return None
    segments = path.split("/")
    # No empty, "." or ".." segments (so no trailing slash), and no query, fragment, port or user info.
    if not all(PATH_SEGMENT_RE.match(s) and s not in (".", "..") for s in segments):
        return None
    return trust_domain, "/" + path


class SpiffeTrustDomainVerifier:
    def __init__(
        self,
        config: SpiffeTrustDomain,
        fetcher: HttpFetcher,
        *,
        audience: str,
        leeway: float,
        min_refresh_interval_s: float,
    ) -> None:
        self.config = config
        self.name = f"SPIFFE trust domain {config.trust_domain}"
        self.issuer = SPIFFE_SCHEME + config.trust_domain
        self._audience = audience
        self._leeway = leeway
        self.keys = KeySource(
            self.name, _bundle_loader(config, fetcher), min_refresh_interval_s=min_refresh_interval_s,
            required_use="jwt-svid",
        )

    async def verify(self, token: str, unverified: UnverifiedToken, spiffe_id: str) -> VerifiedToken:
        check_algorithm(unverified.alg, self.config.algorithms, self.name)
        key = await self.keys.key_for(unverified.require_kid())
        claims = decode_with_key(
            token, unverified.alg, key, audience=self._audience, leeway=self._leeway,
            required_claims=SVID_REQUIRED_CLAIMS,
        )
        if claims.get("sub") != spiffe_id:  # the same bytes were routed on; a mismatch means a bug, so refuse
            raise TokenRejected("token subject changed during verification")
        return VerifiedToken(
            kind="spiffe",
            issuer=self.issuer,
            subject=spiffe_id,
            claims=MappingProxyType(claims),
            expires_at=float(claims["exp"]),
        )


def _bundle_loader(config: SpiffeTrustDomain, fetcher: HttpFetcher) -> JsonLoader:
    if config.bundle_file is not None:
        return file_loader(config.bundle_file)
    assert config.bundle_url is not None  # settings guarantee exactly one of the two
    return url_loader(fetcher, config.bundle_url)
