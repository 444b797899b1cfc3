"""What a token verifier hands on: a workload identity whose token checked out."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.registry.model import IdentityKind


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    kind: IdentityKind
    issuer: str  # oidc: `iss`; spiffe: `spiffe://<trust domain>`
    subject: str  # oidc: `sub`; spiffe: the SPIFFE ID
    claims: MappingProxyType[str, Any]
    expires_at: float


class TokenRejected(Exception):
    """The token is not acceptable; the message is safe to log and to show (never the token)."""
