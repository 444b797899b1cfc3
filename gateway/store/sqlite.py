"""The embedded default store: one SQLite file in WAL mode, driven from one worker thread.

One thread owns all database work, so calls are serialized without locks, the event loop
never blocks on disk, and the single connection is never used by two threads at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.approvals.model import Approval
from gateway.discovery.model import ResourceReview, ToolReview
from gateway.registry.model import Agent, LifecycleEvent
from gateway.store import (
    sqlite_agents,
    sqlite_approvals,
    sqlite_audit,
    sqlite_decision_inputs,
    sqlite_resource_reviews,
    sqlite_secrets,
    sqlite_signing_keys,
    sqlite_tasks,
    sqlite_tool_reviews,
    sqlite_tool_schemas,
    sqlite_used_tokens,
    sqlite_vault_leases,
)
from gateway.store.base import (
    DELETE_CHUNK,
    AuditedDecision,
    AuditedDecisionQuery,
    AuditQuery,
    DecisionInputQuery,
    DecisionInputRow,
    SchemaTooNew,
    SigningKeyRecord,
    StoreError,
    VaultLeaseRecord,
)
from gateway.store.sqlite_schema import LATEST_VERSION, MIGRATIONS, split_statements
from gateway.tasks.model import Task, TaskEvent

if TYPE_CHECKING:
    from gateway.audit.prepared import PreparedRecord

T = TypeVar("T")
MEMORY = ":memory:"
PAGE_SIZE = 16384  # bytes, for a database this creates


class SqliteStore:
    """Implements gateway.store.base.Store. Construct through gateway.store.open_store()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn = _connect(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="narrowgate-sqlite")
        self._closed = False
        try:
            # Refuse at open, not at first write: a newer schema may mean data we would mangle.
            _refuse_newer_schema(self._conn, path)
        except BaseException:
            self._conn.close()
            self._executor.shutdown(wait=False)
            raise

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, self._conn, *args))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    async def migrate(self) -> list[int]:
        return await self._run(_migrate, self.path)

    async def schema_version(self) -> int:
        return await self._run(_schema_version)

    async def close(self) -> None:
        if self._closed:
            return
        await self._run(_close)
        self._closed = True
        self._executor.shutdown(wait=True)

    # agents

    async def get_agent(self, agent_id: str) -> Agent | None:
        return await self._run(sqlite_agents.get_agent, agent_id)

    async def list_agents(self, changed_since: float | None = None) -> list[Agent]:
        return await self._run(sqlite_agents.list_agents, changed_since)

    async def save_agent(self, agent: Agent, event: LifecycleEvent | None = None) -> None:
        await self._run(_in_transaction, sqlite_agents.save_agent, agent, event)

    async def agent_events(self, agent_id: str) -> list[LifecycleEvent]:
        return await self._run(sqlite_agents.agent_events, agent_id)

    # tool schemas

    async def load_tool_schemas(self) -> dict[str, Any]:
        return await self._run(sqlite_tool_schemas.load)

    async def save_tool_schemas(self, schemas: Mapping[str, Any]) -> None:
        await self._run(_in_transaction, sqlite_tool_schemas.save, schemas)

    # signing keys

    async def load_signing_keys(self) -> list[SigningKeyRecord]:
        return await self._run(sqlite_signing_keys.load)

    async def add_first_signing_key(self, key: SigningKeyRecord) -> bool:
        return await self._run(_in_transaction_result, sqlite_signing_keys.add_first, key)

    async def rotate_signing_key(self, new: SigningKeyRecord, *, retire_at: float, prune_before: float) -> None:
        await self._run(_in_transaction, sqlite_signing_keys.rotate, new, retire_at, prune_before)

    # the gateway's own secrets

    async def gateway_secret(self, name: str, candidate: bytes) -> bytes:
        return await self._run(_in_transaction_result, sqlite_secrets.get_or_add, name, candidate)

    # Vault leases

    async def save_vault_lease(self, lease: VaultLeaseRecord) -> None:
        await self._run(_in_transaction, sqlite_vault_leases.save, lease)

    async def vault_leases(self, task_id: str | None = None) -> list[VaultLeaseRecord]:
        return await self._run(sqlite_vault_leases.load, task_id)

    async def delete_vault_lease(self, lease_id: str) -> None:
        await self._run(_in_transaction, sqlite_vault_leases.delete, lease_id)

    # single-use tokens

    async def use_token(self, token_id: str, expires_at: float, now: float) -> bool:
        return await self._run(_in_transaction_result, sqlite_used_tokens.use, token_id, expires_at, now)

    # tasks

    async def save_task(self, task: Task, event: TaskEvent | None = None) -> None:
        await self._run(_in_transaction, sqlite_tasks.save_task, task, event)

    async def save_task_calls(self, counts: Mapping[str, int]) -> None:
        await self._run(_in_transaction, sqlite_tasks.save_task_calls, dict(counts))

    async def get_task(self, task_id: str) -> Task | None:
        return await self._run(sqlite_tasks.get_task, task_id)

    async def list_tasks(
        self, agent_id: str | None = None, state: str | None = None, ended_since: float | None = None,
        ended_only: bool = False, limit: int | None = None,
    ) -> list[Task]:
        return await self._run(sqlite_tasks.list_tasks, agent_id, state, ended_since, ended_only, limit)

    async def task_events(self, task_id: str) -> list[TaskEvent]:
        return await self._run(sqlite_tasks.task_events, task_id)

    # tool reviews

    async def save_tool_reviews(self, reviews: Sequence[ToolReview]) -> None:
        await self._run(_in_transaction, sqlite_tool_reviews.save, list(reviews))

    async def load_tool_reviews(self) -> list[ToolReview]:
        return await self._run(sqlite_tool_reviews.load)

    # resource reviews

    async def save_resource_reviews(self, reviews: Sequence[ResourceReview]) -> None:
        await self._run(_in_transaction, sqlite_resource_reviews.save, list(reviews))

    async def load_resource_reviews(self) -> list[ResourceReview]:
        return await self._run(sqlite_resource_reviews.load)

    # approvals

    async def save_approval(self, approval: Approval) -> None:
        await self._run(_in_transaction, sqlite_approvals.save_approval, approval)

    async def save_approval_if(self, approval: Approval, expected_state: str) -> bool:
        return await self._run(_in_transaction_result, sqlite_approvals.save_approval_if, approval, expected_state)

    async def get_approval(self, approval_id: str) -> Approval | None:
        return await self._run(sqlite_approvals.get_approval, approval_id)

    async def list_approvals(self, states: Sequence[str] | None = None, agent_id: str | None = None,
                             limit: int = 200) -> list[Approval]:
        return await self._run(sqlite_approvals.list_approvals, list(states or ()), agent_id, limit)

    # audit log

    async def audit_head(self) -> tuple[int, str]:
        return await self._run(sqlite_audit.head)

    async def append_audit(self, records: Sequence[Mapping[str, Any] | PreparedRecord]) -> tuple[int, str]:
        return await self._run(_in_transaction_result, sqlite_audit.append, list(records))

    async def audit_records(self, query: AuditQuery) -> list[dict[str, Any]]:
        return await self._run(sqlite_audit.records, query)

    async def audited_decisions(self, query: AuditedDecisionQuery) -> list[AuditedDecision]:
        return await self._run(sqlite_audit.audited_decisions, query)

    # recorded decision inputs

    async def append_decision_inputs(self, rows: Sequence[DecisionInputRow]) -> None:
        await self._run(_in_transaction, sqlite_decision_inputs.append, list(rows))

    async def decision_inputs(self, query: DecisionInputQuery) -> list[DecisionInputRow]:
        return await self._run(sqlite_decision_inputs.select, query)

    async def delete_decision_inputs(self, before: float, limit: int = DELETE_CHUNK) -> int:
        return await self._run(_in_transaction_result, sqlite_decision_inputs.delete_before, before, limit)


