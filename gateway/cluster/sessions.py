"""2025-11-25 agent sessions shared by a fleet through Redis (the `agent_sessions` and `StreamLog` seams).

Only the record is shared, under the idle TTL: who opened the session (agent id and identity, never a
token), its protocol version, client capabilities and info, log level, subscriptions, and its stream
logs (the last 256 frames of each, for Last-Event-ID). The live parts - requests in flight, relayed
questions, open streams - stay in the process serving them, which keeps them in a local
`SessionRegistry` and adopts a session opened elsewhere on its first request there.

Keys (under the cluster prefix `P`): `P:session:<id>` (hash: the record and each log's sequence
number), `P:session:<id>:log:<key>` (list of `<seq> <final> <data>`), `P:session:<id>:posts` (the POST
stream logs kept, at most 32), `P:sessions` and `P:sessions:agent:<agent>` and, for a person's
sessions through a client, `P:sessions:person:<agent>:<hash of the person>` (sorted sets, score = the idle
expiry in ms, for the caps). Every operation is one script (one round trip, atomic); scripts
name the keys of a session they find inside it, so this needs one Redis (or Valkey) node, not Redis
Cluster. New frames and ended sessions go to every replica on one pub/sub channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
import weakref
from typing import Any, ClassVar

import orjson

from gateway.cluster.connection import Cluster
from gateway.cluster.subscriber import REDIS_FAILURES, Subscription
from gateway.identity.principal import Principal
from gateway.protocol.sse import encode_event, encode_retry
from gateway.transport.sessions import (
    DEFAULT_LIMITS,
    KEPT_POST_STREAMS,
    REPLAY_BUFFER,
    AgentSession,
    SessionRegistry,
    SessionStoreUnavailable,
    StreamItem,
    caller_identity,
    per_agent_limit,
    per_client_limit,
    person_of,
    total_limit,
)

log = logging.getLogger("narrowgate.cluster")
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32}")  # secrets.token_urlsafe(24)
POST_KEY = re.compile(r"p[0-9a-f]{8}\.[0-9]{1,12}")  # `<post_prefix><n>` of a RedisSessions process
SUBSCRIBED_WAIT_S = 2.0
# A POST stream followed in one process is announced to the others every HEARD_EVERY_S, so the process
# holding its call (waiting for a person, RESUME_GRACE_S at most unheard) knows someone still listens.
HEARD_EVERY_S = 1.0
HEARD_FOR_S = 3.0
Entry = tuple[int, bool, bytes]  # a kept frame: (seq, final, the SSE frame)
Arg = bytes | str | int  # a script argument

# A Lua clock in ms from the server, so every replica's expiries agree.
NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: all, the agent's set, record, the person's set ('' for a workload's session).
# ARGV: idle ms, max per agent (per person through a client), max total, session id, max per client, the record.
CREATE = NOW + """
local idle = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if KEYS[4] == '' then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -1 end
else
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[2]) then return -3 end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return -4 end
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return -2 end
if KEYS[4] ~= '' then
  redis.call('ZADD', KEYS[4], now + idle, ARGV[4])
  redis.call('PEXPIRE', KEYS[4], idle)
end
redis.call('HSET', KEYS[3], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[3], idle)
redis.call('ZADD', KEYS[1], now + idle, ARGV[4])
redis.call('PEXPIRE', KEYS[1], idle)
redis.call('ZADD', KEYS[2], now + idle, ARGV[4])
redis.call('PEXPIRE', KEYS[2], idle)
return 1
"""

# KEYS: record, all, the agent's set, general log, posts, the person's set ('' for a workload's).
# ARGV: idle ms, session id.
REFRESH = NOW + """
local function refresh()
  local idle = tonumber(ARGV[1])
  if KEYS[6] ~= '' then
    redis.call('ZADD', KEYS[6], now + idle, ARGV[2])
    redis.call('PEXPIRE', KEYS[6], idle)
  end
  redis.call('PEXPIRE', KEYS[1], idle)
  redis.call('ZADD', KEYS[2], now + idle, ARGV[2])
  redis.call('PEXPIRE', KEYS[2], idle)
  redis.call('ZADD', KEYS[3], now + idle, ARGV[2])
  redis.call('PEXPIRE', KEYS[3], idle)
  redis.call('PEXPIRE', KEYS[4], idle)
  redis.call('PEXPIRE', KEYS[5], idle)
