"""`narrowgate evidence`: the admin API's evidence report (JSON), rendered here by the same code the API uses."""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlencode

from gateway.cli.admin_client import client
from gateway.privilege.evidence.frameworks import framework
from gateway.privilege.evidence.render import FORMATS, render
from gateway.settings.durations import parse_duration


def run_evidence(args: argparse.Namespace) -> int:
    framework(args.framework)  # ValueError -> one line, exit status 2 (gateway.cli.main)
    if args.format not in FORMATS:
        raise ValueError(f"unknown format {args.format!r}: choose one of {', '.join(FORMATS)}")
    try:
        parse_duration(args.since)
    except ValueError as exc:
        raise ValueError(f"--since: {exc} (e.g. 30d, 12h)") from None
    query = urlencode({"framework": args.framework, "since": args.since, "format": "json"})
    text = render(client(args).request("GET", f"/admin/v1/evidence?{query}"), args.format)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    # Owner-only: the report shows how the fleet could be attacked.
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: narrow it too
    with open(fd, "w", encoding="utf-8") as out:
        out.write(text)
    print(f"evidence for {args.framework} written to {args.output}", file=sys.stderr)
    return 0
