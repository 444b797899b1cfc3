"""`narrowgate tasks`: start and end agents' tasks on a running gateway (admin API)."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from gateway.cli.admin_client import client, print_with_history, state_change, when


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
    print(f"deadline: {when(task['deadline'])}  budget: {budget}")
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
              f"{when(task['deadline']):<26} {task['purpose']}")
    return 0


def run_task_show(args: argparse.Namespace) -> int:
    task = client(args).request("GET", f"/admin/v1/tasks/{urllib.parse.quote(args.task_id, safe='')}")
    return print_with_history(task, "history:", state_change)


def run_task_end(args: argparse.Namespace) -> int:
    path = f"/admin/v1/tasks/{urllib.parse.quote(args.task_id, safe='')}/{args.action}"
    task = client(args).request("POST", path, {"reason": args.reason})
    print(f"task {task['id']} is now {task['state']}")
    return 0
