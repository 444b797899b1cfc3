"""SQLite schema migrations: an ordered list, append-only. Never edit a released migration;
add a new one instead (databases in the field already ran the old text)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "agents and lifecycle events",
        """
        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            changed_at REAL NOT NULL,
            expires_at REAL,
            doc TEXT NOT NULL  -- agent_to_dict() as JSON; the columns above are for queries
        );
        CREATE INDEX agents_state ON agents (state);

        CREATE TABLE agent_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_id TEXT NOT NULL REFERENCES agents (id),
            action TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL,
            fields TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX agent_events_agent ON agent_events (agent_id, seq);

        -- Who changed what is evidence: the table is append-only, enforced by the database.
        CREATE TRIGGER agent_events_no_update BEFORE UPDATE ON agent_events
        BEGIN SELECT RAISE(ABORT, 'agent_events is append-only'); END;
        CREATE TRIGGER agent_events_no_delete BEFORE DELETE ON agent_events
        BEGIN SELECT RAISE(ABORT, 'agent_events is append-only'); END;
        """,
    ),
    Migration(
        2,
        "last known tool input schemas",
        """
        -- What each upstream last reported, so policies over context.input can be typed (and
        -- validated) at start, before and even without reaching the upstream again.
        CREATE TABLE tool_schemas (
            name TEXT PRIMARY KEY,
            input_schema TEXT NOT NULL,
            seen_at REAL NOT NULL
        );
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def split_statements(script: str) -> list[str]:
    """Split a script into statements with SQLite's own tokenizer (triggers contain ';').

    executescript() would be simpler but commits any open transaction first, and we need
    all missing migrations plus their bookkeeping in one transaction.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")
    return statements
