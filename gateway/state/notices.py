"""Change notices between the parts of the gateway (and, with a shared backend, between replicas).

Topics (payloads are small JSON objects naming ids, never secrets):
- `TOPIC_LIST_CHANGED` {"kinds": [...]}: the tools, prompts or resources lists may have changed; every
  process re-checks its own sessions and listen streams and tells whom it concerns.
- `TOPIC_AGENT_CHANGED` {"agent_id"} and `TOPIC_TASK_CHANGED` {"task_id"}: an agent or a task changed in
  the store (created, updated, suspended, retired; started, ended); every other replica re-reads it and
  reacts as the one where it happened did (closing streams, refusing its tokens), without auditing again.
- `TOPIC_POLICY_RELOADED` {}: a policy reload was attempted; every other replica reloads from its own
  policy directory (the same files, as from one ConfigMap).
- `TOPIC_REVIEWS_CHANGED` {"kind": "tools" | "resources"}: a person decided a review; every other
  replica re-reads the reviews from the store and rebuilds what agents see.
- `TOPIC_KEYS_ROTATED` {}: the signing keys changed; every other replica re-reads them from the store.

Publishers add {"origin": ...} to the last four so the process that published them skips its own.
After a lost connection a shared implementation delivers `resync_payload(topic)` to every topic: a list
change of every kind, and {"resync": true} (re-read everything) for the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

TOPIC_LIST_CHANGED = "list_changed"
TOPIC_POLICY_RELOADED = "policy_reloaded"
TOPIC_AGENT_CHANGED = "agent_changed"
TOPIC_TASK_CHANGED = "task_changed"
TOPIC_REVIEWS_CHANGED = "reviews_changed"
TOPIC_KEYS_ROTATED = "keys_rotated"
LIST_KINDS = ("prompts", "resources", "tools")
Handler = Callable[[Mapping[str, Any]], Awaitable[None]]


@runtime_checkable
class Notices(Protocol):
    """At-least-once delivery of small JSON payloads to every subscriber of a topic, this process
    included. `publish` returns once every local handler has run; a shared implementation also
    publishes to the other replicas (one round trip) and, after losing its connection, delivers
    `resync_payload(topic)` to every topic on reconnect, since notices may have been missed meanwhile."""

    def subscribe(self, topic: str, handler: Handler) -> None: ...

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> None: ...


def resync_payload(topic: str) -> dict[str, Any]:
    """What a topic's handlers hear when notices may have been missed: everything may have changed."""
    if topic == TOPIC_LIST_CHANGED:
        return {"kinds": list(LIST_KINDS), "resync": True}
    return {"resync": True}
