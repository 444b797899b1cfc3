"""`subscriptions/listen` (2026-07-28): long-lived streams of list changes and resource updates.

The gateway runs its own bus rather than forwarding listens upstream: each agent's view is the
gateway's aggregated, filtered catalog, so change notices have to come from the gateway. The
resource URIs a stream asks to follow are decided like reads before the acknowledgement (see
Methods.authorize_subscriptions); only those are honoured, in canonical form, and each update is
decided again before it is delivered (gateway.resource_updates).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY

from gateway.identity.principal import Principal
from gateway.json_values import JsonValue
from gateway.protocol.errors import INVALID_PARAMS, RpcError
from gateway.protocol.sse import encode_event
from gateway.transport.sessions import StreamItem

FILTER_FOR_METHOD = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}
HONOURED_FLAGS = tuple(FILTER_FOR_METHOD.values())
# Each URI is one recorded policy decision: a stream may follow this many, no more.
MAX_RESOURCE_SUBSCRIPTIONS = 256


@dataclass(eq=False, slots=True)
class Listener:
    queue: asyncio.Queue[StreamItem]
    principal: Principal
    subscription_id: JsonValue
    honoured: dict[str, Any]
    client_info: dict[str, Any] | None = None
    tools_seen: frozenset[str] | None = None  # the tools this agent could see when it last heard
    resource_uris: set[str] = field(default_factory=set)  # canonical URIs it was allowed to follow

    def notify(self, method: str) -> None:
        if self.admits(method):
            self.queue.put_nowait(self.frame(method, {}))

    def admits(self, method: str) -> bool:
        flag = FILTER_FOR_METHOD.get(method)
        return flag is not None and self.honoured.get(flag) is True

    def deliver(self, method: str, params: dict[str, Any]) -> None:
        self.queue.put_nowait(self.frame(method, params))

    def frame(self, method: str, params: dict[str, Any]) -> bytes:
        meta = {**(params.get("_meta") or {}), SUBSCRIPTION_ID_META_KEY: self.subscription_id}
        return encode_event(orjson.dumps({"jsonrpc": "2.0", "method": method, "params": {**params, "_meta": meta}}))


def requested_uris(params: dict[str, Any]) -> list[str]:
    """The resource URIs a listen request names (strings only); RpcError past the cap."""
    requested = given if isinstance(given := params.get("notifications"), dict) else {}
    uris = requested.get("resourceSubscriptions")
    if not isinstance(uris, list):
        return []
    if len(uris) > MAX_RESOURCE_SUBSCRIPTIONS:
        raise RpcError(INVALID_PARAMS, f"a listen stream may follow at most {MAX_RESOURCE_SUBSCRIPTIONS} resources")
    return [u for u in uris if isinstance(u, str)]


class ListenHub:
    def __init__(self) -> None:
        self.listeners: set[Listener] = set()

    def open(self, principal: Principal, subscription_id: object, params: dict[str, Any], allowed_uris: list[str],
             client_info: dict[str, Any] | None = None) -> Listener:
        """A stream for `principal`, acknowledging the flags it asked for and the URIs it was allowed."""
        requested = given if isinstance(given := params.get("notifications"), dict) else {}
        honoured: dict[str, Any] = {flag: True for flag in HONOURED_FLAGS if requested.get(flag) is True}
        if isinstance(requested.get("resourceSubscriptions"), list):
            honoured["resourceSubscriptions"] = list(allowed_uris)
        listener = Listener(asyncio.Queue(), principal, subscription_id, honoured, client_info,
                            resource_uris=set(allowed_uris))
        listener.queue.put_nowait(listener.frame("notifications/subscriptions/acknowledged",
                                                 {"notifications": honoured}))
        self.listeners.add(listener)
        return listener

    def close(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    def close_agent(self, agent_id: str) -> None:
        for listener in [x for x in self.listeners if x.principal.agent_id == agent_id]:
            listener.queue.put_nowait(None)
            self.listeners.discard(listener)

    def publish(self, method: str) -> None:
        """A list change, to every stream that asked for that kind."""
        for listener in self.listeners:
            listener.notify(method)

    def following(self, canonical_uri: str) -> list[Listener]:
        return [listener for listener in self.listeners if canonical_uri in listener.resource_uris]
