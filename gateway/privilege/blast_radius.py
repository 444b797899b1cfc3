"""Blast radius: what an agent, or whoever holds its current task token, can do with no person involved.

Built on the reach (gateway/privilege/reach.py: every catalog tool decided by the live policies under
documented contexts) and the settings that bound a stolen credential:
- `without_approval`: the tools whose verdict is allow, counted by risk tier and by data class;
- `egress`: the egress tools among them (catalog flag or monitoring.egress_servers / egress_tools);
- `sensitive_then_egress`: whether an allowed sensitive read can be followed by an allowed egress call
  (the reach's chain context: Cedar decides the egress call after the read). The
  `sensitive_then_egress` detector fires on such a call but after it went out, so it is reported, not
  counted as stopping it; its kill switch (monitoring.kill_switch_severity) suspends the agent then;
- `max_calls_per_hour`: the tightest of the rate limits that apply (per agent; per task and the task's
  remaining budget with a task; per tool times the tools allowed), None when nothing bounds it;
- `credential`: how long each credential stays useful if stolen (task token, upstream token, the
  workload credential and the agent's own expiry);
- `approvals`: the tools a person must approve (step_up), with the approver groups the policies name.
A fleet ranks agents by `score` (documented in docs/least-privilege.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.catalog.model import RISK_TIERS
from gateway.config import Settings
from gateway.privilege.reach import AgentReach, ChainStep, ReachAnalyzer, ToolReach, reach_header
from gateway.registry.model import Agent, Lifecycle
from gateway.registry.service import Registry
from gateway.settings.monitoring import RateLimit
from gateway.tasks.model import TaskState

HOUR_S = 3600.0
NO_DATA_CLASS = "(none)"
RISK_WEIGHT = {"read": 1, "write": 3, "privileged": 10, "destructive": 20}
EGRESS_WEIGHT = 5
CHAIN_WEIGHT = 50
WORKLOAD_NOTES = {
    "static": "a static token: valid until removed from the gateway's config",
    "oidc": "an OIDC token: lifetime set by its issuer; it can be exchanged for task tokens while valid",
    "spiffe": "a SPIFFE JWT-SVID: lifetime set by its issuer; it can be exchanged for task tokens while valid",
}


@dataclass(frozen=True, slots=True)
class Credential:
    task_token_s: float  # the longest a task token stays valid (0: the task has ended)
    upstream_token_s: float  # a per-call upstream token: one tool, one upstream
    workload: tuple[tuple[str, str], ...]  # (identity kind, what bounds it)
    agent_expires_in_s: float | None  # the agent's own expiry, None without one
    longest_s: float | None  # the longest any of them stays useful; None: no bound the gateway sets


@dataclass(frozen=True, slots=True)
class BlastRadius:
    reach: AgentReach
    without_approval: tuple[ToolReach, ...]
    by_risk: dict[str, int]
    by_data_class: dict[str, int]
    egress: tuple[ToolReach, ...]
    sensitive_then_egress: tuple[ChainStep, ...]  # read -> egress pairs allowed without approval
    held_after_read: tuple[ChainStep, ...]  # read -> egress pairs that need a person (step_up)
    max_calls_per_hour: int | None
    rate_limits: tuple[str, ...]  # the limits that bound max_calls_per_hour
    credential: Credential
    approvals: tuple[ToolReach, ...]
    detector_note: str

    @property
    def agent_id(self) -> str:
        return self.reach.agent_id

    @property
    def possible_sensitive_then_egress(self) -> bool:
        return bool(self.sensitive_then_egress)

    @property
    def score(self) -> int:
        """Risk-weighted tools allowed without approval, plus egress, plus a sensitive read -> egress path."""
        return (sum(RISK_WEIGHT.get(t.risk, 1) for t in self.without_approval)
                + EGRESS_WEIGHT * len(self.egress) + CHAIN_WEIGHT * self.possible_sensitive_then_egress)


class BlastRadiusService:
    """Blast radius per agent and for the fleet; the reach's cache makes repeats cheap."""

    def __init__(self, reach: ReachAnalyzer, registry: Registry, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.reach = reach
        self.registry = registry
        self.settings = settings
        self.clock = clock

    async def agent(self, agent_id: str, task_id: str | None = None) -> BlastRadius:
        """UnknownAgent / UnknownTask (gateway.privilege.reach) for bad input."""
        reach = await self.reach.agent_reach(agent_id, task_id)
        agent = self.registry.get(agent_id)
        assert agent is not None  # agent_reach found it
        return self.measure(reach, agent)

    async def fleet(self) -> list[BlastRadius]:
        """Every active agent's blast radius, widest first (a pending, suspended, retired or expired agent is
        refused at authentication: nothing can act as it until a person reactivates it)."""
        now = self.clock()
        active = [agent for agent in self.registry.agents() if agent.effective_state(now) is Lifecycle.ACTIVE]
        measured = [await self.agent(agent.id) for agent in active]
        return sorted(measured, key=lambda b: (-b.score, b.agent_id))

    def measure(self, reach: AgentReach, agent: Agent) -> BlastRadius:
        allowed = reach.by_verdict("allow")
        by_risk = {tier: sum(t.risk == tier for t in allowed) for tier in RISK_TIERS}
        by_class: dict[str, int] = {}
        for tool in allowed:
            for name in tool.data_classes or (NO_DATA_CLASS,):
                by_class[name] = by_class.get(name, 0) + 1
        chain = reach.egress_after_read
        calls, limits = self._calls_per_hour(reach, len(allowed))
        return BlastRadius(
            reach, allowed, by_risk, dict(sorted(by_class.items())), tuple(t for t in allowed if t.egress),
            tuple(s for s in chain if s.verdict == "allow"), tuple(s for s in chain if s.verdict == "step_up"),
            calls, limits, self._credential(reach, agent), reach.by_verdict("step_up"), self._detector_note())

    def _calls_per_hour(self, reach: AgentReach, allowed: int) -> tuple[int | None, tuple[str, ...]]:
        if allowed == 0:
            return 0, ()
        monitoring = self.settings.monitoring
        bounds: list[tuple[int, str]] = []
        if monitoring.per_agent is not None:
            bounds.append((_per_hour(monitoring.per_agent), f"per agent: {_limit_text(monitoring.per_agent)}"))
        if monitoring.per_tool is not None:
            bounds.append((_per_hour(monitoring.per_tool) * allowed,
                           f"per tool: {_limit_text(monitoring.per_tool)} x {allowed} tool(s)"))
        task = reach.task
        if task is not None:
            if monitoring.per_task is not None:
                bounds.append((_per_hour(monitoring.per_task), f"per task: {_limit_text(monitoring.per_task)}"))
            if task.remaining_calls is not None:
                bounds.append((task.remaining_calls, f"task budget: {task.remaining_calls} call(s) left"))
        if not bounds:
            return None, ()
        least = min(b for b, _ in bounds)
        return least, tuple(text for b, text in bounds if b == least)

    def _credential(self, reach: AgentReach, agent: Agent) -> Credential:
        now = self.clock()
        tokens = self.settings.tokens
        expires_in = None if agent.expires_at is None else max(0.0, agent.expires_at - now)
        task = reach.task
        task_token = tokens.task_ttl_s
        if task is not None:
            task_token = 0.0 if task.state is not TaskState.ACTIVE else min(task_token, max(0.0, task.deadline - now))
        if expires_in is not None:
            task_token = min(task_token, expires_in)
        kinds = sorted({i.kind for i in agent.identities})
        workload = tuple((kind, WORKLOAD_NOTES.get(kind, "lifetime set by its issuer")) for kind in kinds)
        longest: float | None
        if task is not None:
            # An ended task's tokens, upstream ones included, are refused at once (deny-listed).
            longest = max(task_token, tokens.upstream_ttl_s) if task_token > 0 else 0.0
        else:
            # The agent's own credential can mint task tokens for as long as it is valid: the gateway sets no
            # bound on a static token or an issuer's token, only the agent's expiry does.
            longest = expires_in
        return Credential(task_token, tokens.upstream_ttl_s, workload, expires_in, longest)

    def _detector_note(self) -> str:
        severity = self.settings.monitoring.kill_switch_severity
        action = ("suspends the agent (kill switch)" if severity in ("critical", "high")
                  else "is audited and alerted; the kill switch is off")
        return ("the sensitive_then_egress detector fires on such a call after it went out (critical) and "
                f"{action}")


def _per_hour(limit: RateLimit) -> int:
    """The most calls a sliding window of `calls` per `per_s` lets through in one hour."""
    return limit.calls * math.ceil(HOUR_S / limit.per_s)


def _limit_text(limit: RateLimit) -> str:
    return f"{limit.calls} calls per {limit.per_s:g} s"


def blast_to_dict(blast: BlastRadius) -> dict[str, Any]:
    """The JSON shape (admin API, `narrowgate blast-radius --format json`)."""
    reach = blast.reach
    credential = blast.credential
    return {
        **reach_header(reach),
        "score": blast.score,
        "without_approval": {
            "count": len(blast.without_approval),
            "by_risk": blast.by_risk,
            "by_data_class": blast.by_data_class,
            "tools": [_tool(t) for t in blast.without_approval],
        },
        "egress": [t.tool for t in blast.egress],
        "sensitive_then_egress": {
            "possible_without_approval": blast.possible_sensitive_then_egress,
            "paths": [_step(s) for s in blast.sensitive_then_egress],
            "held_for_approval": [_step(s) for s in blast.held_after_read],
            "sensitive_reads_allowed": reach.sensitive_reads,
            "detector": blast.detector_note,
        },
        "max_calls_per_hour": blast.max_calls_per_hour,
        "rate_limits": list(blast.rate_limits),
        "credential": {
            "task_token_s": credential.task_token_s,
            "upstream_token_s": credential.upstream_token_s,
            "workload": [{"kind": k, "bound": note} for k, note in credential.workload],
            "agent_expires_in_s": credential.agent_expires_in_s,
            "longest_s": credential.longest_s,
        },
        "needs_approval": [{**_tool(t), "approvers": t.approvers} for t in blast.approvals],
        "denied": len(reach.by_verdict("deny")),
    }


def fleet_row(blast: BlastRadius) -> dict[str, Any]:
    """One agent's line of the fleet table."""
    return {
        "agent_id": blast.agent_id,
        "score": blast.score,
        "without_approval": len(blast.without_approval),
        "by_risk": blast.by_risk,
        "egress": len(blast.egress),
        "sensitive_then_egress": blast.possible_sensitive_then_egress,
        "needs_approval": len(blast.approvals),
        "max_calls_per_hour": blast.max_calls_per_hour,
        "longest_credential_s": blast.credential.longest_s,
    }


def _tool(tool: ToolReach) -> dict[str, Any]:
    return {"tool": tool.tool, "server": tool.server_id, "risk": tool.risk, "data_classes": list(tool.data_classes),
            "egress": tool.egress, "policy_ids": list(tool.policy_ids)}


def _step(step: ChainStep) -> dict[str, Any]:
    return {"read": step.read_tool, "egress": step.egress_tool, "verdict": step.verdict,
            "policy_ids": list(step.policy_ids)}
