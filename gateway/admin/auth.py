"""Who may use the admin API: admin tokens from the config, or OIDC tokens carrying the admin role.

Agent credentials never work here: a static agent token, or a workload token bound to any agent
record, is refused even if it also carries the admin role.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import jwt

from gateway.config import Settings
from gateway.identity.static_tokens import StaticTokenTable
from gateway.identity.verified import TokenRejected
from gateway.identity.verifier import TokenVerifier
from gateway.registry.service import Registry

log = logging.getLogger("narrowgate.admin")


class AdminAuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AdminAuthenticator:
    def __init__(self, settings: Settings, verifier: TokenVerifier, registry: Registry) -> None:
        self.admin_tokens = StaticTokenTable(settings.admin.tokens)
        self.agent_tokens = StaticTokenTable(settings.auth.static_tokens)
        self.verifier = verifier
        self.registry = registry
        self.own_issuer = settings.base_url  # task tokens are the gateway's own, and always an agent's
        self.role_claim = settings.admin.oidc_role_claim
        self.admin_role = settings.admin.oidc_admin_role

    async def authenticate(self, authorization: str | None) -> str:
        """The actor name recorded for this admin's changes; AdminAuthError otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AdminAuthError(401, "an admin bearer token is required")
        name = self.admin_tokens.lookup(token)
        if name is not None:
            return f"admin:{name}"
        if self.agent_tokens.lookup(token) is not None or self.is_task_token(token):
            log.warning("an agent's token was presented to the admin API; refused")
            raise AdminAuthError(403, "agent credentials cannot use the admin API")
        try:
            verified = await self.verifier.verify(token)
        except TokenRejected as exc:
            raise AdminAuthError(401, str(exc)) from None
        if self.registry.bound_agent_id(verified.kind, verified.issuer, verified.subject) is not None:
            log.warning("a token bound to an agent (%s) was presented to the admin API; refused", verified.subject)
            raise AdminAuthError(403, "agent credentials cannot use the admin API")
        if self.admin_role not in _roles(verified.claims.get(self.role_claim)):
            raise AdminAuthError(403, f"the token lacks the {self.admin_role!r} role")
        return f"{verified.kind}:{verified.subject}"


    def is_task_token(self, token: str) -> bool:
        try:
            return bool(jwt.decode(token, options={"verify_signature": False}).get("iss") == self.own_issuer)
        except jwt.InvalidTokenError:
            return False


def _roles(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return ()
