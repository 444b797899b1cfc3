"""What every upstream connection offers the rest of the gateway, whatever its transport."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)

from gateway.protocol.capabilities import GATEWAY_CLIENT_INFO
from gateway.protocol.eras import MODERN_ERA
from gateway.protocol.errors import METHOD_NOT_FOUND
from gateway.protocol.jsonrpc import error_reply

ENVELOPE_KEYS = (PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY)

# Sent to shared upstream sessions; its reply is ignored (the id is outside the gateway's own range).
VERBOSE_LOGGING = {"jsonrpc": "2.0", "id": "narrowgate-log-level", "method": "logging/setLevel",
                   "params": {"level": "debug"}}

# Upstream notifications about the shared session (not about one call): they go to the pool.
SESSION_NOTIFICATIONS = frozenset({
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
})

log = logging.getLogger("narrowgate.upstream")


class CallSink(Protocol):
    """Where an upstream call's side traffic goes: the agent that made the call."""

    async def notify(self, message: dict[str, Any]) -> None:
        """A notification about this call (progress, log)."""

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """A server-to-client request (sampling, elicitation, roots); returns the agent's reply body."""


@dataclass(slots=True)
class CallContext:
    """How to make one upstream call on behalf of one agent request."""

    era: str
    timeout_s: float
    sink: CallSink | None = None
    # The agent's per-request envelope (modern era) or its initialize capabilities (legacy era).
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    client_info: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Credentials for this call (a minted token or a secret); None: the upstream's discovery credentials.
    auth: dict[str, str] | None = None


SessionEventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Called with (server_id, notification) for session-level upstream notifications."""


class Upstream(Protocol):
    server_id: str
    # Why the last connection attempt failed (safe to show: never holds a secret value).
    last_error: str | None

    @property
    def available(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, method: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        """Send one request; return the final JSON-RPC reply body (with "result" or "error")."""
        ...

    async def notify(self, method: str, params: dict[str, Any]) -> None: ...


def legacy_params(params: dict[str, Any]) -> dict[str, Any]:
    """Strip the modern per-request envelope from `_meta` for a handshake-era upstream."""
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not any(key in meta for key in ENVELOPE_KEYS):
        return params
    stripped = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
    out = {k: v for k, v in params.items() if k != "_meta"}
    if stripped:
        out["_meta"] = stripped
    return out


def modern_params(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
    """Give a request the modern envelope, keeping the agent's own where it sent one."""
    meta = dict(params.get("_meta") or {})
    meta[PROTOCOL_VERSION_META_KEY] = MODERN_ERA
    meta.setdefault(CLIENT_CAPABILITIES_META_KEY, ctx.client_capabilities)
    if ctx.client_info is not None:
        meta.setdefault(CLIENT_INFO_META_KEY, ctx.client_info)
    else:
        meta.setdefault(CLIENT_INFO_META_KEY, GATEWAY_CLIENT_INFO)
    return {**params, "_meta": meta}


def refusal(request_id: object, why: str) -> dict[str, Any]:
    """The JSON-RPC error sent back for a server-to-client request the gateway does not relay."""
    return error_reply(request_id, METHOD_NOT_FOUND, f"The gateway {why}")


def without_server_info(reply: dict[str, Any]) -> dict[str, Any]:
    """A reply without the upstream's `_meta` serverInfo stamp: agents talk to the gateway, and
    which servers stand behind it is not theirs to learn."""
    result = reply.get("result")
    if not isinstance(result, dict):
        return reply
    meta = result.get("_meta")
    if not isinstance(meta, dict) or SERVER_INFO_META_KEY not in meta:
        return reply
    # Copies, not the reply changed in place: a reply may be one an upstream client keeps (C-level copies: a
    # third of what comprehensions cost). What is left of `_meta` goes last, as agents have always had it.
    stripped = meta.copy()
    del stripped[SERVER_INFO_META_KEY]
    result = result.copy()
    del result["_meta"]
    if stripped:
        result["_meta"] = stripped
    reply = reply.copy()
    reply["result"] = result
    return reply
