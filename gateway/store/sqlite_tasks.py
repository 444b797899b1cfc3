"""The tasks table group on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from gateway.store.rows import (
    TASK_COLUMNS,
    TASK_EVENT_COLUMNS,
    task_event_from_row,
    task_event_row,
    task_filters,
    task_from_row,
    task_list_query,
    task_row,
    where,
)
from gateway.tasks.model import Task, TaskEvent


def save_task(conn: sqlite3.Connection, task: Task, event: TaskEvent | None) -> None:
    """Upsert and append; the caller holds the transaction."""
    event_row = None if event is None else task_event_row(task, event)
    conn.execute(
        f"""
        INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at,
            end_reason = excluded.end_reason, deadline = excluded.deadline,
            calls_made = MAX(tasks.calls_made, excluded.calls_made)
        """,
        task_row(task),
    )
    if event_row is not None:
        conn.execute(f"INSERT INTO task_events ({TASK_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", event_row)


def save_task_calls(conn: sqlite3.Connection, counts: Mapping[str, int]) -> None:
    """Record call counts; MAX so a late, smaller batch can never roll a count back."""
    conn.executemany(
        "UPDATE tasks SET calls_made = MAX(calls_made, ?) WHERE id = ?",
        [(count, task_id) for task_id, count in counts.items()],
    )


def get_task(conn: sqlite3.Connection, task_id: str) -> Task | None:
    row = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else task_from_row(row)


def list_tasks(
    conn: sqlite3.Connection, agent_id: str | None, state: str | None, ended_since: float | None,
    ended_only: bool = False, limit: int | None = None,
) -> list[Task]:
    """Tasks oldest first, filtered by agent and stored state; `ended_since` keeps active tasks plus
    those that ended at or after it (what the service holds in memory); `limit`: the newest that many."""
    clause, args = where(task_filters(agent_id, state, ended_since, ended_only), lambda _: "?")
    if limit is not None:
        args = [*args, limit]
    rows = conn.execute(task_list_query(clause, None if limit is None else "?"), args)
    return [task_from_row(row) for row in rows]


def task_events(conn: sqlite3.Connection, task_id: str) -> list[TaskEvent]:
    rows = conn.execute(f"SELECT {TASK_EVENT_COLUMNS} FROM task_events WHERE task_id = ? ORDER BY seq", (task_id,))
    return [task_event_from_row(row) for row in rows]