end
"""

# ARGV 3, 4: the caller's agent id and identity. The record's fields, 0 (someone else's), or nil.
GET = REFRESH + """
local f = redis.call('HMGET', KEYS[1], 'agent', 'identity', 'version', 'caps', 'info', 'level', 'subs')
if not f[1] then return false end
if f[1] ~= ARGV[3] or f[2] ~= ARGV[4] then return 0 end
refresh()
return f
"""

KEEP = REFRESH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
refresh()
return 1
"""

SAVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'level', ARGV[1], 'subs', ARGV[2])
return 1
"""

# ARGV[1]: the session key prefix (`P:session:`), ARGV[2]: the agent sets' prefix, ARGV[3]: the channel.
DELETE = """
local function delete(all, sid)
  local rec = ARGV[1] .. sid
  local agent, person = unpack(redis.call('HMGET', rec, 'agent', 'person'))
  redis.call('ZREM', all, sid)
  if not agent then return 0 end
  redis.call('ZREM', ARGV[2] .. agent, sid)
  if person and person ~= '' then redis.call('ZREM', person, sid) end
  for _, key in ipairs(redis.call('LRANGE', rec .. ':posts', 0, -1)) do
    redis.call('DEL', rec .. ':log:' .. key)
  end
  redis.call('DEL', rec, rec .. ':posts', rec .. ':log:s')
  redis.call('PUBLISH', ARGV[3], 'C ' .. sid)
  return 1
end
"""

CLOSE = DELETE + "return delete(KEYS[1], ARGV[4])\n"

# KEYS: all, the agent's set. ARGV[4]: a task id, or '' for every session of the agent.
CLOSE_AGENT = DELETE + """
local n = 0
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local task = redis.call('HGET', ARGV[1] .. sid, 'task')
  if not task then
    redis.call('ZREM', KEYS[2], sid)
  elseif ARGV[4] == '' or task == ARGV[4] then
    n = n + delete(KEYS[1], sid)
  end
end
return n
"""

COUNT = NOW + "return redis.call('ZCOUNT', KEYS[1], now, '+inf')\n"

# KEYS: record, log, posts. ARGV: log key, data, final (0/1), session id, channel, kept frames, kept posts.
# The sequence number and the frame are stored together; 0 when the session is gone.
APPEND = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
local key = ARGV[1]
local seq = redis.call('HINCRBY', KEYS[1], 'seq:' .. key, 1)
redis.call('RPUSH', KEYS[2], seq .. ' ' .. ARGV[3] .. ' ' .. ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
redis.call('PEXPIRE', KEYS[2], ttl)
if seq == 1 and key ~= 's' then
  redis.call('RPUSH', KEYS[3], key)
  while redis.call('LLEN', KEYS[3]) > tonumber(ARGV[7]) do
    local old = redis.call('LPOP', KEYS[3])
    redis.call('DEL', KEYS[1] .. ':log:' .. old)
    redis.call('HDEL', KEYS[1], 'seq:' .. old)
  end
  redis.call('PEXPIRE', KEYS[3], ttl)
end
redis.call('PUBLISH', ARGV[5], 'F ' .. ARGV[4] .. ' ' .. key .. ' ' .. seq .. ' ' .. ARGV[3] .. '\\n' .. ARGV[2])
return seq
"""


