"""`narrowgate catalog review --resources`, and `review|approve|reject --resource ID`: the quarantine
of upstream resources and resource templates on a running gateway (docs/catalog.md#resources).

Resources are named by their review id (`res_...`, shown in the queue): their URIs hold slashes.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.catalog.definitions import reveal_hidden
from gateway.cli.admin_client import client, when
from gateway.cli.errors import AdminClientError
from gateway.cli.review_text import (
    CatalogCommandError,
    diff_lines,
    expected_hash,
    flag_lines,
    json_text,
    print_queue_or_review,
    short_hash,
    table,
)
from gateway.discovery.model import QUARANTINED

RESOURCES_PATH = "/admin/v1/catalog/resources"


def run_resource_review(args: argparse.Namespace) -> int:
    resource = args.resource
    one = None if resource is None else (lambda: f"{RESOURCES_PATH}/{_review_id(resource)}")
    return print_queue_or_review(args, RESOURCES_PATH, "resources", "resource", one, resource_queue_lines,
                                 resource_record_lines)


def resource_queue_lines(reviews: list[dict[str, Any]], status: str) -> list[str]:
    if not reviews:
        return [f"no {status} resources or templates" if status != "all" else "no resources under review"]
    header = ("ID", "KIND", "SERVER", "URI OR TEMPLATE", "STATUS", "CHANGE", "FLAGS", "SHA256", "MAY REVIEW")
    rows = [(r["id"], r["kind"], r["server_id"], r["key"], r["status"], r["change"], ",".join(r["flags"]) or "-",
             short_hash(r["definition_sha256"]), "yes" if r["you_may_review"] else "no") for r in reviews]
    lines = table(header, rows)
    if any(r["status"] == QUARANTINED for r in reviews):
        lines.append("approve or reject with the full hash: narrowgate catalog review --resource ID shows it")
    return lines


def resource_record_lines(record: dict[str, Any]) -> list[str]:
    """One resource's or template's review record, in the order a reviewer reads it."""
    facts = [("id", record["id"]), (record["kind"], f"{record['key']} (server {record['server_id']})"),
             ("status", record["status"]), ("change", record["change"]), ("owner", record["owner"] or "-"),
             ("definition", record["current_hash"]), ("approved", record.get("approved_hash") or "none yet"),
             ("first seen", when(record.get("first_seen"))), ("changed", when(record.get("changed_at")))]
    if record.get("reviewed_by"):
        comment = f": {record['comment']}" if record.get("comment") else ""
        facts.append(("reviewed by", f"{record['reviewed_by']} at {when(record.get('reviewed_at'))}{comment}"))
    facts.append(("you may review", "yes" if record.get("you_may_review") else f"no: {record.get('why_not')}"))
    lines = [f"{label + ':':<16} {reveal_hidden(str(value))}" for label, value in facts]
    lines += ["", *flag_lines(record["flags"]), "", *diff_lines(record)]
    lines += ["", "current definition (hidden characters shown as [U+XXXX]):", json_text(record["current_definition"])]
    if record["status"] == QUARANTINED and record.get("you_may_review"):
        lines += ["", "decide with:",
                  f"  narrowgate catalog approve --resource {record['id']} --sha256 {record['current_hash']}",
                  f"  narrowgate catalog reject --resource {record['id']} --sha256 {record['current_hash']} "
                  "--comment WHY"]
    return lines


def run_resource_decide(args: argparse.Namespace) -> int:
    review_id = _review_id(args.resource)
    expected = expected_hash(args.sha256, f"--resource {review_id}")
    try:
        decided = client(args).request("POST", f"{RESOURCES_PATH}/{review_id}/{args.action}",
                                       {"expected_sha256": expected, "comment": args.comment})
    except AdminClientError as exc:
        if str(exc).startswith("HTTP 409") and "changed again" in str(exc):
            raise AdminClientError(f"{exc}\nsee the new definition: narrowgate catalog review --resource "
                                   f"{review_id}") from None
        raise
    print(f"{decided['kind']} {decided['key']} of {decided['server_id']} is now {decided['status']}")
    return 0


def _review_id(value: str) -> str:
    if not value.startswith("res_") or not value[4:].isalnum():
        raise CatalogCommandError(f"name a resource by its review id (res_..., see `narrowgate catalog review "
                                  f"--resources`), got {value!r}")
    return value
