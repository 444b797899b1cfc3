"""What a token verifier hands on: a workload identity (or a person's client) whose token checked out."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.identity.user import UserIdentity
from gateway.registry.model import IdentityKind


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    kind: IdentityKind
    issuer: str  # oidc: `iss`; spiffe: `spiffe://<trust domain>`
    subject: str  # oidc: `sub`; spiffe: the SPIFFE ID; client: the client id (`client_id` or `azp`)
    claims: MappingProxyType[str, Any]
    expires_at: float
    user: UserIdentity | None = None  # client: the person the client acts for


class TokenRejected(Exception):
    """The token is not acceptable; the message is safe to log and to show (never the token)."""


class AudienceRejected(TokenRejected):
    """A valid-looking token issued for another audience (another resource, RFC 8707)."""
