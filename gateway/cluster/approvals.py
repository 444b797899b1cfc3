"""Open approval requests and their held calls' wake-ups, shared by every replica through Redis.

Keys (under the cluster's prefix): `approvals:open` (hash: id -> the request as JSON), `approvals:expiry`
(sorted set: id -> when the entry may be dropped, its expiry plus a grace so that some replica's sweep
records the expiry first) and `approvals:closed` (sorted set: ids claimed by `pop`, until the same time).
Every operation is one Lua script or command: one round trip, atomic.

- `pop` is the claim: it removes the request and leaves its id in `closed`, so of two replicas racing to
  use one approval exactly one gets it, and a stale copy (a replica reloading the store's row before the
  "used" write landed) can never be opened again.
- `put` without `replacing` opens a request only if its id is neither open nor closed; with `replacing`
  it changes it only if the open entry is still exactly what the caller read (compare-and-set on the
  stored JSON), so a decision never revives a request cancelled meanwhile.
- Unreachable Redis: nothing is open (`get` None, `values` empty, `put`/`pop` refused). A held call is
  then answered from the store's row, and using an approval needs the claim: it is refused. A canceller
  asks `values(strict=True)`: it is told it could not read them (and retries) rather than "none open".

Wake-ups go over pub/sub (`approvals:wake`) to every replica; a missed one only delays a held call to its
next keepalive slice, when it reads the request again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import ClassVar, TypeVar

from redis.exceptions import RedisError

from gateway.approvals.model import Approval
from gateway.cluster.connection import Cluster
from gateway.cluster.subscriber import Subscription
from gateway.state.approvals import OpenApprovalsUnreachable
from gateway.state.memory import InMemoryApprovalWaiters

log = logging.getLogger("narrowgate.cluster")
GRACE_S = 300.0
PURGE_BATCH = 500
FIRST_SUBSCRIBE_WAIT_S = 2.0
UNREACHABLE = (RedisError, OSError, TimeoutError)
T = TypeVar("T")

# KEYS: open hash, expiry zset, closed zset. ARGV[1]: now. Drops entries past their time (a few at once),
# and keeps each key no longer than its latest entry.
PURGE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, PURGE_BATCH)
if #gone > 0 then
  redis.call('HDEL', KEYS[1], unpack(gone))
  redis.call('ZREM', KEYS[2], unpack(gone))
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
local function keep(key, drop_at)
  local ms = math.ceil((tonumber(drop_at) - tonumber(ARGV[1])) * 1000)
  local ttl = redis.call('PTTL', key)
  if ms > 0 and (ttl == -1 or ttl < ms) then redis.call('PEXPIRE', key, ms) end
end
""".replace("PURGE_BATCH", str(PURGE_BATCH))

# ARGV: now, id, json, drop_at, replacing ('' = open a new one)
PUT = PURGE + """
local current = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[5] == '' then
  if current or redis.call('ZSCORE', KEYS[3], ARGV[2]) then return 0 end
elseif current ~= ARGV[5] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
keep(KEYS[1], ARGV[4])
keep(KEYS[2], ARGV[4])
return 1
"""

# ARGV: now, id, default drop_at
POP = PURGE + """
local current = redis.call('HGET', KEYS[1], ARGV[2])
if not current then return false end
local drop_at = redis.call('ZSCORE', KEYS[2], ARGV[2]) or ARGV[3]
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], drop_at, ARGV[2])
keep(KEYS[3], drop_at)
return current
"""

# ARGV: now
VALUES = PURGE + """
return redis.call('HVALS', KEYS[1])
"""


def encode(approval: Approval) -> str:
    """Canonical JSON: the same request always encodes the same (the compare-and-set compares these)."""
    return json.dumps(approval.to_dict(), sort_keys=True, separators=(",", ":"))


def decode(raw: bytes | str) -> Approval:
    return Approval.from_dict(json.loads(raw))


