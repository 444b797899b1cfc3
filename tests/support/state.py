"""Shared state fixtures' building blocks: a controllable clock and a migrated SQLite store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.audit.digests import KEY_NAME, DigestKey

T0 = 1_800_000_000.0  # a fixed "now" for tests that move time by hand


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored_digest_key(db: Path) -> DigestKey:
    """The argument digest key a gateway keeps in its SQLite state store, read as an operator would."""
    with sqlite3.connect(db) as conn:
        (secret,) = conn.execute("SELECT secret FROM gateway_secrets WHERE name = ?", (KEY_NAME,)).fetchone()
    return DigestKey(bytes(secret))
