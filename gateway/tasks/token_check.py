"""Recognise and verify the gateway's own task tokens on the request path (cheaply, with a cache)."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from gateway.tasks.service import TaskService
from gateway.tasks.tokens import TaskTokenRejected, verify_task_token

CACHE_SIZE = 10_000


class TaskTokenCheck:
    def __init__(self, tasks: TaskService, public_keys: Callable[[], Mapping[str, Any]], issuer: str,
                 audience: str, clock: Callable[[], float] = time.time) -> None:
        self.tasks = tasks
        self.public_keys = public_keys
        self.issuer = issuer
        self.audience = audience
        self.clock = clock
        # Verified claims by token digest until exp: a signature check per token, not per request.
        self.cache: OrderedDict[bytes, dict[str, Any]] = OrderedDict()

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
        now = self.clock()
        if claims is not None and now < claims["exp"]:
            self.cache.move_to_end(digest)
            return claims
        claims = verify_task_token(token, self.public_keys(), self.issuer, self.audience, self.clock)
        self.cache[digest] = claims
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)
        return claims


__all__ = ["TaskTokenCheck", "TaskTokenRejected"]
