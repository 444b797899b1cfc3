"""Change notices between the parts of the gateway (and, with a shared backend, between replicas).

Topics today: `TOPIC_LIST_CHANGED` (payload {"kinds": [...]}: the tools, prompts or resources lists may
have changed; every process re-checks its own sessions and listen streams and tells whom it
concerns). A policy reload is announced as a list change; reloads themselves are not yet sent
between replicas (each watches its own policy directory), which is what `TOPIC_POLICY_RELOADED` is
reserved for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

TOPIC_LIST_CHANGED = "list_changed"
TOPIC_POLICY_RELOADED = "policy_reloaded"
Handler = Callable[[Mapping[str, Any]], Awaitable[None]]


@runtime_checkable
class Notices(Protocol):
    """At-least-once delivery of small JSON payloads to every subscriber of a topic, this process
    included. `publish` returns once every local handler has run; a shared implementation also
    publishes to the other replicas (one round trip) and, after losing its connection, delivers a
    TOPIC_LIST_CHANGED for every kind on reconnect, since notices may have been missed meanwhile."""

    def subscribe(self, topic: str, handler: Handler) -> None: ...

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> None: ...
