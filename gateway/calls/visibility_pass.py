"""One pass over the open sessions after a change: what may each of them see now?

Thousands of sessions usually belong to a few agents. Sessions whose caller is the same (equal
principal, protocol era and client name: everything the listing facts are made of) share one
computation, so 3,000 sessions of 16 agents cost 16 listings; and the pass yields to the event
loop as it goes, so calls keep flowing while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.identity.principal import Principal

YIELD_EVERY = 64  # sessions looked at between two yields to the event loop

Compute = Callable[[Principal, str, dict[str, Any] | None], Awaitable[frozenset[str]]]


class VisibilityPass:
    def __init__(self, compute: Compute) -> None:
        self.compute = compute
        self.groups: dict[tuple[str, str | None, str, str, str], list[tuple[Principal, frozenset[str]]]] = {}
        self.asked = 0
        self.computed = 0

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
