"""The tool_reviews table group on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from gateway.discovery.model import ToolReview


def save(conn: sqlite3.Connection, reviews: Sequence[ToolReview]) -> None:
    conn.executemany(
        """
        INSERT INTO tool_reviews (server_id, name, status, changed_at, doc) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (server_id, name) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at,
            doc = excluded.doc
        """,
        [(r.server_id, r.name, r.status, r.changed_at, json.dumps(r.to_dict(), separators=(",", ":")))
         for r in reviews],
    )


def load(conn: sqlite3.Connection) -> list[ToolReview]:
    rows = conn.execute("SELECT doc FROM tool_reviews ORDER BY server_id, name")
    return [ToolReview.from_dict(json.loads(row[0])) for row in rows]
