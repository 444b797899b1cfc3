"""2025-11-25 agent sessions (`Mcp-Session-Id`) and the stream logs agents resume with Last-Event-ID."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, TypeVar, runtime_checkable

SessionT = TypeVar("SessionT")
PrincipalT = TypeVar("PrincipalT", contravariant=True)
StreamItem = bytes | None  # None ends a follower's stream


@runtime_checkable
class StreamLog(Protocol):
    """The frames of one SSE stream, numbered `<key>-<seq>`, kept (the last few hundred) for replay.

    `followers` are the readers attached in this process. A shared implementation keeps the frames
    in a capped, expiring list (append = one round trip, atomic with the sequence number) and
    delivers new frames to followers on any replica through pub/sub.
    """

    key: str
    finished: bool
    followers: set[asyncio.Queue[StreamItem]]

    def priming_frame(self, retry_ms: int) -> bytes: ...

    def listened(self) -> bool:
        """Someone follows this stream now: here, or (a shared log) in another process lately."""
        ...

    async def append(self, data: bytes, final: bool = False) -> bytes: ...

    async def follow(self, after_seq: int | None) -> asyncio.Queue[StreamItem] | None:
        """The frames after `after_seq` (None: only new ones), then live frames; None when there is
        no such log to resume (never written, or expired)."""
        ...


@runtime_checkable
class AgentSessions(Protocol[PrincipalT, SessionT]):
    """The open sessions, capped per agent and in all, expiring when idle.

    `create` checks the caps and adds the session atomically (or raises SessionLimitReached and adds
    nothing). `get` answers a session only to the caller it was opened for (same agent, same
    identity): to anyone else it does not exist. `all` is the sessions this process serves (the
    list-change and resource-update fan-out); `release_local` ends their streams and work here when
    the process stops. The live parts of a session (requests in flight, relayed questions, open
    streams) stay in the process that serves it; a shared implementation shares the record
    (principal reference, version, capabilities, log level, subscriptions, stream logs) under an idle
    TTL, and when unreachable refuses new sessions and answers `get` with None (the agent starts
    over), never a stale principal.
    """

    async def create(self, principal: PrincipalT, protocol_version: str, capabilities: dict[str, Any],
                     info: dict[str, Any] | None) -> SessionT: ...

    async def get(self, session_id: str, principal: PrincipalT) -> SessionT | None: ...

    async def save(self, session: SessionT) -> None:
        """Keep what a request changed in the record (log level, subscriptions)."""
        ...

    async def close(self, session_id: str) -> SessionT | None: ...

    async def close_agent(self, agent_id: str) -> int: ...

    async def close_task(self, agent_id: str, task_id: str) -> int: ...

    async def count(self, agent_id: str | None = None) -> int: ...

    def all(self) -> list[SessionT]: ...

    def release_local(self) -> None: ...
