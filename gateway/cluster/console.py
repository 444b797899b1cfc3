"""Console sign-ins and the failed-sign-in throttle shared by every replica through Redis, so a person
signed in on one replica is signed in on all, and guessing credentials is counted across the fleet.

A session is a hash under `console:session:<sha256 of its id>` (the id is the cookie's bearer secret:
never in a key) holding the person (name, actor, groups, roles: never the credential they pasted), the
CSRF token, the absolute end, `last_seen` and the one-shot messages. Its TTL is the sooner of the absolute
end (the lifetime, or the credential's expiry) and the idle limit, refreshed by `get` (one script: check,
touch, extend). Failed sign-ins are a sorted set of times per address (`console:login-failures:<sha256>`),
trimmed to the window in the same round trip as each count.

Unreachable Redis: `get` is None (the person signs in again, which fails while Redis is down), `blocked`
is True (no credential can be tried uncounted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from typing import ClassVar

from redis.exceptions import RedisError

from gateway.approvals.model import Approver
from gateway.cluster.connection import Cluster
from gateway.console.sessions import MAX_FLASHES, ConsoleSession

log = logging.getLogger("narrowgate.cluster")
UNREACHABLE = (RedisError, OSError, TimeoutError)
FAILURES_KEPT = 1000  # per address: enough to count any sensible limit, bounded against a flood

# KEYS[1]: the session. ARGV: now, idle_s. The fields, or nil (and the session gone) if it ended.
GET = """
local s = redis.call('HMGET', KEYS[1], 'person', 'csrf', 'expires_at', 'last_seen', 'flashes')
if not s[1] then return false end
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local expires_at = tonumber(s[3])
if now >= expires_at or now - tonumber(s[4]) >= idle then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(math.min(expires_at - now, idle) * 1000))
return s
"""

# KEYS[1]: the session. ARGV[1]: the flashes as JSON. Never recreates a session that ended meanwhile.
KEEP_FLASHES = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'flashes', ARGV[1]) end
return 0
"""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def person_json(person: Approver) -> str:
    return json.dumps({"actor": person.actor, "name": person.name, "groups": sorted(person.groups),
                       "roles": sorted(person.roles)})


def person_from(raw: bytes) -> Approver:
    data = json.loads(raw)
    return Approver(actor=data["actor"], name=data["name"], groups=frozenset(data["groups"]),
                    roles=frozenset(data["roles"]))


class RedisConsoleSessions:
    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster, ttl_s: float, idle_s: float) -> None:
        self.cluster = cluster
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self._get = cluster.redis.register_script(GET)
        self._keep_flashes = cluster.redis.register_script(KEEP_FLASHES)

    def key(self, session_id: str) -> str:
        return self.cluster.keys.key("console", "session", digest(session_id))

    async def create(self, person: Approver, credential_expires_at: float | None = None) -> ConsoleSession:
        """A new session; raises (RedisError, OSError) when it cannot be kept: the sign-in fails."""
        now = time.time()
        expires = now + self.ttl_s
        if credential_expires_at is not None:
            expires = min(expires, credential_expires_at)  # a session never outlives its credential
        session = ConsoleSession(id=secrets.token_urlsafe(32), person=person, csrf=secrets.token_urlsafe(32),
                                 expires_at=expires, last_seen=now)
        ttl_ms = max(1, math.ceil(min(expires - now, self.idle_s) * 1000))
        async with self.cluster.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key(session.id), mapping={
                "person": person_json(person), "csrf": session.csrf, "expires_at": repr(expires),
                "last_seen": repr(now), "flashes": "[]"})
            pipe.pexpire(self.key(session.id), ttl_ms)
            await pipe.execute()
        return session

    async def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session (touched now), or None: unknown, ended, or Redis unreachable (sign in again)."""
        if not session_id:
            return None
        try:
            fields = await self._get(keys=[self.key(session_id)], args=[repr(time.time()), repr(self.idle_s)])
        except UNREACHABLE as exc:
            self._unreachable("read a console session", exc)
            return None
        if not fields:
            return None
        person, csrf, expires_at, last_seen, flashes = fields
        return ConsoleSession(id=session_id, person=person_from(person), csrf=csrf.decode(),
                              expires_at=float(expires_at), last_seen=float(last_seen),
                              flashes=list(json.loads(flashes or b"[]"))[-MAX_FLASHES:])

    async def keep_flashes(self, session_id: str, flashes: list[str]) -> None:
        try:
            await self._keep_flashes(keys=[self.key(session_id)], args=[json.dumps(flashes[-MAX_FLASHES:])])
        except UNREACHABLE as exc:
            self._unreachable("keep a console message", exc)

    async def delete(self, session_id: str | None) -> None:
        if not session_id:
            return
        try:
            await self.cluster.redis.delete(self.key(session_id))
        except UNREACHABLE as exc:  # it ends by its TTL; the cookie is cleared anyway
            self._unreachable("end a console session", exc)

    def _unreachable(self, what: str, exc: BaseException) -> None:
        log.warning("console: cannot %s at Redis %s (%s)", what, self.cluster.settings.redis_location(),
                    type(exc).__name__)


class RedisLoginFailures:
    """At most `limit` failed sign-ins per address in any `window_s`, counted across the fleet."""

    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster, limit: int = 10, window_s: float = 60.0) -> None:
        self.cluster = cluster
        self.limit = limit
        self.window_s = window_s

    def key(self, address: str) -> str:
        return self.cluster.keys.key("console", "login-failures", digest(address))

    async def blocked(self, address: str) -> bool:
        try:
            count, _ = await self._recent(address)
        except UNREACHABLE as exc:
            log.warning("console: cannot count failed sign-ins at Redis %s (%s): sign-ins refused",
                        self.cluster.settings.redis_location(), type(exc).__name__)
            return True
        return count >= self.limit

    async def retry_after_s(self, address: str) -> int:
        try:
            count, oldest = await self._recent(address)
        except UNREACHABLE:
            return math.ceil(self.window_s)
        if not count or oldest is None:
            return 0
        return max(1, int(oldest + self.window_s - time.time()) + 1)

    async def failed(self, address: str) -> None:
        now = time.time()
        key = self.key(address)
        try:
            async with self.cluster.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {f"{now!r}:{secrets.token_hex(4)}": now})
                pipe.zremrangebyscore(key, "-inf", now - self.window_s)
                pipe.zremrangebyrank(key, 0, -FAILURES_KEPT - 1)
                pipe.pexpire(key, math.ceil(self.window_s * 1000))
                await pipe.execute()
        except UNREACHABLE as exc:
            log.warning("console: cannot count a failed sign-in at Redis %s (%s)",
                        self.cluster.settings.redis_location(), type(exc).__name__)

    async def _recent(self, address: str) -> tuple[int, float | None]:
        """How many failures the address has in the window, and when the oldest was (one round trip)."""
        key = self.key(address)
        async with self.cluster.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", time.time() - self.window_s)
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
            _, count, oldest = await pipe.execute()
        return int(count), (float(oldest[0][1]) if oldest else None)
