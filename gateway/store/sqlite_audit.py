"""The audit_log table group on SQLite: sealing into the hash chain happens here, inside the
write transaction, so seq and prev_hash follow commit order even with several writers on one file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.audit.chain import GENESIS_HASH, RECORD_FIELDS, canonical_json, seal
from gateway.store.base import AuditQuery

_COLUMNS = ", ".join(RECORD_FIELDS)
_JSON_FIELDS = frozenset({"policy_ids", "preview", "detail"})


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    row = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def append(conn: sqlite3.Connection, records: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """Seal `records` after the current head and insert them; the caller holds the write transaction.

    Reading the head under the write lock (BEGIN IMMEDIATE) rather than trusting a cached one
    keeps the chain whole after a failed batch or when another process appended meanwhile.
    """
    seq, prev_hash = head(conn)
    rows = []
    for record in records:
        seq += 1
        sealed = seal(record, seq, prev_hash)
        prev_hash = sealed["hash"]
        rows.append(tuple(_column_value(name, sealed[name]) for name in RECORD_FIELDS))
    placeholders = ", ".join("?" * len(RECORD_FIELDS))
    conn.executemany(f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({placeholders})", rows)
    return seq, prev_hash


def records(conn: sqlite3.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    where, params = _where(query)
    order = "DESC" if query.newest_first else "ASC"
    sql = f"SELECT {_COLUMNS} FROM audit_log{where} ORDER BY seq {order} LIMIT ?"
    return [_record(row) for row in conn.execute(sql, (*params, query.limit))]


def _where(query: AuditQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("seq > ?", query.after_seq or None),
        ("seq < ?", query.before_seq),
        ("agent_id = ?", query.agent_id),
        ("tool = ?", query.tool),
        ("decision = ?", query.decision),
        ("kind = ?", query.kind),
        ("at >= ?", query.since),
        ("at < ?", query.until),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _column_value(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return None if value is None else canonical_json(value)
    return value


def _record(row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(RECORD_FIELDS, row, strict=True))
    for name in _JSON_FIELDS:
        record[name] = _json_or_text(record[name])
    return record


def _json_or_text(text: str | None) -> Any:
    # A tampered column may not be JSON any more: keep its text, so verify reports a hash
    # mismatch at that seq instead of crashing.
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
