"""`narrowgate approvals`: list and decide step-up approval requests (admin API)."""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from typing import Any

from gateway.approvals.model import ApprovalState
from gateway.cli.admin_client import client, when


def run_approvals_list(args: argparse.Namespace) -> int:
    states = [] if args.all else (args.states or [ApprovalState.PENDING.value])
    params = {"state": ",".join(states), "agent": args.agent or "", "limit": str(args.limit)}
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v})
    approvals = client(args).request("GET", f"/admin/v1/approvals?{query}")["approvals"]
    now = time.time()
    print(f"{'ID':<22} {'STATE':<10} {'AGENT':<20} {'TOOL':<24} {'RISK':<12} {'OWNER':<24} EXPIRES IN / DECIDED BY")
    for approval in approvals:
        print(f"{approval['id']:<22} {approval['state']:<10} {approval['agent_id']:<20} {approval['tool']:<24} "
              f"{approval['risk']:<12} {approval['owner']:<24} {_outcome(approval, now)}")
    return 0


def _outcome(approval: dict[str, Any], now: float) -> str:
    """Pending: how long it has left; decided: by whom; otherwise why it ended."""
    if approval["state"] == ApprovalState.PENDING.value:
        return _duration(approval["expires_at"] - now)
    return approval.get("decided_by_label") or approval.get("decided_by") or approval.get("end_reason") or "-"


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "now"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def run_approval_show(args: argparse.Namespace) -> int:
    approval = client(args).request("GET", _approval_path(args.approval_id))
    for label, value in _approval_lines(approval):
        print(f"{label + ':':<16} {value}")
    print("arguments (preview):")
    print(json.dumps(approval.get("preview"), indent=2, sort_keys=True))
    return 0


def _approval_lines(approval: dict[str, Any]) -> list[tuple[str, str]]:
    """What an approver needs to decide, in reading order; absent facts are left out."""
    who_decides = f"members of group {approval['approvers_group']}" if approval.get("approvers_group") \
        else f"the agent's owner ({approval['owner']})"
    lines = [
        ("approval", approval["id"]), ("state", approval["state"]), ("reason", approval["reason"]),
        ("policies", ", ".join(approval["policy_ids"]) or "-"),
        ("agent", f"{approval['agent_id']} (owner {approval['owner']})"),
        ("agent purpose", approval.get("agent_purpose") or "-"),
        ("task", approval.get("task_id") or "-"),
        ("task purpose", approval.get("task_purpose") or "-"),
        ("task started by", approval.get("task_started_by") or "-"),
        ("tool", f"{approval['tool']} (server {approval['server_id']}, risk {approval['risk']})"),
        ("mode", approval["mode"]), ("decision", approval["decision_id"]),
        ("policy version", approval["policy_version"]),
        ("requested", when(approval["created_at"])), ("expires", when(approval["expires_at"])),
        ("who decides", who_decides),
    ]
    if approval.get("decided_by") is not None:
        who = approval.get("decided_by_label") or approval["decided_by"]
        lines.append(("decided by", f"{who} at {when(approval.get('decided_at'))}"))
    lines += [(label, str(approval[key])) for label, key in (("comment", "comment"), ("ended", "end_reason"),
                                                              ("used by decision", "used_decision_id"))
              if approval.get(key)]
    lines.append(("url", approval["url"]))
    if "you_may_decide" in approval:
        lines.append(("you may decide", "yes" if approval["you_may_decide"] else f"no: {approval['why_not']}"))
    return lines


def run_approval_decide(args: argparse.Namespace) -> int:
    path = f"{_approval_path(args.approval_id)}/{args.action}"
    approval = client(args).request("POST", path, {"comment": args.comment})
    print(f"approval {approval['id']} is now {approval['state']}")
    return 0


def _approval_path(approval_id: str) -> str:
    return f"/admin/v1/approvals/{urllib.parse.quote(approval_id, safe='')}"
