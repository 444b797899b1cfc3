"""The signing_keys table group: the gateway's token signing keys (see gateway.credentials.keys)."""

from __future__ import annotations

import sqlite3

from gateway.store.base import SigningKeyRecord
from gateway.store.rows import SIGNING_KEY_COLUMNS as _COLUMNS


def load(conn: sqlite3.Connection) -> list[SigningKeyRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid").fetchall()
    return [SigningKeyRecord(*row) for row in rows]


def add_first(conn: sqlite3.Connection, key: SigningKeyRecord) -> bool:
    """Runs inside a write transaction, so the check and the insert cannot interleave with another process."""
    if conn.execute("SELECT 1 FROM signing_keys WHERE state = 'current'").fetchone() is not None:
        return False
    _insert(conn, key)
    return True


def rotate(conn: sqlite3.Connection, new: SigningKeyRecord, retire_at: float, prune_before: float) -> None:
    conn.execute("DELETE FROM signing_keys WHERE state = 'previous' AND not_after <= ?", (prune_before,))
    conn.execute("UPDATE signing_keys SET state = 'previous', not_after = ? WHERE state = 'current'", (retire_at,))
    _insert(conn, new)


def _insert(conn: sqlite3.Connection, key: SigningKeyRecord) -> None:
    conn.execute(
        f"INSERT INTO signing_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        (key.kid, key.alg, key.private_key_pem, key.created_at, key.not_after, key.state),
    )
