"""Agent sessions of the handshake era (2025-11-25): state the gateway keeps per `Mcp-Session-Id`."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.identity.principal import Principal
from gateway.transport.sse import encode_event

REPLAY_BUFFER = 256
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


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
    # Open GET streams: each gets every session-level message.
    listeners: set[asyncio.Queue[bytes]] = field(default_factory=set)
    # Session-level events kept for Last-Event-ID replay.
    replay: deque[tuple[int, bytes]] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER))
    event_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Requests the gateway relayed to the agent, waiting for its reply.
    asks: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    ask_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Agent request id -> the task serving it, so notifications/cancelled can stop it.
    in_flight: dict[Any, asyncio.Task[Any]] = field(default_factory=dict)

    def wants_log(self, level: str | None) -> bool:
        if self.log_level is None or level not in LOG_LEVELS:
            return True
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(self.log_level)

    def publish(self, message: dict[str, Any]) -> None:
        """Send a session-level message to every open GET stream (and keep it for replay)."""
        event_id = next(self.event_ids)
        frame = encode_event(orjson.dumps(message), f"s{event_id}")
        self.replay.append((event_id, frame))
        for queue in self.listeners:
            queue.put_nowait(frame)

    def replay_after(self, last_event_id: str) -> list[bytes]:
        if not last_event_id.startswith("s") or not last_event_id[1:].isdigit():
            return []
        after = int(last_event_id[1:])
        return [frame for event_id, frame in self.replay if event_id > after]

    def next_ask_id(self) -> str:
        return f"ng-{next(self.ask_ids)}"


class SessionRegistry:
    def __init__(self, idle_s: float) -> None:
        self.sessions: dict[str, AgentSession] = {}
        self.idle_s = idle_s

    def create(
        self, principal: Principal, protocol_version: str, capabilities: dict[str, Any], info: dict[str, Any] | None
    ) -> AgentSession:
        self.expire_idle()
        session_id = secrets.token_urlsafe(24)
        session = AgentSession(session_id, principal, protocol_version, capabilities, info)
        self.sessions[session_id] = session
        return session

    def get(self, session_id: str) -> AgentSession | None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.last_seen = time.monotonic()
        return session

    def close(self, session_id: str) -> AgentSession | None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            for task in session.in_flight.values():
                task.cancel()
            for future in session.asks.values():
                future.cancel()
        return session

    def expire_idle(self) -> None:
        cutoff = time.monotonic() - self.idle_s
        for session_id in [s.id for s in self.sessions.values() if s.last_seen < cutoff and not s.listeners]:
            self.close(session_id)

    def all(self) -> list[AgentSession]:
        return list(self.sessions.values())
