"""Reactions to agents' and tasks' lifecycle changes.

Every change is audited. A suspended, retired or expired agent loses its sessions and listen
streams at once; an ended task's upstream tokens are refused until they would have expired anyway.
A change made on another replica (re-read from the store) gets the same reactions, not the audit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import replace

from gateway.audit import AuditEvent, AuditLog
from gateway.catalog.model import ToolEntry
from gateway.chain.detectors import Detection
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.identity.principal import Principal
from gateway.registry.model import Agent, Lifecycle, LifecycleEvent
from gateway.registry.service import Registry
from gateway.registry.spared import SPARED_REQUEST
from gateway.state.chain import ChainSignals
from gateway.state.sessions import AgentSessions
from gateway.tasks.model import Task, chain_detail
from gateway.transport.listen import ListenHub
from gateway.transport.sessions import AgentSession

log = logging.getLogger("narrowgate")
SWEEP_INTERVAL_S = 1.0  # expiry fires no event: a stream outlives its agent by at most this


class LifecycleReactions:
    def __init__(self, registry: Registry, audit: AuditLog, chain: ChainSignals[ToolEntry, Detection],
                 sessions: AgentSessions[Principal, AgentSession], listen_hub: ListenHub,
                 upstream_auth: UpstreamAuth) -> None:
        self.registry = registry
        self.audit = audit
        self.chain = chain
        self.sessions = sessions
        self.listen_hub = listen_hub
        self.upstream_auth = upstream_auth
        self.closing: set[asyncio.Task[object]] = set()  # session closes started by the (synchronous) reactions

    def current_principal(self, principal: Principal) -> Principal | None:
        """`principal` with its agent record as it is now; None if the agent may no longer act, or, for a person
        through a client, if their access token has expired or the client's binding no longer admits them."""
        agent = self.registry.get(principal.agent_id)
        if agent is None or agent.effective_state(self.registry.clock()) is not Lifecycle.ACTIVE:
            return None
        if principal.user is not None and not person_still_acts(principal, agent, time.time()):
            return None
        return replace(principal, agent=agent)

    def on_agent_change(self, agent: Agent, event: LifecycleEvent) -> None:
        """Every lifecycle change is audited; a suspended or retired agent loses its sessions at once."""
        self.audit.record(AuditEvent(
            kind="agent", action=event.action or "change", actor=event.actor, agent_id=agent.id, owner=agent.owner,
            detail={"from": event.from_state.value if event.from_state else None, "to": event.to_state.value,
                    "reason": event.reason, "fields": list(event.fields)},
        ))
        if event.from_state != event.to_state:
            self.agent_stopped(agent, f"{event.reason} by {event.actor}")

    def on_agent_refreshed(self, agent: Agent, before: Agent | None) -> None:
        """An agent changed on another replica (audited there)."""
        if before is None or before.state != agent.state:
            self.agent_stopped(agent, "changed on another replica")

    def agent_stopped(self, agent: Agent, why: str) -> None:
        if agent.state in (Lifecycle.SUSPENDED, Lifecycle.RETIRED):
            self.chain.forget_agent(agent.id)  # a resumed agent starts with a clean record
            self.listen_hub.close_agent(agent.id)
            self.later(self.close_sessions(agent.id, f"is {agent.state.value} ({why})"))

    async def sweep_inactive_agents(self) -> None:
        """Expiry fires no event: close the sessions of agents that have expired since they connected."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = self.registry.clock()
            connected = {s.principal.agent_id for s in self.sessions.all()}
            connected |= {listener.principal.agent_id for listener in self.listen_hub.listeners}
            for agent_id in connected:
                agent = self.registry.get(agent_id)
                if agent is not None and agent.effective_state(now) is not Lifecycle.ACTIVE:
                    self.listen_hub.close_agent(agent_id)
                    await self.close_sessions(agent_id, "expired")

    async def close_sessions(self, agent_id: str, why: str) -> None:
        closed = await self.sessions.close_agent(agent_id)
        log.warning("agent %s %s; closed %d session(s)", agent_id, why, closed)

    def later(self, work: Coroutine[object, object, object]) -> None:
        """Session calls are awaitable (shared in a fleet) and these reactions are not: run `work` next,
        in this context (the request that caused it, SPARED_REQUEST, still answers)."""
        task = asyncio.get_running_loop().create_task(work)
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    def on_task_start(self, task: Task) -> None:
        self.audit.record(AuditEvent(
            kind="task", action="start", actor=task.started_by, agent_id=task.agent_id, task_id=task.id,
            detail={"purpose": task.purpose, "tools": list(task.tools), "deadline": task.deadline,
                    "budget": task.budget, **chain_detail(task)},
        ))

    def on_task_end(self, task: Task) -> None:
        self.end_task_grants(task)
        self.audit.record(AuditEvent(
            kind="task", action=task.state.value, actor="narrowgate", agent_id=task.agent_id,
            task_id=task.id, detail={"reason": task.end_reason, "calls": task.calls_made, **chain_detail(task)},
        ))
        log.info("task %s of agent %s ended (%s): its grants and upstream tokens are revoked",
                 task.id, task.agent_id, task.state.value)

    def end_task_grants(self, task: Task) -> None:
        """Every upstream token minted for an ended task is refused until it would have expired anyway
        (also for a task another replica ended: that replica audited it)."""
        self.upstream_auth.revocations.revoke_task(task.id, until=time.time() + self.upstream_auth.ttl_s + 5)
        spared = SPARED_REQUEST.set(SPARED_REQUEST.get() or asyncio.current_task())  # the request ending it answers
        try:
            self.later(self.sessions.close_task(task.agent_id, task.id))  # their token is dead: free the slots
        finally:
            SPARED_REQUEST.reset(spared)
        self.chain.forget_task(task.id)


def person_still_acts(principal: Principal, agent: Agent, now: float) -> bool:
    """A held stream outlives the request that opened it: re-check, cheaply, what that request checked about the
    person (their token's `exp`, and the client's binding admitting them)."""
    user = principal.user
    assert user is not None
    exp = principal.claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or now >= exp:
        return False
    return agent.admits_person(user.issuer, user.client_id, user.subject, user.groups, user.email)
