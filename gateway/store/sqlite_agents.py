"""The agents table group on SQLite: plain functions on a connection, run on the store's thread."""

from __future__ import annotations

import json
import sqlite3

from gateway.registry.model import Agent, Lifecycle, LifecycleEvent, agent_from_dict, agent_to_dict


def get_agent(conn: sqlite3.Connection, agent_id: str) -> Agent | None:
    row = conn.execute("SELECT doc FROM agents WHERE id = ?", (agent_id,)).fetchone()
    return None if row is None else agent_from_dict(json.loads(row[0]))


def list_agents(conn: sqlite3.Connection) -> list[Agent]:
    return [agent_from_dict(json.loads(doc)) for (doc,) in conn.execute("SELECT doc FROM agents ORDER BY id")]


def save_agent(conn: sqlite3.Connection, agent: Agent, event: LifecycleEvent | None) -> None:
    """Upsert and append; the caller holds the transaction."""
    if event is not None and event.agent_id != agent.id:
        raise ValueError(f"event for agent {event.agent_id!r} cannot be saved with agent {agent.id!r}")
    conn.execute(
        """
        INSERT INTO agents (id, state, created_at, changed_at, expires_at, doc) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at,
            expires_at = excluded.expires_at, doc = excluded.doc
        """,
        (
            agent.id,
            agent.state.value,
            agent.created_at,
            agent.changed_at,
            agent.expires_at,
            json.dumps(agent_to_dict(agent), sort_keys=True),
        ),
    )
    if event is not None:
        conn.execute(
            """
            INSERT INTO agent_events (agent_id, action, from_state, to_state, actor, reason, at, fields)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                event.agent_id,
                event.action,
                None if event.from_state is None else event.from_state.value,
                event.to_state.value,
                event.actor,
                event.reason,
                event.at,
                json.dumps(list(event.fields)),
            ),
        )


def agent_events(conn: sqlite3.Connection, agent_id: str) -> list[LifecycleEvent]:
    rows = conn.execute(
        "SELECT agent_id, action, from_state, to_state, actor, reason, at, fields FROM agent_events"
        " WHERE agent_id = ? ORDER BY seq",
        (agent_id,),
    )
    return [
        LifecycleEvent(
            agent_id=row[0],
            from_state=None if row[2] is None else Lifecycle(row[2]),
            to_state=Lifecycle(row[3]),
            actor=row[4],
            reason=row[5],
            at=row[6],
            action=row[1],
            fields=tuple(json.loads(row[7])),
        )
        for row in rows
    ]
