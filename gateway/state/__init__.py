"""State seams: the Protocols behind every piece of state that lives only in process memory.

One module per seam, holding only its Protocol (and, where the in-memory implementation is a few
lines, that implementation in `memory.py`); the larger in-memory implementations stay in their
stage's package. A stage is typed against the Protocol and gets the implementation through its
constructor, so a shared backend (Redis, issue 15) replaces one by a constructor argument: see
`backends.StateBackends` and docs/state.md.

A leaf: imports nothing of the gateway but `gateway.protocol` and `gateway.settings`. Values that
belong to a stage (an approval, a session, a principal) are type parameters here.
"""

from gateway.state.approvals import ApprovalWaiters, OpenApprovals
from gateway.state.backends import StateBackends
from gateway.state.budgets import CallBudgets
from gateway.state.chain import ChainSignals, RateWindows
from gateway.state.console import ConsoleSessions, LoginFailures
from gateway.state.notices import Notices
from gateway.state.revocations import RevocationList
from gateway.state.sessions import AgentSessions, StreamLog
from gateway.state.token_cache import TokenCache

__all__ = [
    "AgentSessions",
    "ApprovalWaiters",
    "CallBudgets",
    "ChainSignals",
    "ConsoleSessions",
    "LoginFailures",
    "Notices",
    "OpenApprovals",
    "RateWindows",
    "RevocationList",
    "StateBackends",
    "StreamLog",
    "TokenCache",
]
