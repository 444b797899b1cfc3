"""Per-call upstream tokens: an RFC 9068 access token for exactly one tool call at one upstream.

For every allowed tools/call the gateway mints one of these and sends it as the upstream's bearer
token (the agent's own token never leaves the gateway). Claims:

    iss         this gateway                    client_id   this gateway (RFC 9068 requires one)
    sub         the agent id (a person's call:  act         the agent's workload identity, with a
                the person)                                 nested "act" per delegation hop (RFC 8693);
    sub_iss     who `sub` belongs to: this gateway for an agent id, the person's provider for a person
    aud         the upstream's resource URI                 a person's call: {sub: agent id, client_id}
    scope       the one upstream tool name      txn         the trace id
    iat, exp    exp = iat + ttl, ttl <= 60 s    task_id     the task (absent for task-less calls)
    jti         128 random bits                 args_sha256 gateway.verifier.argument_digest(arguments)

The header is {"alg": "ES256", "kid": ..., "typ": "at+jwt"}. Upstreams check all of it with
gateway.verifier. Minting is a dict, an orjson dump and one ECDSA signature: no schema work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from gateway.credentials.keys import SigningKeyring, b64url
from gateway.random_draws import TOKEN_ID
from gateway.verifier import argument_digest

__all__ = ["ACCESS_TOKEN_TYP", "MAX_TTL_S", "MintedToken", "UpstreamTokenMinter", "argument_digest"]

ACCESS_TOKEN_TYP = "at+jwt"
MAX_TTL_S = 60.0


class MintedToken(NamedTuple):
    token: str
    jti: str
    expires_at: float


class UpstreamTokenMinter:
    """Mints per-call upstream tokens with a keyring. `ttl_s` is capped at 60 s (the issue's bound)."""

    def __init__(
        self, keyring: SigningKeyring, issuer: str, ttl_s: float = MAX_TTL_S, *, clock: Callable[[], float] = time.time
    ) -> None:
        # Whole seconds: NumericDate ints are what every verifier parses, and floor keeps exp <= iat + ttl.
        ttl = math.floor(min(ttl_s, MAX_TTL_S))
        if ttl < 1:
            raise ValueError(f"upstream token ttl must be at least 1 s, got {ttl_s}")
        self._keyring = keyring
        self._issuer = issuer
        self._clock = clock
        self.ttl_s = ttl

    def mint(
        self,
        agent_id: str,
        actor: Mapping[str, Any],
        audience: str,
        tool: str,
        task_id: str | None,
        txn: str,
        arguments_digest: str,
        subject_issuer: str | None = None,
    ) -> MintedToken:
        """Positional or by name (the call path passes them positionally: a keyword call costs more)."""
        iat = int(self._clock())
        exp = iat + self.ttl_s
        jti = b64url(TOKEN_ID.take()).decode("ascii")  # 128 random bits (secrets.token_urlsafe(16))
        issuer = self._issuer
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": agent_id,
            "aud": audience,
            "scope": tool,
            "exp": exp,
            "iat": iat,
            "jti": jti,
            "client_id": issuer,
            "act": actor,
            "txn": txn,
            "args_sha256": arguments_digest,
        }
        if task_id is not None:
            claims["task_id"] = task_id
        # Always: an upstream tells a person whose sub is "payments-bot" from the agent payments-bot only by it,
        # and the same person sub at two providers never collides.
        claims["sub_iss"] = subject_issuer if subject_issuer is not None else issuer
        return MintedToken(self._keyring.sign(claims, ACCESS_TOKEN_TYP), jti, float(exp))
