"""The tool_schemas table group: the last input schema each upstream reported per tool."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any

import orjson


def load(conn: sqlite3.Connection) -> dict[str, Any]:
    rows = conn.execute("SELECT name, input_schema FROM tool_schemas").fetchall()
    return {name: orjson.loads(schema) for name, schema in rows}


def save(conn: sqlite3.Connection, schemas: Mapping[str, Any]) -> None:
    """Upsert what is known now; tools not mentioned keep their last schema (their upstream may be down)."""
    now = time.time()
    conn.executemany(
        "INSERT INTO tool_schemas (name, input_schema, seen_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET input_schema = excluded.input_schema, seen_at = excluded.seen_at",
        [(name, orjson.dumps(schema).decode(), now) for name, schema in schemas.items() if schema is not None],
    )
