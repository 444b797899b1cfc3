"""`narrowgate rightsize`: right-sizing from observed use, from the admin API; `--write` writes the proposals
(the patched agents file and the Cedar files) for a person to review, commit and load. Nothing is applied to
the running gateway: it reads the agents file at its next start, and the policies at their next reload."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from gateway.cli.admin_client import client, when
from gateway.cli.errors import AdminClientError
from gateway.cli.exit_codes import EXIT_INVALID
from gateway.settings.durations import parse_duration

if TYPE_CHECKING:
    from gateway.registry.model import Entitlement

BAD_INPUT = (400, 404, 422)  # a bad window, an unknown agent, no recorded data


class WriteRefused(ValueError):
    """A proposal cannot be written as it is (the local agents file differs from the gateway's, ...)."""


def run_rightsize(args: argparse.Namespace) -> int:
    try:
        parse_duration(args.since)
    except ValueError as exc:
        return _refuse(f"--since: {exc}")
    if args.write and args.config is None:
        return _refuse("--write needs --config (the gateway config naming the agents file and the policies)")
    query = {"since": args.since, **({"agent": args.agent} if args.agent else {})}
    try:
        report = client(args).request("GET", f"/admin/v1/rightsize?{urlencode(query)}")
    except AdminClientError as exc:
        if exc.status in BAD_INPUT:
            return _refuse(str(exc).partition(": ")[2] or str(exc))
        raise
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print_table(report, detail=args.agent is not None)
    if args.write:
        try:
            write_proposals(report, args.config)
        except WriteRefused as exc:
            return _refuse(str(exc))
    return 0


def _refuse(message: str) -> int:
    print(f"narrowgate: {message}", file=sys.stderr)
    return EXIT_INVALID


def print_table(report: dict[str, Any], detail: bool) -> None:
    window = report["window"]
    print(f"window: {when(window['since'])} to {when(window['until'])}, observed from "
          f"{when(window['observed_from'])} ({window['decisions']} decisions recorded)")
    print(f"{'AGENT':<24} {'GRANTED':>7} {'ALLOW':>6} {'STEP-UP':>7} {'USED':>5} {'UNUSED':>6} {'SHARE':>6}  PROPOSAL")
    for agent in report["agents"]:
        print(f"{agent['agent_id']:<24} {len(agent['granted']):>7} {agent['allow']:>6} {agent['step_up']:>7} "
              f"{len(agent['used']):>5} {len(agent['unused']):>6} {_share(agent['unused_share']):>6}  "
              f"{_proposal_kind(agent['proposal'])}")
    print(f"fleet: {report['unused']} of {report['granted']} granted tools unused ({_share(report['unused_share'])})")
    for agent in report["agents"]:
        print_agent(agent, detail)


def print_agent(agent: dict[str, Any], detail: bool) -> None:
    lines = [("unused tools", agent["unused"]),
             ("servers none of whose granted tools was used", agent["servers_unused"]),
             ("risk tiers never exercised", agent["risks_unused"]), ("denied whatever happens", agent["never"]),
             ("tasks wider than what they called", [f"{t['task_id']} (unused: {', '.join(t['unused'])})"
                                                    for t in agent["tasks"] if t["unused"]])]
    shown = [(label, values) for label, values in lines if values and (detail or label != "denied whatever happens")]
    if not shown and not agent["proposal"]["changed"]:
        return
    print(f"\n{agent['agent_id']} (observed from {when(agent['observed_from'])}):")
    for label, values in shown:
        print(f"  {label}: {', '.join(values)}")
    proposal = agent["proposal"]
    if proposal["problem"]:
        print(f"  the agents file cannot be edited in place: {proposal['problem']}")
    if proposal["admin_call"]:
        call = proposal["admin_call"]
        print(f"  admin API call: {call['method']} {call['path']} {json.dumps(call['body'])}")
    if detail and proposal["patch"]:
        print(f"  patch to {proposal['agents_file']}:")
        print("".join(f"    {line}\n" for line in proposal["patch"].splitlines()), end="")
    if detail and proposal["cedar_text"]:
        print(f"  Cedar file {proposal['cedar_file']}:")
        print("".join(f"    {line}\n" for line in proposal["cedar_text"].splitlines()), end="")


def _share(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def _proposal_kind(proposal: dict[str, Any]) -> str:
    if not proposal["changed"]:
        return "nothing to narrow"
    kinds = []
    if proposal["narrowed"] != proposal["current"]:
        kinds.append("agents file patch" if proposal["managed_by"] == "agents_file" else "admin API call")
    if proposal["cedar_file"]:
        kinds.append("Cedar file")
    return " + ".join(kinds)


def write_proposals(report: dict[str, Any], config: Path) -> None:
    """Every changed proposal's files, checked first and written after: all of them, or (refused) none.

    The entitlement is edited in the local agents file (the operator's checkout) with the same line-preserving
    edit the gateway's patch was made with, so proposals for several agents of one file apply one after the
    other; refused when the local file declares a different entitlement than the gateway holds."""
    from gateway.config import load_settings
    from gateway.policy.sources import POLICY_SUBDIR
    from gateway.privilege.proposal import CannotEdit, cedar_file_name, declared_entitlement, edit_entitlement

    settings = load_settings(config, resolve_secrets=False)
    writes: dict[Path, str] = {}
    for agent in report["agents"]:
        proposal, agent_id = agent["proposal"], agent["agent_id"]
        if proposal["managed_by"] == "agents_file" and proposal["narrowed"] != proposal["current"]:
            path = _agents_file(settings.agents_file)
            text = writes.get(path) or path.read_text(encoding="utf-8")
            if declared_entitlement(text, agent_id) != _entitlement(proposal["current"]):
                raise WriteRefused(f"{path} declares a different entitlement for {agent_id} than the gateway holds "
                                   "(deploy or pull it first); nothing was written")
            try:
                writes[path] = edit_entitlement(text, agent_id, _entitlement(proposal["narrowed"]))
            except CannotEdit as exc:
                raise WriteRefused(f"{path}: {exc}; nothing was written") from None
        if proposal["cedar_file"]:
            try:  # named here from the agent id, not taken from the answer: never a path outside the policies
                name = cedar_file_name(agent_id)
            except ValueError as exc:
                raise WriteRefused(f"{exc}; nothing was written") from None
            writes[settings.policies_dir / POLICY_SUBDIR / name] = proposal["cedar_text"]
    for path, text in writes.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if writes:
        print("review and commit them; the gateway reads the agents file when it starts, and the policies when "
              "they reload (`narrowgate policy test` first)")


def _entitlement(raw: dict[str, Any]) -> Entitlement:
    from gateway.registry.model import Entitlement

    return Entitlement(tools=tuple(raw["tools"]), servers=tuple(raw["servers"]), require_task=raw["require_task"])


def _agents_file(configured: Path | None) -> Path:
    if configured is None:
        raise WriteRefused("the config names no agents_file, but the gateway's agents file declares this agent")
    if not configured.is_file():
        raise WriteRefused(f"the agents file {configured} does not exist here")
    return configured
