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

    def append(self, data: bytes, final: bool = False) -> bytes: ...

    def follow(self, after_seq: int | None) -> asyncio.Queue[StreamItem]: ...


@runtime_checkable
class AgentSessions(Protocol[PrincipalT, SessionT]):
    """The open sessions, capped per agent and in all, expiring when idle.

    `create` checks the caps and adds the session atomically (or raises SessionLimitReached and adds
    nothing). The live parts of a session (requests in flight, relayed questions, open streams) stay
    in the process that serves it; a shared implementation shares the record (principal, version,
    capabilities, log level, subscriptions, stream logs) under an idle TTL, and when unreachable
    refuses new sessions and answers `get` with None (the agent starts over), never a stale principal.
    """

    def create(self, principal: PrincipalT, protocol_version: str, capabilities: dict[str, Any],
               info: dict[str, Any] | None) -> SessionT: ...

    def get(self, session_id: str) -> SessionT | None: ...

    def close(self, session_id: str) -> SessionT | None: ...

    def close_agent(self, agent_id: str) -> int: ...

    def close_task(self, agent_id: str, task_id: str) -> int: ...

    def count(self, agent_id: str | None = None) -> int: ...

    def all(self) -> list[SessionT]: ...