def _connect(path: str) -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; check_same_thread=False because
        # the connection is made here but used only by the worker thread afterwards.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        # A new file only (an existing one keeps its pages). The writers' batches (~3 KB a call) go to the WAL a
        # frame per page, and back at a checkpoint, each with system calls of its own: 16 KiB pages made a third
        # of the 4 KiB pages' writes (docs/performance-cuts.md, "Sixth pass").
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL, not NORMAL: a suspension lost to a power cut would silently re-activate an agent.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open sqlite store {path}: {exc}") from exc
    return conn


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so two processes cannot interleave migrations.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., None], *args: object) -> None:
    with _transaction(conn):
        fn(conn, *args)


def _in_transaction_result(conn: sqlite3.Connection, fn: Callable[..., T], *args: object) -> T:
    with _transaction(conn):
        return fn(conn, *args)


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])


def _refuse_newer_schema(conn: sqlite3.Connection, path: str) -> None:
    version = _schema_version(conn)
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"sqlite store {path} has schema version {version}, but this Narrowgate knows only up to "
            f"{LATEST_VERSION}; upgrade Narrowgate (or point it at another database) instead of downgrading"
        )


def _migrate(conn: sqlite3.Connection, path: str) -> list[int]:
    applied: list[int] = []
    with _transaction(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        # Checked again inside the write lock: another process may have upgraded since open.
        _refuse_newer_schema(conn, path)
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            applied.append(migration.version)
    return applied
