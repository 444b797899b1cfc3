"""One pass over the open sessions after a change: what may each of them see now?

Thousands of sessions usually belong to a few agents. Sessions whose caller is the same (equal
principal, protocol era and client name: everything the listing facts are made of) share one
computation, so 3,000 sessions of 16 agents cost 16 listings; comparing what a session saw with
what it may see now is done once per pair of sets, not once per session (sets of 5,000 names);
and the pass yields to the event loop as it goes, so calls keep flowing while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from gateway.identity.principal import Principal

YIELD_EVERY = 64  # sessions looked at between two yields to the event loop

Compute = Callable[[Principal, str, dict[str, Any] | None], Awaitable[frozenset[str]]]


class Watcher(Protocol):
    """An open session or listen stream: who it is, and the tools it was last shown."""

    principal: Principal
    tools_seen: frozenset[str] | None


class Publisher(Protocol):
    """Anything a notification can be published to (an open session)."""

    async def publish(self, message: dict[str, Any]) -> None: ...


class VisibilityPass:
    def __init__(self, compute: Compute) -> None:
        self.compute = compute
        self.groups: dict[tuple[str, str | None, str, str, str], list[tuple[Principal, frozenset[str]]]] = {}
        self.asked = 0
        self.computed = 0
        # (id(seen), id(now)) -> (seen, now, differ): the sets are kept so their ids stay theirs.
        self.compared: dict[tuple[int, int], tuple[frozenset[str], frozenset[str], bool]] = {}

    async def changed(self, watcher: Watcher, era: str, client_info: dict[str, Any] | None) -> bool:
        """Record what `watcher` may see now; whether that differs from what it was shown (never for
        one that has not listed yet)."""
        now = await self.names(watcher.principal, era, client_info)
        seen, watcher.tools_seen = watcher.tools_seen, now
        if seen is None or seen is now:
            return False
        key = (id(seen), id(now))
        found = self.compared.get(key)
        if found is None:
            found = self.compared[key] = (seen, now, seen != now)
        return found[2]

    async def names(self, principal: Principal, era: str, client_info: dict[str, Any] | None) -> frozenset[str]:
        """The tool names this caller may see; computed once per distinct caller in this pass."""
        self.asked += 1
        if self.asked % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        client = client_info.get("name", "") if isinstance(client_info, dict) else ""
        group = self.groups.setdefault(
            (principal.agent_id, principal.task_id, principal.auth_method, era, str(client)), [])
        for seen, names in group:
            if seen == principal:
                return names
        names = await self.compute(principal, era, client_info)
        self.computed += 1
        group.append((principal, names))
        return names


async def publish_in_steps(sessions: Iterable[Publisher], message: dict[str, Any]) -> None:
    """`message` to each session (its `publish`), yielding to the event loop every YIELD_EVERY of them."""
    for n, session in enumerate(sessions, 1):
        await session.publish(message)
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)
