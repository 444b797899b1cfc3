"""`narrowgate audit verify|export|search`: read the audit log straight from the state store.

These commands only read (no migration, no writes), so they are safe while a gateway runs on the
same SQLite file: WAL lets readers see every committed record without blocking the writer.
Long logs are read in pages, so memory stays flat however long the log is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from gateway.audit.verify import audit_pages, verify_audit
from gateway.config import load_settings

if TYPE_CHECKING:  # for annotations only: the commands import the store where they open it
    from gateway.store.base import AuditStore, Store

T = TypeVar("T")

EXIT_PROBLEMS = 1
AUDIT_SCHEMA_VERSION = 5  # the migration that created audit_log
SEARCH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "SEQ"), ("at", "TIME (UTC)"), ("kind", "KIND"), ("action", "ACTION"), ("actor", "ACTOR"),
    ("agent_id", "AGENT"), ("task_id", "TASK"), ("tool", "TOOL"), ("decision", "DECISION"),
    ("policy_ids", "POLICIES"),
)
MAX_CELL = 40


class AuditCommandError(ValueError):
    """Reported by the CLI as `narrowgate: <message>` with exit status 2."""


# commands


def run_verify(args: argparse.Namespace) -> int:
    verifier = _with_store(args, verify_audit)
    for problem in verifier.problems:
        print(problem)
    if verifier.problems:
        print(f"audit log verification FAILED: {len(verifier.problems)} problem(s) in {verifier.count} record(s)",
              file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"audit log ok: {verifier.count} record(s), head seq {verifier.last_seq} hash {verifier.last_hash}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    if args.output is None:
        try:
            count = _with_store(args, lambda store: _export(store, args, sys.stdout))
        except BrokenPipeError:
            # `export | head`: the reader left; stop quietly (the Python docs' recipe for SIGPIPE).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_PROBLEMS
        print(f"{count} record(s) exported", file=sys.stderr)
        return 0
    # Owner-only, like the state database: the records name agents, tools and arguments' shape.
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as out:
        count = _with_store(args, lambda store: _export(store, args, out))
    print(f"{count} record(s) exported to {args.output}", file=sys.stderr)
    return 0


def run_search(args: argparse.Namespace) -> int:
    records = _with_store(args, lambda store: _search(store, args))
    if not records:
        print("no matching audit records")
        return 0
    print(format_table(records))
    return 0


# store access


def _with_store(args: argparse.Namespace, action: Callable[[Store], Awaitable[T]]) -> T:
    settings = load_settings(args.config, resolve_secrets=False)  # reads the store only: no tokens needed
    return asyncio.run(_run_with_store(settings.state, action))


async def _run_with_store(state: str, action: Callable[[Store], Awaitable[T]]) -> T:
    from gateway.store import StoreError, open_store

    _refuse_missing_file(state)
    try:
        store = open_store(state)
    except StoreError as exc:
        raise AuditCommandError(f"state store: {exc}") from None
    try:
        version = await store.schema_version()
        if version < AUDIT_SCHEMA_VERSION:
            raise AuditCommandError(f"the state store has no audit log yet (schema version {version}); "
                                    "start the gateway once to create it")
        return await action(store)
    except StoreError as exc:
        raise AuditCommandError(f"state store: {exc}") from None
    finally:
        await store.close()


def _refuse_missing_file(state: str) -> None:
    # open_store creates a missing SQLite file; for a read-only command that would hide a wrong path.
    scheme, _, rest = state.partition("://")
    if scheme.lower() == "sqlite" and rest.startswith("/") and rest != "/:memory:" and not Path(rest).exists():
        raise AuditCommandError(f"no state database at {rest}")


async def _export(store: AuditStore, args: argparse.Namespace, out: TextIO) -> int:
    count = 0
    async for page in audit_pages(store, since=args.since, until=args.until):
        out.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in page)
        count += len(page)
    out.flush()
    return count


async def _search(store: AuditStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    from gateway.store.base import AuditQuery

    query = AuditQuery(agent_id=args.agent, tool=args.tool, decision=args.decision, kind=args.kind,
                       since=args.since, until=args.until, limit=args.limit, newest_first=True)
    return list(reversed(await store.audit_records(query)))


# output


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A plain fixed-width table, oldest record first."""
    header = [title for _, title in SEARCH_COLUMNS]
    rows = [[_cell(name, record.get(name)) for name, _ in SEARCH_COLUMNS] for record in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def _cell(name: str, value: Any) -> str:
    if value is None or value == []:
        return "-"
    if name == "at":
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    # One record per line, whatever a field holds.
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


__all__ = ["format_table", "run_export", "run_search", "run_verify"]
