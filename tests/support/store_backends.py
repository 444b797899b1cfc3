"""Both store backends for one test: a fresh SQLite file, or a fresh PostgreSQL database on the session's server.

`StoreBackend.url` is a `state:` URL; `execute` and `fetch` reach the database the way another process (or
an attacker with database access) would: a connection of their own, in the backend's SQL dialect.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.store import Store, open_store
from gateway.store.postgres_schema import MIGRATIONS

BACKENDS = ("sqlite", "postgres")


@dataclass
class StoreBackend:
    kind: str  # "sqlite" | "postgres"
    url: str
    path: Path | None = None  # the SQLite file

    async def open(self, migrate: bool = True) -> Store:
        store = open_store(self.url)
        if migrate:
            await store.migrate()
        return store

    async def execute(self, *statements: str) -> None:
        """Run `statements` in autocommit, on a connection of their own."""
        if self.path is not None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                for statement in statements:
                    conn.execute(statement)
            finally:
                conn.close()
            return
        pg = await asyncpg.connect(self.url)
        try:
            for statement in statements:
                await pg.execute(statement)
        finally:
            await pg.close()

    async def fetch(self, query: str) -> list[tuple[Any, ...]]:
        if self.path is not None:
            with sqlite3.connect(self.path) as conn:
                return [tuple(row) for row in conn.execute(query)]
        pg = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await pg.fetch(query)]
        finally:
            await pg.close()

    async def drop_append_only(self, table: str) -> None:
        """As someone with write access to the database: switch the append-only triggers of `table` off."""
        if self.path is not None:
            await self.execute(f"DROP TRIGGER IF EXISTS {table}_no_update", f"DROP TRIGGER IF EXISTS {table}_no_delete")
        else:
            await self.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")

    async def fail_inserts_into(self, table: str, message: str) -> None:
        """Make every insert into `table` fail with `message` (a trigger)."""
        if self.path is not None:
            await self.execute(
                f"CREATE TRIGGER fail BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, '{message}'); END")
            return
        await self.execute(
            f"CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{message}'; END; $$",
            f"CREATE TRIGGER fail BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION fail()")

    @property
    def refusal(self) -> type[Exception]:
        """What the database raises when a statement breaks a rule (a trigger, a constraint)."""
        return sqlite3.DatabaseError if self.path is not None else asyncpg.PostgresError


async def create_database(server_url: str, migrated: bool = False) -> str:
    """A new database on `server_url`'s server, empty or (`migrated`) a copy of a migrated one; its URL.

    Copying a migrated template is a file copy on the server, much faster than migrating each database.
    """
    name = f"ng_{uuid.uuid4().hex[:16]}"
    template = f' TEMPLATE "{await _migrated_template(server_url)}"' if migrated else ""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{template}')
    finally:
        await admin.close()
    return _with_database(server_url, name)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


# Named after the migrations it holds, so a server kept between runs (NARROWGATE_TEST_POSTGRES_URL) reuses it
# until a migration is added; never connected to after it is made (a template must have no connections).
_TEMPLATE = "ng_template_" + hashlib.sha256(repr([(m.version, m.sql) for m in MIGRATIONS]).encode()).hexdigest()[:12]


async def _migrated_template(server_url: str) -> str:
    admin = await asyncpg.connect(server_url)
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", _TEMPLATE):
            return _TEMPLATE
        scratch = await create_database(server_url)
        store = open_store(scratch)
        await store.migrate()
        await store.close()
        try:  # made under another name and renamed: a half-migrated template is never seen
            await admin.execute(f'ALTER DATABASE "{urlsplit(scratch).path.lstrip("/")}" RENAME TO "{_TEMPLATE}"')
        except asyncpg.DuplicateDatabaseError:  # another test session made it meanwhile
            await drop_database(scratch)
    finally:
        await admin.close()
    return _TEMPLATE


async def drop_database(url: str) -> None:
    """Drop the database `url` names (made by create_database), ending its connections."""
    parts = urlsplit(url)
    admin = await asyncpg.connect(urlunsplit((parts.scheme, parts.netloc, "/postgres", "", "")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def postgres_database(server_url: str, migrated: bool = False) -> AsyncIterator[str]:
    """A new database on `server_url`'s server for one test (its URL), empty or migrated; dropped afterwards."""
    url = await create_database(server_url, migrated)
    try:
        yield url
    finally:
        await drop_database(url)


@asynccontextmanager
async def store_backend(kind: str, tmp_path: Path, postgres_url: str | None,
                        migrated: bool = True) -> AsyncIterator[StoreBackend]:
    """A fresh backend of `kind`; `postgres_url` (the session's server) is needed for "postgres". A PostgreSQL
    database comes migrated unless `migrated` is False (a SQLite file is always new: it migrates in no time)."""
    if kind == "sqlite":
        path = tmp_path / "gw.db"
        yield StoreBackend(kind, f"sqlite:///{path}", path)
        return
    assert postgres_url is not None
    async with postgres_database(postgres_url, migrated) as url:
        yield StoreBackend(kind, url)

