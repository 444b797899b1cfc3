"""Development-only authentication: static bearer tokens from the config, or open loopback.

Both are logged loudly at start. Tokens are looked up by SHA-256 digest, and a
token is never written to a log or an error message.
"""

from __future__ import annotations

import hashlib
import logging

from gateway.config import Settings
from gateway.identity.principal import Principal

log = logging.getLogger("narrowgate.identity")
OPEN_LOOPBACK_AGENT = "anonymous-loopback"


class AuthenticationError(Exception):
    """No usable credential; the transport answers 401 with the resource metadata URL."""


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.open_loopback = settings.auth.open_loopback
        if self.open_loopback and not settings.is_loopback_bind():
            raise ValueError("open loopback mode is refused on a non-loopback bind address")
        self.by_digest: dict[bytes, Principal] = {}
        for entry in settings.auth.static_tokens:
            digest = bytes.fromhex(entry.token_sha256) if entry.token_sha256 else _digest(entry.token or "")
            self.by_digest[digest] = Principal(agent_id=entry.agent, auth_method="static-token")
        if self.by_digest:
            log.warning("DEVELOPMENT MODE: %d static agent token(s) accepted; use workload identity in "
                        "production", len(self.by_digest))
        if self.open_loopback:
            log.warning("DEVELOPMENT MODE: open loopback, unauthenticated local clients are let in as %r",
                        OPEN_LOOPBACK_AGENT)
        self.anonymous = Principal(agent_id=OPEN_LOOPBACK_AGENT, auth_method="open-loopback")

    def authenticate(self, authorization: str | None) -> Principal:
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
            # Looked up by SHA-256 digest: timing reveals nothing usable about the token itself.
            principal = self.by_digest.get(_digest(token.strip()))
            if principal is None:
                raise AuthenticationError("the bearer token is not valid")
            return principal
        if self.open_loopback:
            return self.anonymous
        raise AuthenticationError("a bearer token is required")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
