"""`subscriptions/listen` (2026-07-28): long-lived streams of list changes and resource updates.

The gateway runs its own bus rather than forwarding listens upstream: each agent's view is the
gateway's aggregated, filtered catalog, so change notices have to come from the gateway.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY

from gateway.identity.principal import Principal
from gateway.transport.sessions import StreamItem
from gateway.transport.sse import encode_event

FILTER_FOR_METHOD = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}
HONOURED_FLAGS = tuple(FILTER_FOR_METHOD.values())


@dataclass(eq=False, slots=True)
class Listener:
    queue: asyncio.Queue[StreamItem]
    principal: Principal
    subscription_id: Any
    honoured: dict[str, Any]
    tools_seen: frozenset[str] | None = None  # the tools this agent could see when it last heard

    def notify(self, method: str) -> None:
        if self.admits(method, {}):
            self.queue.put_nowait(self.frame(method, {}))

    def admits(self, method: str, params: dict[str, Any]) -> bool:
        flag = FILTER_FOR_METHOD.get(method)
        if flag is not None:
            return self.honoured.get(flag) is True
        if method == "notifications/resources/updated":
            return params.get("uri") in (self.honoured.get("resourceSubscriptions") or ())
        return False

    def frame(self, method: str, params: dict[str, Any]) -> bytes:
        meta = {**(params.get("_meta") or {}), SUBSCRIPTION_ID_META_KEY: self.subscription_id}
        return encode_event(orjson.dumps({"jsonrpc": "2.0", "method": method, "params": {**params, "_meta": meta}}))


class ListenHub:
    def __init__(self) -> None:
        self.listeners: set[Listener] = set()

    def open(self, principal: Principal, subscription_id: Any, params: dict[str, Any]) -> Listener:
        requested = params.get("notifications") if isinstance(params.get("notifications"), dict) else {}
        honoured: dict[str, Any] = {flag: True for flag in HONOURED_FLAGS if requested.get(flag) is True}
        uris = requested.get("resourceSubscriptions")
        if isinstance(uris, list):
            honoured["resourceSubscriptions"] = [u for u in uris if isinstance(u, str)]
        listener = Listener(asyncio.Queue(), principal, subscription_id, honoured)
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

    def publish(self, method: str, params: dict[str, Any]) -> None:
        for listener in self.listeners:
            if listener.admits(method, params):
                listener.queue.put_nowait(listener.frame(method, params))
