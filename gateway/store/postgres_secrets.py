"""The gateway_secrets table on PostgreSQL: secrets the gateway generates for itself on first start."""

from __future__ import annotations

import time

import asyncpg  # type: ignore[import-untyped]


async def gateway_secret(conn: asyncpg.Connection, name: str, candidate: bytes) -> bytes:
    """The first process to store `name` wins; a concurrent insert waits for it, then reads its secret."""
    await conn.execute("INSERT INTO gateway_secrets (name, secret, created_at) VALUES ($1, $2, $3) "
                       "ON CONFLICT (name) DO NOTHING", name, candidate, time.time())
    return bytes(await conn.fetchval("SELECT secret FROM gateway_secrets WHERE name = $1", name))
