"""The store on PostgreSQL, for several workers and replicas: an asyncpg connection pool, made on first use.

Every call takes one pooled connection; writes run in one transaction each. Any driver or network
failure becomes a StoreError naming only scheme, host and database (never the password), so callers
fail closed exactly as they do on SQLite errors. When the server goes away the pool's connections are
dropped; the next call connects again, so the store recovers by itself once the server is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import asyncpg  # type: ignore[import-untyped]

from gateway.approvals.model import Approval
from gateway.discovery.model import ResourceReview, ToolReview
from gateway.registry.model import Agent, LifecycleEvent
from gateway.store import (
    postgres_agents,
    postgres_approvals,
    postgres_audit,
    postgres_decision_inputs,
    postgres_migrate,
    postgres_resource_reviews,
    postgres_secrets,
    postgres_signing_keys,
    postgres_tasks,
    postgres_tool_reviews,
    postgres_tool_schemas,
    postgres_used_tokens,
    postgres_vault_leases,
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
from gateway.store.postgres_url import PostgresUrl
from gateway.tasks.model import Task, TaskEvent

if TYPE_CHECKING:
    from gateway.audit.prepared import PreparedRecord

T = TypeVar("T")
P = ParamSpec("P")
Operation = Callable[Concatenate[Any, P], Awaitable[T]]

CLOSE_TIMEOUT_S = 5.0
# A pooled connection idle this long is closed (the pool keeps pool_min): a proxy or firewall in between
# may cut idle connections silently.
MAX_IDLE_S = 300.0
# SQLSTATE classes after which a connection is not worth keeping: 08 connection exception,
# 57 operator intervention (the server shutting down, a terminated backend).
_CONNECTION_STATES = ("08", "57")
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError,
                  TimeoutError)


class PostgresStore:
    """Implements gateway.store.base.Store. Construct through gateway.store.open_store()."""

    def __init__(self, url: PostgresUrl) -> None:
        self.url = url
        self.name = url.name  # scheme://host:port/database: what every message says
        self._pool: asyncpg.Pool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({self.name!r})"

    # the pool and how every call runs

    async def _connected_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StoreError(f"store {self.name} is closed")
        if self._pool is not None:
            return self._pool
        self._pool_lock = self._pool_lock or asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await self._create_pool()
        return self._pool

    async def _create_pool(self) -> asyncpg.Pool:
        url = self.url
        try:
            pool = await asyncpg.create_pool(
                url.dsn, min_size=url.pool_min, max_size=url.pool_max, timeout=url.connect_timeout_s,
                command_timeout=url.command_timeout_s, max_inactive_connection_lifetime=MAX_IDLE_S)
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"cannot connect to postgres store {self.name}: {self._describe(exc)}") from None
        try:
            # Refuse at first use, not at first write: a newer schema may mean data we would mangle.
            async with pool.acquire() as conn:
                postgres_migrate.refuse_newer_schema(await postgres_migrate.schema_version(conn), self.name)
        except (SchemaTooNew, *_DRIVER_ERRORS) as exc:
            pool.terminate()
            if isinstance(exc, SchemaTooNew):
                raise
            raise StoreError(f"postgres store {self.name}: {self._describe(exc)}") from None
        return pool

    async def _run(self, operation: Operation[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        pool = await self._connected_pool()
        url = self.url
        try:
            async with pool.acquire(timeout=url.connect_timeout_s + url.command_timeout_s) as conn:
                return await operation(conn, *args, **kwargs)
        except _DRIVER_ERRORS as exc:
            if _connection_broken(exc):
                # The server went away (or restarts): replace every pooled connection on its next use,
                # so one failed call, not one per stale connection, marks the outage.
                await pool.expire_connections()
            raise StoreError(f"postgres store {self.name}: {self._describe(exc)}") from None

    async def _write(self, operation: Operation[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`operation` in one transaction: all of it commits, or none."""
        return await self._run(_in_transaction, operation, *args, **kwargs)

    def _describe(self, exc: BaseException) -> str:
        """The driver's error on one line, the password cut out should it ever appear there."""
        text = " ".join(str(exc).split()) or "no detail"
        return self.url.scrub(f"{type(exc).__name__}: {text}")

    async def migrate(self) -> list[int]:
        return await self._run(postgres_migrate.migrate, self.name)

    async def schema_version(self) -> int:
        return await self._run(postgres_migrate.schema_version)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
        except (TimeoutError, *_DRIVER_ERRORS):
            pool.terminate()  # a server that does not answer must not hold up shutdown

    # agents

    async def get_agent(self, agent_id: str) -> Agent | None:
        return await self._run(postgres_agents.get_agent, agent_id)

    async def list_agents(self, changed_since: float | None = None) -> list[Agent]:
        return await self._run(postgres_agents.list_agents, changed_since)

    async def save_agent(self, agent: Agent, event: LifecycleEvent | None = None) -> None:
        await self._write(postgres_agents.save_agent, agent, event)

    async def agent_events(self, agent_id: str) -> list[LifecycleEvent]:
        return await self._run(postgres_agents.agent_events, agent_id)

    # tool schemas

    async def load_tool_schemas(self) -> dict[str, Any]:
        return await self._run(postgres_tool_schemas.load_tool_schemas)

    async def save_tool_schemas(self, schemas: Mapping[str, Any]) -> None:
        await self._write(postgres_tool_schemas.save_tool_schemas, schemas)

    # signing keys

    async def load_signing_keys(self) -> list[SigningKeyRecord]:
        return await self._run(postgres_signing_keys.load_signing_keys)

    async def add_first_signing_key(self, key: SigningKeyRecord) -> bool:
        return await self._write(postgres_signing_keys.add_first_signing_key, key)

    async def rotate_signing_key(self, new: SigningKeyRecord, *, retire_at: float, prune_before: float) -> None:
        await self._write(postgres_signing_keys.rotate_signing_key, new, retire_at, prune_before)

    # the gateway's own secrets

    async def gateway_secret(self, name: str, candidate: bytes) -> bytes:
        return await self._write(postgres_secrets.gateway_secret, name, candidate)

    # Vault leases

    async def save_vault_lease(self, lease: VaultLeaseRecord) -> None:
        await self._write(postgres_vault_leases.save_vault_lease, lease)

    async def vault_leases(self, task_id: str | None = None) -> list[VaultLeaseRecord]:
        return await self._run(postgres_vault_leases.vault_leases, task_id)

    async def delete_vault_lease(self, lease_id: str) -> None:
        await self._write(postgres_vault_leases.delete_vault_lease, lease_id)

    # single-use tokens

    async def use_token(self, token_id: str, expires_at: float, now: float) -> bool:
        return await self._write(postgres_used_tokens.use_token, token_id, expires_at, now)

    # tasks

    async def save_task(self, task: Task, event: TaskEvent | None = None) -> None:
        await self._write(postgres_tasks.save_task, task, event)

    async def save_task_calls(self, counts: Mapping[str, int]) -> None:
        await self._write(postgres_tasks.save_task_calls, dict(counts))

    async def get_task(self, task_id: str) -> Task | None:
        return await self._run(postgres_tasks.get_task, task_id)

    async def list_tasks(
        self, agent_id: str | None = None, state: str | None = None, ended_since: float | None = None,
        ended_only: bool = False, limit: int | None = None,
    ) -> list[Task]:
        return await self._run(postgres_tasks.list_tasks, agent_id, state, ended_since, ended_only, limit)

    async def task_events(self, task_id: str) -> list[TaskEvent]:
        return await self._run(postgres_tasks.task_events, task_id)

    # tool reviews

    async def save_tool_reviews(self, reviews: Sequence[ToolReview]) -> None:
        await self._write(postgres_tool_reviews.save_tool_reviews, list(reviews))

    async def load_tool_reviews(self) -> list[ToolReview]:
        return await self._run(postgres_tool_reviews.load_tool_reviews)

    # resource reviews

    async def save_resource_reviews(self, reviews: Sequence[ResourceReview]) -> None:
        await self._write(postgres_resource_reviews.save_resource_reviews, list(reviews))

    async def load_resource_reviews(self) -> list[ResourceReview]:
        return await self._run(postgres_resource_reviews.load_resource_reviews)

    # approvals

    async def save_approval(self, approval: Approval) -> None:
        await self._write(postgres_approvals.save_approval, approval)

    async def save_approval_if(self, approval: Approval, expected_state: str) -> bool:
        return await self._write(postgres_approvals.save_approval_if, approval, expected_state)

    async def get_approval(self, approval_id: str) -> Approval | None:
        return await self._run(postgres_approvals.get_approval, approval_id)

    async def list_approvals(self, states: Sequence[str] | None = None, agent_id: str | None = None,
                             limit: int = 200) -> list[Approval]:
        return await self._run(postgres_approvals.list_approvals, list(states or ()), agent_id, limit)

    # audit log

    async def audit_head(self) -> tuple[int, str]:
        return await self._run(postgres_audit.head)

    async def append_audit(self, records: Sequence[Mapping[str, Any] | PreparedRecord]) -> tuple[int, str]:
        return await self._write(postgres_audit.append, list(records))

    async def audit_records(self, query: AuditQuery) -> list[dict[str, Any]]:
        return await self._run(postgres_audit.records, query)

    async def audited_decisions(self, query: AuditedDecisionQuery) -> list[AuditedDecision]:
        return await self._run(postgres_audit.audited_decisions, query)

    # recorded decision inputs

    async def append_decision_inputs(self, rows: Sequence[DecisionInputRow]) -> None:
        await self._write(postgres_decision_inputs.append_decision_inputs, list(rows))

    async def decision_inputs(self, query: DecisionInputQuery) -> list[DecisionInputRow]:
        return await self._run(postgres_decision_inputs.decision_inputs, query)

    async def delete_decision_inputs(self, before: float, limit: int = DELETE_CHUNK) -> int:
        return await self._write(postgres_decision_inputs.delete_decision_inputs, before, limit)


async def _in_transaction(conn: Any, operation: Operation[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    async with conn.transaction():
        return await operation(conn, *args, **kwargs)


def _connection_broken(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "").startswith(_CONNECTION_STATES)
    return True  # a network error, a timeout, or a connection the driver already saw closed

