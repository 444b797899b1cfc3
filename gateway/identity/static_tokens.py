"""Development-only bearer tokens from the config, looked up by SHA-256 digest.

A token is never written to a log or an error message. Each static token names an agent, which
must still exist in the registry and be active, so suspension works for it like for any other.
"""

from __future__ import annotations

import hashlib

from gateway.settings.auth import AdminToken, StaticToken

# For a credential that matches no static token and cannot be a JWT either: most often a static token
# mistyped or pasted incompletely, which "not a signed JWT" would not tell its owner.
UNKNOWN_TOKEN = "unknown token: it matches none of the configured static tokens and is not a JWT either"


def cannot_be_jwt(token: str) -> bool:
    """A compact JWS has exactly three dot-separated parts; anything else was meant as a static token."""
    return token.count(".") != 2


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _entry_digest(entry: StaticToken | AdminToken) -> bytes:
    if entry.token_sha256:
        return bytes.fromhex(entry.token_sha256)
    if not entry.token:
        # Settings loaded with resolve_secrets=False: such a token must never match (e.g. an empty one).
        raise ValueError(f"token_env {entry.token_env} was never read (settings loaded with resolve_secrets=False)")
    return token_digest(entry.token)


class StaticTokenTable:
    """Digest -> name (an agent id, or an admin token's name)."""

    def __init__(self, entries: tuple[StaticToken, ...] | tuple[AdminToken, ...]) -> None:
        self.by_digest: dict[bytes, str] = {}
        for entry in entries:
            name = entry.agent if isinstance(entry, StaticToken) else entry.name
            self.by_digest[_entry_digest(entry)] = name

    def __len__(self) -> int:
        return len(self.by_digest)

    def lookup(self, token: str) -> str | None:
        # A digest lookup: timing reveals nothing usable about the token itself.
        return self.by_digest.get(token_digest(token))

    def lookup_digest(self, digest: bytes) -> str | None:
        """lookup() for a caller that already has token_digest(token)."""
        return self.by_digest.get(digest)
