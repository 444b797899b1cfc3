"""The tasks table group on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.tasks.model import Task, TaskEvent, TaskState

_COLUMNS = (
    "id, agent_id, purpose, tools, deadline, budget, calls_made, state, started_by, started_at, ended_at, end_reason"
)


def save_task(conn: sqlite3.Connection, task: Task, event: TaskEvent | None) -> None:
    """Upsert and append; the caller holds the transaction."""
    if event is not None and event.task_id != task.id:
        raise ValueError(f"event for task {event.task_id!r} cannot be saved with task {task.id!r}")
    conn.execute(
        f"""
        INSERT INTO tasks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at,
            end_reason = excluded.end_reason, deadline = excluded.deadline,
            calls_made = MAX(tasks.calls_made, excluded.calls_made)
        """,
        (
            task.id, task.agent_id, task.purpose, json.dumps(list(task.tools)), task.deadline, task.budget,
            task.calls_made, task.state.value, task.started_by, task.started_at, task.ended_at, task.end_reason,
        ),
    )
    if event is not None:
        conn.execute(
            "INSERT INTO task_events (task_id, from_state, to_state, actor, reason, at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                event.task_id,
                None if event.from_state is None else event.from_state.value,
                event.to_state.value, event.actor, event.reason, event.at,
            ),
        )


def save_task_calls(conn: sqlite3.Connection, counts: Mapping[str, int]) -> None:
    """Record call counts; MAX so a late, smaller batch can never roll a count back."""
    conn.executemany(
        "UPDATE tasks SET calls_made = MAX(calls_made, ?) WHERE id = ?",
        [(count, task_id) for task_id, count in counts.items()],
    )


def get_task(conn: sqlite3.Connection, task_id: str) -> Task | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else _task(row)


def list_tasks(
    conn: sqlite3.Connection, agent_id: str | None, state: str | None, ended_since: float | None
) -> list[Task]:
    """Tasks oldest first, filtered by agent and stored state; `ended_since` keeps active tasks plus
    those that ended at or after it (what the service holds in memory)."""
    where: list[str] = []
    args: list[object] = []
    if agent_id is not None:
        where.append("agent_id = ?")
        args.append(agent_id)
    if state is not None:
        where.append("state = ?")
        args.append(state)
    if ended_since is not None:
        where.append("(state = 'active' OR ended_at >= ?)")
        args.append(ended_since)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM tasks{clause} ORDER BY started_at, id", args)
    return [_task(row) for row in rows]


def task_events(conn: sqlite3.Connection, task_id: str) -> list[TaskEvent]:
    rows = conn.execute(
        "SELECT task_id, from_state, to_state, actor, reason, at FROM task_events WHERE task_id = ? ORDER BY seq",
        (task_id,),
    )
    return [
        TaskEvent(row[0], None if row[1] is None else TaskState(row[1]), TaskState(row[2]), row[3], row[4], row[5])
        for row in rows
    ]


def _task(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        agent_id=row[1],
        purpose=row[2],
        tools=tuple(json.loads(row[3])),
        deadline=row[4],
        budget=row[5],
        calls_made=row[6],
        state=TaskState(row[7]),
        started_by=row[8],
        started_at=row[9],
        ended_at=row[10],
        end_reason=row[11],
    )
