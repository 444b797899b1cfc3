"""The tool_reviews table group on PostgreSQL: coroutines on one pooled connection."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]

from gateway.discovery.model import ToolReview
from gateway.store.rows import TOOL_REVIEW_COLUMNS, tool_review_from_doc, tool_review_row


async def save_tool_reviews(conn: asyncpg.Connection, reviews: Sequence[ToolReview]) -> None:
    await conn.executemany(
        f"""
        INSERT INTO tool_reviews ({TOOL_REVIEW_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (server_id, name) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at,
            doc = excluded.doc
        """,
        [tool_review_row(r) for r in reviews],
    )


async def load_tool_reviews(conn: asyncpg.Connection) -> list[ToolReview]:
    rows = await conn.fetch("SELECT doc FROM tool_reviews ORDER BY server_id, name")
    return [tool_review_from_doc(row[0]) for row in rows]
