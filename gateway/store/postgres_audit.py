"""The audit_log table group on PostgreSQL. Every replica appends to one chain: the append takes
LOCK TABLE audit_log IN EXCLUSIVE MODE (writers queue, readers do not) before it reads the head,
so seq and prev_hash follow commit order across processes, exactly as BEGIN IMMEDIATE does on SQLite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]

from gateway.audit.chain import GENESIS_HASH, RECORD_FIELDS
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

if TYPE_CHECKING:
    from gateway.audit.prepared import PreparedRecord


async def head(conn: asyncpg.Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


async def append(conn: asyncpg.Connection, records: Sequence[Mapping[str, Any] | PreparedRecord]) -> tuple[int, str]:
    """Seal `records` after the head as it is under the lock and insert them; the caller holds the transaction."""
    await conn.execute("LOCK TABLE audit_log IN EXCLUSIVE MODE")
    rows, seq, prev_hash = sealed_rows(records, await head(conn))
    # COPY: one round trip for the whole batch (executemany costs one per row: ~4x slower at 500)
    await conn.copy_records_to_table("audit_log", records=rows, columns=RECORD_FIELDS)
    return seq, prev_hash


async def records(conn: asyncpg.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    clause, params = where(audit_filters(query), lambda n: f"${n}")
    order = "DESC" if query.newest_first else "ASC"
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log{clause} ORDER BY seq {order} LIMIT ${len(params) + 1}"
    return [audit_record(row) for row in await conn.fetch(sql, *params, query.limit)]


async def audited_decisions(conn: asyncpg.Connection, query: AuditedDecisionQuery) -> list[AuditedDecision]:
    sql, params = audited_decisions_sql(query)
    return [audited_decision(row) for row in await conn.fetch(sql, *params)]


def audited_decisions_sql(query: AuditedDecisionQuery) -> tuple[str, list[object]]:
    """Keyset pages in (at, seq) order through the (at, seq) index: no sort of the range per page."""
    clause, params = where(audited_decision_filters(query), lambda n: f"${n}")
    keyset, after = after_key(query.after, lambda n: f"${n}", len(params) + 1, " AND ")
    sql = (f"SELECT seq, decision_id, at FROM audit_log{clause}{keyset} ORDER BY at, seq "
           f"LIMIT ${len(params) + len(after) + 1}")
    return sql, [*params, *after, query.limit]
