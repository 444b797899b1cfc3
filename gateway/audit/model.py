"""What one audit record says: the event a stage reports, before the writer seals it into the chain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.shape import RecordShape

KINDS = frozenset({"decision", "approval", "agent", "task", "catalog", "policy", "monitoring", "credential"})


# Not frozen: a frozen dataclass sets each of its 14 fields through object.__setattr__, nearly three times what
# plain slot stores cost, and an event is made for every call. Nothing needs it frozen: the audit log serializes
# an event when it is enqueued (gateway.audit.prepared), so a later change to it never reaches the record.
@dataclass(slots=True)
class AuditEvent:
    kind: str  # "decision" | "approval" | "agent" | "task" | "catalog" | "policy" | "monitoring" | "credential"
    action: str  # e.g. "tools/call", "suspend", "start", "complete", "reload", "tool_added"
    actor: str  # who caused it: an agent id, "admin:<name>", "oidc:<sub>", "narrowgate"
    agent_id: str | None = None
    owner: str | None = None
    task_id: str | None = None
    tool: str | None = None  # exposed tool name, prompt name or resource URI
    decision: str | None = None  # allow | deny | step_up
    policy_ids: tuple[str, ...] = ()
    decision_id: str | None = None
    trace_id: str | None = None
    args_digest: str | None = None
    preview: Mapping[str, Any] | None = None  # already redacted (see gateway.audit.redact)
    detail: Mapping[str, Any] = field(default_factory=dict)  # small extra facts (reason, state change, version)
    # What it shares with other records, serialized once (gateway.audit.shape); not part of what it says.
    shape: RecordShape | None = field(default=None, repr=False, compare=False)


class AuditUnavailable(Exception):
    """The audit log cannot make a record durable now; callers that need durability fail closed."""
