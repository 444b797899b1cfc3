"""Telling agents that their lists may have changed.

A change (an upstream's lists, a review decision, a policy reload) is published as a notice, so
every gateway process tells the agents it serves; each process then announces it on its 2025-11-25
sessions' GET streams and its `subscriptions/listen` streams. Tool changes go only to those whose
visible tools changed (see VisibilityPass).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.audit import AuditEvent, AuditLog
from gateway.calls.methods import Methods
from gateway.calls.visibility_pass import VisibilityPass, publish_in_steps
from gateway.identity.principal import Principal
from gateway.protocol.eras import MODERN_ERA
from gateway.state.notices import TOPIC_LIST_CHANGED, Notices
from gateway.state.sessions import AgentSessions
from gateway.transport.listen import ListenHub
from gateway.transport.sessions import AgentSession
from gateway.upstream.pool import UpstreamPool
from gateway.wiring.background import Background

LIST_CHANGED = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
}


async def publish_list_changed(notices: Notices, kinds: set[str]) -> None:
    """Lists may have changed: every gateway process (this one too) tells the agents it serves."""
    await notices.publish(TOPIC_LIST_CHANGED, {"kinds": sorted(kinds)})


class ListChanges:
    def __init__(self, notices: Notices, sessions: AgentSessions[Principal, AgentSession], listen_hub: ListenHub,
                 methods: Methods, pool: UpstreamPool, audit: AuditLog, background: Background,
                 policy_catalog_synced: Callable[[], Awaitable[None]]) -> None:
        self.notices = notices
        self.sessions = sessions
        self.listen_hub = listen_hub
        self.methods = methods
        self.pool = pool
        self.audit = audit
        self.background = background
        self.policy_catalog_synced = policy_catalog_synced  # announce tool changes once the policy has them
        self.announce_lock = asyncio.Lock()  # one pass over the sessions at a time, in order

    def announce_policy_change(self) -> None:
        """A new policy set can change what each agent may see: tell agents to list again."""
        self.background.run(self.publish_list_changed({"tools", "prompts", "resources"}))

    async def on_upstream_lists_changed(self, kinds: set[str]) -> None:
        """An upstream's tools, prompts or resources changed: audit it, then tell the agents."""
        self.audit.record(AuditEvent(kind="catalog", action="lists_changed", actor="narrowgate",
                                     detail={"kinds": sorted(kinds), "tools": sorted(self.pool.directory.tools)}))
        await self.publish_list_changed(kinds)

    async def publish_list_changed(self, kinds: set[str]) -> None:
        """Lists may have changed: every gateway process (this one too) tells the agents it serves."""
        await publish_list_changed(self.notices, kinds)

    async def on_list_changed(self, notice: Mapping[str, Any]) -> None:
        await self.announce_list_changed(set(notice["kinds"]))

    async def announce_list_changed(self, kinds: set[str]) -> None:
        for kind in sorted(kinds):
            if kind == "tools":
                await self.announce_tool_changes()
                continue
            message = {"jsonrpc": "2.0", "method": LIST_CHANGED[kind]}
            await publish_in_steps(self.sessions.all(), message)
            self.listen_hub.publish(message["method"])

    async def announce_tool_changes(self) -> None:
        """Tell each open session or listener whose visible tools changed, and nobody else (a tool in
        quarantine changes no one's list; its approval changes only the lists of agents who may use it).

        Once the policy engine has the current catalog; computed once per distinct caller and in
        small steps (see VisibilityPass), so thousands of sessions do not hold up calls."""
        await self.policy_catalog_synced()
        method = LIST_CHANGED["tools"]
        async with self.announce_lock:
            visibility = VisibilityPass(self.methods.visible_tool_names_async)
            for session in list(self.sessions.all()):
                if await visibility.changed(session, session.protocol_version, session.client_info):
                    await session.publish({"jsonrpc": "2.0", "method": method})
            for listener in list(self.listen_hub.listeners):
                if await visibility.changed(listener, MODERN_ERA, listener.client_info):
                    listener.notify(method)
