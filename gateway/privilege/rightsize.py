"""Right-sizing from observed use: per agent, what it may do today (its reach, decided by the live
Cedar policies), what it did in a window (allowed calls in the audit log, tasks in the task store),
the difference, and a proposal that narrows the grant to what was used.

`rightsize_fleet` is the one entry point (admin API, console, the metric, compliance evidence).
A tool counts as granted when its reach verdict is `allow` or `step_up`: a person's approval is a
check on a grant, not the absence of one. The headline figure is the share of granted tools the
agent did not call with an allow in the window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.privilege.proposal import Proposal
from gateway.privilege.proposal_cache import ProposalCache
from gateway.privilege.reach import AgentReach, ReachAnalyzer, ToolReach, UnknownAgent
from gateway.privilege.usage import AgentUse, TaskUse, audit_starts_at, read_task_use, read_usage
from gateway.registry.model import Agent, Lifecycle
from gateway.store.base import AuditQuery, Store

__all__ = ["AgentRightsize", "FleetRightsize", "NoRecordedData", "RightsizeSources", "UnknownAgent",
           "Window", "rightsize_fleet"]

DEFAULT_WINDOW_S = 30 * 86400.0
GRANTED = ("allow", "step_up")


class NoRecordedData(LookupError):
    """The audit log holds no decision in the window: nothing was measured, so no share is reported."""


@dataclass(frozen=True, slots=True)
class RightsizeSources:
    """What right-sizing reads: the reach of agents, the store (audit log and tasks), the agents file."""

    reach: ReachAnalyzer
    store: Store
    agents_file: Path | None = None
    proposals: ProposalCache = field(default_factory=ProposalCache)  # kept between reports


@dataclass(frozen=True, slots=True)
class Window:
    since: float  # as asked
    until: float
    observed_from: float  # the later of `since` and the audit log's first record
    decisions: int  # decision records (any outcome) the report rests on: every agent's, or the one agent's


@dataclass(frozen=True, slots=True)
class GrantedTool:
    server_id: str
    tool: str
    risk: str
    verdict: str  # "allow" (no person involved) | "step_up" (a person must approve)
    calls: int  # allowed calls in the window
    last_called_at: float | None


@dataclass(frozen=True, slots=True)
class AgentRightsize:
    agent_id: str
    owner: str
    state: str
    observed_from: float  # the later of the window's and the agent's creation
    policy_version: str
    granted: tuple[GrantedTool, ...]
    never: tuple[str, ...]  # tools Cedar denies the agent whatever happens
    other_calls: int  # allowed prompt gets and resource reads (not tools) in the window
    tasks: tuple[TaskUse, ...]
    proposal: Proposal | None  # None when the report was asked without proposals

    @property
    def used(self) -> tuple[GrantedTool, ...]:
        return tuple(t for t in self.granted if t.calls)

    @property
    def unused(self) -> tuple[GrantedTool, ...]:
        return tuple(t for t in self.granted if not t.calls)

    @property
    def unused_share(self) -> float | None:
        """Unused granted tools / granted tools; None when nothing is granted (nothing to measure)."""
        return len(self.unused) / len(self.granted) if self.granted else None

    @property
    def servers_granted(self) -> tuple[str, ...]:
        return tuple(sorted({t.server_id for t in self.granted}))

    @property
    def servers_unused(self) -> tuple[str, ...]:
        used = {t.server_id for t in self.used}
        return tuple(s for s in self.servers_granted if s not in used)

    @property
    def risks_granted(self) -> tuple[str, ...]:
        return tuple(sorted({t.risk for t in self.granted}))

    @property
    def risks_unused(self) -> tuple[str, ...]:
        """Risk tiers granted that no allowed call exercised in the window."""
        used = {t.risk for t in self.used}
        return tuple(r for r in self.risks_granted if r not in used)

    @property
    def wide_tasks(self) -> tuple[TaskUse, ...]:
        """Tasks whose tool lists were wider than what they called."""
        return tuple(t for t in self.tasks if t.unused)

    def by_verdict(self, verdict: str) -> tuple[GrantedTool, ...]:
        return tuple(t for t in self.granted if t.verdict == verdict)


@dataclass(frozen=True, slots=True)
class FleetRightsize:
    window: Window
    agents: tuple[AgentRightsize, ...]

    @property
    def granted(self) -> int:
        return sum(len(a.granted) for a in self.agents)

    @property
    def unused(self) -> int:
        return sum(len(a.unused) for a in self.agents)

    @property
    def unused_share(self) -> float | None:
        return self.unused / self.granted if self.granted else None


async def rightsize_fleet(sources: RightsizeSources, since_s: float = DEFAULT_WINDOW_S, agent_id: str | None = None,
                          now: float | None = None, proposals: bool = True) -> FleetRightsize:
    """Right-size every agent that is not retired (or `agent_id` only) over the last `since_s` seconds;
    `proposals` False: no proposal is built (the agents file is not read), for callers that need the figures only.

    UnknownAgent for an agent id the registry does not hold; NoRecordedData when the audit log has no
    decision record in the window."""
    registry = sources.reach.registry
    if agent_id is not None and registry.get(agent_id) is None:
        raise UnknownAgent(f"no agent {agent_id!r}")
    until = time.time() if now is None else now
    since = until - since_s
    usage = await read_usage(sources.store, since, until, agent_id)
    if not usage.decisions and not await _any_decision(sources.store, since, until):
        raise NoRecordedData("the audit log holds no decision in this window: nothing was recorded to measure "
                             "use against (try a wider --since, or after some traffic)")
    started = await audit_starts_at(sources.store)
    window = Window(since, until, max(since, started if started is not None else since), usage.decisions)
    agents = [registry.require(agent_id)] if agent_id is not None else [
        a for a in sorted(registry.agents(), key=lambda a: a.id) if a.effective_state(until) is not Lifecycle.RETIRED]
    measured = []
    for agent in agents:
        use = usage.of(agent.id)
        tasks = await read_task_use(sources.store, agent.id, window.since, until, use)
        measured.append((agent, await sources.reach.agent_reach(agent.id), use, tasks))
    if not proposals:
        return FleetRightsize(window, tuple(agent_rightsize(agent, reach, use, tasks, window, None)
                                            for agent, reach, use, tasks in measured))
    agents_text = await _read_text(sources.agents_file)
    # The proposals parse and edit the agents file (pure-Python YAML, a fraction of a second per agent in a
    # large fleet): on a worker thread, never on the event loop; kept between reports (ProposalCache).
    results = await asyncio.to_thread(_rightsize_all, measured, window, sources.proposals, agents_text,
                                      sources.agents_file)
    return FleetRightsize(window, tuple(results))


def _rightsize_all(measured: Sequence[tuple[Agent, AgentReach, AgentUse, Sequence[TaskUse]]], window: Window,
                   cache: ProposalCache, agents_text: str | None, agents_file: Path | None) -> list[AgentRightsize]:
    return [agent_rightsize(agent, reach, use, tasks, window, cache, agents_text, agents_file)
            for agent, reach, use, tasks in measured]


def agent_rightsize(agent: Agent, reach: AgentReach, use: AgentUse, tasks: Sequence[TaskUse], window: Window,
                    cache: ProposalCache | None, agents_text: str | None = None,
                    agents_file: Path | None = None) -> AgentRightsize:
    """One agent's right-sizing; its proposal from `cache` (None: no proposal)."""
    granted = tuple(_granted(t, use) for t in reach.tools if t.verdict in GRANTED)
    tools = {t.tool for t in reach.tools}
    other_calls = sum(n for target, n in use.calls.items() if target not in tools)
    proposal = None if cache is None else cache.proposal(agent, granted_tools(granted), other_calls > 0,
                                                         agents_text, agents_file)
    return AgentRightsize(
        agent.id, agent.owner, agent.effective_state(window.until).value,
        max(window.observed_from, agent.created_at), reach.policy_version, granted,
        tuple(t.tool for t in reach.by_verdict("deny")), other_calls, tuple(tasks), proposal)


