"""The decision_inputs table on SQLite: recorded decision inputs for what-if replay (gateway.policy.recorded)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.store.base import DecisionInputQuery, DecisionInputRow
from gateway.store.rows import (
    DECISION_INPUT_COLUMNS,
    after_key,
    decision_input_filters,
    decision_input_from_row,
    decision_input_row,
    where,
)
from gateway.store.sqlite_insert import insert_rows


def append(conn: sqlite3.Connection, rows: Sequence[DecisionInputRow]) -> None:
    insert_rows(conn, "decision_inputs", DECISION_INPUT_COLUMNS, [decision_input_row(r) for r in rows])


def select(conn: sqlite3.Connection, query: DecisionInputQuery) -> list[DecisionInputRow]:
    sql, params = select_sql(query)
    return [decision_input_from_row(row) for row in conn.execute(sql, params)]


def select_sql(query: DecisionInputQuery) -> tuple[str, tuple[object, ...]]:
    """Pages in seq (rowid) order, walked by rowid: left to choose, SQLite takes the `at` or agent index and
    sorts the whole window for every page (a replay quadratic in the window, payloads in the sort)."""
    clause, params = where(decision_input_filters(query), lambda _: "?")
    if query.by_time:  # a narrow range: through the time index, which holds the rowid, so no sort either
        keyset, after = after_key(query.after, lambda _: "?", 0, " AND ")
        sql = (f"SELECT seq, {DECISION_INPUT_COLUMNS} FROM decision_inputs INDEXED BY decision_inputs_at"
               f"{clause}{keyset} ORDER BY at, seq LIMIT ?")
        return sql, (*params, *after, query.limit)
    sql = f"SELECT seq, {DECISION_INPUT_COLUMNS} FROM decision_inputs NOT INDEXED{clause} ORDER BY seq LIMIT ?"
    return sql, (*params, query.limit)


def delete_before(conn: sqlite3.Connection, before: float, limit: int) -> int:
    return conn.execute("DELETE FROM decision_inputs WHERE seq IN "
                        "(SELECT seq FROM decision_inputs WHERE at < ? LIMIT ?)", (before, limit)).rowcount
