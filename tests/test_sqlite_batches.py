"""The SQLite writers insert a batch with a few multi-row INSERTs (gateway/store/sqlite_insert.py), not one
statement run per row: every row still goes in, in the order given, across the statements' row-count boundaries
(power-of-two chunks of at most CHUNK_ROWS), for the audit log (its chain intact) and the recorded decision inputs
(their AUTOINCREMENT seq in batch order)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.audit import AuditEvent, AuditLog
from gateway.audit.chain import verify_chain
from gateway.store import open_store
from gateway.store.base import AuditQuery, DecisionInputQuery, DecisionInputRow
from gateway.store.sqlite_insert import CHUNK_ROWS, _rows_per_statement, insert_rows

BATCHES = [1, 2, 3, CHUNK_ROWS - 1, CHUNK_ROWS, CHUNK_ROWS + 1, 2 * CHUNK_ROWS + 45]


def decision_input(n: int) -> DecisionInputRow:
    return DecisionInputRow(f"dec_{n}", 1000.0 + (n * 7919) % 500, f"agent-{n % 3}", "tool", f"srv__t{n}", "allow",
                            n.to_bytes(4, "big") + b"\x00sealed")


async def test_decision_inputs_go_in_whole_and_in_order_across_statement_boundaries(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    sent: list[DecisionInputRow] = []
    for size in BATCHES:
        batch = [decision_input(len(sent) + i) for i in range(size)]
        await store.append_decision_inputs(batch)
        sent += batch
    stored = await store.decision_inputs(DecisionInputQuery(since=0, limit=10_000))
    await store.close()
    assert [row[:7] for row in stored] == [row[:7] for row in sent]
    assert [row.seq for row in stored] == list(range(1, len(sent) + 1))


@pytest.mark.parametrize("size", [1, CHUNK_ROWS + 1, 2 * CHUNK_ROWS + 45])
async def test_an_audit_batch_goes_in_whole_with_its_chain_intact(tmp_path: Path, size: int) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    audit = AuditLog(store, clock=lambda: 1_767_225_600.5, max_batch=10_000)
    for n in range(size):  # queued before the writer starts: one batch, one append
        audit.record(AuditEvent(kind="decision", action="call", actor="a1", agent_id="a1", tool=f"srv__t{n}",
                                decision="allow", decision_id=f"d-{n}", detail={"n": n}))
    await audit.open()
    await audit.flush()
    await audit.close()
    stored = await store.audit_records(AuditQuery(limit=10_000))
    await store.close()
    assert [record["decision_id"] for record in stored] == [f"d-{n}" for n in range(size)]
    assert [record["seq"] for record in stored] == list(range(1, size + 1))
    assert verify_chain(stored) == []


def test_a_batch_fits_a_build_with_sqlites_old_variable_limit() -> None:
    """SQLite before 3.32 binds at most 999 variables a statement: an 18-column batch of 600 rows still goes in
    whole and in order, in statements of at most 32 rows there."""
    conn = sqlite3.connect(":memory:")
    columns = ", ".join(f"c{i}" for i in range(18))
    conn.execute(f"CREATE TABLE wide (n INTEGER PRIMARY KEY AUTOINCREMENT, {columns})")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    assert _rows_per_statement(conn, 18) == 32  # 32 x 18 = 576 variables; 64 rows would be 1,152
    rows = [tuple(f"{r}.{c}" for c in range(18)) for r in range(600)]
    insert_rows(conn, "wide", columns, rows)
    assert conn.execute(f"SELECT {columns} FROM wide ORDER BY n").fetchall() == rows


def test_a_row_of_the_wrong_width_is_refused_not_shifted() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE pair (a, b)")
    with pytest.raises(sqlite3.ProgrammingError, match="does not have 2 values"):
        insert_rows(conn, "pair", "a, b", [("a1", "b1", "extra"), ("a2",)])
    assert conn.execute("SELECT count(*) FROM pair").fetchone() == (0,)
