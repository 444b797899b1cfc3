"""What flows down the call path: the request as the transport hands it over (immutable), the one small
record of what happened to it (written by the stages, read by telemetry and by a stop), and one tool call."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from gateway.approvals.step_up import HoldingSink
from gateway.catalog.model import ToolEntry
from gateway.identity.principal import Principal
from gateway.protocol.jsonrpc import RequestId
from gateway.telemetry import RequestSpan
from gateway.upstream.directory import ToolView

Reply = dict[str, Any]  # the reply body for one request: {"result": ...} or {"error": ...}
Arguments = dict[str, Any] | None  # a tool call's arguments (None: the agent sent none)


class SessionState(Protocol):
    """The part of a 2025-11-25 session the methods read and write (gateway.transport.sessions.AgentSession)."""

    log_level: str | None
    subscriptions: set[str]  # canonical URIs
    tools_seen: frozenset[str] | None  # what its last tools/list showed (list changes are told against it)
    in_flight: dict[RequestId | None, asyncio.Task[object]]  # its requests being answered, by JSON-RPC id


@dataclass(slots=True)
class CallRecord:
    """What a request came to, for metrics, the span, chain monitoring and a stop: the only thing the
    stages write as the request goes."""

    decision: str | None = None  # the policy's outcome (allow, deny, step_up); step_up while a person decides
    approved: bool = False  # the decision that let the call through used a person's approval
    upstream: str | None = None  # the upstream reached, or that a refusal would have reached

    def outcome(self) -> str:
        """As chain monitoring counts it: allow, approved, step_up or deny (nothing decided: deny)."""
        return "approved" if self.approved and self.decision == "allow" else self.decision or "deny"


class RequestContext(NamedTuple):
    """One agent request as the transport knows it: who, in which era, from which client, on which session.
    Immutable (a NamedTuple: built once per request, at a fraction of a frozen dataclass's cost)."""

    principal: Principal
    era: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any] | None
    session: SessionState | None
    sink: HoldingSink | None  # also the upstream call's CallSink
    trace_id: str | None
    span: RequestSpan
    record: CallRecord  # what happened to it (the one mutable part)


class ToolCall(NamedTuple):
    """One tools/call for a catalog tool the directory knows, as the agent sent it (immutable)."""

    request: RequestContext
    name: str  # as the agent asked for it (the exposed name)
    view: ToolView
    arguments: Arguments
    params: dict[str, Any]  # the agent's tools/call params (inputResponses on a 2026-07-28 retry)
    # Always request.principal and view.entry, as fields: the stages read them ~10 times per call (a property
    # costs ~5x as much).
    principal: Principal
    entry: ToolEntry
