"""Small helpers for tests that drive the admin API over real HTTP."""

from __future__ import annotations

import uuid


def unique(prefix: str) -> str:
    """A fresh id, so module-scoped gateways can be shared by many tests."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}
