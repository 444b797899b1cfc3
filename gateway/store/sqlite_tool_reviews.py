"""The tool_reviews table group on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.discovery.model import ToolReview
from gateway.store.rows import TOOL_REVIEW_COLUMNS, tool_review_from_doc, tool_review_row


def save(conn: sqlite3.Connection, reviews: Sequence[ToolReview]) -> None:
    conn.executemany(
        f"""
        INSERT INTO tool_reviews ({TOOL_REVIEW_COLUMNS}) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (server_id, name) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at,
            doc = excluded.doc
        """,
        [tool_review_row(r) for r in reviews],
    )


def load(conn: sqlite3.Connection) -> list[ToolReview]:
    rows = conn.execute("SELECT doc FROM tool_reviews ORDER BY server_id, name")
    return [tool_review_from_doc(row[0]) for row in rows]