class RedisStreamLog:
    """One stream log of a session, kept in Redis; `followers` are this process's readers, fed by the
    sessions' pub/sub listener (every frame, this process's own included, arrives in order there)."""

    def __init__(self, owner: RedisSessions, session_id: str, key: str, known: bool) -> None:
        self.owner = owner
        self.session_id = session_id
        self.key = key
        self.known = known  # opened here (may have no frame yet), not only named by a Last-Event-ID
        self.finished = False
        self.heard_at = -HEARD_FOR_S  # when another process last said it follows this stream (monotonic)
        self.followers: set[asyncio.Queue[StreamItem]] = set()
        self.catching_up: dict[asyncio.Queue[StreamItem], list[Entry]] = {}
        # The last frame each follower got: a frame published before it caught up may still be on its way.
        self.heard: weakref.WeakKeyDictionary[asyncio.Queue[StreamItem], int] = weakref.WeakKeyDictionary()

    def priming_frame(self, retry_ms: int) -> bytes:
        return encode_retry(f"{self.key}-0", retry_ms)

    def frame(self, seq: int, data: bytes) -> bytes:
        return encode_event(data, f"{self.key}-{seq}")

    def listened(self) -> bool:
        return bool(self.followers) or time.monotonic() - self.heard_at < HEARD_FOR_S

    async def append(self, data: bytes, final: bool = False) -> bytes:
        seq = await self.owner.append(self, data, final)
        if final:
            self.finished = True
        return self.frame(seq, data) if seq else encode_event(data)  # not kept (the session is gone): no id

    async def follow(self, after_seq: int | None) -> asyncio.Queue[StreamItem] | None:
        attached = self.owner.attach(self)
        if attached is not self:  # another reader here found this log first: the channel feeds that one
            return await attached.follow(after_seq)
        await self.owner.subscribed()
        queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        if after_seq is None:  # only new frames (none, if the stream has ended)
            if self.finished:
                queue.put_nowait(None)
            else:
                self.followers.add(queue)
            return queue
        self.catching_up[queue] = []  # live frames arriving while the log is read
        try:
            entries = await self.owner.read_log(self)
        finally:
            live = self.catching_up.pop(queue)
        if entries is None or (not entries and not self.known):
            self.owner.detach(self)
            return None
        last, ended = after_seq, False
        for seq, final, frame in [*entries, *live]:
            if seq > last:
                queue.put_nowait(frame)
                last, ended = seq, ended or final
        if ended:
            self.finished = True
            queue.put_nowait(None)
        else:
            self.heard[queue] = last
            self.followers.add(queue)
        return queue

    def deliver(self, seq: int, data: bytes, final: bool) -> None:
        """A frame from the channel: to this process's followers (and those still catching up)."""
        frame = self.frame(seq, data)
        for pending in self.catching_up.values():
            pending.append((seq, final, frame))
        for queue in self.followers:
            if seq > self.heard.get(queue, 0):
                self.heard[queue] = seq
                queue.put_nowait(frame)
        if final:
            self.finished = True
            self.end()

    def end(self) -> None:
        for queue in self.followers:
            queue.put_nowait(None)


