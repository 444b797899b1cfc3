"""The agents table group on PostgreSQL: coroutines on one pooled connection (the store holds the transaction)."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

from gateway.registry.model import Agent, LifecycleEvent
from gateway.store import rows


async def get_agent(conn: asyncpg.Connection, agent_id: str) -> Agent | None:
    doc = await conn.fetchval("SELECT doc FROM agents WHERE id = $1", agent_id)
    return None if doc is None else rows.agent_from_doc(doc)


async def list_agents(conn: asyncpg.Connection, changed_since: float | None = None) -> list[Agent]:
    if changed_since is not None:
        found = await conn.fetch("SELECT doc FROM agents WHERE changed_at >= $1 ORDER BY id", changed_since)
        return [rows.agent_from_doc(row[0]) for row in found]
    return [rows.agent_from_doc(row[0]) for row in await conn.fetch("SELECT doc FROM agents ORDER BY id")]


async def save_agent(conn: asyncpg.Connection, agent: Agent, event: LifecycleEvent | None) -> None:
    """Upsert and append; the caller holds the transaction."""
    event_row = None if event is None else rows.agent_event_row(agent, event)
    await conn.execute(
        f"""
        INSERT INTO agents ({rows.AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at,
            expires_at = excluded.expires_at, doc = excluded.doc
        """,
        *rows.agent_row(agent),
    )
    if event_row is not None:
        await conn.execute(f"INSERT INTO agent_events ({rows.AGENT_EVENT_COLUMNS})"
                           " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", *event_row)


async def agent_events(conn: asyncpg.Connection, agent_id: str) -> list[LifecycleEvent]:
    found = await conn.fetch(f"SELECT {rows.AGENT_EVENT_COLUMNS} FROM agent_events WHERE agent_id = $1 ORDER BY seq",
                             agent_id)
    return [rows.agent_event_from_row(row) for row in found]
