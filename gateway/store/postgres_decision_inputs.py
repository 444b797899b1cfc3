"""The decision_inputs table on PostgreSQL: recorded decision inputs for what-if replay (gateway.policy.recorded)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]

from gateway.store.base import DecisionInputQuery, DecisionInputRow
from gateway.store.rows import (
    DECISION_INPUT_COLUMNS,
    after_key,
    decision_input_filters,
    decision_input_from_row,
    decision_input_row,
    where,
)

COLUMNS = tuple(DECISION_INPUT_COLUMNS.split(", "))  # for COPY


async def append_decision_inputs(conn: asyncpg.Connection, rows: Sequence[DecisionInputRow]) -> None:
    # COPY: one round trip for the whole batch, as the audit log appends.
    await conn.copy_records_to_table("decision_inputs", records=[decision_input_row(r) for r in rows],
                                     columns=COLUMNS)


async def decision_inputs(conn: asyncpg.Connection, query: DecisionInputQuery) -> list[DecisionInputRow]:
    sql, params = select_sql(query)
    return [decision_input_from_row(row) for row in await conn.fetch(sql, *params)]


def select_sql(query: DecisionInputQuery) -> tuple[str, list[object]]:
    """By seq, or with `by_time` by (at, seq) after the last row read, through the (at, seq) index: no sort."""
    clause, params = where(decision_input_filters(query), lambda n: f"${n}")
    keyset, after = after_key(query.after if query.by_time else None, lambda n: f"${n}", len(params) + 1, " AND ")
    order = "at, seq" if query.by_time else "seq"
    sql = (f"SELECT seq, {DECISION_INPUT_COLUMNS} FROM decision_inputs{clause}{keyset} ORDER BY {order} "
           f"LIMIT ${len(params) + len(after) + 1}")
    return sql, [*params, *after, query.limit]


async def delete_decision_inputs(conn: asyncpg.Connection, before: float, limit: int) -> int:
    status = await conn.execute("DELETE FROM decision_inputs WHERE seq IN "
                                "(SELECT seq FROM decision_inputs WHERE at < $1 LIMIT $2)", before, limit)
    return int(status.split()[-1])  # "DELETE <n>"
