"""Delegation at the token endpoint: RFC 8693 token exchange with an actor token.

The delegating agent sends its own task token as `subject_token` and the other agent's workload token
as `actor_token`; the result is a child task of the actor's agent (gateway.tasks.delegation bounds it
by the parent). This module names the two parties and refuses, saying why, when either is not good:
a subject token that is not a live task token of this gateway, an actor token that does not verify or
binds to no active agent. Never a token in a message.

An actor token hands the other agent's identity to the delegating agent, so it is good for one delegation
and nothing else: it must name the delegation audience (`identity.delegation_audience`), which no other
verifier accepts (so it is refused on /mcp, as a subject token and as a client assertion), and carry a
`jti` that is used once, recorded in the store until the token expires (every replica of a fleet shares it).
It is refused from its `exp` on (the clock skew the verifier allows is no grace here), and its use is recorded
until `exp` plus that skew, so a replica whose clock is behind cannot take it again; one valid for more than
MAX_ACTOR_TOKEN_LIFETIME_S from now is refused, which bounds how long a used `jti` is kept.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.identity.verified import TokenRejected, VerifiedToken
from gateway.identity.verifier import TokenVerifier
from gateway.registry.model import Agent
from gateway.registry.service import IdentityRefused, Registry
from gateway.store.base import UsedTokenStore
from gateway.tasks.model import Task, TaskEnded
from gateway.tasks.service import TaskService
from gateway.tasks.token_check import TaskTokenCheck, TaskTokenRejected

# Workload tokens are JWTs whatever the client calls them (subject tokens of the plain exchange too).
# Longer than the 60-90 minutes Microsoft Entra ID gives its access tokens by default; an actor token is for one
# delegation, and providers that let the client choose (Kubernetes, SPIFFE, GitHub) are best asked for minutes.
MAX_ACTOR_TOKEN_LIFETIME_S = 2 * 3600

JWT_TOKEN_TYPES = frozenset({
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:access_token",
    "urn:ietf:params:oauth:token-type:id_token",
})


class DelegationError(Exception):
    """A refused delegation request: (RFC 6749 error, description safe to show)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Parties:
    parent: Task  # the delegating agent's task, active
    parent_claims: Mapping[str, Any]  # its task token's verified claims
    agent: Agent  # the agent the child task is for (the actor)
    actor: VerifiedToken  # the workload identity that agent proved

    def act(self) -> dict[str, Any]:
        """The child token's RFC 8693 `act`: the actor's proven identity, the prior actors nested inside
        (the parent token's own `act`, itself nested for a deeper chain)."""
        return {"sub": self.actor.subject, "iss": self.actor.issuer, "act": prior_actor(self.parent_claims)}


def prior_actor(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Who acted under a task token: its `act`, or (a task started by an admin) its own sub and iss."""
    act = claims.get("act")
    if isinstance(act, Mapping) and "sub" in act:
        return dict(act)
    return {"sub": claims["sub"], "iss": claims["iss"]}


def is_delegation(form: Mapping[str, str]) -> bool:
    return "actor_token" in form or "actor_token_type" in form


class DelegationParties:
    def __init__(self, task_check: TaskTokenCheck, tasks: TaskService, verifier: TokenVerifier,
                 registry: Registry, used: UsedTokenStore) -> None:
        self.task_check = task_check
        self.tasks = tasks
        self.verifier = verifier  # for the delegation audience only
        self.registry = registry
        self.used = used

    async def __call__(self, form: Mapping[str, str]) -> Parties:
        parent, claims = self.parent(form.get("subject_token", ""))
        agent, actor = await self.actor(form.get("actor_token", ""), form.get("actor_token_type", ""))
        await self.use_once(actor)
        return Parties(parent, claims, agent, actor)

    def parent(self, token: str) -> tuple[Task, Mapping[str, Any]]:
        """The delegating agent's task, from its task token; refused if the token is not one or the task ended."""
        if not self.task_check.is_ours(token):
            raise DelegationError("invalid_grant", "subject_token refused: to delegate, send your task token from "
                                  "this gateway as subject_token")
        try:
            claims = self.task_check.verify(token)
        except TaskTokenRejected as exc:
            raise DelegationError("invalid_grant", f"subject_token refused: {exc}") from None
        try:
            parent = self.tasks.check(claims["task_id"])
        except TaskEnded as exc:
            raise DelegationError("invalid_grant", f"subject_token refused: task {claims['task_id']} "
                                  f"has ended ({exc.reason}); a task that ended cannot delegate") from None
        if parent.agent_id != claims["sub"]:
            raise DelegationError("invalid_grant", "subject_token refused: the token's subject is not the task's agent")
        return parent, claims

    async def actor(self, token: str, token_type: str) -> tuple[Agent, VerifiedToken]:
        """The agent the child task is for, from its actor token (a workload token for the delegation audience)."""
        if not token or not token_type:
            raise DelegationError("invalid_request", "actor_token and actor_token_type are required to delegate")
        if token_type not in JWT_TOKEN_TYPES:
            raise DelegationError("invalid_request", f"actor_token_type {token_type[:100]!r} is not supported; "
                                  "send the other agent's workload JWT (urn:ietf:params:oauth:token-type:jwt)")
        try:
            verified = await self.verifier.verify(token)
        except TokenRejected as exc:
            raise DelegationError("invalid_grant", f"actor_token refused: {exc}") from None
        try:
            agent = self.registry.resolve(verified.kind, verified.issuer, verified.subject, verified.claims)
        except IdentityRefused as exc:
            raise DelegationError("invalid_grant", f"actor_token refused: {exc.reason}") from None
        return agent, verified

    async def use_once(self, actor: VerifiedToken) -> None:
        """Record the actor token's `jti` as used (in the store, so on every replica); refused the second time."""
        jti = actor.claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise DelegationError("invalid_grant", "actor_token refused: it carries no jti; an actor token is "
                                  "single-use and needs a unique jti")
        now = time.time()
        if now >= actor.expires_at:
            raise DelegationError("invalid_grant", "actor_token refused: it has expired; an actor token is "
                                  "single-use and is taken only before its exp, whatever the clock skew")
        if actor.expires_at - now > MAX_ACTOR_TOKEN_LIFETIME_S:
            raise DelegationError("invalid_grant", "actor_token refused: it is valid for more than "
                                  f"{MAX_ACTOR_TOKEN_LIFETIME_S // 60} minutes; mint a short-lived actor token "
                                  "for each delegation")
        token_id = hashlib.sha256(f"actor\0{actor.issuer}\0{jti}".encode()).hexdigest()
        kept_until = actor.expires_at + self.verifier.settings.clock_skew_s  # a replica's clock may be behind
        if not await self.used.use_token(token_id, kept_until, now):
            raise DelegationError("invalid_grant", "actor_token refused: it was used already; an actor token is "
                                  "good for one delegation")
