"""Applying gateway.store.postgres_schema: all missing migrations in one transaction, under an advisory lock,
so replicas starting at the same moment apply each migration once and the others wait, then find it done."""

from __future__ import annotations

import time

import asyncpg  # type: ignore[import-untyped]

from gateway.store.base import SchemaTooNew
from gateway.store.postgres_schema import LATEST_VERSION, MIGRATIONS

# pg_advisory_xact_lock key held while migrating (per database): the bytes of "ngmigrat".
MIGRATION_LOCK = int.from_bytes(b"ngmigrat", "big", signed=True)


async def schema_version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))


def refuse_newer_schema(version: int, name: str) -> None:
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"postgres store {name} has schema version {version}, but this Narrowgate knows only up to "
            f"{LATEST_VERSION}; upgrade Narrowgate (or point it at another database) instead of downgrading"
        )


async def migrate(conn: asyncpg.Connection, name: str) -> list[int]:
    """Apply what is missing; returns the versions applied (none when another replica got there first)."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        # Checked again under the lock: another replica may have upgraded the schema meanwhile.
        refuse_newer_schema(await schema_version(conn), name)
        done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)  # no arguments: one script, several statements
            await conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                               migration.version, migration.name, time.time())
            applied.append(migration.version)
    return applied
