"""`narrowgate rightsize`: the command line; the command is in gateway.cli.rightsize."""

from __future__ import annotations

from pathlib import Path

from gateway.cli.parsers import Run, Subcommands, add_connection_options


def add_rightsize_parser(commands: Subcommands) -> None:
    rightsize = commands.add_parser(
        "rightsize", help="granted versus used tools per agent, and a narrowed grant to review (admin API)")
    add_connection_options(rightsize)
    rightsize.add_argument("--agent", help="one agent (default: every agent that is not retired)")
    rightsize.add_argument("--since", default="30d", help="the window: a duration like 7d, 12h (default 30d)")
    rightsize.add_argument("--format", choices=["table", "json"], default="table")
    rightsize.add_argument("--write", action="store_true",
                           help="write the proposals: patch the agents file and add the Cedar files to the "
                                "policy directory named by --config (admin API calls are printed, not made)")
    rightsize.add_argument("--config", type=Path, help="gateway config naming the agents file and the policies "
                                                       "(needed by --write)")
    rightsize.set_defaults(run=Run("gateway.cli.rightsize:run_rightsize"))
