"""Bearer token -> Principal: workload identity (OIDC, SPIFFE) bound to an active agent record.

Missing or invalid tokens are `AuthenticationError` (401 with RFC 9728 metadata); a valid token
that maps to no agent, or to an agent that is not active, is `AccessRefused` (403). Both are logged
with the reason and never with the token.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from gateway.config import Settings
from gateway.frozen import maker
from gateway.identity.people import PersonRefused, check_person, unbound_client
from gateway.identity.principal import Principal
from gateway.identity.static_tokens import StaticTokenTable, token_digest
from gateway.identity.verified import TokenRejected
from gateway.identity.verifier import TokenVerifier
from gateway.registry.model import Lifecycle
from gateway.registry.service import IdentityRefused, Registry
from gateway.tasks.model import TaskEnded
from gateway.tasks.token_check import TaskTokenCheck
from gateway.tasks.tokens import TaskTokenRejected

log = logging.getLogger("narrowgate.identity")
OPEN_LOOPBACK_AGENT = "anonymous-loopback"
STATIC_ISSUER = "narrowgate"  # the issuer of the `static` identity bound to agents with development tokens
# Principal made as its constructor would, cheaper (gateway.frozen): one per call of a JWT workload or task token.
# All six fields in order: agent_id, auth_method, claims, agent, task_id, user.
_new_principal = maker(Principal)


class AuthenticationError(Exception):
    """No usable credential; the transport answers 401 with the resource metadata URL."""


class AccessRefused(Exception):
    """A valid credential for an identity that may not call (unbound, suspended, retired, pending)."""


class Authenticator:
    def __init__(self, settings: Settings, verifier: TokenVerifier, registry: Registry,
                 task_tokens: TaskTokenCheck | None = None) -> None:
        self.task_tokens = task_tokens
        self.open_loopback = settings.auth.open_loopback
        if self.open_loopback and not settings.is_loopback_bind():
            raise ValueError("open loopback mode is refused on a non-loopback bind address")
        self.static = StaticTokenTable(settings.auth.static_tokens)
        self.verifier = verifier
        self.registry = registry
        self.anonymous = Principal(agent_id=OPEN_LOOPBACK_AGENT, auth_method="open-loopback")
        self.static_principals: dict[str, Principal] = {}  # agent id -> its static token's principal
        if len(self.static):
            log.warning("DEVELOPMENT MODE: %d static agent token(s) accepted; use workload identity in "
                        "production", len(self.static))
        if self.open_loopback:
            log.warning("DEVELOPMENT MODE: open loopback, unauthenticated local clients are let in as %r",
                        OPEN_LOOPBACK_AGENT)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            if self.open_loopback:
                return self.anonymous
            raise AuthenticationError("a bearer token is required")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
        digest = token_digest(token)  # once: every lookup and cache below is keyed by it
        agent_id = self.static.lookup_digest(digest)
        if agent_id is not None:
            return self.static_principal(agent_id)
        # A workload token verified before skips the task-token check (which would decode it again).
        cached = self.verifier.cache.get(digest)
        if cached is None and self.task_tokens is not None and self.task_tokens.is_ours(token, digest):
            return self.task_principal(token, digest)
        try:
            verified = cached or await self.verifier.verify(token, digest)
        except TokenRejected as exc:
            log.warning("token refused: %s", exc)
            raise AuthenticationError(str(exc)) from None
        try:
            agent = self.registry.resolve(verified.kind, verified.issuer, verified.subject, verified.claims)
            if verified.user is not None:
                check_person(agent, verified)
        except IdentityRefused as exc:
            refusal = unbound_client(verified, str(exc)) if verified.user is not None else exc
            log.warning("identity %s %s refused: %s", verified.kind, verified.subject, refusal)
            raise AccessRefused(str(refusal)) from None
        except PersonRefused as exc:
            log.warning("identity %s %s refused: %s", verified.kind, verified.subject, exc)
            raise AccessRefused(str(exc)) from None
        return _new_principal(agent.id, verified.kind, verified.claims, agent, None, verified.user)

    def task_principal(self, token: str, digest: bytes) -> Principal:
        """A task token: the gateway's own grant for one task of one agent."""
        assert self.task_tokens is not None
        try:
            claims = self.task_tokens.verify(token, digest)
        except TaskTokenRejected as exc:
            log.warning("task token refused: %s", exc)
            raise AuthenticationError(str(exc)) from None
        agent_id, task_id = str(claims["sub"]), str(claims["task_id"])
        try:
            task = self.task_tokens.tasks.check(task_id)
        except TaskEnded as exc:
            log.warning("task token for ended task %s refused: %s", task_id, exc)
            raise AccessRefused(f"task {task_id} has ended: {exc.reason}") from None
        agent = self.registry.get(agent_id)
        if agent is None or task.agent_id != agent_id:
            raise AccessRefused("the task token names no registered agent")
        state = agent.effective_state(self.registry.clock())
        if state is not Lifecycle.ACTIVE:
            raise AccessRefused(f"agent {agent_id!r} is {state.value}")
        return _new_principal(agent_id, "task-token", MappingProxyType(claims), agent, task_id, None)

    def static_principal(self, agent_id: str) -> Principal:
        """A static token counts only for an active agent that has the static identity bound."""
        cached = self.static_principals.get(agent_id)
        # The registry replaces an Agent record on every change to it (and every record on a reload), so
        # the same record, still active now, is what resolve would return again: the same Principal.
        if cached is not None and self.registry.get(agent_id) is cached.agent and cached.agent is not None \
                and cached.agent.effective_state(self.registry.clock()) is Lifecycle.ACTIVE:
            return cached
        try:
            agent = self.registry.resolve("static", STATIC_ISSUER, agent_id, {})
        except IdentityRefused as exc:
            self.static_principals.pop(agent_id, None)
            log.warning("static token for agent %s refused: %s", agent_id, exc)
            raise AccessRefused(str(exc)) from None
        principal = Principal(agent.id, "static-token", agent=agent)
        self.static_principals[agent_id] = principal  # at most one per configured static token
        return principal
