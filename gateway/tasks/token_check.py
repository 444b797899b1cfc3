"""Recognise and verify the gateway's own task tokens on the request path (cheaply, with a cache)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from gateway.expiring_cache import ExpiringCache
from gateway.tasks.service import TaskService
from gateway.tasks.tokens import TaskTokenRejected, VerificationKey, verify_task_token

# Verified task tokens kept (until exp): beyond this many live ones a call costs a signature check.
# Whether the task may still be used is asked of the TaskService on every call, never of this cache.
CACHE_SIZE = 4096


class TaskTokenCheck:
    def __init__(self, tasks: TaskService, public_keys: Callable[[], Mapping[str, VerificationKey]], issuer: str,
                 audience: str, clock: Callable[[], float] = time.time) -> None:
        self.tasks = tasks
        self.public_keys = public_keys
        self.issuer = issuer
        self.audience = audience
        self.clock = clock
        # Verified claims by token digest until exp: a signature check per token, not per request.
        self.cache: ExpiringCache[bytes, dict[str, Any]] = ExpiringCache(CACHE_SIZE, _expiry, clock)

    def is_ours(self, token: str, digest: bytes | None = None) -> bool:
        """Whether the gateway issued this token (`digest`: its SHA-256, if the caller has it already)."""
        if (digest or hashlib.sha256(token.encode()).digest()) in self.cache:
            return True  # seen and verified before: no need to decode it again
        try:
            return jwt.decode(token, options={"verify_signature": False}).get("iss") == self.issuer
        except jwt.InvalidTokenError:
            return False

    def verify(self, token: str, digest: bytes | None = None) -> dict[str, Any]:
        digest = digest or hashlib.sha256(token.encode()).digest()
        claims = self.cache.get(digest)
        if claims is not None:
            return claims
        claims = verify_task_token(token, self.public_keys(), self.issuer, self.audience, self.clock)
        self.cache.put(digest, claims)
        return claims


def _expiry(claims: dict[str, Any]) -> float:
    return float(claims["exp"])


__all__ = ["TaskTokenCheck", "TaskTokenRejected"]
