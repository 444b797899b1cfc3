"""The approvals table group on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.approvals.model import Approval
from gateway.store.rows import APPROVAL_COLUMNS, approval_from_doc, approval_row


def save_approval(conn: sqlite3.Connection, approval: Approval) -> None:
    conn.execute(
        f"""
        INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc
        """,
        approval_row(approval),
    )


def save_approval_if(conn: sqlite3.Connection, approval: Approval, expected_state: str) -> bool:
    """Replace the row only while it is in `expected_state`; whether it was."""
    row = approval_row(approval)
    cursor = conn.execute("UPDATE approvals SET state = ?, doc = ? WHERE id = ? AND state = ?",
                          (row[1], row[-1], approval.id, expected_state))
    return cursor.rowcount == 1


def get_approval(conn: sqlite3.Connection, approval_id: str) -> Approval | None:
    row = conn.execute("SELECT doc FROM approvals WHERE id = ?", (approval_id,)).fetchone()
    return None if row is None else approval_from_doc(row[0])


def list_approvals(conn: sqlite3.Connection, states: Sequence[str] | None, agent_id: str | None,
                   limit: int) -> list[Approval]:
    """Newest first."""
    where: list[str] = []
    args: list[object] = []
    if states:
        where.append(f"state IN ({','.join('?' * len(states))})")
        args.extend(states)
    if agent_id is not None:
        where.append("agent_id = ?")
        args.append(agent_id)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(f"SELECT doc FROM approvals{clause} ORDER BY created_at DESC, id LIMIT ?", [*args, limit])
    return [approval_from_doc(row[0]) for row in rows]
