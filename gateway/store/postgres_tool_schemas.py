"""The tool_schemas table group on PostgreSQL: the last input schema each upstream reported per tool."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson


async def load_tool_schemas(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch("SELECT name, input_schema FROM tool_schemas")
    return {row[0]: orjson.loads(row[1]) for row in rows}


async def save_tool_schemas(conn: asyncpg.Connection, schemas: Mapping[str, Any]) -> None:
    """Upsert what is known now; tools not mentioned keep their last schema (their upstream may be down)."""
    now = time.time()
    await conn.executemany(
        "INSERT INTO tool_schemas (name, input_schema, seen_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (name) DO UPDATE SET input_schema = excluded.input_schema, seen_at = excluded.seen_at",
        [(name, orjson.dumps(schema).decode(), now) for name, schema in schemas.items() if schema is not None],
    )
