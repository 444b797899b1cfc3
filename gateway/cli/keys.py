"""`narrowgate keys`: the gateway's token signing keys (admin API)."""

from __future__ import annotations

import argparse

from gateway.admin.keys_api import DEFAULT_OVERLAP_S, MIN_OVERLAP_S
from gateway.cli.admin_client import add_connection_options, client
from gateway.cli.parsers import Subcommands


def add_keys_parser(commands: Subcommands) -> None:
    keys = commands.add_parser("keys", help="the gateway's token signing keys (admin API)")
    add_connection_options(keys)
    sub = keys.add_subparsers(title="keys commands", metavar="COMMAND", required=True)
    listing = sub.add_parser("list", help="show the current key and the previous keys still served")
    listing.set_defaults(run=run_keys_list)
    rotate = sub.add_parser("rotate", help="make a new signing key current; the old one stays for --overlap")
    rotate.add_argument("--overlap", type=float, metavar="SECONDS",
                        help=f"how long the old key stays in the JWKS (default {DEFAULT_OVERLAP_S:.0f}, "
                             f"at least {MIN_OVERLAP_S:.0f})")
    rotate.set_defaults(run=run_keys_rotate)


def run_keys_list(args: argparse.Namespace) -> int:
    answer = client(args).request("GET", "/admin/v1/keys")
    print(f"{'KID':<45} {'ALG':<6} STATE")
    for key in answer["keys"]:
        state = "current" if key["kid"] == answer["current_kid"] else "previous"
        print(f"{key['kid']:<45} {key.get('alg', '-'):<6} {state}")
    return 0


def run_keys_rotate(args: argparse.Namespace) -> int:
    body = {} if args.overlap is None else {"overlap_s": args.overlap}
    answer = client(args).request("POST", "/admin/v1/keys/rotate", body)
    print(f"signing key rotated: {answer['current_kid']} is current")
    for kid in answer["previous"]:
        print(f"previous key {kid} stays in the JWKS for up to {answer['overlap_s']:.0f} s")
    return 0
