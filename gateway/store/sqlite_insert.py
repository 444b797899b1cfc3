"""Many rows into one SQLite table in a few INSERT statements, not one statement run per row.

`executemany` runs its INSERT once per row, and every run opens a cursor on the table and on each of its indexes
(and, for an AUTOINCREMENT table, reads and writes sqlite_sequence) besides the sqlite3 module's reset and bind: one
INSERT with many rows in its VALUES list does that once per statement. For the writers' batches (the audit log's,
the recorded decision inputs') that is about half of the CPU per row (docs/performance-cuts.md, "writers3").
The rows go in the order given, as executemany puts them: SQLite inserts a VALUES list in its order (an
AUTOINCREMENT key follows it).
Statements have a power-of-two number of rows, at most CHUNK_ROWS and never more than SQLite's bound-variable
limit allows (999 on builds before 3.32 unless raised: 64 audit rows would not fit), so a handful of statement texts
cover every batch size and stay in the connection's statement cache. A row of the wrong width is refused, as
executemany refused it, rather than shifting values into the next row's columns.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Sequence

CHUNK_ROWS = 256  # rows per statement at most (fewer where SQLite's variable limit is lower: _rows_per_statement)


def insert_rows(conn: sqlite3.Connection, table: str, columns: str, rows: Sequence[Sequence[object]]) -> None:
    """INSERT `rows` (each one value per name in `columns`, a comma-separated list) into `table`, in order."""
    width = columns.count(",") + 1
    if any(len(row) != width for row in rows):
        raise sqlite3.ProgrammingError(f"a row for {table} does not have {width} values")
    most = _rows_per_statement(conn, width)
    start = 0
    while start < len(rows):
        size = min(most, 1 << ((len(rows) - start).bit_length() - 1))  # the largest power of two that fits
        chunk = rows[start:start + size]
        conn.execute(_statement(table, columns, width, size), list(itertools.chain.from_iterable(chunk)))
        start += size


def _rows_per_statement(conn: sqlite3.Connection, width: int) -> int:
    """The most rows, a power of two, whose values one statement may bind on this connection."""
    fits = min(CHUNK_ROWS, max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    return 1 << (fits.bit_length() - 1)


@functools.lru_cache(maxsize=64)
def _statement(table: str, columns: str, width: int, size: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([row] * size)
