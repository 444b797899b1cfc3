"""Task tokens: short-lived RFC 9068 access tokens the gateway issues for one task, and their check.

A task token is a JWT with header `typ: at+jwt`, signed by the gateway's own keyring:
`iss` = the gateway, `aud` = the gateway's /mcp resource, `sub` and `client_id` = the agent,
`task_id`, `scope` = the task's tools (space-separated), `iat`, `exp` = min(now + ttl, task
deadline), `jti`. The token never outlives its task's deadline; a task that ends earlier is
refused by the task service, whatever the token's `exp` says.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import AllowedPublicKeys

from gateway.registry.model import Agent
from gateway.tasks.model import Task, TaskEnded, TaskState

TOKEN_TYPE = "at+jwt"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti", "task_id", "scope")
VerificationKey = AllowedPublicKeys | jwt.PyJWK  # a `cryptography` public key, or one read from a JWK
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class Signer(Protocol):
    """What the gateway's SigningKeyring offers: a compact JWS over `claims` with header `typ`."""

    def sign(self, claims: dict[str, Any], typ: str) -> str: ...


class TaskTokenRejected(Exception):
    """A task token that does not verify; the message is safe to log and return (never the token)."""


class TaskTokenIssuer:
    def __init__(
        self, signer: Signer, issuer: str, audience: str, ttl_s: float = 900, clock: Callable[[], float] = time.time
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("task token ttl_s must be positive")
        self.signer = signer
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self.clock = clock

    def issue(self, task: Task, agent: Agent, *, actor: Mapping[str, Any] | None = None) -> tuple[str, int]:
        """(token, expires_in seconds) for an active task of `agent`; `actor` (the workload identity the
        agent proved, {"sub", "iss"}) becomes the `act` claim."""
        now = self.clock()
        task = task.effective(now)
        if task.state is not TaskState.ACTIVE:
            raise TaskEnded(f"task {task.state.value}", task.id, task.state)
        if task.agent_id != agent.id:
            raise ValueError(f"task {task.id} belongs to agent {task.agent_id!r}, not {agent.id!r}")
        issued_at = int(now)
        # Floor both: a token must never outlive its task's deadline, not even by a fraction.
        expires_at = min(int(now + self.ttl_s), math.floor(task.deadline))
        if expires_at <= issued_at:
            raise TaskEnded("task deadline is too close to issue a token", task.id, task.state)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": agent.id,
            "client_id": agent.id,  # RFC 9068 requires it; the agent is the OAuth client
            "task_id": task.id,
            "scope": " ".join(task.tools),
            "iat": issued_at,
            "exp": expires_at,
            "jti": secrets.token_urlsafe(16),
        }
        if actor:
            claims["act"] = dict(actor)
        return self.signer.sign(claims, TOKEN_TYPE), expires_at - issued_at


def verify_task_token(
    token: str,
    public_keys: Mapping[str, VerificationKey],
    issuer: str,
    audience: str,
    clock: Callable[[], float] = time.time,
    leeway: float = 0.0,
) -> dict[str, Any]:
    """The verified claims of a task token, or TaskTokenRejected saying why.

    `public_keys`: kid -> public key (a `cryptography` public key or a `jwt.PyJWK`), e.g. the
    keyring's current and previous keys. The algorithm is taken from the key, never from the
    token alone, so an HS256 or `none` header cannot turn a public key into a shared secret.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TaskTokenRejected("task token is malformed") from None
    if header.get("typ") != TOKEN_TYPE:
        raise TaskTokenRejected(f"task token must have typ {TOKEN_TYPE!r}")
    kid = header.get("kid")
    key = public_keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TaskTokenRejected("task token is signed by an unknown key")
    key, algorithm = _key_and_algorithm(key)
    if header.get("alg") != algorithm:
        raise TaskTokenRejected("task token algorithm does not match its key")
    try:
        claims = jwt.decode(
            token, key, algorithms=[algorithm], audience=audience, issuer=issuer, leeway=leeway,
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TaskTokenRejected(f"task token lacks the claim {exc.claim!r}") from None
    except jwt.InvalidSignatureError:
        raise TaskTokenRejected("task token signature is invalid") from None
    except jwt.InvalidAudienceError:
        raise TaskTokenRejected("task token audience is not this gateway") from None
    except jwt.InvalidIssuerError:
        raise TaskTokenRejected("task token issuer is not this gateway") from None
    except jwt.InvalidTokenError as exc:
        raise TaskTokenRejected(f"task token is invalid: {str(exc)[:200]}") from None
    # Time is checked against the injected clock (PyJWT would use the wall clock).
    if not isinstance(claims["exp"], int | float) or clock() >= claims["exp"] + leeway:
        raise TaskTokenRejected("task token has expired")
    if not isinstance(claims["task_id"], str) or not isinstance(claims["scope"], str):
        raise TaskTokenRejected("task token claims task_id and scope must be strings")
    return claims


def _key_and_algorithm(key: VerificationKey) -> tuple[AllowedPublicKeys, str]:
    public = key.key if isinstance(key, jwt.PyJWK) else key
    return public, _algorithm_for(public)


def _algorithm_for(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is not None:
            return algorithm
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise TaskTokenRejected("task token key is of an unsupported type")
