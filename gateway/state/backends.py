"""`StateBackends`: one field per state seam, the implementation the gateway is built with.

app.py builds the in-memory set (gateway.in_memory_state.in_memory_backends) unless it is given
one; a fleet deployment passes shared implementations for some fields and keeps the rest. The
fields are typed by the seams' Protocols; each consumer's constructor names its value types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.state.approvals import ApprovalWaiters, OpenApprovals
from gateway.state.budgets import CallBudgets
from gateway.state.chain import ChainSignals, RateWindows
from gateway.state.console import ConsoleSessions, LoginFailures
from gateway.state.memory import InMemoryApprovalWaiters, InMemoryOpenApprovals, LocalNotices
from gateway.state.notices import Notices
from gateway.state.revocations import RevocationList
from gateway.state.sessions import AgentSessions
from gateway.state.token_cache import TokenCache


@dataclass(slots=True)
class StateBackends:
    agent_sessions: AgentSessions[Any, Any]  # 2025-11-25 sessions, each with its stream logs
    rate_windows: RateWindows
    chain_signals: ChainSignals[Any, Any]
    revocations: RevocationList  # the upstream-token deny list
    console_sessions: ConsoleSessions[Any, Any]
    login_failures: LoginFailures
    verified_tokens: TokenCache[Any]  # workload tokens verified on /mcp and the admin API
    open_approvals: OpenApprovals[Any] = field(default_factory=InMemoryOpenApprovals)
    approval_waiters: ApprovalWaiters = field(default_factory=InMemoryApprovalWaiters)
    notices: Notices = field(default_factory=LocalNotices)  # list-change fan-out
    call_budgets: CallBudgets | None = None  # task call counts; None: TaskService counts in this process
