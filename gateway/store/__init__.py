"""Persistent state behind one interface: `open_store(url)` picks the backend."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gateway.store.base import AgentStore, SchemaTooNew, Store, StoreError, UnsupportedStoreUrl

__all__ = ["AgentStore", "SchemaTooNew", "Store", "StoreError", "UnsupportedStoreUrl", "open_store"]

_USAGE = "use sqlite:///absolute/path.db or sqlite:///:memory:"


def open_store(url: str) -> Store:
    """Open (but do not migrate) the store at `url`; call `await store.migrate()` next.

    Raises UnsupportedStoreUrl for URLs we cannot serve and SchemaTooNew for a database
    written by a newer Narrowgate. Error messages name only the scheme, never the whole
    URL, because future URLs (postgres) carry passwords.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql"):
        raise UnsupportedStoreUrl(f"the postgres store is not available yet (it comes later); {_USAGE}")
    if not separator or scheme != "sqlite":
        raise UnsupportedStoreUrl(f"unsupported store URL scheme {scheme!r}; {_USAGE} (postgres comes later)")
    return _open_sqlite(rest)


def _open_sqlite(rest: str) -> Store:
    from gateway.store.sqlite import MEMORY, SqliteStore

    if rest == f"/{MEMORY}":
        return SqliteStore(MEMORY)
    if not rest.startswith("/") or "?" in rest or rest == "/":
        raise UnsupportedStoreUrl(f"invalid sqlite store URL; {_USAGE}")
    path = Path(rest)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The database holds the gateway's private signing keys: owner-only, like a key file.
    # (SQLite gives its -wal and -shm files the same mode.)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
    return SqliteStore(str(path))
