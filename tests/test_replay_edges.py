"""What-if replay at its edges, on a real store and a real engine: a decision made just before the window
(and retention) line but audited just after it, and candidate files the gateway cannot write.

The end-to-end proof is tests/test_policy_replay.py; these are the cases its scripted traffic cannot hit
on purpose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from gateway.admin.replay_api import settled_until
from gateway.audit.chain import unsealed_record
from gateway.audit.log import AuditLog
from gateway.audit.model import AuditEvent
from gateway.policy.engine import CedarRequest
from gateway.policy.recorder import DecisionRecorder
from gateway.privilege.replay import CandidateInvalid, Replay, Window, compile_candidate
from gateway.store import Store
from gateway.store.base import AuditedDecisionQuery, DecisionInputQuery, DecisionInputRow
from gateway.store.postgres_audit import audited_decisions_sql
from gateway.store.postgres_decision_inputs import select_sql as postgres_inputs_sql
from gateway.store.sqlite_audit import audited_decisions_sql as sqlite_audited_sql
from gateway.store.sqlite_decision_inputs import select, select_sql
from tests.support.store_backends import StoreBackend, store_backend
from tests.test_decision_recording import _cedar
from tests.test_policy_engine import WEDNESDAY, agent_principal, engine_for, facts, write_catalog

RETENTION_S = 7 * 86400.0


async def test_a_decision_requested_before_the_line_and_audited_after_it_is_replayed(store: Store,
                                                                                      tmp_path: Path) -> None:
    # `--since 7d` with the default 7 d retention: the window starts where retention ends. A decision whose
    # request time is a moment before that line and whose audit record is a moment after it is in the window
    # (by its audit record) and its input is still stored: it is replayed, not "past retention" (exit 2).
    audited_at = WEDNESDAY + 0.005
    now = audited_at - 0.001 + RETENTION_S
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    # The recorder's clock reads the decision's time until its input is written: the sweep's first pass finds
    # nothing past retention; only then is it `now`.
    clock = [WEDNESDAY]
    recorder = DecisionRecorder(store, engine, RETENTION_S, clock=lambda: clock[0], batch_window_s=0.01)
    await recorder.open()
    await asyncio.sleep(0)  # the sweep's first pass takes its cutoff now, under the decision's time
    principal = agent_principal(servers=("files",))
    tool = engine.bundle.catalog.tools["files__read_file"].entry
    seen: list[CedarRequest] = []
    decision = engine.decide_tool(principal, tool, {"path": "/a"}, facts(WEDNESDAY), seen=seen)
    recorder.note(principal, decision, "tool", tool.exposed_name, WEDNESDAY, seen)
    await recorder.flush()
    clock[0] = now
    event = AuditEvent(kind="decision", action="call", actor=principal.agent_id, agent_id=principal.agent_id,
                       tool=tool.exposed_name, decision=decision.outcome, decision_id=decision.decision_id)
    await store.append_audit([unsealed_record(event, audited_at)])
    window = Window(now - RETENTION_S, now)
    report = await Replay(engine, recorder.cipher, store, store, window, recorder.cutoff(window.until),
                          engine.version).run()
    assert (report["decisions"], report["replayed"], report["unchanged"]) == (1, 1, 1), report
    assert report["not_replayable"]["total"] == 0
    await recorder.close()


@pytest.mark.parametrize("files", [
    {"policies/a\x00.cedar": "permit(principal, action, resource);"},  # a name no file system takes
    {"policies/x.cedar": "", "policies/x.cedar/y.cedar": ""},  # a file where a directory must go
    {f"policies/{'n' * 300}.cedar": ""},  # longer than a file name may be
], ids=["nul", "file-as-directory", "long-name"])
def test_a_candidate_file_that_cannot_be_written_is_an_invalid_candidate(tmp_path: Path,
                                                                       files: dict[str, str]) -> None:
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    cedar = tmp_path / "cedar"
    live = {"schema.cedarschema": (cedar / "schema.cedarschema").read_text(encoding="utf-8")}
    with pytest.raises(CandidateInvalid) as refused:
        compile_candidate(engine, {**live, **files})
    assert len(refused.value.problems) == 1 and "cannot be written" in refused.value.problems[0]
    assert str(tmp_path) not in refused.value.problems[0] and "narrowgate-candidate-" not in refused.value.problems[0]


async def test_sqlite_pages_recorded_inputs_by_rowid_without_sorting_the_window(tmp_path: Path) -> None:
    # Left to choose, SQLite took the `at` (or agent) index and sorted the whole window, payloads and all,
    # for every page of 1000: a replay quadratic in the window (60k rows: 3.5 s; by rowid 0.1 s).
    rows = [DecisionInputRow(f"dec_{i}", WEDNESDAY + i, f"a{i % 3}", "tool", "files__read_file", "allow", b"x" * 64)
            for i in range(3000)]
    async with store_backend("sqlite", tmp_path, None) as backend:
        store = await backend.open()
        await store.append_decision_inputs(rows)
        await store.close()
        assert backend.path is not None
        pages = [DecisionInputQuery(since=WEDNESDAY, until=WEDNESDAY + 1e6),
                 DecisionInputQuery(since=WEDNESDAY, until=WEDNESDAY + 1e6, after_seq=1500),
                 DecisionInputQuery(since=WEDNESDAY, until=WEDNESDAY + 1e6, agent_id="a1", after_seq=1500)]
        with sqlite3.connect(backend.path) as conn:
            for query in pages:
                sql, params = select_sql(query)
                plan = " | ".join(str(step[-1]) for step in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
                assert "TEMP B-TREE" not in plan, (query, plan)
                expected = [r.decision_id for r in rows[query.after_seq:] if query.agent_id in (None, r.agent_id)]
                assert [r.decision_id for r in select(conn, query)] == expected[:query.limit]


async def test_a_call_decided_while_the_replay_settles_is_not_reported_as_not_recorded(store: Store,
                                                                                     tmp_path: Path) -> None:
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, RETENTION_S, batch_window_s=60.0)  # only flushes write
    await recorder.open()
    audit = AuditLog(store)
    await audit.open()
    principal = agent_principal(servers=("files",))
    tool = engine.bundle.catalog.tools["files__read_file"].entry

    def decide() -> AuditEvent:
        """As the authorizer decides a call: noted for recording, then its audit record made."""
        seen: list[CedarRequest] = []
        now = time.time()
        decision = engine.decide_tool(principal, tool, {"path": "/a"}, facts(now), seen=seen)
        recorder.note(principal, decision, "tool", tool.exposed_name, now, seen)
        return AuditEvent(kind="decision", action="call", actor=principal.agent_id, agent_id=principal.agent_id,
                          tool=tool.exposed_name, decision=decision.outcome, decision_id=decision.decision_id)

    earlier = decide()
    await recorder.flush()
    audit.record(earlier)  # its input is stored, its audit record still queued as the replay starts

    async def meanwhile() -> None:  # runs as soon as settling waits (for the audit writer)
        audit.record(decide())

    late = asyncio.create_task(meanwhile())
    until = await settled_until(recorder, audit)
    await late
    await audit.flush()
    window = Window(until - 3600, until)
    report = await Replay(engine, recorder.cipher, store, store, window, recorder.cutoff(until), engine.version).run()
    assert report["not_replayable"]["total"] == 0, report
    assert report["replayed"] == report["unchanged"] == report["decisions"] >= 1
    await recorder.close()
    await audit.close()


async def test_a_window_replayed_in_many_slices_reports_exactly_what_one_slice_does(store: Store,
                                                                                   tmp_path: Path) -> None:
    # Replay holds one time slice of audited ids and inputs at a time. Audit records land up to 280 s after
    # their decision (across slice edges, some after the window), some decisions were never recorded, some
    # never audited, some inputs are older than the window or past retention: slicing changes nothing.
    cedar = _cedar(tmp_path)
    engine = engine_for(cedar, write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, 30 * 86400.0, clock=lambda: WEDNESDAY, batch_window_s=60.0)
    await recorder.open()
    tools = [engine.bundle.catalog.tools[name].entry for name in ("files__read_file", "files__write_file",
                                                                    "files__wipe")]
    principals = [agent_principal("a1", servers=("files",)), agent_principal("a2", servers=("files",))]
    audits, expected = [], set()
    since, until = WEDNESDAY + 900, WEDNESDAY + 4800
    for i in range(150):
        at, principal, tool = WEDNESDAY + 30 + i * 37.3, principals[i % 2], tools[i % 3]
        seen: list[CedarRequest] = []
        decision = engine.decide_tool(principal, tool, {"path": f"/f{i}"}, facts(at), seen=seen)
        if i % 11:
            recorder.note(principal, decision, "tool", tool.exposed_name, at, seen)
        audited_at = at + (0.005, 45.0, 280.0, 0.5)[i % 4]
        if i % 13:
            audits.append(unsealed_record(AuditEvent(
                kind="decision", action="call", actor=principal.agent_id, agent_id=principal.agent_id,
                tool=tool.exposed_name, decision=decision.outcome, decision_id=decision.decision_id), audited_at))
        if (i % 13 and since <= audited_at < until) or (i % 11 and since <= at < until):
            expected.add(decision.decision_id)
    await recorder.flush()
    await store.append_audit(sorted(audits, key=lambda r: r["at"]))
    live = {str(p.relative_to(cedar)): p.read_text(encoding="utf-8") for p in cedar.rglob("*") if p.is_file()}
    del live["policies/30-step-up-risk.cedar"]  # the candidate loosens: step-ups become allows
    candidate = compile_candidate(engine, live)

    async def replay(slice_s: float, agent_id: str | None = None) -> dict[str, object]:
        return await Replay(candidate, recorder.cipher, store, store, Window(since, until, agent_id),
                            since + 1200, engine.version, slice_s=slice_s).run()

    whole = await replay(1e9)
    assert whole["decisions"] == len(expected)
    assert whole["flipped"] and whole["unchanged"] and whole["loosening"], whole
    missing = whole["not_replayable"]
    assert isinstance(missing, dict) and missing["not_recorded"] and missing["past_retention"], whole
    for slice_s in (100.0, 450.0, 600.0):  # shorter than the edge, longer, and the default
        assert await replay(slice_s) == whole, slice_s
    assert await replay(100.0, "a2") == await replay(1e9, "a2")
    await recorder.close()


async def test_replay_pages_a_time_range_by_at_and_seq_without_sorting_it(store: Store, backend: StoreBackend) -> None:
    # Each replay slice is read in keyset pages in (at, seq) order: through an index holding both (PostgreSQL's
    # (at, seq) index of migration 11, SQLite's (at) index with its rowid), never by sorting the range per page.
    rows = [DecisionInputRow(f"dec_{i}", WEDNESDAY + i // 2, f"a{i % 3}", "tool", "files__read_file", "allow",
                             b"x" * 64) for i in range(600)]
    await store.append_decision_inputs(rows)
    await store.append_audit([unsealed_record(AuditEvent(kind="decision", action="call", actor="a1", agent_id="a1",
                                                         decision="allow", decision_id=r.decision_id), r.at)
                              for r in rows])
    inputs = DecisionInputQuery(since=WEDNESDAY + 10, until=WEDNESDAY + 200, by_time=True, limit=50)
    audited = AuditedDecisionQuery(WEDNESDAY + 10, WEDNESDAY + 200, limit=50)
    read, after = [], None
    while page := await store.decision_inputs(dataclasses.replace(inputs, after=after)):
        read += [r.decision_id for r in page]
        after = (page[-1].at, page[-1].seq)
    assert read == [r.decision_id for r in rows if WEDNESDAY + 10 <= r.at < WEDNESDAY + 200]
    ids, after = [], None
    while decisions := await store.audited_decisions(dataclasses.replace(audited, after=after)):
        ids += [d.decision_id for d in decisions]
        after = (decisions[-1].at, decisions[-1].seq)
    assert ids == read
    later = (WEDNESDAY + 50, 7)
    queries = [(select_sql(dataclasses.replace(inputs, after=later)),
                postgres_inputs_sql(dataclasses.replace(inputs, after=later))),
               (sqlite_audited_sql(dataclasses.replace(audited, after=later)),
                audited_decisions_sql(dataclasses.replace(audited, after=later)))]
    if backend.path is not None:
        with sqlite3.connect(backend.path) as conn:
            for (sql, params), _ in queries:
                plan = " | ".join(str(step[-1]) for step in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
                assert "TEMP B-TREE" not in plan, plan
        return
    conn = await asyncpg.connect(backend.url)
    try:
        await conn.execute("SET enable_seqscan = off")  # a table this small would be scanned whole otherwise
        for _, (sql, params) in queries:
            plan = " | ".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params))
            assert "Sort" not in plan and "_at_seq" in plan, plan
    finally:
        await conn.close()
