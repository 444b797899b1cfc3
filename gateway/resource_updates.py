"""Resource updates from upstreams, relayed to the agents subscribed to them, in both eras.

An update is relayed only when it comes from the server that serves its URI now (another server
cannot speak for URIs it does not serve), and only to subscribers that would still be allowed to
read it now: a reloaded policy, a changed grant, a suspended agent or an ended task stop the flow
at the next update. A subscriber that no longer passes loses that subscription, and the refusal
is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gateway.calls.methods import Methods
from gateway.identity.principal import Principal
from gateway.protocol.eras import MODERN_ERA
from gateway.state.sessions import AgentSessions
from gateway.transport.listen import ListenHub
from gateway.transport.sessions import AgentSession
from gateway.upstream.directory import ResourceRoute, canonical_uri

log = logging.getLogger("narrowgate.transport")
UPDATED = "notifications/resources/updated"
# The principal as the registry knows it now, or None if it may no longer act (suspended, retired, gone).
CurrentPrincipal = Callable[[Principal], Principal | None]


class ResourceUpdateRelay:
    def __init__(self, methods: Methods, sessions: AgentSessions[Principal, AgentSession], listen_hub: ListenHub,
                 current: CurrentPrincipal) -> None:
        self.methods = methods
        self.sessions = sessions
        self.listen_hub = listen_hub
        self.current = current

    async def relay(self, server_id: str, message: dict[str, Any]) -> None:
        params = given if isinstance(given := message.get("params"), dict) else {}
        canonical = canonical_uri(params.get("uri"))
        if canonical is None:
            log.warning("resource update from %s with an unusable uri dropped", server_id)
            return
        route = self.methods.pool.directory.route(canonical)
        if not isinstance(route, ResourceRoute) or route.server_id != server_id:
            log.warning("resource update for %s from %s dropped: that server does not serve it", canonical, server_id)
            return
        update = {**params, "uri": canonical}
        for session in list(self.sessions.all()):
            if canonical not in session.subscriptions:
                continue
            if await self.allowed(session.principal, session.protocol_version, session.client_info, route, canonical):
                await session.publish({"jsonrpc": "2.0", "method": UPDATED, "params": update})
            else:
                session.subscriptions.discard(canonical)
                await self.sessions.save(session)
        for listener in self.listen_hub.following(canonical):
            if await self.allowed(listener.principal, MODERN_ERA, listener.client_info, route, canonical):
                listener.deliver(UPDATED, update)
            else:
                listener.resource_uris.discard(canonical)

    async def allowed(self, principal: Principal, era: str, client_info: dict[str, Any] | None,
                      route: ResourceRoute, canonical: str) -> bool:
        current = self.current(principal)
        if current is None:
            return False
        return await self.methods.subscription_allowed(current, era, client_info, route.server_id, canonical)
