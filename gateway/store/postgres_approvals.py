"""The approvals table group on PostgreSQL: coroutines on one pooled connection."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]

from gateway.approvals.model import Approval
from gateway.store.rows import APPROVAL_COLUMNS, approval_from_doc, approval_row, present, where


async def save_approval(conn: asyncpg.Connection, approval: Approval) -> None:
    await conn.execute(
        f"""
        INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc
        """,
        *approval_row(approval),
    )


async def save_approval_if(conn: asyncpg.Connection, approval: Approval, expected_state: str) -> bool:
    """Replace the row only while it is in `expected_state`; whether it was."""
    row = approval_row(approval)
    status = await conn.execute("UPDATE approvals SET state = $1, doc = $2 WHERE id = $3 AND state = $4",
                                row[1], row[-1], approval.id, expected_state)
    return bool(status == "UPDATE 1")


async def get_approval(conn: asyncpg.Connection, approval_id: str) -> Approval | None:
    doc = await conn.fetchval("SELECT doc FROM approvals WHERE id = $1", approval_id)
    return None if doc is None else approval_from_doc(doc)


async def list_approvals(conn: asyncpg.Connection, states: Sequence[str] | None, agent_id: str | None,
                         limit: int) -> list[Approval]:
    """Newest first."""
    clause, args = where(present(("state = ANY({})", list(states) if states else None), ("agent_id = {}", agent_id)),
                         lambda n: f"${n}")
    rows = await conn.fetch(
        f"SELECT doc FROM approvals{clause} ORDER BY created_at DESC, id LIMIT ${len(args) + 1}", *args, limit)
    return [approval_from_doc(row[0]) for row in rows]
