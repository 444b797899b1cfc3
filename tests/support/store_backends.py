"""Both store backends for one test: a fresh SQLite file, or a fresh PostgreSQL database on the session's server.

`StoreBackend.url` is a `state:` URL; `execute` and `fetch` reach the database the way another process (or
an attacker with database access) would: a connection of their own, in the backend's SQL dialect.
"""

from __future__ import annotations

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


async def create_database(server_url: str) -> str:
    """A new, empty database on `server_url`'s server; its URL."""
    name = f"ng_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


async def drop_database(url: str) -> None:
    """Drop the database `url` names (made by create_database), ending its connections."""
    parts = urlsplit(url)
    admin = await asyncpg.connect(urlunsplit((parts.scheme, parts.netloc, "/postgres", "", "")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def postgres_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on `server_url`'s server for one test (its URL); dropped afterwards."""
    url = await create_database(server_url)
    try:
        yield url
    finally:
        await drop_database(url)


@asynccontextmanager
async def store_backend(kind: str, tmp_path: Path, postgres_url: str | None) -> AsyncIterator[StoreBackend]:
    """A fresh backend of `kind`; `postgres_url` (the session's server) is needed for "postgres"."""
    if kind == "sqlite":
        path = tmp_path / "gw.db"
        yield StoreBackend(kind, f"sqlite:///{path}", path)
        return
    assert postgres_url is not None
    async with postgres_database(postgres_url) as url:
        yield StoreBackend(kind, url)

