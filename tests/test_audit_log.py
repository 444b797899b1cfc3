"""The audit log: hash chain, group commit, durability, tampering detection, CLI, redaction, failures.

Everything runs on real SQLite files. Tampering is done the way an attacker with file access
would: raw sqlite3, after dropping the append-only triggers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditLog,
    AuditUnavailable,
    record_hash,
    redacted_preview,
    verify_chain,
)
from gateway.audit.chain import RECORD_FIELDS, seal, unsealed_record
from gateway.audit.redact import REDACTED
from gateway.cli.parsers.audit import parse_time
from gateway.store import Store, open_store, sqlite_audit
from gateway.store.base import AuditQuery
from tests.support.processes import NARROWGATE, REPO
from tests.support.store_backends import BACKENDS, StoreBackend, store_backend

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def decision(n: int, **overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "kind": "decision", "action": "tools/call", "actor": "bot-a", "agent_id": "bot-a", "owner": "team-a",
        "task_id": "task-1", "tool": "github__create_issue", "decision": "allow", "policy_ids": ("p1", "p2"),
        "decision_id": f"d-{n}", "trace_id": f"{n:032x}", "args_digest": "ab" * 32,
        "preview": {"title": f"issue {n}"}, "detail": {"n": n},
    }
    fields.update(overrides)
    return AuditEvent(**fields)


def ticking_clock(start: float = T0, step: float = 1.0) -> Callable[[], float]:
    state = {"now": start - step}

    def clock() -> float:
        state["now"] += step
        return state["now"]

    return clock


def raw_rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT {', '.join(RECORD_FIELDS)} FROM audit_log ORDER BY seq").fetchall()
    return [dict(zip(RECORD_FIELDS, row, strict=True)) for row in rows]


def tamper(db: Path, *statements: str, params: tuple[Any, ...] = ()) -> None:
    """As an attacker with the file: drop the append-only triggers, then edit rows directly."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        for statement in statements:
            conn.execute(statement, params if "?" in statement else ())
    finally:
        conn.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), *args], capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def config(tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "narrowgate.yaml"
    path.write_text(f"state: sqlite:///{db}\n")
    return path


@pytest.fixture
async def store(db: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{db}")
    await store.migrate()
    yield store
    await store.close()


async def write_log(store: Store, count: int, clock: Callable[[], float] | None = None,
                    make: Callable[[int], AuditEvent] = decision) -> AuditLog:
    log = AuditLog(store, clock or ticking_clock())
    await log.open()
    for n in range(1, count + 1):
        log.record(make(n))
    await log.flush()
    return log


async def stored_rows(store: Store) -> list[dict[str, Any]]:
    return await store.audit_records(AuditQuery(limit=100_000))


# order, chain, group commit, durability


async def test_records_are_appended_in_order_and_chained(store: Store, db: Path) -> None:
    log = await write_log(store, 10)
    rows = raw_rows(db)
    assert [row["seq"] for row in rows] == list(range(1, 11))
    assert rows[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    records = await stored_rows(store)
    assert all(record["hash"] == record_hash(record) for record in records)
    assert verify_chain(records) == []
    assert log.head == (10, rows[-1]["hash"])
    first = records[0]
    assert first["at"] == T0 and first["detail"] == {"n": 1} and first["policy_ids"] == ["p1", "p2"]
    assert first["preview"] == {"title": "issue 1"} and first["decision_id"] == "d-1"
    await log.close()


async def test_hash_definition_is_sha256_over_prev_hash_and_canonical_json() -> None:
    import hashlib

    record = seal(unsealed_record(decision(1), T0), 1, GENESIS_HASH)
    body = {name: value for name, value in record.items() if name != "hash"}
    text = GENESIS_HASH + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert record["hash"] == hashlib.sha256(text.encode()).hexdigest() == record_hash(record)


async def test_chain_continues_across_restarts(db: Path) -> None:
    for _ in range(3):
        store = open_store(f"sqlite:///{db}")
        await store.migrate()
        log = await write_log(store, 4)
        await log.close()
        await store.close()
    rows = raw_rows(db)
    assert [row["seq"] for row in rows] == list(range(1, 13))
    assert verify_chain(_decoded(rows)) == []


class CountingStore:
    """Delegates to a real store and counts the transactions the audit writer opens."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[int] = []

    async def audit_head(self) -> tuple[int, str]:
        return await self.store.audit_head()

    async def append_audit(self, records: list[dict[str, Any]]) -> tuple[int, str]:
        self.batches.append(len(records))
        return await self.store.append_audit(records)


async def test_group_commit_batches_what_is_queued(store: Store, db: Path) -> None:
    counting = CountingStore(store)
    log = AuditLog(counting)
    await log.open()
    for n in range(200):
        log.record(decision(n))
    await log.flush()
    assert counting.batches == [200]  # queued together, committed together

    counting.batches.clear()
    await asyncio.gather(*(log.record_durable(decision(n)) for n in range(100)))
    assert sum(counting.batches) == 100
    assert len(counting.batches) <= 3, counting.batches  # many durable callers share few commits
    assert len(raw_rows(db)) == 300
    await log.close()


async def test_batches_are_capped(store: Store) -> None:
    counting = CountingStore(store)
    log = AuditLog(counting, max_batch=64)
    await log.open()
    for n in range(150):
        log.record(decision(n))
    await log.flush()
    assert counting.batches == [64, 64, 22]
    await log.close()


async def test_record_durable_returns_only_once_committed(store: Store, db: Path) -> None:
    log = AuditLog(store)
    await log.open()
    log.record(decision(1))  # enqueued before: must be durable too
    await log.record_durable(decision(2, decision="deny"))
    # A fresh connection (another process, in effect) sees both right away.
    rows = raw_rows(db)
    assert [(row["seq"], row["decision"]) for row in rows] == [(1, "allow"), (2, "deny")]
    await log.close()


async def test_record_never_waits_for_the_disk(store: Store) -> None:
    log = AuditLog(store)
    await log.open()
    log.record(decision(1))
    assert log.pending == 1  # nothing written yet: record() only enqueued
    await log.flush()
    assert log.pending == 0 and log.written == 1
    await log.close()


async def test_odd_values_are_normalized_not_fatal(store: Store) -> None:
    import datetime

    log = AuditLog(store)
    await log.open()
    odd = decision(1, detail={"when": datetime.date(2026, 1, 2), "tuple": (1, 2), "bad": "\ud800x"},
                   policy_ids=("a",))
    await log.record_durable(odd)
    (record,) = await stored_rows(store)
    assert record["detail"] == {"when": "2026-01-02", "tuple": [1, 2], "bad": "?x"}
    assert verify_chain([record]) == []
    await log.close()


def test_the_table_is_append_only(store: Store, db: Path) -> None:
    # The store fixture migrated the file; a plain connection, as any tool would open it.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO audit_log (seq, at, kind, action, actor, prev_hash, hash) VALUES (1, 0, 'k', 'a', 'x', '', '')"
        )
    for statement in ("UPDATE audit_log SET actor = 'y'", "DELETE FROM audit_log"):
        with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)


# tampering


def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    decoded = []
    for row in rows:
        record = dict(row)
        for name in ("policy_ids", "preview", "detail"):
            if record[name] is not None:
                record[name] = json.loads(record[name])
        decoded.append(record)
    return decoded


def _forge_after(db: Path, seq: int) -> None:
    """Insert a forged record after `seq`, renumbering the rest and giving it a correctly computed hash."""
    rows = _decoded(raw_rows(db))
    before = rows[seq - 1]
    forged = seal({**unsealed_record(decision(999, decision="allow", actor="mallory"), before["at"] + 0.5)},
                  seq + 1, before["hash"])
    # Two steps through a free range, so no renumbered row collides with another on the way.
    tamper(db, "UPDATE audit_log SET seq = seq + 1000000 WHERE seq > ?", params=(seq,))
    tamper(db, "UPDATE audit_log SET seq = seq - 999999 WHERE seq > 1000000")
    columns = ", ".join(RECORD_FIELDS)
    values = [json.dumps(forged[name]) if name in ("policy_ids", "preview", "detail") else forged[name]
              for name in RECORD_FIELDS]
    with sqlite3.connect(db) as conn:
        conn.execute(f"INSERT INTO audit_log ({columns}) VALUES ({', '.join('?' * len(values))})", values)


TAMPERING: dict[str, tuple[Callable[[Path], None], int, set[str]]] = {
    # name: (how, the seq where it must be found, the problem kinds expected there)
    "modified field": (lambda db: tamper(db, "UPDATE audit_log SET decision = 'deny' WHERE seq = 5"), 5, {"modified"}),
    "modified preview": (lambda db: tamper(db, "UPDATE audit_log SET preview = '{\"title\":\"x\"}' WHERE seq = 3"),
                         3, {"modified"}),
    "unparseable json": (lambda db: tamper(db, "UPDATE audit_log SET detail = '{oops' WHERE seq = 4"),
                         4, {"modified"}),
    "deleted row": (lambda db: tamper(db, "DELETE FROM audit_log WHERE seq = 5"), 6, {"gap", "broken_link"}),
    "deleted first row": (lambda db: tamper(db, "DELETE FROM audit_log WHERE seq = 1"), 2, {"gap", "broken_link"}),
    "forged insert": (lambda db: _forge_after(db, 5), 7, {"broken_link", "modified"}),
    "swapped rows": (lambda db: tamper(db, "UPDATE audit_log SET seq = 1000 WHERE seq = 3",
                                       "UPDATE audit_log SET seq = 3 WHERE seq = 4",
                                       "UPDATE audit_log SET seq = 4 WHERE seq = 1000"),
                     3, {"modified", "broken_link"}),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
async def test_tampering_is_detected_and_located(case: str, store: Store, db: Path, config: Path) -> None:
    log = await write_log(store, 8)
    await log.close()
    assert verify_chain(await stored_rows(store)) == []
    how, where, kinds = TAMPERING[case]
    how(db)

    problems = verify_chain(await stored_rows(store))
    assert problems, case
    assert problems[0].seq == where
    assert {p.kind for p in problems if p.seq == where} == kinds

    result = run_cli("audit", "verify", "--config", str(config))
    assert result.returncode == 1, result
    assert result.stdout.splitlines()[0].startswith(f"seq {where}: "), result.stdout
    assert "FAILED" in result.stderr


async def test_verify_cli_ok_prints_count_and_head(store: Store, config: Path) -> None:
    log = await write_log(store, 3)
    await log.close()
    result = run_cli("audit", "verify", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"audit log ok: 3 record(s), head seq 3 hash {log.head[1]}"


def test_verify_cli_refuses_a_missing_database(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"state: sqlite:///{tmp_path / 'nope.db'}\n")
    result = run_cli("audit", "verify", "--config", str(config))
    assert result.returncode == 2 and "no state database" in result.stderr
    assert not (tmp_path / "nope.db").exists()


# export and search


def mixed_event(n: int) -> AuditEvent:
    agents = ["bot-a", "bot-b"]
    tools = ["github__create_issue", "payments__refund"]
    decisions = ["allow", "deny", "step_up"]
    if n % 5 == 0:
        return AuditEvent("task", "start", "admin:alice", agent_id=agents[n % 2], task_id=f"t{n}")
    return decision(n, agent_id=agents[n % 2], actor=agents[n % 2], tool=tools[n % 3 % 2],
                    decision=decisions[n % 3])


async def test_export_writes_json_lines_in_seq_order_with_time_filters(store: Store, config: Path,
                                                                      tmp_path: Path) -> None:
    await (await write_log(store, 20, ticking_clock(T0, 60.0), mixed_event)).close()
    out = tmp_path / "audit.jsonl"
    result = run_cli("audit", "export", "--config", str(config), "--output", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 21))
    assert verify_chain(records) == []  # an export of the whole log verifies on its own
    assert out.stat().st_mode & 0o077 == 0

    # minute 5 (inclusive) to minute 10 (exclusive): seq 6..10
    result = run_cli("audit", "export", "--config", str(config),
                     "--since", "2026-01-01T00:05:00Z", "--until", "2026-01-01T00:10:00+00:00")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [6, 7, 8, 9, 10]


async def test_search_filters_and_prints_a_table(store: Store, config: Path) -> None:
    await (await write_log(store, 30, ticking_clock(T0, 60.0), mixed_event)).close()
    expected = [n for n in range(1, 31) if n % 5 and n % 2 == 1 and n % 3 == 1]  # bot-b, deny
    result = run_cli("audit", "search", "--config", str(config), "--agent", "bot-b", "--decision", "deny")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "TIME", "(UTC)"]
    assert [int(line.split()[0]) for line in lines[1:]] == expected
    assert all("bot-b" in line and "deny" in line for line in lines[1:])

    result = run_cli("audit", "search", "--config", str(config), "--kind", "task", "--limit", "2")
    assert [int(line.split()[0]) for line in result.stdout.splitlines()[1:]] == [25, 30]  # the latest 2

    result = run_cli("audit", "search", "--config", str(config), "--tool", "payments__refund",
                     "--since", "2026-01-01T00:10:00", "--until", "2026-01-01T00:20:00")
    seqs = [int(line.split()[0]) for line in result.stdout.splitlines()[1:]]
    assert seqs == [n for n in range(11, 21) if n % 5 and n % 3 % 2 == 1]

    result = run_cli("audit", "search", "--config", str(config), "--agent", "nobody")
    assert result.returncode == 0 and "no matching audit records" in result.stdout


async def test_store_query_filters(store: Store) -> None:
    await (await write_log(store, 30, ticking_clock(T0, 60.0), mixed_event)).close()
    rows = await store.audit_records(AuditQuery(kind="decision", tool="github__create_issue", since=T0 + 600,
                                                until=T0 + 1200, decision="allow"))
    assert [r["seq"] for r in rows] == [n for n in range(11, 21) if n % 5 and n % 3 == 0 and n % 3 % 2 == 0]
    rows = await store.audit_records(AuditQuery(after_seq=25, before_seq=28))
    assert [r["seq"] for r in rows] == [26, 27]


def test_parse_time() -> None:
    assert parse_time("2026-01-01") == T0
    assert parse_time("2026-01-01T01:00:00+01:00") == T0
    assert parse_time(str(T0)) == T0


# redaction


def test_preview_redacts_every_value_of_sensitive_tools() -> None:
    args = {"amount": 12, "payee": "Alice", "note": "thanks"}
    for classes in (["financial"], ["internal", "PII"], ["secrets"], ["phi"], ["credentials"], ["secret"]):
        assert redacted_preview(args, classes) == dict.fromkeys(args, REDACTED)


def test_preview_redacts_sensitive_keys_and_credential_values() -> None:
    args = {
        "password": "hunter2", "apiKey": "k", "X-Auth-Token": "t", "Authorization": "x", "client_secret": "s",
        "ssn": "123-45-6789", "card_number": "4111", "cvv": 123, "db_credentials": "c",
        "header": "Bearer abc.def", "blob": "eyJhbGciOi.eyJzdWIiOiJ4.sig", "gh": "ghp_abcdefghijklmnop",
        "title": "hello", "classname": "Widget", "author": "bob", "discard": False,
    }
    preview = redacted_preview(args, ["internal"])
    assert preview is not None
    sensitive = ["password", "apiKey", "X-Auth-Token", "Authorization", "client_secret", "ssn", "card_number",
                 "cvv", "db_credentials", "header", "blob", "gh"]
    assert {key: preview[key] for key in sensitive} == dict.fromkeys(sensitive, REDACTED)
    assert preview["classname"] == "Widget" and preview["author"] == "bob" and preview["discard"] is False
    assert "hunter2" not in json.dumps(preview)


def test_preview_truncates_and_summarizes() -> None:
    args = {"body": "x" * 500, "count": 3, "ratio": 0.5, "nested": {"a": 1, "b": {"token": "s"}, "c": 3},
            "items": [1, 2, 3, 4, 5], "one": ["x"], "none": None}
    preview = redacted_preview(args, [], max_chars=140)
    assert preview == {"body": "x" * 19 + "…", "count": 3, "ratio": 0.5, "nested": "{3 keys}",
                       "items": "[5 items]", "one": "[1 item]", "none": None}
    assert redacted_preview({"s": "short"}, []) == {"s": "short"}
    assert redacted_preview(None, ["pii"]) is None


def test_preview_caps_the_number_of_keys() -> None:
    preview = redacted_preview({f"k{i}": i for i in range(50)}, [])
    assert preview is not None and len(preview) == 21 and preview["..."] == "30 more keys"


# failures


async def test_write_failure_raises_logs_and_keeps_records(store: Store, db: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(store, retry_first_s=0.01, retry_max_s=0.02)
    await log.open()
    await log.record_durable(decision(1))
    # Make the database read-only for the store's own connection, as a full disk or a
    # remounted filesystem would: SQLite refuses the write.
    await store._run(lambda conn: conn.execute("PRAGMA query_only = ON"))  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="narrowgate.audit"), pytest.raises(AuditUnavailable):
        await log.record_durable(decision(2))
    assert any(r.levelno == logging.ERROR and "audit log write failed" in r.getMessage() for r in caplog.records)
    assert not log.healthy and log.pending == 1
    log.record(decision(3))
    with pytest.raises(AuditUnavailable, match="failing"):  # refused at once while the store fails
        await log.record_durable(decision(4))

    await store._run(lambda conn: conn.execute("PRAGMA query_only = OFF"))  # type: ignore[attr-defined]
    await asyncio.wait_for(log.flush(), 5)
    assert log.healthy
    rows = raw_rows(db)
    assert [json.loads(row["detail"])["n"] for row in rows] == [1, 2, 3, 4]  # kept, in order, once
    assert verify_chain(_decoded(rows)) == []
    await log.close()


async def test_closed_store_makes_record_durable_fail(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(f"sqlite:///{db}")
    await store.migrate()
    log = AuditLog(store, retry_first_s=0.01, retry_max_s=0.02)
    await log.open()
    await store.close()
    with caplog.at_level(logging.ERROR, logger="narrowgate.audit"), pytest.raises(AuditUnavailable):
        await log.record_durable(decision(1))
    assert any("audit log write failed" in r.getMessage() and "closed" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="narrowgate.audit"):
        await log.close()
    assert any("not written" in r.getMessage() for r in caplog.records)  # the loss is reported, not silent


async def test_full_queue_drops_loudly(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(store, max_pending=2)
    with caplog.at_level(logging.ERROR, logger="narrowgate.audit"):
        log.record(decision(1))
        log.record(decision(2))
        log.record(decision(3))
        with pytest.raises(AuditUnavailable):
            await log.record_durable(decision(4))
    assert log.dropped == 2 and any("dropped" in r.getMessage() for r in caplog.records)
    await log.open()
    await log.flush()
    assert [r["detail"]["n"] for r in await stored_rows(store)] == [1, 2]
    await log.close()


# crash consistency

CRASH_WRITER = textwrap.dedent("""
    import asyncio, sys
    from gateway.audit import AuditEvent, AuditLog
    from gateway.store import open_store

    async def worker(log, w):
        for i in range(10_000_000):
            n = w * 10_000_000 + i
            if i % 3:
                log.record(AuditEvent("decision", "tools/call", "bot", detail={"n": n, "durable": False}))
                continue
            await log.record_durable(AuditEvent("decision", "tools/call", "bot", decision="deny",
                                                detail={"n": n, "durable": True}))
            sys.stdout.write(f"{n}\\n")
            sys.stdout.flush()

    async def main():
        store = open_store(sys.argv[1])
        await store.migrate()
        log = AuditLog(store)
        await log.open()
        await asyncio.gather(*(worker(log, w) for w in range(8)))

    asyncio.run(main())
""")


@pytest.fixture(params=BACKENDS)
async def crash_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    """The crash test's state: a SQLite file, then a PostgreSQL database of its own."""
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    async with store_backend(request.param, tmp_path, postgres) as backend:
        yield backend


@pytest.fixture
def crash_writer(crash_backend: StoreBackend) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", CRASH_WRITER, crash_backend.url], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(10)


async def test_sigkill_mid_stream_loses_no_acknowledged_record(crash_writer: subprocess.Popen[str],
                                                                crash_backend: StoreBackend) -> None:
    assert crash_writer.stdout is not None
    acknowledged: list[int] = []
    while len(acknowledged) < 300:
        line = crash_writer.stdout.readline()
        assert line, crash_writer.stderr.read() if crash_writer.stderr else "writer exited"
        acknowledged.append(int(line))
    os.kill(crash_writer.pid, signal.SIGKILL)
    crash_writer.wait(10)
    acknowledged += [int(line) for line in crash_writer.stdout.read().split()]  # acked before the kill landed

    store = await crash_backend.open(migrate=False)  # a fresh connection, as the next process start would have
    rows = await stored_rows(store)
    await store.close()
    assert verify_chain(rows) == []
    assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1))
    present = {row["detail"]["n"] for row in rows}
    assert set(acknowledged) <= present
    assert len(rows) > len(acknowledged)  # the non-durable ones around them were written too


async def test_a_time_window_is_read_page_by_page_without_sorting_it_each_time(store: Store, db: Path) -> None:
    # Left to choose, SQLite took the `at` index for a window and sorted all of it for every page: reading a
    # window page by page (right-sizing, evidence, replay) was quadratic in it. Now a seq walk, unsorted.
    log = await write_log(store, 3000, make=lambda n: decision(n, agent_id=f"a{n % 3}", tool=f"t{n % 2}"))
    await log.close()
    since, until = T0 + 500, T0 + 2500  # the ticking clock gives record n the time T0 + n - 1
    pages = [AuditQuery(since=since, until=until), AuditQuery(since=since, until=until, after_seq=1500),
             AuditQuery(since=since, until=until, after_seq=1500, agent_id="a1"),
             AuditQuery(since=since, until=until, after_seq=1500, tool="t0")]
    with sqlite3.connect(db) as conn:
        for query in pages:
            sql, params = sqlite_audit.select_sql(query)
            plan = " | ".join(str(step[-1]) for step in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "TEMP B-TREE" not in plan, (query, plan)
            got = [row["seq"] for row in await store.audit_records(query)]
            expected = [seq for seq in range(1, 3001) if since <= T0 + seq - 1 < until and seq > query.after_seq
                        and (query.before_seq is None or seq < query.before_seq)
                        and query.agent_id in (None, f"a{seq % 3}") and query.tool in (None, f"t{seq % 2}")]
            expected = expected[::-1] if query.newest_first else expected
            assert got == expected[:query.limit], query
