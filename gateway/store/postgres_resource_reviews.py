"""The resource_reviews table on PostgreSQL: coroutines on one pooled connection."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]

from gateway.discovery.model import ResourceReview
from gateway.store.rows import RESOURCE_REVIEW_COLUMNS, resource_review_from_doc, resource_review_row


async def save_resource_reviews(conn: asyncpg.Connection, reviews: Sequence[ResourceReview]) -> None:
    await conn.executemany(
        f"""
        INSERT INTO resource_reviews ({RESOURCE_REVIEW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (server_id, kind, key) DO UPDATE SET status = excluded.status,
            changed_at = excluded.changed_at, doc = excluded.doc
        """,
        [resource_review_row(r) for r in reviews],
    )


async def load_resource_reviews(conn: asyncpg.Connection) -> list[ResourceReview]:
    rows = await conn.fetch("SELECT doc FROM resource_reviews ORDER BY server_id, kind, key")
    return [resource_review_from_doc(row[0]) for row in rows]
