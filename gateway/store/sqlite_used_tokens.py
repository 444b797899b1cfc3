"""The used_tokens table: single-use tokens already accepted, until they expire (gateway.oauth.delegation)."""

from __future__ import annotations

import sqlite3


def use(conn: sqlite3.Connection, token_id: str, expires_at: float, now: float) -> bool:
    """Runs inside a write transaction: True the first time `token_id` is used, False ever after (until it
    expires, when no verifier accepts the token anyway). Expired entries go as new ones come."""
    conn.execute("DELETE FROM used_tokens WHERE expires_at < ?", (now,))
    inserted = conn.execute("INSERT OR IGNORE INTO used_tokens (token_id, expires_at) VALUES (?, ?)",
                            (token_id, expires_at))
    return inserted.rowcount == 1
