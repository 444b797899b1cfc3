"""`narrowgate evidence`: the command line; the command is in gateway.cli.evidence."""

from __future__ import annotations

from pathlib import Path

from gateway.cli.parsers import Run, Subcommands, add_connection_options
from gateway.privilege.evidence.frameworks import FRAMEWORKS


def add_evidence_parser(commands: Subcommands) -> None:
    evidence = commands.add_parser(
        "evidence", help="compliance evidence per control of a framework, from the running deployment (admin API)")
    add_connection_options(evidence)
    # Checked when the command runs, so an unknown name is one line and exit status 2 (not argparse's usage).
    evidence.add_argument("--framework", required=True, metavar="NAME", help=f"one of {', '.join(FRAMEWORKS)}")
    evidence.add_argument("--since", default="30d", help="the period for activity figures (default 30d; e.g. 12h)")
    evidence.add_argument("--format", default="md", metavar="FORMAT", help="md (default), html or json")
    evidence.add_argument("--output", type=Path, help="write to this file instead of stdout")
    evidence.set_defaults(run=Run("gateway.cli.evidence:run_evidence"))
