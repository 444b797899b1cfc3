"""Many rows into one SQLite table in a few INSERT statements, not one statement run per row.

`executemany` runs its INSERT once per row, and every run opens a cursor on the table and on each of its indexes
(and, for an AUTOINCREMENT table, reads and writes sqlite_sequence) besides the sqlite3 module's reset and bind: one
INSERT with many rows in its VALUES list does that once per statement. For the writers' batches (the audit log's,
the recorded decision inputs') that is about half of the CPU per row (docs/perf-notes/writers3.md). The rows go in
the order given, as executemany puts them: SQLite inserts a VALUES list in its order (an AUTOINCREMENT key follows it).
Statements have a power-of-two number of rows, at most CHUNK_ROWS, so a handful of statement texts cover every
batch size and stay in the connection's statement cache.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Sequence

CHUNK_ROWS = 256  # rows per statement at most (x the columns: far below SQLite's bound-parameter limit)


def insert_rows(conn: sqlite3.Connection, table: str, columns: str, rows: Sequence[Sequence[object]]) -> None:
    """INSERT `rows` (each one value per name in `columns`, a comma-separated list) into `table`, in order."""
    width = columns.count(",") + 1
    start = 0
    while start < len(rows):
        size = min(CHUNK_ROWS, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start:start + size]
        conn.execute(_statement(table, columns, width, size), list(itertools.chain.from_iterable(chunk)))
        start += size


@functools.lru_cache(maxsize=64)
def _statement(table: str, columns: str, width: int, size: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([row] * size)
