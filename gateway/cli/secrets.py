"""`narrowgate secrets`: the per-server secrets the gateway owns (admin API)."""

from __future__ import annotations

import argparse
import time
from urllib.parse import quote

from gateway.cli.admin_client import client


def run_secrets_rotate(args: argparse.Namespace) -> int:
    answer = client(args).request("POST", f"/admin/v1/secrets/{quote(args.server, safe='')}/rotate", {})
    retire_in = max(0.0, answer["retire_at"] - time.time())
    print(f"upstream {answer['server']}: {answer['path']} rotated from version {answer['from_version']} to "
          f"{answer['to_version']}; version {answer['from_version']} is destroyed in about {retire_in:.0f} s")
    return 0
