"""`narrowgate approvals`: the command line; the commands are in gateway.cli.approvals."""

from __future__ import annotations

from gateway.approvals.model import ApprovalState
from gateway.cli.parsers import Run, Subcommands, add_connection_options

APPROVAL_STATES = tuple(state.value for state in ApprovalState)


def add_approvals_parser(commands: Subcommands) -> None:
    approvals = commands.add_parser("approvals", help="list and decide step-up approval requests (admin API)",
                                    description="List, show, approve and deny approval requests. An approver-role "
                                                "token works as well as an admin token.")
    add_connection_options(approvals)
    sub = approvals.add_subparsers(title="approvals commands", metavar="COMMAND", required=True)

    listing = sub.add_parser("list", help="list approval requests (default: pending ones)")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--state", action="append", choices=APPROVAL_STATES, dest="states",
                       help="only requests in this state (repeatable; default: pending)")
    which.add_argument("--all", action="store_true", help="requests in every state")
    listing.add_argument("--agent", help="only this agent's requests")
    listing.add_argument("--limit", type=int, default=200, help="most requests to list, newest first (default 200)")
    listing.set_defaults(run=Run("gateway.cli.approvals:run_approvals_list"))

    show = sub.add_parser("show", help="show one approval request: what was asked, why, and its outcome")
    show.add_argument("approval_id", metavar="ID")
    show.set_defaults(run=Run("gateway.cli.approvals:run_approval_show"))

    for action, text in (("approve", "approve a pending request: the identical call may then run once"),
                         ("deny", "deny a pending request")):
        command = sub.add_parser(action, help=text)
        command.add_argument("approval_id", metavar="ID")
        command.add_argument("--comment", default="", help="a note recorded with your decision (the agent sees "
                                                           "a denial's comment)")
        command.set_defaults(run=Run("gateway.cli.approvals:run_approval_decide"), action=action)
