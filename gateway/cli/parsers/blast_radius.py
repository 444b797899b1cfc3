"""`narrowgate blast-radius`: the command line; the command is in gateway.cli.blast_radius."""

from __future__ import annotations

from gateway.cli.parsers import Run, Subcommands, add_connection_options


def add_blast_parser(commands: Subcommands) -> None:
    blast = commands.add_parser(
        "blast-radius", help="what an agent can do with no person involved (admin API)",
        description="What AGENT, or whoever holds its current task token, can do right now with no person "
                    "involved, decided by the live policies over the whole catalog. Without AGENT: the fleet, "
                    "widest first.")
    add_connection_options(blast)
    blast.add_argument("agent_id", metavar="AGENT", nargs="?", help="the agent (omit for the fleet table)")
    blast.add_argument("--task", metavar="ID", help="under this task of the agent (what its task token reaches)")
    blast.add_argument("--format", choices=["table", "json", "svg"], default="table",
                       help="table (default), json, or svg (the picture: agent -> servers -> tools)")
    blast.set_defaults(run=Run("gateway.cli.blast_radius:run_blast_radius"))
