"""The resource_reviews table on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from gateway.discovery.model import ResourceReview


def save(conn: sqlite3.Connection, reviews: Sequence[ResourceReview]) -> None:
    conn.executemany(
        """
        INSERT INTO resource_reviews (server_id, kind, key, status, changed_at, doc) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (server_id, kind, key) DO UPDATE SET status = excluded.status,
            changed_at = excluded.changed_at, doc = excluded.doc
        """,
        [(r.server_id, r.kind, r.key, r.status, r.changed_at, json.dumps(r.to_dict(), separators=(",", ":")))
         for r in reviews],
    )


def load(conn: sqlite3.Connection) -> list[ResourceReview]:
    rows = conn.execute("SELECT doc FROM resource_reviews ORDER BY server_id, kind, key")
    return [ResourceReview.from_dict(json.loads(row[0])) for row in rows]
