"""An approval request and the person who decides it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from gateway.json_values import JsonValue


class ApprovalState(StrEnum):
    PENDING = "pending"  # waiting for a person
    APPROVED = "approved"  # granted, not yet used: good for one identical call until it expires
    DENIED = "denied"
    EXPIRED = "expired"  # nobody decided in time, or an approval went unused in time
    USED = "used"  # the one call it was good for has been made
    CANCELLED = "cancelled"  # its task ended or its agent stopped being active
    ABANDONED = "abandoned"  # the held call it was asked for is gone (client left, call cancelled, restart)


OPEN_STATES = frozenset({ApprovalState.PENDING, ApprovalState.APPROVED})


@dataclass(frozen=True, slots=True)
class Approval:
    """One request for a person's approval, bound to the exact call that needed it.

    The binding (agent, task, tool, canonical-argument digest, policy version, and the person for a
    person's MCP client) is what a later call must match to use it; everything else is what the
    approver is shown.
    """

    id: str
    state: ApprovalState
    agent_id: str
    task_id: str | None
    tool: str  # exposed tool name
    args_digest: str  # sha256 of the canonical arguments Cedar judged (gateway.verifier.argument_digest)
    policy_version: str  # Decision.rules_version: the policy texts (catalog churn does not void it)
    decision_id: str  # the StepUp decision that asked for it
    mode: str  # hold | pending
    created_at: float
    expires_at: float
    # What the approver sees (arguments already redacted by the catalog's data classes).
    owner: str
    server_id: str
    risk: str
    reason: str
    policy_ids: tuple[str, ...]
    preview: JsonValue = None
    agent_purpose: str = ""
    task_purpose: str | None = None
    approvers_group: str | None = None  # from @approvers (comma-separated: in every group); None: the owner
    task_started_by: str | None = None
    # The outcome.
    decided_by: str | None = None  # the actor, as the audit log records it ("admin:alice", "oidc:sub")
    decided_by_label: str | None = None  # the same person as people read it ("alice (approver)")
    decided_at: float | None = None
    comment: str | None = None
    used_at: float | None = None
    used_decision_id: str | None = None
    end_reason: str | None = None  # why it expired or was cancelled
    trace_id: str | None = None
    # The person the call was made for ("<issuer> <sub>"; a person's MCP client): another person acting
    # through the same client cannot use it. None for workloads.
    user: str | None = None

    def binds(self, agent_id: str, task_id: str | None, tool: str, args_digest: str, policy_version: str,
              user: str | None = None) -> bool:
        return (self.agent_id == agent_id and self.task_id == task_id and self.tool == tool
                and self.args_digest == args_digest and self.policy_version == policy_version and self.user == user)

    def effective(self, now: float) -> Approval:
        """As it stands at `now`: an open approval past its expiry is expired."""
        if self.state in OPEN_STATES and now >= self.expires_at:
            pending = self.state is ApprovalState.PENDING
            why = "nobody decided in time" if pending else "the approval was not used in time"
            return replace(self, state=ApprovalState.EXPIRED, end_reason=self.end_reason or why)
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["policy_ids"] = list(self.policy_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["state"] = ApprovalState(known["state"])
        known["policy_ids"] = tuple(known.get("policy_ids") or ())
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Approver:
    """A person signed in to decide approvals (never an agent: see gateway.admin.auth)."""

    actor: str  # what the audit log records: "admin:<name>", "oidc:<sub>"
    name: str  # compared with the agent's owner
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()  # "admin" and/or "approver"

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def label(self) -> str:
        """How pages and messages name this person: their name and role, not the audit actor."""
        return f"{self.name} ({'admin' if self.is_admin else 'approver'})"


class ApprovalError(Exception):
    """Why an approval action cannot be done; the message is safe to show the person."""

    status = 409


class ApprovalNotFound(ApprovalError):
    status = 404


class NotAllowedToDecide(ApprovalError):
    status = 403
