"""`narrowgate policy replay`: what-if replay of recorded traffic through the admin API.

The candidate directory is read here and sent whole; the gateway compiles it against its live catalog,
decides every recorded decision of the window again and answers with the flips. Exit status: 1 when a
decision would flip from deny or step-up to allow (so it can gate a policy pull request), 2 when the
candidate is invalid, the window holds no recorded decisions or some of them could not be replayed
(past retention, not recorded), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli.admin_client import client, when
from gateway.cli.errors import AdminClientError
from gateway.cli.exit_codes import EXIT_INVALID
from gateway.policy.sources import POLICY_SUBDIR, SCHEMA_FILE

EXIT_LOOSENS = 1
REFUSED_STATUSES = (400, 404, 422)


class ReplayInputError(ValueError):
    """Reported by the CLI as `narrowgate: <message>` with exit status 2."""


def run_replay(args: argparse.Namespace) -> int:
    files = candidate_files(args.candidate)
    body: dict[str, Any] = {"files": files, "since_s": args.since, "examples": args.examples}
    if args.agent:
        body["agent"] = args.agent
    try:
        report = client(args).request("POST", "/admin/v1/policies/replay", body, timeout_s=args.timeout)
    except AdminClientError as exc:
        if exc.status not in REFUSED_STATUSES:
            raise
        for problem in exc.problems:
            print(f"{args.candidate}/{problem}" if not problem.startswith("/") else problem, file=sys.stderr)
        raise ReplayInputError(str(exc).removeprefix(f"HTTP {exc.status}: ")) from None
    if report["decisions"] == 0:
        raise ReplayInputError(f"no recorded decisions in the window{_for_agent(args)}: nothing to replay")
    print(json.dumps(report, indent=2) if args.format == "json" else format_report(report))
    return exit_status(report)


def exit_status(report: dict[str, Any]) -> int:
    missing = report["not_replayable"]
    if missing["total"]:  # said whatever the status: a loosening candidate may loosen more than was replayed
        print(f"narrowgate: {missing['total']} of {report['decisions']} decision(s) in the window could not be "
              f"replayed ({missing['past_retention']} past retention, {missing['not_recorded']} not recorded, "
              f"{missing['unreadable']} unreadable); replayable since {when(report.get('replayable_since'))}",
              file=sys.stderr)
    if report["loosening"]:
        return EXIT_LOOSENS
    return EXIT_INVALID if missing["total"] else 0


def candidate_files(directory: Path) -> dict[str, str]:
    """`schema.cedarschema` and `policies/**/*.cedar` (hidden ones skipped, as the gateway reads a directory)."""
    if not directory.is_dir():
        raise ReplayInputError(f"no candidate policy directory {directory}")
    paths = [directory / SCHEMA_FILE] if (directory / SCHEMA_FILE).is_file() else []
    root = directory / POLICY_SUBDIR
    paths += [p for p in sorted(root.rglob("*.cedar")) if not any(part.startswith(".")
                                                                    for part in p.relative_to(root).parts)]
    files = {}
    for path in paths:
        try:
            files[path.relative_to(directory).as_posix()] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ReplayInputError(f"{path}: cannot read: {exc}") from None
    return files


def format_report(report: dict[str, Any]) -> str:
    missing = report["not_replayable"]
    lines = [
        f"window: {when(report['window']['since'])} .. {when(report['window']['until'])}"
        f"{' agent ' + report['window']['agent'] if report['window']['agent'] else ''}",
        f"live policy {report['live_policy_version']}, candidate {report['candidate_policy_version']}",
        f"{report['decisions']} decision(s): {report['replayed']} replayed, {report['unchanged']} unchanged, "
        f"{report['flipped']} flipped ({report['loosening']} newly allowed), {report['before_policy']} refused "
        f"before policy, {missing['total']} not replayable",
    ]
    if not report["groups"]:
        lines.append("no flips")
        return "\n".join(lines)
    lines.append("")
    header = ("FLIP", "COUNT", "TOOL", "AGENT", "LIVE POLICIES", "CANDIDATE POLICIES")
    rows = [(g["flip"] + (" !" if g["loosening"] else ""), str(g["count"]), g["tool"], g["agent"],
             ",".join(g["live_policy_ids"]) or "-", ",".join(g["candidate_policy_ids"]) or "-")
            for g in report["groups"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row, group in zip([header, *rows], [None, *report["groups"]], strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for example in (group or {}).get("examples", []):
            lines.append(f"    e.g. {example['decision_id']} at {when(example['at'])}: "
                         f"{json.dumps(example['arguments'], ensure_ascii=False)}")
    return "\n".join(lines)


def _for_agent(args: argparse.Namespace) -> str:
    return f" for agent {args.agent}" if args.agent else ""
