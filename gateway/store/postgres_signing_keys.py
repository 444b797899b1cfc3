"""The signing_keys table group on PostgreSQL: the gateway's token signing keys, shared by every replica."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

from gateway.store.base import SigningKeyRecord
from gateway.store.rows import SIGNING_KEY_COLUMNS

_INSERT_KEY = f"INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"


async def load_signing_keys(conn: asyncpg.Connection) -> list[SigningKeyRecord]:
    rows = await conn.fetch(f"SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid")
    return [SigningKeyRecord(*row) for row in rows]


async def add_first_signing_key(conn: asyncpg.Connection, key: SigningKeyRecord) -> bool:
    """The unique index on the current key decides a race: the loser's insert does nothing."""
    inserted = await conn.fetchval(f"{_INSERT_KEY} ON CONFLICT DO NOTHING RETURNING kid", *_key_row(key))
    return inserted is not None


async def rotate_signing_key(conn: asyncpg.Connection, new: SigningKeyRecord, retire_at: float,
                             prune_before: float) -> None:
    """The caller holds the transaction; the lock makes two replicas' rotations run one after the other."""
    await conn.execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
    await conn.execute("DELETE FROM signing_keys WHERE state = 'previous' AND not_after <= $1", prune_before)
    await conn.execute("UPDATE signing_keys SET state = 'previous', not_after = $1 WHERE state = 'current'", retire_at)
    await conn.execute(_INSERT_KEY, *_key_row(new))


def _key_row(key: SigningKeyRecord) -> tuple[object, ...]:
    return (key.kid, key.alg, key.private_key_pem, key.created_at, key.not_after, key.state)
