"""The vault_leases table: which Vault leases the gateway holds for which task (gateway.credentials.leases)."""

from __future__ import annotations

import sqlite3

from gateway.store.base import VaultLeaseRecord

_COLUMNS = "lease_id, task_id, server_id, replica, created_at, address, namespace, token_env, token_file"


def save(conn: sqlite3.Connection, lease: VaultLeaseRecord) -> None:
    conn.execute(f"INSERT OR REPLACE INTO vault_leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (lease.lease_id, lease.task_id, lease.server_id, lease.replica, lease.created_at, lease.address,
                  lease.namespace, lease.token_env, lease.token_file))


def load(conn: sqlite3.Connection, task_id: str | None) -> list[VaultLeaseRecord]:
    where, args = ("WHERE task_id = ?", (task_id,)) if task_id is not None else ("", ())
    rows = conn.execute(f"SELECT {_COLUMNS} FROM vault_leases {where} ORDER BY created_at, lease_id", args)
    return [VaultLeaseRecord(*row) for row in rows.fetchall()]


def delete(conn: sqlite3.Connection, lease_id: str) -> None:
    conn.execute("DELETE FROM vault_leases WHERE lease_id = ?", (lease_id,))
