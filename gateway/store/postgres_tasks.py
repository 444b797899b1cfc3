"""The tasks table group on PostgreSQL: coroutines on one pooled connection (the store holds the transaction)."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg  # type: ignore[import-untyped]

from gateway.store import rows
from gateway.tasks.model import Task, TaskEvent


async def save_task(conn: asyncpg.Connection, task: Task, event: TaskEvent | None) -> None:
    """Upsert and append; the caller holds the transaction."""
    event_row = None if event is None else rows.task_event_row(task, event)
    await conn.execute(
        f"""
        INSERT INTO tasks ({rows.TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at,
            end_reason = excluded.end_reason, deadline = excluded.deadline,
            calls_made = GREATEST(tasks.calls_made, excluded.calls_made)
        """,
        *rows.task_row(task),
    )
    if event_row is not None:
        await conn.execute(f"INSERT INTO task_events ({rows.TASK_EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                           *event_row)


async def save_task_calls(conn: asyncpg.Connection, counts: Mapping[str, int]) -> None:
    """Record call counts; GREATEST so a late, smaller batch (from any replica) never rolls a count back."""
    await conn.executemany("UPDATE tasks SET calls_made = GREATEST(calls_made, $1) WHERE id = $2",
                           [(count, task_id) for task_id, count in counts.items()])


async def get_task(conn: asyncpg.Connection, task_id: str) -> Task | None:
    row = await conn.fetchrow(f"SELECT {rows.TASK_COLUMNS} FROM tasks WHERE id = $1", task_id)
    return None if row is None else rows.task_from_row(row)


async def list_tasks(conn: asyncpg.Connection, agent_id: str | None, state: str | None,
                     ended_since: float | None, ended_only: bool = False, limit: int | None = None) -> list[Task]:
    clause, args = rows.where(rows.task_filters(agent_id, state, ended_since, ended_only), lambda n: f"${n}")
    if limit is not None:
        args = [*args, limit]
    found = await conn.fetch(rows.task_list_query(clause, None if limit is None else f"${len(args)}"), *args)
    return [rows.task_from_row(row) for row in found]


async def task_events(conn: asyncpg.Connection, task_id: str) -> list[TaskEvent]:
    found = await conn.fetch(f"SELECT {rows.TASK_EVENT_COLUMNS} FROM task_events WHERE task_id = $1 ORDER BY seq",
                             task_id)
    return [rows.task_event_from_row(row) for row in found]
