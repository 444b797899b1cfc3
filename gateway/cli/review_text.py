"""What `narrowgate catalog review` prints for a tool and for a resource, and the checks both decisions share."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from typing import Any

from gateway.catalog.definitions import reveal_hidden
from gateway.catalog.loader import PIN_PATTERN
from gateway.cli.admin_client import client
from gateway.discovery.model import QUARANTINED

SHORT_HASH = len("sha256:") + 12
MAX_VALUE = 200  # characters of one diff value shown; the full definition follows anyway


class CatalogCommandError(ValueError):
    """Reported by the CLI as `narrowgate: <message>` with exit status 2."""


def table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> list[str]:
    # Upstreams name discovered tools: hidden or control characters must not reach the terminal.
    cells = [header, *[tuple(reveal_hidden(str(c)) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def short_hash(value: str | None) -> str:
    return "-" if not value else value[:SHORT_HASH]


def flag_lines(flags: list[dict[str, str]]) -> list[str]:
    if not flags:
        return ["flags: none"]
    return ["flags:", *[reveal_hidden(f"  {f['severity']:<7} {f['code']}: {f['message']}") for f in flags]]


def diff_lines(record: dict[str, Any]) -> list[str]:
    if record.get("approved_definition") is None and record["change"] == "changed":
        # A manifest pin names only a hash: the definition it stands for was never seen by this gateway.
        return ["changes: differs from the manifest's definition_sha256 pin (that definition is unknown here, "
                "so there is no diff)"]
    if record.get("approved_definition") is None:
        return ["changes: a new definition, nothing approved before"]
    if not record["diff"]:
        return ["changes: none against the approved definition"]
    lines = ["changes against the approved definition:"]
    for entry in record["diff"]:
        if entry["field"] == "description" and record.get("description_diff"):
            lines.append(f"  description: {entry['change']} (diff below)")
            continue
        for path, change in _paths(entry):
            lines.append(f"  {path}: {_value(change['old'], change['change'] == 'added')} -> "
                         f"{_value(change['new'], change['change'] == 'removed')}")
    return lines


def _paths(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    # Schemas come with JSON-pointer paths; other fields change as one value.
    if entry.get("changes"):
        return [(f"{entry['field']}{c['path']}", c) for c in entry["changes"]]
    return [(entry["field"], entry)]


def _value(value: Any, absent: bool) -> str:
    if absent:
        return "(absent)"
    text = reveal_hidden(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "..."


def json_text(value: Any) -> str:
    return reveal_hidden(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


def expected_hash(value: str | None, tool: str) -> str:
    if not value:
        raise CatalogCommandError(f"--sha256 is required: the hash of the definition you reviewed "
                                  f"(`narrowgate catalog review {tool}` shows it)")
    if not PIN_PATTERN.fullmatch(value):
        raise CatalogCommandError(f"--sha256 must be sha256:<64 hex digits> as `narrowgate catalog review {tool}` "
                                  f"shows it, got {value!r}")
    return value


def print_queue_or_review(args: argparse.Namespace, queue_path: str, key: str, noun: str,
                          review_path: Callable[[], str] | None,
                          queue_lines: Callable[[list[dict[str, Any]], str], list[str]],
                          record_lines: Callable[[dict[str, Any]], list[str]]) -> int:
    """`catalog review`: the queue at `queue_path` (by --status), or one review when one is named."""
    if review_path is None:
        status = args.status or QUARANTINED
        query = "" if status == "all" else f"?status={status}"
        print("\n".join(queue_lines(client(args).request("GET", f"{queue_path}{query}")[key], status)))
        return 0
    if args.status is not None:
        raise CatalogCommandError(f"--status lists the queue; leave it out to show one {noun}")
    print("\n".join(record_lines(client(args).request("GET", review_path()))))
    return 0
