"""Who may use the admin API: admin tokens from the config, or OIDC tokens carrying the admin role;
and who may decide approvals (the same, plus approver-role tokens and OIDC tokens with the approver role).

Agent credentials never work here: a static agent token, or a workload token bound to any agent
record, is refused even if it also carries the admin role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from gateway.approvals.model import Approver
from gateway.config import Settings
from gateway.identity.static_tokens import UNKNOWN_TOKEN, StaticTokenTable, cannot_be_jwt
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
    def __init__(self, settings: Settings, verifier: TokenVerifier, registry: Registry,
                 is_task_token: Callable[[str], bool]) -> None:
        self.admin_tokens = StaticTokenTable(settings.admin.tokens)
        self.agent_tokens = StaticTokenTable(settings.auth.static_tokens)
        self.verifier = verifier
        self.registry = registry
        self.is_task_token = is_task_token  # TaskTokenCheck.is_ours: the gateway's own tokens are an agent's
        self.static_people = {entry.name: entry for entry in settings.admin.tokens}
        self.role_claim = settings.admin.oidc_role_claim
        self.admin_role = settings.admin.oidc_admin_role
        self.approver_role = settings.admin.oidc_approver_role
        self.name_claim = settings.admin.oidc_name_claim
        self.groups_claim = settings.admin.oidc_groups_claim

    async def authenticate(self, authorization: str | None) -> str:
        """The actor name recorded for this admin's changes; AdminAuthError otherwise."""
        person = await self.person(authorization)
        if not person.is_admin:
            raise AdminAuthError(403, "this credential may decide approvals but not use the rest of the admin API")
        return person.actor

    async def person(self, authorization: str | None) -> Approver:
        """The admin or approver behind a bearer credential (never an agent); AdminAuthError otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AdminAuthError(401, "an admin bearer token is required")
        return await self.person_from_token(token)

    async def person_from_token(self, token: str) -> Approver:
        static = self.admin_tokens.lookup(token)
        if static is not None:
            entry = self.static_people[static]
            return Approver(actor=f"admin:{entry.name}", name=entry.name, groups=frozenset(entry.groups),
                            roles=frozenset({entry.role}))
        if self.agent_tokens.lookup(token) is not None or self.is_task_token(token):
            log.warning("an agent's token was presented to the admin API; refused")
            raise AdminAuthError(403, "agent credentials cannot use the admin API")
        if cannot_be_jwt(token):
            raise AdminAuthError(401, UNKNOWN_TOKEN)
        try:
            verified = await self.verifier.verify(token)
        except TokenRejected as exc:
            raise AdminAuthError(401, str(exc)) from None
        if verified.user is not None:  # issued to a client for /mcp (identity.authorization_servers), not for this API
            log.warning("a person's client access token was presented to the admin API; refused")
            raise AdminAuthError(403, "a client's access token for /mcp cannot use the admin API")
        if self.registry.bound_agent_id(verified.kind, verified.issuer, verified.subject) is not None:
            log.warning("a token bound to an agent (%s) was presented to the admin API; refused", verified.subject)
            raise AdminAuthError(403, "agent credentials cannot use the admin API")
        held = set(_roles(verified.claims.get(self.role_claim)))
        roles = {role for role, wanted in (("admin", self.admin_role), ("approver", self.approver_role))
                 if wanted in held}
        if not roles:
            raise AdminAuthError(403, f"the token lacks the {self.admin_role!r} or {self.approver_role!r} role")
        name = verified.claims.get(self.name_claim)
        if self.name_claim == "email" and verified.claims.get("email_verified", True) is not True:
            name = None  # an address the issuer did not verify cannot make someone an agent's owner
        return Approver(actor=f"{verified.kind}:{verified.subject}",
                        name=str(name) if isinstance(name, str) and name else verified.subject,
                        groups=frozenset(_roles(verified.claims.get(self.groups_claim))), roles=frozenset(roles))


def _roles(value: object) -> Iterable[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return ()
