"""The audit_log table group on SQLite: sealing into the hash chain happens here, inside the
write transaction, so seq and prev_hash follow commit order even with several writers on one file."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.audit.chain import GENESIS_HASH
from gateway.store.base import AuditedDecision, AuditedDecisionQuery, AuditQuery
from gateway.store.rows import (
    AUDIT_COLUMNS,
    after_key,
    audit_filters,
    audit_record,
    audited_decision,
    audited_decision_filters,
    sealed_rows,
    where,
)
from gateway.store.sqlite_insert import insert_rows

if TYPE_CHECKING:
    from gateway.audit.prepared import PreparedRecord


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    row = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def append(conn: sqlite3.Connection, records: Sequence[Mapping[str, Any] | PreparedRecord]) -> tuple[int, str]:
    """Seal `records` after the current head and insert them; the caller holds the write transaction.

    Reading the head under the write lock (BEGIN IMMEDIATE) rather than trusting a cached one
    keeps the chain whole after a failed batch or when another process appended meanwhile.
    """
    rows, seq, prev_hash = sealed_rows(records, head(conn))
    insert_rows(conn, "audit_log", AUDIT_COLUMNS, rows)
    return seq, prev_hash


def records(conn: sqlite3.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    sql, params = select_sql(query)
    return [audit_record(row) for row in conn.execute(sql, params)]


def select_sql(query: AuditQuery) -> tuple[str, tuple[object, ...]]:
    clause, params = where(audit_filters(query), lambda _: "?")
    order = "DESC" if query.newest_first else "ASC"
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log{_access(query)}{clause} ORDER BY seq {order} LIMIT ?"
    return sql, (*params, query.limit)


def _access(query: AuditQuery) -> str:
    """A window read forwards page by page walks by seq (the rowid): left to choose, SQLite takes the `at`
    index and sorts the whole window for every page (quadratic in the window); a rowid walk from `after_seq`
    stops at the page's last row. Other reads (newest first, an agent's or a tool's records, no lower time
    bound) keep the planner's choice: there the `at` index or an (agent|tool, seq) index serves them."""
    window = query.since is not None and not query.newest_first
    return " NOT INDEXED" if window and query.agent_id is None and query.tool is None else ""


def audited_decisions(conn: sqlite3.Connection, query: AuditedDecisionQuery) -> list[AuditedDecision]:
    sql, params = audited_decisions_sql(query)
    return [audited_decision(row) for row in conn.execute(sql, params)]


def audited_decisions_sql(query: AuditedDecisionQuery) -> tuple[str, tuple[object, ...]]:
    """Walked in (at, seq) order through the time index (it holds the rowid): no sort, however wide the log."""
    clause, params = where(audited_decision_filters(query), lambda _: "?")
    keyset, after = after_key(query.after, lambda _: "?", 0, " AND ")
    sql = (f"SELECT seq, decision_id, at FROM audit_log INDEXED BY audit_log_at{clause}{keyset} "
           "ORDER BY at, seq LIMIT ?")
    return sql, (*params, *after, query.limit)
