"""The resource_reviews table on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.discovery.model import ResourceReview
from gateway.store.rows import RESOURCE_REVIEW_COLUMNS, resource_review_from_doc, resource_review_row


def save(conn: sqlite3.Connection, reviews: Sequence[ResourceReview]) -> None:
    conn.executemany(
        f"""
        INSERT INTO resource_reviews ({RESOURCE_REVIEW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (server_id, kind, key) DO UPDATE SET status = excluded.status,
            changed_at = excluded.changed_at, doc = excluded.doc
        """,
        [resource_review_row(r) for r in reviews],
    )


def load(conn: sqlite3.Connection) -> list[ResourceReview]:
    rows = conn.execute("SELECT doc FROM resource_reviews ORDER BY server_id, kind, key")
    return [resource_review_from_doc(row[0]) for row in rows]
