"""Console sign-ins and the failed-sign-in throttle shared by every replica through Redis, so a person
signed in on one replica is signed in on all, and guessing credentials is counted across the fleet.

A session is a hash under `console:session:<sha256 of its id>` (the id is the cookie's bearer secret:
never in a key) holding the person (name, actor, groups, roles: never the credential they pasted), the
CSRF token, the absolute end, `last_seen` and the one-shot messages. Its TTL is the sooner of the absolute
end (the lifetime, or the credential's expiry) and the idle limit, refreshed by `get` (one script: check,
touch, extend). Sign-in attempts are a sorted set of times per address (`console:login-failures:<sha256>`),
on Redis's clock: one script trims the window, checks the limit and counts the attempt, before the
credential is checked; a successful sign-in takes its attempt back.

Unreachable Redis: `get` is None (the person signs in again, which fails while Redis is down), `attempt`
is refused (no credential can be tried uncounted).
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
from gateway.cluster.chain_clock import LUA_CLOCK
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


# KEYS[1]: the address's attempts. ARGV: now ('' for Redis TIME), window_s, limit, a unique member, kept.
# Trims the window, then admits and counts the attempt only under the limit: 1 admitted, 0 refused.
ATTEMPT = """
local now = clock(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[5]) - 1)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return 1
"""

# KEYS[1]: the address's attempts. ARGV: now ('' for Redis TIME), window_s. Seconds until the oldest
# counted attempt leaves the window (0: none counted), as a string (Lua numbers become integers).
RETRY_AFTER = """
local now = clock(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #oldest == 0 then return '0' end
return tostring(tonumber(oldest[2]) + window - now)
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
    """At most `limit` sign-in attempts per address in any `window_s` that did not succeed, counted
    across the fleet on Redis's clock; each admitted attempt counts at once (one script)."""

    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster, limit: int = 10, window_s: float = 60.0) -> None:
        self.cluster = cluster
        self.limit = limit
        self.window_s = window_s
        self._attempt = cluster.redis.register_script(LUA_CLOCK + ATTEMPT)
        self._retry_after = cluster.redis.register_script(LUA_CLOCK + RETRY_AFTER)

    def key(self, address: str) -> str:
        return self.cluster.keys.key("console", "login-failures", digest(address))

    async def attempt(self, address: str) -> str | None:
        ticket = secrets.token_hex(8)
        try:
            admitted = await self._attempt(keys=[self.key(address)],
                                           args=["", repr(self.window_s), self.limit, ticket, FAILURES_KEPT])
        except UNREACHABLE as exc:
            log.warning("console: cannot count a sign-in attempt at Redis %s (%s): sign-ins refused",
                        self.cluster.settings.redis_location(), type(exc).__name__)
            return None
        return ticket if admitted else None

    async def succeeded(self, address: str, ticket: str) -> None:
        try:
            await self.cluster.redis.zrem(self.key(address), ticket)
        except UNREACHABLE as exc:  # the attempt stays counted until the window passes: fails safe
            log.warning("console: cannot uncount a successful sign-in at Redis %s (%s)",
                        self.cluster.settings.redis_location(), type(exc).__name__)

    async def retry_after_s(self, address: str) -> int:
        try:
            wait = await self._retry_after(keys=[self.key(address)], args=["", repr(self.window_s)])
        except UNREACHABLE:
            return math.ceil(self.window_s)
        return max(1, math.ceil(float(wait))) if float(wait) > 0 else 0
