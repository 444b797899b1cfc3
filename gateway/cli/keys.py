"""`narrowgate keys`: the gateway's token signing keys (admin API)."""

from __future__ import annotations

import argparse

from gateway.cli.admin_client import client


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
