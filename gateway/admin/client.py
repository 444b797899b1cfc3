"""The CLI's side of the admin API: `narrowgate agents|tasks|keys|approvals ...` against a running gateway."""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.admin.keys_api import DEFAULT_OVERLAP_S, MIN_OVERLAP_S
from gateway.approvals.model import ApprovalState

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


class AdminClientError(Exception):
    pass


class AdminClient:
    def __init__(self, base_url: str, token: str | None) -> None:
        if not token:
            raise AdminClientError("an admin token is required: --admin-token or NARROWGATE_ADMIN_TOKEN")
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AdminClientError(f"HTTP {exc.code}: {_error_text(exc)}") from None
        except urllib.error.URLError as exc:
            raise AdminClientError(f"cannot reach the gateway at {self.base_url}: {exc.reason}") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error"))
    except (ValueError, AttributeError):
        return exc.reason


def add_agents_parser(commands: Any) -> None:
    agents = commands.add_parser("agents", help="manage agent records on a running gateway (admin API)")
    _add_connection_options(agents)
    sub = agents.add_subparsers(title="agents commands", metavar="COMMAND", required=True)

    add = sub.add_parser("add", help="register an agent")
    add.add_argument("agent_id")
    add.add_argument("--owner", required=True, help="the person or team answerable for the agent")
    add.add_argument("--purpose", required=True, help="what the agent is for (free text)")
    add.add_argument("--name", help="display name (default: the id)")
    add.add_argument("--oidc", nargs=2, action="append", default=[], metavar=("ISSUER", "SUBJECT"),
                     help="bind an OIDC identity (repeatable)")
    add.add_argument("--spiffe-id", action="append", default=[], help="bind a SPIFFE ID (repeatable)")
    add.add_argument("--static", action="store_true", help="bind the development static-token identity")
    add.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                     help="pin a claim on every identity given here (e.g. repository_id=123)")
    add.add_argument("--tool", action="append", default=[], help="entitle a tool (exposed name; repeatable)")
    add.add_argument("--server", action="append", default=[], help="entitle every tool of a server")
    add.add_argument("--group", action="append", default=[])
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    add.add_argument("--expires", help="expiry, ISO-8601 (e.g. 2027-01-31T00:00:00Z)")
    add.add_argument("--activate", action="store_true", help="start active instead of pending")
    add.add_argument("--no-require-task", action="store_true",
                     help="let a bare workload token call within the entitlement (default: a task token is required)")
    add.add_argument("--reason", default="registered with the CLI")
    add.set_defaults(run=run_add)

    listing = sub.add_parser("list", help="list agents")
    listing.set_defaults(run=run_list)
    show = sub.add_parser("show", help="show one agent and its lifecycle history")
    show.add_argument("agent_id")
    show.set_defaults(run=run_show)
    for action, text in (("activate", "approve a pending agent"), ("suspend", "suspend an agent at once"),
                         ("resume", "resume a suspended agent"), ("retire", "retire an agent (final)")):
        command = sub.add_parser(action, help=text)
        command.add_argument("agent_id")
        command.add_argument("--reason", required=True, help="why (recorded with your identity)")
        command.set_defaults(run=run_lifecycle, action=action)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AdminClientError(f"{flag} takes KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def agent_spec(args: argparse.Namespace) -> dict[str, Any]:
    claims = _pairs(args.claim, "--claim")
    identities = [{"kind": "oidc", "issuer": issuer, "subject": subject, "claims": claims}
                  for issuer, subject in args.oidc]
    for spiffe_id in args.spiffe_id:
        trust_domain = spiffe_id.removeprefix("spiffe://").split("/", 1)[0]
        identities.append({"kind": "spiffe", "issuer": f"spiffe://{trust_domain}", "subject": spiffe_id,
                           "claims": claims})
    if args.static:
        identities.append({"kind": "static", "issuer": "narrowgate", "subject": args.agent_id, "claims": {}})
    return {
        "id": args.agent_id, "display_name": args.name or args.agent_id, "owner": args.owner,
        "purpose": args.purpose, "identities": identities, "groups": args.group,
        "labels": _pairs(args.label, "--label"),
        "entitlement": {"tools": args.tool, "servers": args.server, "require_task": not args.no_require_task},
        "expires_at": args.expires, "state": "active" if args.activate else "pending", "reason": args.reason,
    }


def run_add(args: argparse.Namespace) -> int:
    agent = client(args).request("POST", "/admin/v1/agents", agent_spec(args))
    print(f"agent {agent['id']} registered ({agent['state']})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    agents = client(args).request("GET", "/admin/v1/agents")["agents"]
    print(f"{'ID':<24} {'STATE':<10} {'OWNER':<28} PURPOSE")
    for agent in agents:
        print(f"{agent['id']:<24} {agent['state']:<10} {agent['owner']:<28} {agent['purpose']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    agent = client(args).request("GET", f"/admin/v1/agents/{args.agent_id}")
    return print_with_history(agent, "lifecycle:", agent_event_line)


def agent_event_line(event: dict[str, Any]) -> str:
    fields = f" ({', '.join(event['fields'])})" if event.get("fields") else ""
    return f"{event['action'] or 'change'}: {state_change(event)}{fields}"


def state_change(event: dict[str, Any]) -> str:
    return f"{event['from_state'] or '-'} -> {event['to_state']}"


def print_with_history(record: dict[str, Any], heading: str, describe: Callable[[dict[str, Any]], str]) -> int:
    """A record as JSON, then its events: time, what changed, who and why."""
    events = record.pop("events", [])
    print(json.dumps(record, indent=2))
    print(heading)
    for event in events:
        print(f"  {_when(event['at'])}  {describe(event)}  by {event['actor']}: {event['reason']}")
    return 0


def run_lifecycle(args: argparse.Namespace) -> int:
    agent = client(args).request("POST", f"/admin/v1/agents/{args.agent_id}/{args.action}", {"reason": args.reason})
    print(f"agent {agent['id']} is now {agent['state']}")
    return 0


def client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.gateway, args.admin_token)



# --- `narrowgate tasks` and `narrowgate keys` ----------------------------------------------------


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The same --gateway / --admin-token options (and environment defaults) as `narrowgate agents`."""
    parser.add_argument("--gateway", default=os.environ.get("NARROWGATE_URL", DEFAULT_GATEWAY),
                        help="gateway base URL (default: $NARROWGATE_URL or http://127.0.0.1:8080)")
    parser.add_argument("--admin-token", default=os.environ.get("NARROWGATE_ADMIN_TOKEN"),
                        help="admin bearer token (default: $NARROWGATE_ADMIN_TOKEN)")


def add_tasks_parser(commands: Any) -> None:
    tasks = commands.add_parser("tasks", help="start and end agents' tasks on a running gateway (admin API)")
    _add_connection_options(tasks)
    sub = tasks.add_subparsers(title="tasks commands", metavar="COMMAND", required=True)

    start = sub.add_parser("start", help="start a task for an agent and print its task token",
                           description="Start a task for AGENT. Prints the task id, its deadline, and the "
                                       "task token alone on the last line (hand it to the agent).")
    start.add_argument("agent_id", metavar="AGENT")
    start.add_argument("--purpose", required=True, help="what the task is for (recorded)")
    start.add_argument("--tool", action="append", required=True, dest="tools",
                       help="a tool the task needs (exposed name; repeatable)")
    start.add_argument("--deadline", type=float, metavar="SECONDS",
                       help="seconds from now until the task expires (default: the gateway's, 1 hour)")
    start.add_argument("--budget", type=int, metavar="N", help="most tool calls the task may make")
    start.add_argument("--trim", action="store_true",
                       help="grant the entitled part of --tool instead of refusing the whole request")
    start.set_defaults(run=run_task_start)

    listing = sub.add_parser("list", help="list tasks")
    listing.add_argument("--agent", help="only this agent's tasks")
    listing.add_argument("--state", choices=["active", "completed", "failed", "expired", "revoked"])
    listing.set_defaults(run=run_task_list)

    show = sub.add_parser("show", help="show one task and its history")
    show.add_argument("task_id", metavar="ID")
    show.set_defaults(run=run_task_show)

    for action, text in (("complete", "mark a task done; its grants end at once"),
                         ("fail", "mark a task failed; its grants end at once"),
                         ("revoke", "revoke a task; its grants end at once")):
        command = sub.add_parser(action, help=text)
        command.add_argument("task_id", metavar="ID")
        command.add_argument("--reason", required=True, help="why (recorded with your identity)")
        command.set_defaults(run=run_task_end, action=action)


def add_keys_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="the gateway's token signing keys (admin API)")
    _add_connection_options(keys)
    sub = keys.add_subparsers(title="keys commands", metavar="COMMAND", required=True)
    listing = sub.add_parser("list", help="show the current key and the previous keys still served")
    listing.set_defaults(run=run_keys_list)
    rotate = sub.add_parser("rotate", help="make a new signing key current; the old one stays for --overlap")
    rotate.add_argument("--overlap", type=float, metavar="SECONDS",
                        help=f"how long the old key stays in the JWKS (default {DEFAULT_OVERLAP_S:.0f}, "
                             f"at least {MIN_OVERLAP_S:.0f})")
    rotate.set_defaults(run=run_keys_rotate)


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def run_task_start(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"agent_id": args.agent_id, "purpose": args.purpose, "tools": args.tools,
                            "trim": args.trim}
    if args.deadline is not None:
        body["deadline_s"] = args.deadline
    if args.budget is not None:
        body["budget"] = args.budget
    answer = client(args).request("POST", "/admin/v1/tasks", body)
    task = answer["task"]
    print(f"task {task['id']} started for agent {task['agent_id']}")
    print(f"tools: {', '.join(task['tools'])}")
    trimmed = [t for t in dict.fromkeys(args.tools) if t not in task["tools"]]
    if trimmed:
        print(f"trimmed (not granted): {', '.join(trimmed)}")
    budget = "unlimited" if task["budget"] is None else f"{task['budget']} call(s)"
    print(f"deadline: {_when(task['deadline'])}  budget: {budget}")
    print(f"task token (expires in {answer['expires_in']} s):")
    print(answer["token"])
    return 0


def run_task_list(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({k: v for k, v in (("agent", args.agent), ("state", args.state)) if v})
    tasks = client(args).request("GET", "/admin/v1/tasks" + (f"?{query}" if query else ""))["tasks"]
    print(f"{'ID':<30} {'AGENT':<20} {'STATE':<10} {'CALLS':<8} {'DEADLINE':<26} PURPOSE")
    for task in tasks:
        calls = f"{task['calls_made']}" + ("" if task["budget"] is None else f"/{task['budget']}")
        print(f"{task['id']:<30} {task['agent_id']:<20} {task['state']:<10} {calls:<8} "
              f"{_when(task['deadline']):<26} {task['purpose']}")
    return 0


def run_task_show(args: argparse.Namespace) -> int:
    task = client(args).request("GET", f"/admin/v1/tasks/{urllib.parse.quote(args.task_id, safe='')}")
    return print_with_history(task, "history:", state_change)


def run_task_end(args: argparse.Namespace) -> int:
    path = f"/admin/v1/tasks/{urllib.parse.quote(args.task_id, safe='')}/{args.action}"
    task = client(args).request("POST", path, {"reason": args.reason})
    print(f"task {task['id']} is now {task['state']}")
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    answer = client(args).request("GET", "/admin/v1/keys")
    print(f"{'KID':<45} {'ALG':<6} STATE")
    for key in answer["keys"]:
        state = "current" if key["kid"] == answer["current_kid"] else "previous"
        print(f"{key['kid']:<45} {key.get('alg', '-'):<6} {state}")
    return 0


def run_keys_rotate(args: argparse.Namespace) -> int:
    body = {} if args.overlap is None else {"overlap_s": args.overlap}
    answer = client(args).request("POST", "/admin/v1/keys/rotate", body)
    print(f"signing key rotated: {answer['current_kid']} is current")
    for kid in answer["previous"]:
        print(f"previous key {kid} stays in the JWKS for up to {answer['overlap_s']:.0f} s")
    return 0


# --- `narrowgate approvals` ----------------------------------------------------------------------

APPROVAL_STATES = tuple(state.value for state in ApprovalState)


def add_approvals_parser(commands: Any) -> None:
    approvals = commands.add_parser("approvals", help="list and decide step-up approval requests (admin API)",
                                    description="List, show, approve and deny approval requests. An approver-role "
                                                "token works as well as an admin token.")
    _add_connection_options(approvals)
    sub = approvals.add_subparsers(title="approvals commands", metavar="COMMAND", required=True)

    listing = sub.add_parser("list", help="list approval requests (default: pending ones)")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--state", action="append", choices=APPROVAL_STATES, dest="states",
                       help="only requests in this state (repeatable; default: pending)")
    which.add_argument("--all", action="store_true", help="requests in every state")
    listing.add_argument("--agent", help="only this agent's requests")
    listing.add_argument("--limit", type=int, default=200, help="most requests to list, newest first (default 200)")
    listing.set_defaults(run=run_approvals_list)

    show = sub.add_parser("show", help="show one approval request: what was asked, why, and its outcome")
    show.add_argument("approval_id", metavar="ID")
    show.set_defaults(run=run_approval_show)

    for action, text in (("approve", "approve a pending request: the identical call may then run once"),
                         ("deny", "deny a pending request")):
        command = sub.add_parser(action, help=text)
        command.add_argument("approval_id", metavar="ID")
        command.add_argument("--comment", default="", help="a note recorded with your decision (the agent sees "
                                                           "a denial's comment)")
        command.set_defaults(run=run_approval_decide, action=action)


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
        ("requested", _when(approval["created_at"])), ("expires", _when(approval["expires_at"])),
        ("who decides", who_decides),
    ]
    if approval.get("decided_by") is not None:
        who = approval.get("decided_by_label") or approval["decided_by"]
        lines.append(("decided by", f"{who} at {_when(approval.get('decided_at'))}"))
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
