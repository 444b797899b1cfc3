"""The vault_leases table on PostgreSQL: the Vault leases every replica holds, by task."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

from gateway.store.base import VaultLeaseRecord

_COLUMNS = "lease_id, task_id, server_id, replica, created_at, address, namespace, token_env, token_file"


async def save_vault_lease(conn: asyncpg.Connection, lease: VaultLeaseRecord) -> None:
    await conn.execute(f"INSERT INTO vault_leases ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                       "ON CONFLICT (lease_id) DO NOTHING",
                       lease.lease_id, lease.task_id, lease.server_id, lease.replica, lease.created_at, lease.address,
                       lease.namespace, lease.token_env, lease.token_file)


async def vault_leases(conn: asyncpg.Connection, task_id: str | None) -> list[VaultLeaseRecord]:
    if task_id is None:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM vault_leases ORDER BY created_at, lease_id")
    else:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM vault_leases WHERE task_id = $1 "
                                "ORDER BY created_at, lease_id", task_id)
    return [VaultLeaseRecord(*row) for row in rows]


async def delete_vault_lease(conn: asyncpg.Connection, lease_id: str) -> None:
    await conn.execute("DELETE FROM vault_leases WHERE lease_id = $1", lease_id)