class RedisOpenApprovals:
    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.redis = cluster.redis
        self.keys = [cluster.keys.key("approvals", "open"), cluster.keys.key("approvals", "expiry"),
                     cluster.keys.key("approvals", "closed")]
        self._put = self.redis.register_script(PUT)
        self._pop = self.redis.register_script(POP)
        self._values = self.redis.register_script(VALUES)

    async def get(self, approval_id: str) -> Approval | None:
        try:
            raw = await self.redis.hget(self.keys[0], approval_id)
        except UNREACHABLE as exc:
            return self._unreachable("read", exc, None)
        return None if raw is None else decode(raw)

    async def put(self, approval: Approval, replacing: Approval | None = None) -> bool:
        expected = "" if replacing is None else encode(replacing)
        args: list[str | float] = [time.time(), approval.id, encode(approval), approval.expires_at + GRACE_S, expected]
        try:
            return bool(await self._put(keys=self.keys, args=args))
        except UNREACHABLE as exc:
            return self._unreachable("write", exc, False)

    async def pop(self, approval_id: str) -> Approval | None:
        now = time.time()
        try:
            raw = await self._pop(keys=self.keys, args=[now, approval_id, now + GRACE_S])
        except UNREACHABLE as exc:
            return self._unreachable("claim", exc, None)
        return None if raw is None else decode(raw)

    async def values(self, strict: bool = False) -> list[Approval]:
        try:
            raws = await self._values(keys=self.keys, args=[time.time()])
        except UNREACHABLE as exc:
            if strict:
                raise OpenApprovalsUnreachable(f"Redis {self.cluster.settings.redis_location()}: "
                                               f"{type(exc).__name__}") from None
            return self._unreachable("list", exc, [])
        return [decode(raw) for raw in raws]

    async def count(self) -> int:
        try:
            return int(await self.redis.hlen(self.keys[0]))
        except UNREACHABLE as exc:
            return self._unreachable("count", exc, 0)

    def _unreachable(self, what: str, exc: BaseException, answer: T) -> T:
        log.warning("open approvals: cannot %s at Redis %s (%s): nothing is open until it answers",
                    what, self.cluster.settings.redis_location(), type(exc).__name__)
        return answer


class RedisApprovalWaiters:
    """Held calls are counted per process (they live here); wake-ups reach every process by pub/sub.

    A cluster runner: it listens from `start` (the cluster opened) to `stop` (before it closes). After a
    lost subscription every held call here reads its request again, so no missed wake-up is waited out."""

    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.channel = cluster.keys.key("approvals", "wake")  # its own channel: not a notice topic
        self._local = InMemoryApprovalWaiters()
        self._sending: set[asyncio.Task[None]] = set()
        self._subscriptions = 0
        self.subscription = Subscription(cluster, "approval wake-ups", channels=(self.channel,),
                                         on_message=self._woken, on_subscribed=self._caught_up, on_lost=lambda: None)

    async def start(self) -> None:
        self.subscription.start()
        with contextlib.suppress(TimeoutError):  # listening before the first call is held, if Redis answers
            async with asyncio.timeout(FIRST_SUBSCRIBE_WAIT_S):
                await self.subscription.subscribed.wait()

    async def stop(self) -> None:
        await self.subscription.stop()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def hold_begins(self, approval_id: str) -> None:
        self._local.hold_begins(approval_id)

    def hold_ends(self, approval_id: str) -> bool:
        return self._local.hold_ends(approval_id)

    def is_held(self, approval_id: str) -> bool:
        return self._local.is_held(approval_id)

    async def wait(self, approval_id: str, timeout_s: float) -> None:
        await self._local.wait(approval_id, timeout_s)

    def wake(self, approval_id: str) -> None:
        self._local.wake(approval_id)  # this process at once; the others by pub/sub
        task = asyncio.get_running_loop().create_task(self._publish(approval_id))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, approval_id: str) -> None:
        try:
            await self.cluster.redis.publish(self.channel, approval_id)
        except UNREACHABLE as exc:  # the held calls elsewhere read the request at their next keepalive slice
            log.warning("approval wake-up for %s not sent (Redis %s: %s)", approval_id,
                        self.cluster.settings.redis_location(), type(exc).__name__)

    async def _woken(self, channel: bytes, approval_id: bytes) -> None:
        self._local.wake(approval_id.decode())

    async def _caught_up(self) -> None:
        self._subscriptions += 1
        if self._subscriptions > 1:  # subscribed again: what was published meanwhile is lost
            self._local.wake_all()
