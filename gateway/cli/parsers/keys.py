"""`narrowgate keys`: the command line; the commands are in gateway.cli.keys."""

from __future__ import annotations

from gateway.admin.key_overlap import DEFAULT_OVERLAP_S, MIN_OVERLAP_S
from gateway.cli.parsers import Run, Subcommands, add_connection_options


def add_keys_parser(commands: Subcommands) -> None:
    keys = commands.add_parser("keys", help="the gateway's token signing keys (admin API)")
    add_connection_options(keys)
    sub = keys.add_subparsers(title="keys commands", metavar="COMMAND", required=True)
    listing = sub.add_parser("list", help="show the current key and the previous keys still served")
    listing.set_defaults(run=Run("gateway.cli.keys:run_keys_list"))
    rotate = sub.add_parser("rotate", help="make a new signing key current; the old one stays for --overlap")
    rotate.add_argument("--overlap", type=float, metavar="SECONDS",
                        help=f"how long the old key stays in the JWKS (default {DEFAULT_OVERLAP_S:.0f}, "
                             f"at least {MIN_OVERLAP_S:.0f})")
    rotate.set_defaults(run=Run("gateway.cli.keys:run_keys_rotate"))
