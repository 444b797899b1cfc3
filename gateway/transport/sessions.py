"""Agent sessions of the handshake era (2025-11-25): state the gateway keeps per `Mcp-Session-Id`."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.identity.principal import Principal
from gateway.protocol.errors import INTERNAL_ERROR, RATE_LIMITED, RpcError
from gateway.protocol.jsonrpc import RequestId
from gateway.protocol.sse import encode_event, encode_retry
from gateway.registry.spared import SPARED_REQUEST
from gateway.settings.limits import LimitSettings
from gateway.state.sessions import StreamLog as StreamLogSeam

REPLAY_BUFFER = 256
DEFAULT_LIMITS = LimitSettings()
KEPT_POST_STREAMS = 32
StreamItem = bytes | None  # None ends a follower's stream
StreamLogFactory = Callable[[str], StreamLogSeam]  # key -> a new, empty log
LogFinder = Callable[[str], StreamLogSeam | None]  # key of a log this process did not write -> the log, if shared
Resumed = tuple[StreamLogSeam, asyncio.Queue[StreamItem]]  # the log a GET stream follows, and its queue


def caller_identity(principal: Principal) -> str:
    """Who opened a session, beyond its agent: the token kind and what it names (a workload's issuer
    and subject, a task token's task). Holds no token; a refreshed token of the same workload matches."""
    if principal.task_id is not None:
        return f"task-token:{principal.task_id}"
    claims = principal.claims
    if claims:
        return f"{principal.auth_method}:{claims.get('iss', '')}:{claims.get('sub', '')}"
    return principal.auth_method


def person_of(principal: Principal) -> str | None:
    """The person a session is opened for through a client (`caller_identity`: the provider and `sub`), whose
    sessions count against `max_per_agent` on their own; None for a workload's, which count per agent."""
    return caller_identity(principal) if principal.user is not None and principal.task_id is None else None


def same_caller(opened_by: Principal, caller: Principal) -> bool:
    """A session belongs to the principal that opened it; to anyone else it does not exist.
    (`caller_identity` compared, without building the strings: this runs on every request.)"""
    if opened_by is caller:
        return True
    if (opened_by.agent_id != caller.agent_id or opened_by.auth_method != caller.auth_method
            or opened_by.task_id != caller.task_id):
        return False
    if opened_by.task_id is not None:
        return True
    opened, now = opened_by.claims, caller.claims
    return bool(opened.get("iss", "") == now.get("iss", "") and opened.get("sub", "") == now.get("sub", ""))


def no_shared_logs(key: str) -> None:
    return None


class StreamLog:
    """The frames of one SSE stream, kept so an agent can resume with Last-Event-ID.

    Event ids are `<key>-<seq>`: key `s` is the session's GET stream, `p<n>` a POST response stream.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.frames: deque[tuple[int, bytes]] = deque(maxlen=REPLAY_BUFFER)
        self.next_seq = 1
        self.followers: set[asyncio.Queue[StreamItem]] = set()
        self.finished = False

    def priming_frame(self, retry_ms: int) -> bytes:
        return encode_retry(f"{self.key}-0", retry_ms)

    def listened(self) -> bool:
        return bool(self.followers)

    async def append(self, data: bytes, final: bool = False) -> bytes:
        return self.append_now(data, final)

    def append_now(self, data: bytes, final: bool = False) -> bytes:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        frame = encode_event(data, f"{self.key}-{seq}")
        self.frames.append((seq, frame))
        for queue in self.followers:
            queue.put_nowait(frame)
        if final:
            self.finished = True
            for queue in self.followers:
                queue.put_nowait(None)
        return frame

    async def follow(self, after_seq: int | None) -> asyncio.Queue[StreamItem] | None:
        """A queue holding the frames after `after_seq` (None: only new ones), then live frames."""
        queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        if after_seq is not None:
            for seq, frame in self.frames:
                if seq > after_seq:
                    queue.put_nowait(frame)
        if self.finished:
            queue.put_nowait(None)
        else:
            self.followers.add(queue)
        return queue


@dataclass(slots=True)
class AgentSession:
    id: str
    principal: Principal
    protocol_version: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any] | None
    last_seen: float = field(default_factory=time.monotonic)
    log_level: str | None = None
    subscriptions: set[str] = field(default_factory=set)
    # Where this session's stream logs are kept (the StreamLog seam).
    new_log: StreamLogFactory = StreamLog
    # A log of this session another process wrote (shared logs only), for Last-Event-ID.
    find_log: LogFinder = no_shared_logs
    # POST stream keys are `<post_prefix><n>`: unique per process when the logs are shared.
    post_prefix: str = "p"
    # Session-level messages (list changes, resource updates) for GET streams.
    general: StreamLogSeam = field(default_factory=lambda: StreamLog("s"))
    # Recent POST response streams, oldest first.
    posts: OrderedDict[str, StreamLogSeam] = field(default_factory=OrderedDict)
    post_numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Requests the gateway relayed to the agent, waiting for its reply.
    asks: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    ask_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Agent request id -> the task serving it, so notifications/cancelled can stop it.
    in_flight: dict[RequestId | None, asyncio.Task[object]] = field(default_factory=dict)
    # The tools this agent was last shown (tools/list); a change to it, and only that, is announced.
    tools_seen: frozenset[str] | None = None

    async def publish(self, message: dict[str, Any]) -> None:
        """Send a session-level message to every open GET stream (and keep it for replay)."""
        await self.general.append(orjson.dumps(message))

    def open_post_stream(self) -> StreamLogSeam:
        log = self.new_log(f"{self.post_prefix}{next(self.post_numbers)}")
        self.posts[log.key] = log
        while len(self.posts) > KEPT_POST_STREAMS:
            self.posts.popitem(last=False)
        return log

    async def resume(self, last_event_id: str | None) -> Resumed | None:
        """Where a GET stream reads from: the stream named by Last-Event-ID, or the session's own."""
        if not last_event_id:
            log: StreamLogSeam | None = self.general
            after: int | None = None
        else:
            key, _, seq = last_event_id.rpartition("-")
            if not seq.isdigit():
                return None
            log = self.general if key == "s" else self.posts.get(key) or self.find_log(key)
            after = int(seq)
        if log is None:
            return None
        queue = await log.follow(after)
        return None if queue is None else (log, queue)

    def has_listeners(self) -> bool:
        return bool(self.general.followers)

    def next_ask_id(self) -> str:
        return f"ng-{next(self.ask_ids)}"


def _running_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


class SessionLimitReached(RpcError):
    """A new session would pass a configured cap; `status` is the HTTP status of the refusal."""

    def __init__(self, status: int, limit: str, maximum: int, message: str) -> None:
        super().__init__(RATE_LIMITED, message, {"limit": limit, "max": maximum})
        self.status = status


class SessionStoreUnavailable(RpcError):
    """The shared session store cannot be reached: no new session is opened (HTTP 503)."""

    status = 503

    def __init__(self) -> None:
        super().__init__(INTERNAL_ERROR, "New sessions are refused: the gateway cannot reach its shared session "
                                         "store right now; try again shortly", {"reason": "session_store_unavailable"})


class SessionRegistry:
    """The open 2025-11-25 sessions, at most `max_per_agent` per agent and `max_total` in all. Through a
    person's client: at most `max_per_agent` per person and `max_per_client` for all its people together, so
    one person cannot take every place of the client's other people.

    Sessions are kept in order of last use, so idle ones are found at the front: expiry costs O(1)
    amortized per request, never a scan of every session. The synchronous methods (`add`, `find`,
    `drop`...) are this process's bookkeeping; a shared implementation keeps its live sessions in one.
    """

    def __init__(self, idle_s: float, max_per_agent: int = DEFAULT_LIMITS.max_sessions_per_agent,
                 max_total: int = DEFAULT_LIMITS.max_sessions, clock: Callable[[], float] = time.monotonic,
                 new_log: StreamLogFactory = StreamLog,
                 max_per_client: int = DEFAULT_LIMITS.max_sessions_per_client) -> None:
        self.sessions: OrderedDict[str, AgentSession] = OrderedDict()  # least recently used first
        self.by_agent: dict[str, set[str]] = {}
        self.by_person: dict[tuple[str, str], set[str]] = {}  # (client agent, person_of) -> session ids
        self.idle_s = idle_s
        self.max_per_agent = max_per_agent
        self.max_per_client = max_per_client
        self.max_total = max_total
        self.clock = clock
        self.new_log = new_log

    async def create(
        self, principal: Principal, protocol_version: str, capabilities: dict[str, Any], info: dict[str, Any] | None
    ) -> AgentSession:
        """A new session, or SessionLimitReached (nothing is created then)."""
        self.expire_idle()
        owned = len(self.by_agent.get(principal.agent_id, ()))
        person = person_of(principal)
        if person is None:
            check_caps(owned, len(self.sessions), self.max_per_agent, self.max_total)
        else:
            mine = len(self.by_person.get((principal.agent_id, person), ()))
            check_person_caps(mine, owned, self.max_per_agent, self.max_per_client)
            if len(self.sessions) >= self.max_total:  # the gateway's total
                raise total_limit(self.max_total)
        session = AgentSession(secrets.token_urlsafe(24), principal, protocol_version, capabilities, info,
                               last_seen=self.clock(), new_log=self.new_log, general=self.new_log("s"))
        self.add(session)
        return session

    async def get(self, session_id: str, principal: Principal) -> AgentSession | None:
        session = self.find(session_id)
        return session if session is not None and same_caller(session.principal, principal) else None

    async def save(self, session: AgentSession) -> None:
        """Nothing to do: the record is the object itself."""

    async def close(self, session_id: str) -> AgentSession | None:
        return self.drop(session_id)

    async def close_agent(self, agent_id: str) -> int:
        """End every session of one agent (suspended, retired): its open streams close at once."""
        return self.drop_agent(agent_id)

    async def close_task(self, agent_id: str, task_id: str) -> int:
        """End the sessions opened with one task's token, now that the task has ended.

        That token is refused from now on, so nobody could use such a session or DELETE it: left
        open, it would hold one of the agent's `max_per_agent` slots until it idled out. The request
        that ended the task (narrowgate__complete_task on that very session) still gets its answer.
        """
        return self.drop_task(agent_id, task_id)

    async def count(self, agent_id: str | None = None) -> int:
        return len(self.sessions) if agent_id is None else len(self.by_agent.get(agent_id, ()))

    def all(self) -> list[AgentSession]:
        return list(self.sessions.values())

    def release_local(self) -> None:
        """The process stops: its sessions end with it (their GET streams close)."""
        for session_id in list(self.sessions):
            self.drop(session_id)

    # This process's bookkeeping -----------------------------------------------------------------

    def add(self, session: AgentSession) -> None:
        self.sessions[session.id] = session
        self.by_agent.setdefault(session.principal.agent_id, set()).add(session.id)
        if (person := person_of(session.principal)) is not None:
            self.by_person.setdefault((session.principal.agent_id, person), set()).add(session.id)

    def find(self, session_id: str) -> AgentSession | None:
        """The session if it is open here and not idle (then marked as used now)."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if self.idle(session, now):
            self.drop(session_id)  # expired, though no new session has swept it yet
            return None
        self.touch(session, now)
        return session

    def touch(self, session: AgentSession, now: float) -> None:
        session.last_seen = now
        self.sessions.move_to_end(session.id)

    def drop(self, session_id: str) -> AgentSession | None:
        """Forget a session here: its requests in flight are cancelled, its relayed questions and its
        open streams end."""
        session = self.sessions.pop(session_id, None)
        if session is not None:
            owned = self.by_agent.get(session.principal.agent_id)
            if owned is not None:
                owned.discard(session_id)
                if not owned:
                    del self.by_agent[session.principal.agent_id]
            if (person := person_of(session.principal)) is not None:
                key = (session.principal.agent_id, person)
                mine = self.by_person.get(key)
                if mine is not None:
                    mine.discard(session_id)
                    if not mine:
                        del self.by_person[key]
            spared = SPARED_REQUEST.get()
            for task in session.in_flight.values():
                if task is not spared:
                    task.cancel()
            for future in session.asks.values():
                future.cancel()
            for log in (session.general, *session.posts.values()):
                for queue in log.followers:
                    queue.put_nowait(None)  # ends open GET streams
        return session

    def drop_agent(self, agent_id: str) -> int:
        doomed = list(self.by_agent.get(agent_id, ()))
        for session_id in doomed:
            self.drop(session_id)
        return len(doomed)

    def drop_task(self, agent_id: str, task_id: str) -> int:
        doomed = [sid for sid in self.by_agent.get(agent_id, ()) if self.sessions[sid].principal.task_id == task_id]
        spared = SPARED_REQUEST.set(SPARED_REQUEST.get() or _running_task())
        try:
            for session_id in doomed:
                self.drop(session_id)
        finally:
            SPARED_REQUEST.reset(spared)
        return len(doomed)

    def idle(self, session: AgentSession, now: float) -> bool:
        """Unused for idle_s, with no open GET stream and no request in flight."""
        return session.last_seen <= now - self.idle_s and not session.has_listeners() and not session.in_flight

    def expire_idle(self) -> None:
        """Drop idle sessions from the least recently used end; a busy one found there counts as used now."""
        now = self.clock()
        cutoff = now - self.idle_s
        while self.sessions:
            session = next(iter(self.sessions.values()))
            if session.last_seen > cutoff:
                return
            if self.idle(session, now):
                self.drop(session.id)
            else:
                self.touch(session, now)  # a GET stream or a request still holds it: it is in use


def check_caps(agent_count: int, total: int, max_per_agent: int, max_total: int) -> None:
    """Raise SessionLimitReached if one more session would pass a cap."""
    if agent_count >= max_per_agent:
        raise per_agent_limit(max_per_agent)
    if total >= max_total:
        raise total_limit(max_total)


def check_person_caps(person_count: int, client_count: int, max_per_person: int, max_per_client: int) -> None:
    """A person's session through a client: their own places (`max_per_agent`), then the client's together."""
    if person_count >= max_per_person:
        raise per_agent_limit(max_per_person, person=True)
    if client_count >= max_per_client:
        raise per_client_limit(max_per_client)


def per_client_limit(maximum: int) -> SessionLimitReached:
    return SessionLimitReached(
        429, "limits.max_sessions_per_client", maximum,
        f"Too many sessions: this client already has {maximum} open for all its people together "
        "(limits.max_sessions_per_client); try again later")


def per_agent_limit(maximum: int, *, person: bool = False) -> SessionLimitReached:
    """`person`: a person's own sessions through a client, which count apart from the client's other people."""
    held = (f"you already have {maximum} open through this client" if person
            else f"this agent already has {maximum} open")
    return SessionLimitReached(
        429, "limits.max_sessions_per_agent", maximum,
        f"Too many sessions: {held} (limits.max_sessions_per_agent); end one with DELETE, or wait for idle ones "
        "to expire")


def total_limit(maximum: int) -> SessionLimitReached:
    return SessionLimitReached(
        503, "limits.max_sessions", maximum,
        f"Too many sessions: the gateway holds its maximum of {maximum} (limits.max_sessions); try again later")
