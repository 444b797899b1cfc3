"""`narrowgate agents`: manage agent records on a running gateway (admin API)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.admin_client import client, print_with_history, state_change
from gateway.cli.errors import AdminClientError


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
    people = {"groups": args.person_group, "subjects": args.person_subject, "email_domains": args.person_email_domain}
    identities.extend({"kind": "client", "issuer": issuer, "subject": client_id, "claims": claims, "people": people,
                       "shared": args.shared_client} for issuer, client_id in args.client)
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
