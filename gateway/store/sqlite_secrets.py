"""The gateway_secrets table: secrets the gateway generates for itself on first start (never config)."""

from __future__ import annotations

import sqlite3
import time


def get_or_add(conn: sqlite3.Connection, name: str, candidate: bytes) -> bytes:
    """Runs inside a write transaction: the first process to start stores its candidate, every later
    one (and every replica) reads that same secret."""
    conn.execute("INSERT OR IGNORE INTO gateway_secrets (name, secret, created_at) VALUES (?, ?, ?)",
                 (name, candidate, time.time()))
    row = conn.execute("SELECT secret FROM gateway_secrets WHERE name = ?", (name,)).fetchone()
    return bytes(row[0])
