"""`narrowgate blast-radius [AGENT] [--task ID] [--format table|json|svg]` through the admin API.

An unknown agent or task (404) or a refused request (400) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from gateway.cli.admin_client import client
from gateway.cli.errors import AdminClientError
from gateway.cli.exit_codes import EXIT_INVALID

BAD_INPUT = (400, 404)


def run_blast_radius(args: argparse.Namespace) -> int:
    if args.agent_id is None and (args.task or args.format == "svg"):
        print("narrowgate: --task and --format svg need an AGENT", file=sys.stderr)
        return EXIT_INVALID
    try:
        if args.agent_id is None:
            return _fleet(args)
        return _agent(args)
    except AdminClientError as exc:
        if exc.status not in BAD_INPUT:
            raise
        print(f"narrowgate: {exc}", file=sys.stderr)
        return EXIT_INVALID


def _fleet(args: argparse.Namespace) -> int:
    rows = client(args).request("GET", "/admin/v1/blast-radius")["agents"]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'AGENT':<24} {'SCORE':>6} {'NO-APPROVAL':>11} {'R/W/P/D':<12} {'EGRESS':>6} {'READ->EGRESS':<13} "
          f"{'APPROVE':>7} {'CALLS/H':>8} LONGEST-CREDENTIAL")
    for row in rows:
        risk = row["by_risk"]
        tiers = f"{risk['read']}/{risk['write']}/{risk['privileged']}/{risk['destructive']}"
        print(f"{row['agent_id']:<24} {row['score']:>6} {row['without_approval']:>11} {tiers:<12} "
              f"{row['egress']:>6} {'POSSIBLE' if row['sensitive_then_egress'] else 'no':<13} "
              f"{row['needs_approval']:>7} {_calls(row['max_calls_per_hour']):>8} "
              f"{_seconds(row['longest_credential_s'])}")
    return 0


def _agent(args: argparse.Namespace) -> int:
    query: dict[str, str] = {"format": "svg" if args.format == "svg" else "json"}
    if args.task:
        query["task"] = args.task
    path = f"/admin/v1/blast-radius/{urllib.parse.quote(args.agent_id, safe='')}?{urllib.parse.urlencode(query)}"
    if args.format == "svg":
        sys.stdout.write(client(args).request_bytes("GET", path).decode("utf-8") + "\n")
        return 0
    blast = client(args).request("GET", path)
    if args.format == "json":
        print(json.dumps(blast, indent=2))
    else:
        print_table(blast)
    return 0


def print_table(blast: dict[str, Any]) -> None:
    free, chain, credential = blast["without_approval"], blast["sensitive_then_egress"], blast["credential"]
    task = f" under task {blast['task_id']}" if blast["task_id"] else ""
    print(f"blast radius of agent {blast['agent_id']}{task}")
    print(f"policy {blast['policy_version']}  catalog {blast['catalog_version']}  score {blast['score']}")
    tiers = ", ".join(f"{n} {tier}" for tier, n in free["by_risk"].items())
    print(f"without approval: {free['count']} tool(s): {tiers}")
    classes = ", ".join(f"{name} {n}" for name, n in free["by_data_class"].items()) or "none"
    print(f"  by data class: {classes}")
    print(f"egress without approval: {', '.join(blast['egress']) or 'none'}")
    paths = ", ".join(f"{p['read']} -> {p['egress']}" for p in chain["paths"])
    print("sensitive read -> egress without approval: " + (f"POSSIBLE ({paths})" if paths else "no"))
    for held in chain["held_for_approval"]:
        print(f"  held for approval: {held['read']} -> {held['egress']} ({', '.join(held['policy_ids'])})")
    limits = f" ({'; '.join(blast['rate_limits'])})" if blast["rate_limits"] else ""
    print(f"most calls per hour: {_calls(blast['max_calls_per_hour'])}{limits}")
    workload = "".join(f"; {w['bound']}" for w in credential["workload"])
    print(f"stolen credential: task token {_seconds(credential['task_token_s'])}, upstream token "
          f"{_seconds(credential['upstream_token_s'])} (one tool){workload}; longest: "
          f"{_seconds(credential['longest_s'])}")
    approvals = ", ".join(t["tool"] + (f" ({t['approvers']})" if t["approvers"] else "")
                          for t in blast["needs_approval"]) or "nothing"
    print(f"a person must approve: {approvals}")
    print(f"denied: {blast['denied']} tool(s)")
    for caveat in blast.get("caveats", []):  # what the reach does not model could open more
        print(f"caveat: {caveat}")
    print(f"\n{'TOOL':<40} {'RISK':<12} {'DATA CLASSES':<20} {'EGRESS':<6} POLICIES")
    for tool in free["tools"]:
        print(f"{tool['tool']:<40} {tool['risk']:<12} {','.join(tool['data_classes']) or '-':<20} "
              f"{'yes' if tool['egress'] else '':<6} {', '.join(tool['policy_ids'])}")


def _calls(value: int | None) -> str:
    return "no limit" if value is None else str(value)


def _seconds(value: float | None) -> str:
    return "no bound" if value is None else f"{value:.0f} s"