def unused_count(reach: AgentReach, used: set[str]) -> tuple[int, int]:
    """(granted, unused) tools of `reach` given the tools called with an allow: the headline figure's terms."""
    granted = [t.tool for t in reach.tools if t.verdict in GRANTED]
    return len(granted), sum(t not in used for t in granted)


def granted_tools(granted: Sequence[GrantedTool]) -> list[tuple[str, str, bool]]:
    """(tool, server, used) for each granted tool: what a proposal narrows from."""
    return [(t.tool, t.server_id, t.calls > 0) for t in granted]


def _granted(tool: ToolReach, use: AgentUse) -> GrantedTool:
    return GrantedTool(tool.server_id, tool.tool, tool.risk, tool.verdict, use.calls.get(tool.tool, 0),
                       use.last_at.get(tool.tool))


async def _any_decision(store: Store, since: float, until: float) -> bool:
    return bool(await store.audit_records(AuditQuery(kind="decision", since=since, until=until, limit=1)))


async def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return await asyncio.to_thread(path.read_text, encoding="utf-8")
    except OSError:
        return None


def rightsize_to_dict(fleet: FleetRightsize) -> dict[str, Any]:
    """The JSON shape (admin API, CLI --format json)."""
    window = fleet.window
    return {
        "window": {"since": window.since, "until": window.until, "observed_from": window.observed_from,
                   "decisions": window.decisions},
        "granted": fleet.granted,
        "unused": fleet.unused,
        "unused_share": fleet.unused_share,
        "agents": [agent_to_dict(a) for a in fleet.agents],
    }


def agent_to_dict(result: AgentRightsize) -> dict[str, Any]:
    return {
        "agent_id": result.agent_id,
        "owner": result.owner,
        "state": result.state,
        "observed_from": result.observed_from,
        "policy_version": result.policy_version,
        "granted": [_tool_dict(t) for t in result.granted],
        "allow": len(result.by_verdict("allow")),
        "step_up": len(result.by_verdict("step_up")),
        "never": list(result.never),
        "used": [t.tool for t in result.used],
        "unused": [t.tool for t in result.unused],
        "unused_share": result.unused_share,
        "servers_granted": list(result.servers_granted),
        "servers_unused": list(result.servers_unused),
        "risks_granted": list(result.risks_granted),
        "risks_unused": list(result.risks_unused),
        "other_calls": result.other_calls,
        "tasks": [_task_dict(t) for t in result.tasks],
        "proposal": None if result.proposal is None else result.proposal.to_dict(),
    }


def _tool_dict(tool: GrantedTool) -> dict[str, Any]:
    return {"server": tool.server_id, "tool": tool.tool, "risk": tool.risk, "verdict": tool.verdict,
            "calls": tool.calls, "last_called_at": tool.last_called_at}


def _task_dict(task: TaskUse) -> dict[str, Any]:
    return {"task_id": task.task_id, "purpose": task.purpose, "state": task.state, "started_at": task.started_at,
            "granted": list(task.granted), "called": list(task.called), "unused": list(task.unused)}
