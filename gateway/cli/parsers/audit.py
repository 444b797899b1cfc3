"""`narrowgate audit`: the command line and its argument types; the commands are in gateway.cli.audit."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit.model import KINDS
from gateway.cli.parsers import Run, Subcommands


def add_audit_parser(commands: Subcommands) -> None:
    audit = commands.add_parser("audit", help="verify, export and search the tamper-evident audit log")
    sub = audit.add_subparsers(title="audit commands", metavar="COMMAND", required=True)
    verify = sub.add_parser("verify", help="check the hash chain; report every modified, removed, "
                                           "inserted or reordered record")
    export = sub.add_parser("export", help="write records as JSON lines, in seq order")
    search = sub.add_parser("search", help="show matching records as a table (the latest --limit)")
    for command in (verify, export, search):
        command.add_argument("--config", type=Path, help="gateway config (its `state` names the store)")
    for command in (export, search):
        command.add_argument("--since", type=parse_time, help="from this time (ISO 8601; UTC if no offset)")
        command.add_argument("--until", type=parse_time, help="before this time (ISO 8601; UTC if no offset)")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    search.add_argument("--agent", help="agent id")
    search.add_argument("--tool", help="exposed tool name, prompt name or resource URI")
    search.add_argument("--decision", choices=["allow", "deny", "step_up"], help="decision")
    search.add_argument("--kind", choices=sorted(KINDS), help="record kind")
    search.add_argument("--limit", type=_positive_int, default=50, help="at most this many records (default 50)")
    verify.set_defaults(run=Run("gateway.cli.audit:run_verify"))
    export.set_defaults(run=Run("gateway.cli.audit:run_export"))
    search.set_defaults(run=Run("gateway.cli.audit:run_search"))


def parse_time(text: str) -> float:
    """ISO 8601 (`2026-03-01`, `2026-03-01T12:00:00Z`, with an offset) or epoch seconds -> epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value
