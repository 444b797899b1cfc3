"""The used_tokens table on PostgreSQL: single-use tokens any replica accepted, until they expire."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]


async def use_token(conn: asyncpg.Connection, token_id: str, expires_at: float, now: float) -> bool:
    """In one transaction: True the first time `token_id` is used on any replica, False ever after."""
    await conn.execute("DELETE FROM used_tokens WHERE expires_at < $1", now)
    inserted = await conn.fetchval("INSERT INTO used_tokens (token_id, expires_at) VALUES ($1, $2) "
                                   "ON CONFLICT (token_id) DO NOTHING RETURNING true", token_id, expires_at)
    return inserted is True
