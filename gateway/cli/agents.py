"""`narrowgate agents`: manage agent records on a running gateway (admin API)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.admin_client import AdminClientError, add_connection_options, client, print_with_history, state_change
from gateway.cli.parsers import Subcommands


def add_agents_parser(commands: Subcommands) -> None:
    agents = commands.add_parser("agents", help="manage agent records on a running gateway (admin API)")
    add_connection_options(agents)
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


def run_lifecycle(args: argparse.Namespace) -> int:
    agent = client(args).request("POST", f"/admin/v1/agents/{args.agent_id}/{args.action}", {"reason": args.reason})
    print(f"agent {agent['id']} is now {agent['state']}")
    return 0
