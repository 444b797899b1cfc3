"""What the approval webhook says: enough to route the request to a person, never the arguments."""

from __future__ import annotations

from typing import Any

from gateway.approvals.model import Approval
from gateway.links import approval_path


def approval_webhook_payload(approval: Approval, base_url: str) -> dict[str, Any]:
    # Arguments stay out (chat channels are wide audiences); the console shows them, redacted, to
    # the people who may decide.
    return {
        "type": "approval_requested",
        "approval_id": approval.id,
        "url": base_url + approval_path(approval.id),
        "agent_id": approval.agent_id,
        "owner": approval.owner,
        "approvers_group": approval.approvers_group,
        "task_id": approval.task_id,
        "tool": approval.tool,
        "server_id": approval.server_id,
        "risk": approval.risk,
        "reason": approval.reason,
        "mode": approval.mode,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
    }