class RedisSessions:
    """`AgentSessions` on Redis: caps, records and stream logs shared by the fleet, live parts here."""

    shared: ClassVar[bool] = True

    def __init__(self, cluster: Cluster, idle_s: float, max_per_agent: int = DEFAULT_LIMITS.max_sessions_per_agent,
                 max_total: int = DEFAULT_LIMITS.max_sessions,
                 max_per_client: int = DEFAULT_LIMITS.max_sessions_per_client) -> None:
        self.cluster = cluster
        self.redis = cluster.redis
        self.keys = cluster.keys
        self.idle_ms = max(int(idle_s * 1000), 1)
        self.max_per_agent = max_per_agent
        self.max_per_client = max_per_client
        self.max_total = max_total
        self.local = SessionRegistry(idle_s)  # the sessions served here, with their live parts
        self.logs: dict[str, dict[str, RedisStreamLog]] = {}  # session id -> key -> log with readers here
        self.channel = self.keys.key("sessions", "events")
        self.post_prefix = f"p{secrets.token_hex(4)}."  # this process's POST stream keys: `<prefix><n>`
        self.keep_every_s = max(1.0, min(idle_s / 4, 60.0))
        self.tasks: list[asyncio.Task[None]] = []
        self.subscription = Subscription(cluster, "sessions", channels=(self.channel,), on_message=self.received,
                                         on_subscribed=self.heard_again, on_lost=self.end_streams)
        register = self.redis.register_script
        self.scripts = {name: register(source) for name, source in (
            ("create", CREATE), ("get", GET), ("keep", KEEP), ("save", SAVE), ("close", CLOSE),
            ("close_agent", CLOSE_AGENT), ("count", COUNT), ("append", APPEND))}

    # keys --------------------------------------------------------------------------------------

    def record_key(self, session_id: str) -> str:
        return self.keys.key("session", session_id)

    def log_key(self, session_id: str, key: str) -> str:
        return self.keys.key("session", session_id, "log", key)

    def agent_key(self, agent_id: str) -> str:
        return self.keys.key("sessions", "agent", agent_id)

    def person_key(self, principal: Principal) -> str:
        """The sorted set of one person's sessions through a client ('' for a workload's: counted per agent)."""
        person = person_of(principal)
        if person is None:
            return ""
        return self.keys.key("sessions", "person", principal.agent_id, hashlib.sha256(person.encode()).hexdigest()[:32])

    def session_keys(self, session_id: str, principal: Principal) -> list[str]:
        """KEYS of the refresh scripts: record, all, the agent's set, general log, posts, the person's set."""
        record = self.record_key(session_id)
        return [record, self.keys.key("sessions"), self.agent_key(principal.agent_id), f"{record}:log:s",
                f"{record}:posts", self.person_key(principal)]

    def delete_args(self) -> list[str]:
        return [self.keys.key("session", ""), self.keys.key("sessions", "agent", ""), self.channel]

    # AgentSessions -----------------------------------------------------------------------------

    async def create(self, principal: Principal, protocol_version: str, capabilities: dict[str, Any],
                     info: dict[str, Any] | None) -> AgentSession:
        session_id = secrets.token_urlsafe(24)
        person = self.person_key(principal)
        record: dict[str, Arg] = {"agent": principal.agent_id, "identity": caller_identity(principal),
                  "task": principal.task_id or "", "version": protocol_version,
                  "caps": orjson.dumps(capabilities), "info": orjson.dumps(info), "level": "", "subs": b"[]",
                  "person": person}
        keys = [self.keys.key("sessions"), self.agent_key(principal.agent_id), self.record_key(session_id), person]
        args: list[Arg] = [self.idle_ms, self.max_per_agent, self.max_total, session_id, self.max_per_client,
                           *(part for pair in record.items() for part in pair)]
        try:
            outcome = await self.scripts["create"](keys=keys, args=args)
        except REDIS_FAILURES as exc:
            log.warning("refused a new session for agent %s: Redis at %s unreachable (%s)", principal.agent_id,
                        self.cluster.settings.redis_location(), type(exc).__name__)
            raise SessionStoreUnavailable() from None
        if outcome == -1:
            raise per_agent_limit(self.max_per_agent)
        if outcome == -2:
            raise total_limit(self.max_total)
        if outcome == -3:
            raise per_agent_limit(self.max_per_agent, person=True)
        if outcome == -4:
            raise per_client_limit(self.max_per_client)
        return self.adopt(session_id, principal, protocol_version, capabilities, info, None, set())

    async def get(self, session_id: str, principal: Principal) -> AgentSession | None:
        if not SESSION_ID.fullmatch(session_id):
            return None
        args: list[Arg] = [self.idle_ms, session_id, principal.agent_id, caller_identity(principal)]
        try:
            found = await self.scripts["get"](keys=self.session_keys(session_id, principal), args=args)
        except REDIS_FAILURES as exc:
            log.warning("session %s… not served: Redis at %s unreachable (%s)", session_id[:6],
                        self.cluster.settings.redis_location(), type(exc).__name__)
            return None  # the agent starts a new session; never served from what this process remembers
        if found is None:
            self.forget(session_id)  # ended or expired elsewhere
            return None
        if found == 0:
            return None  # someone else's: to this caller it does not exist
        _, _, version, caps, info, level, subs = found
        log_level = level.decode() if level else None
        subscriptions = set(orjson.loads(subs))
        session = self.local.sessions.get(session_id)
        if session is None:
            return self.adopt(session_id, principal, version.decode(), orjson.loads(caps), orjson.loads(info),
                              log_level, subscriptions)
        session.principal = principal  # the same caller, as authenticated just now
        session.log_level, session.subscriptions = log_level, subscriptions  # maybe changed on another replica
        self.local.touch(session, self.local.clock())
        return session

    async def save(self, session: AgentSession) -> None:
        args: list[Arg] = [session.log_level or "", orjson.dumps(sorted(session.subscriptions))]
        try:
            await self.scripts["save"](keys=[self.record_key(session.id)], args=args)
        except REDIS_FAILURES as exc:
            log.warning("session %s… record not updated: Redis unreachable (%s)", session.id[:6], type(exc).__name__)

    async def close(self, session_id: str) -> AgentSession | None:
        if not SESSION_ID.fullmatch(session_id):
            return None
        # Forgotten here first: the "closed" message this replica hears back may arrive before the script's
        # answer, and would otherwise have forgotten the session (and its record) already.
        session = self.forget(session_id)
        try:
            await self.scripts["close"](keys=[self.keys.key("sessions")], args=[*self.delete_args(), session_id])
        except REDIS_FAILURES as exc:
            log.warning("session %s… ended here only: Redis unreachable (%s)", session_id[:6], type(exc).__name__)
        return session

    async def close_agent(self, agent_id: str) -> int:
        return await self.close_sessions(agent_id, "")

    async def close_task(self, agent_id: str, task_id: str) -> int:
        return await self.close_sessions(agent_id, task_id)

    async def close_sessions(self, agent_id: str, task_id: str) -> int:
        """End an agent's sessions (those of one task, or all) in the fleet; the other replicas hear it
        on the channel. Without Redis, at least those served here end."""
        here = self.local.drop_task(agent_id, task_id) if task_id else self.local.drop_agent(agent_id)
        keys = [self.keys.key("sessions"), self.agent_key(agent_id)]
        try:
            closed = int(await self.scripts["close_agent"](keys=keys, args=[*self.delete_args(), task_id]))
        except REDIS_FAILURES as exc:
            log.warning("sessions of agent %s ended here only: Redis unreachable (%s)", agent_id, type(exc).__name__)
            return here
        return max(closed, here)

    async def count(self, agent_id: str | None = None) -> int:
        key = self.keys.key("sessions") if agent_id is None else self.agent_key(agent_id)
        return int(await self.scripts["count"](keys=[key]))

    def all(self) -> list[AgentSession]:
        return self.local.all()

    def release_local(self) -> None:
        """This process stops: its streams and work end here; the records live on for the other replicas."""
        for session_id in list(self.local.sessions):
            self.forget(session_id)

    # this process's sessions -------------------------------------------------------------------

    def adopt(self, session_id: str, principal: Principal, version: str, capabilities: dict[str, Any],
              info: dict[str, Any] | None, log_level: str | None, subscriptions: set[str]) -> AgentSession:
        session = AgentSession(
            session_id, principal, version, capabilities, info, last_seen=self.local.clock(), log_level=log_level,
            subscriptions=subscriptions, new_log=lambda key: self.open_log(session_id, key),
            general=self.open_log(session_id, "s"), find_log=lambda key: self.find_log(session_id, key),
            post_prefix=self.post_prefix)
        self.local.expire_idle()  # sessions not used here for idle_s leave this process (their record stays)
        self.local.add(session)
        return session

    def forget(self, session_id: str) -> AgentSession | None:
        """Stop serving a session here: its requests are cancelled and its streams end."""
        session = self.local.drop(session_id)
        for stream in self.logs.pop(session_id, {}).values():
            stream.end()
        return session

    def open_log(self, session_id: str, key: str) -> RedisStreamLog:
        stream = RedisStreamLog(self, session_id, key, known=True)
        self.attach(stream)
        return stream

    def find_log(self, session_id: str, key: str) -> RedisStreamLog | None:
        """A POST stream log of this session written by any replica, by the key in a Last-Event-ID."""
        known = self.logs.get(session_id, {}).get(key)
        if known is not None:
            return known
        return RedisStreamLog(self, session_id, key, known=False) if POST_KEY.fullmatch(key) else None

    def attach(self, stream: RedisStreamLog) -> RedisStreamLog:
        """Route the channel's frames for this log to `stream` (once it has, or may get, readers), unless
        another handle of the same log has them already: that one is answered."""
        return self.logs.setdefault(stream.session_id, {}).setdefault(stream.key, stream)

    def detach(self, stream: RedisStreamLog) -> None:
        """A log named by a Last-Event-ID that does not exist: forget it (nobody follows it)."""
        streams = self.logs.get(stream.session_id, {})
        if not stream.known and not stream.followers and streams.get(stream.key) is stream:
            del streams[stream.key]

    # stream logs -------------------------------------------------------------------------------

    async def append(self, stream: RedisStreamLog, data: bytes, final: bool) -> int:
        """The frame's sequence number, or 0 if it could not be kept (session gone, Redis unreachable)."""
        record = self.record_key(stream.session_id)
        keys = [record, f"{record}:log:{stream.key}", f"{record}:posts"]
        args: list[Arg] = [stream.key, data, "1" if final else "0", stream.session_id, self.channel, REPLAY_BUFFER,
                           KEPT_POST_STREAMS]
        try:
            return int(await self.scripts["append"](keys=keys, args=args))
        except REDIS_FAILURES as exc:
            log.warning("a frame of session %s… was not kept: Redis unreachable (%s)", stream.session_id[:6],
                        type(exc).__name__)
            return 0

    async def read_log(self, stream: RedisStreamLog) -> list[Entry] | None:
        """The kept frames, oldest first: (seq, final, frame); None when Redis cannot be reached."""
        try:
            entries = await self.redis.lrange(self.log_key(stream.session_id, stream.key), 0, -1)
        except REDIS_FAILURES as exc:
            log.warning("stream log not read: Redis unreachable (%s)", type(exc).__name__)
            return None
        frames = []
        for entry in entries:
            raw = entry if isinstance(entry, bytes) else entry.encode()  # bytes: the client has decode_responses=False
            seq, final, data = raw.split(b" ", 2)
            frames.append((int(seq), final == b"1", stream.frame(int(seq), data)))
        return frames

    # the channel and the keeper ----------------------------------------------------------------

    async def start(self) -> None:
        """Once Redis answers (Cluster.open): hear the channel, keep busy sessions alive, say what is followed."""
        self.subscription.start()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.keep()), loop.create_task(self.announce_followed())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.subscription.stop()

    async def subscribed(self) -> None:
        """Wait (briefly) until the channel is heard, so a new reader misses no frame."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscription.subscribed.wait(), SUBSCRIBED_WAIT_S)

    async def received(self, channel: bytes, payload: bytes) -> None:
        self.dispatch(payload)

    async def heard_again(self) -> None:
        """(Re)subscribed: nothing to catch up, the streams open before a loss were ended (`end_streams`)."""

    def dispatch(self, payload: bytes) -> None:
        try:
            self.route(payload)
        except (ValueError, UnicodeDecodeError):
            log.warning("unreadable message on the session channel dropped")

    def route(self, payload: bytes) -> None:
        kind, _, rest = payload.partition(b" ")
        if kind == b"C":
            self.forget(rest.decode())
            return
        if kind == b"H":
            session_id, key = rest.decode().split(" ")
            heard = self.logs.get(session_id, {}).get(key)
            if heard is not None:
                heard.heard_at = time.monotonic()
            return
        if kind != b"F":
            return
        head, _, data = rest.partition(b"\n")
        session_id, key, seq, final = head.decode().split(" ")
        stream = self.logs.get(session_id, {}).get(key)
        if stream is not None:
            stream.deliver(int(seq), data, final == "1")

    def end_streams(self) -> None:
        """Frames may have been missed (the channel was lost): end every stream here; agents resume
        them with Last-Event-ID from the shared log."""
        for streams in self.logs.values():
            for stream in streams.values():
                stream.end()

    async def announce_followed(self) -> None:
        """Say which POST streams are followed here (resumed by Last-Event-ID), for the process holding
        their call; a GET stream needs no such word (the session's TTL is kept by `keep`)."""
        while True:
            await asyncio.sleep(HEARD_EVERY_S)
            followed = [stream for streams in self.logs.values() for stream in streams.values()
                        if stream.key != "s" and stream.followers and not stream.finished]
            if not followed:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for stream in followed:
                pipe.publish(self.channel, f"H {stream.session_id} {stream.key}")
            with contextlib.suppress(*REDIS_FAILURES):
                await pipe.execute()

    async def keep(self) -> None:
        """Sessions with a stream open or a request running here are in use: keep their records alive."""
        while True:
            await asyncio.sleep(self.keep_every_s)
            busy = [s for s in self.local.all() if s.has_listeners() or s.in_flight]
            for session in busy:
                keys = self.session_keys(session.id, session.principal)
                try:
                    alive = await self.scripts["keep"](keys=keys, args=[self.idle_ms, session.id])
                except REDIS_FAILURES:
                    break  # the channel's listener reports the outage
                if not alive:
                    self.forget(session.id)
            self.local.expire_idle()
            for session_id in [sid for sid in self.logs if sid not in self.local.sessions]:
                del self.logs[session_id]  # logs of sessions that left this process
