"""The agents table group on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import sqlite3

from gateway.registry.model import Agent, LifecycleEvent
from gateway.store.rows import (
    AGENT_COLUMNS,
    AGENT_EVENT_COLUMNS,
    agent_event_from_row,
    agent_event_row,
    agent_from_doc,
    agent_row,
)


def get_agent(conn: sqlite3.Connection, agent_id: str) -> Agent | None:
    row = conn.execute("SELECT doc FROM agents WHERE id = ?", (agent_id,)).fetchone()
    return None if row is None else agent_from_doc(row[0])


def list_agents(conn: sqlite3.Connection, changed_since: float | None = None) -> list[Agent]:
    if changed_since is not None:
        found = conn.execute("SELECT doc FROM agents WHERE changed_at >= ? ORDER BY id", (changed_since,))
        return [agent_from_doc(doc) for (doc,) in found]
    return [agent_from_doc(doc) for (doc,) in conn.execute("SELECT doc FROM agents ORDER BY id")]


def save_agent(conn: sqlite3.Connection, agent: Agent, event: LifecycleEvent | None) -> None:
    """Upsert and append; the caller holds the transaction."""
    event_row = None if event is None else agent_event_row(agent, event)
    conn.execute(
        f"""
        INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at,
            expires_at = excluded.expires_at, doc = excluded.doc
        """,
        agent_row(agent),
    )
    if event_row is not None:
        conn.execute(f"INSERT INTO agent_events ({AGENT_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", event_row)


def agent_events(conn: sqlite3.Connection, agent_id: str) -> list[LifecycleEvent]:
    rows = conn.execute(f"SELECT {AGENT_EVENT_COLUMNS} FROM agent_events WHERE agent_id = ? ORDER BY seq", (agent_id,))
    return [agent_event_from_row(row) for row in rows]
