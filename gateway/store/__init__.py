"""Persistent state behind one interface: `open_store(url)` picks the backend."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gateway.store.base import AgentStore, SchemaTooNew, Store, StoreError, UnsupportedStoreUrl

__all__ = ["AgentStore", "SchemaTooNew", "Store", "StoreError", "UnsupportedStoreUrl", "open_store"]

_USAGE = "use sqlite:///absolute/path.db, sqlite:///:memory: or postgresql://user:password@host:port/database"


def open_store(url: str) -> Store:
    """Open (but do not migrate) the store at `url`; call `await store.migrate()` next.

    Raises UnsupportedStoreUrl for URLs we cannot serve and SchemaTooNew for a database
    written by a newer Narrowgate (PostgreSQL: at first use, since opening does not connect).
    Error messages name only scheme, host and database, never the whole URL: it may carry a password.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if separator and scheme in ("postgres", "postgresql"):
        return _open_postgres(url)
    if not separator or scheme != "sqlite":
        raise UnsupportedStoreUrl(f"unsupported store URL scheme {scheme!r}; {_USAGE}")
    return _open_sqlite(rest)


def _open_postgres(url: str) -> Store:
    from gateway.store.postgres import PostgresStore
    from gateway.store.postgres_url import parse_postgres_url

    return PostgresStore(parse_postgres_url(url))


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
