"""`narrowgate`: the parser and the exit codes every command shares; each group's command line is in
gateway.cli.parsers, its commands in one module beside this one, imported only when one of them runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli.errors import AdminClientError
from gateway.cli.exit_codes import EXIT_INTERRUPTED, EXIT_INVALID
from gateway.cli.parsers.agents import add_agents_parser
from gateway.cli.parsers.approvals import add_approvals_parser
from gateway.cli.parsers.audit import add_audit_parser
from gateway.cli.parsers.blast_radius import add_blast_parser
from gateway.cli.parsers.catalog import add_catalog_parser
from gateway.cli.parsers.demo import add_demo_parser
from gateway.cli.parsers.evidence import add_evidence_parser
from gateway.cli.parsers.keys import add_keys_parser
from gateway.cli.parsers.policy import add_policy_parser
from gateway.cli.parsers.rightsize import add_rightsize_parser
from gateway.cli.parsers.secrets import add_secrets_parser
from gateway.cli.parsers.serve import add_serve_parser
from gateway.cli.parsers.tasks import add_tasks_parser
from gateway.demo.state import DemoStateError
from gateway.logs import configure as configure_logging
from gateway.settings.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_INVALID
    try:
        return int(args.run(args))
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signal (e.g. during start-up)
        print("narrowgate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AdminClientError as exc:
        print(f"narrowgate: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, DemoStateError, ValueError) as exc:
        print(f"narrowgate: {exc}", file=sys.stderr)
        return EXIT_INVALID


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="narrowgate",
        description="Narrowgate: a least-privilege gateway for AI agents' MCP tool calls.",
    )
    parser.add_argument("--version", action="version", version=f"narrowgate {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("NARROWGATE_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"], help="log verbosity (default: info)")
    parser.add_argument("--log-format", default=os.environ.get("NARROWGATE_LOG_FORMAT", "text"),
                        choices=["text", "json"], help="text lines or one JSON object per line (default: text)")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_serve_parser(commands)
    add_demo_parser(commands)
    add_catalog_parser(commands)
    add_agents_parser(commands)
    add_tasks_parser(commands)
    add_approvals_parser(commands)
    add_keys_parser(commands)
    add_secrets_parser(commands)
    add_policy_parser(commands)
    add_audit_parser(commands)
    add_rightsize_parser(commands)
    add_blast_parser(commands)
    add_evidence_parser(commands)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
