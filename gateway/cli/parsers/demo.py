"""`narrowgate demo` and `demo token`: the command line; the commands are in gateway.cli.demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.parsers import Run, Subcommands


def add_demo_parser(commands: Subcommands) -> None:
    demo = commands.add_parser(
        "demo", help="run the gateway with two demo upstreams (what `make run` does)",
        description="Run the gateway in front of the demo upstreams. Tokens, keys and the store are kept in the "
                    "state directory across restarts.")
    demo.add_argument("--port", type=int, help="gateway port (default: the port of $NARROWGATE_LISTEN, else 8080)")
    demo.add_argument("--state-dir", type=Path, help="the demo's state directory (default: .narrowgate/demo/)")
    demo.set_defaults(run=Run("gateway.cli.demo:run_demo"))
    sub = demo.add_subparsers(title="demo commands", metavar="COMMAND")
    token = sub.add_parser(
        "token", help="print a fresh workload token (JWT-SVID) from the demo's development trust domain",
        description="Print a workload identity token for an agent of the running demo, as SPIRE would issue it. "
                    "Present it on /mcp, or exchange it at /oauth/token for a task token (docs/tasks.md).")
    token.add_argument("--agent", default="demo-agent", help="the agent whose workload it names (default: demo-agent)")
    token.add_argument("--ttl", type=int, default=900, help="seconds the token is good for (default 900)")
    token.add_argument("--gateway", help="the demo's base URL, for the audience (default: $NARROWGATE_URL, else "
                                         "where the demo last listened)")
    token.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                       help="the demo's state directory (default: the one $NARROWGATE_STATE is in, else "
                            ".narrowgate/demo/)")
    token.set_defaults(run=Run("gateway.cli.demo:run_demo_token"))
