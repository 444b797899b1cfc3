"""Recorded decision inputs on both store backends (SQLite and PostgreSQL): the table, the sealing, what a
replay reads back, and that a failing store loses recordings (counted, logged), never a decision.

The end-to-end proof (a real gateway, several hundred calls, candidate policy sets) is
tests/test_policy_replay.py; here the recorder runs against each real backend with a real engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.policy import recorder as recorder_module
from gateway.policy.engine import CedarRequest, PolicyEngine
from gateway.policy.recorded import InputCipher, UnreadableRecord
from gateway.policy.recorder import SEAL_CHUNK, DecisionRecorder, Noted
from gateway.store import Store
from gateway.store.base import DecisionInputQuery, DecisionInputRow
from tests.support.store_backends import StoreBackend
from tests.test_policy_engine import (
    REPO_CEDAR,
    WEDNESDAY,
    WEDNESDAY_NIGHT,
    agent_principal,
    engine_for,
    facts,
    write_catalog,
)

SECRET = "sk_live_Recorded0Secret1Memo"
# Retention for recorders given the fixed dates above (March 2026): with an hour, the sweep's first pass deletes
# what was recorded at those dates whenever the write happens to come first (a race, not a loss).
KEPT_S = 100 * 365 * 86400.0


def row(decision_id: str, at: float, agent_id: str = "a1") -> DecisionInputRow:
    payload = b"\x00sealed" + at.hex().encode()
    return DecisionInputRow(decision_id, at, agent_id, "tool", "files__read_file", "allow", payload)


async def test_the_table_appends_reads_by_window_and_agent_and_deletes_by_age(store: Store,
                                                                               backend: StoreBackend) -> None:
    await store.append_decision_inputs([row("dec_1", 100.0), row("dec_2", 200.0, "a2"), row("dec_3", 300.0)])
    everything = await store.decision_inputs(DecisionInputQuery(since=0))
    assert [r.decision_id for r in everything] == ["dec_1", "dec_2", "dec_3"]
    assert everything[1].payload == row("dec_2", 200.0).payload and everything[1].agent_id == "a2"
    assert [r.decision_id for r in await store.decision_inputs(DecisionInputQuery(since=150, until=300))] == ["dec_2"]
    assert [r.decision_id for r in await store.decision_inputs(DecisionInputQuery(since=0, agent_id="a1"))] == [
        "dec_1", "dec_3"]
    page = await store.decision_inputs(DecisionInputQuery(since=0, after_seq=everything[0].seq, limit=1))
    assert [r.decision_id for r in page] == ["dec_2"]
    assert await store.delete_decision_inputs(250.0) == 2
    assert [r.decision_id for r in await store.decision_inputs(DecisionInputQuery(since=0))] == ["dec_3"]
    assert await backend.fetch("SELECT decision_id FROM decision_inputs") == [("dec_3",)]


async def test_the_sweep_deletes_in_chunks_until_nothing_is_past_retention(store: Store, backend: StoreBackend,
                                                                           tmp_path: Path) -> None:
    await store.append_decision_inputs([row(f"dec_{i}", 100.0 + i) for i in range(25)] + [row("dec_new", 9000.0)])
    assert await store.delete_decision_inputs(200.0, 10) == 10  # one statement deletes at most a chunk
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, 0, clock=lambda: 500.0, sweep_chunk=10)  # off: swept at open
    await recorder.open()
    assert recorder.status()["swept"] == 15
    assert await backend.fetch("SELECT decision_id FROM decision_inputs") == [("dec_new",)]
    await recorder.close()


async def test_closing_while_a_batch_is_being_written_lets_it_finish(store: Store, tmp_path: Path) -> None:
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, KEPT_S, batch_window_s=0.001)
    await recorder.open()
    principal = agent_principal(servers=("files",))
    tool = engine.bundle.catalog.tools["files__read_file"].entry
    for i in range(1500):
        seen: list[CedarRequest] = []
        decision = engine.decide_tool(principal, tool, {"path": f"/f{i}"}, facts(WEDNESDAY), seen=seen)
        recorder.note(principal, decision, "tool", tool.exposed_name, WEDNESDAY, seen)
    for _ in range(5000):  # until the writer took the batch: it is being built and written now
        if not recorder.status()["pending"]:
            break
        await asyncio.sleep(0.001)
    assert recorder.status()["recorded"] == 0
    await recorder.close()
    assert (recorder.status()["recorded"], recorder.status()["lost"]) == (1500, 0)
    assert len(await store.decision_inputs(DecisionInputQuery(since=0, limit=2000))) == 1500


async def test_a_big_batch_is_sealed_on_the_loop_a_chunk_at_a_time(store: Store, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer seals on the loop's own thread (a worker thread took the interpreter lock back and forth with
    the loop for every record it encrypted), SEAL_CHUNK records at a time, and other work on the loop runs between
    two chunks: a batch of thousands never holds the loop for all of them at once."""
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, KEPT_S, batch_window_s=3600.0)  # the writer waits: flush() writes
    await recorder.open()
    note_reads(engine, recorder, 3 * SEAL_CHUNK + 1)
    sealed: list[int] = []
    threads: set[int] = set()
    seal = recorder._rows

    def counted(batch: list[Noted]) -> list[DecisionInputRow]:
        threads.add(threading.get_ident())
        rows = seal(batch)
        sealed.append(len(rows))
        return rows

    monkeypatch.setattr(recorder, "_rows", counted)
    seen_between: list[int] = []

    async def another_call() -> None:
        while sum(sealed) < 3 * SEAL_CHUNK + 1:
            seen_between.append(sum(sealed))
            await asyncio.sleep(0)

    other = asyncio.create_task(another_call())
    await asyncio.sleep(0)
    await recorder.flush()
    await other
    assert sealed == [SEAL_CHUNK, SEAL_CHUNK, SEAL_CHUNK, 1]
    assert threads == {threading.get_ident()}
    assert {SEAL_CHUNK, 2 * SEAL_CHUNK, 3 * SEAL_CHUNK} <= set(seen_between)  # it ran after each chunk
    assert recorder.status()["recorded"] == 3 * SEAL_CHUNK + 1
    assert len(await store.decision_inputs(DecisionInputQuery(since=0, limit=1000))) == 3 * SEAL_CHUNK + 1
    await recorder.close()


async def test_what_is_noted_while_a_batch_is_written_waits_for_the_next_window(store: Store,
                                                                                tmp_path: Path) -> None:
    """The writer takes what gathered in one window; what is noted while that is written waits for the next
    window, so a steady stream of calls makes one batch (one commit) per window, not one per write."""
    held = HeldStore(store)
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(held, engine, KEPT_S, batch_window_s=0.01)  # type: ignore[arg-type]
    await recorder.open()
    note_reads(engine, recorder, 3)
    await until(lambda: bool(held.appended))  # the first window's batch is being written
    assert held.appended == [3]
    recorder._batch_window_s = 3600.0  # the next window: longer than this test
    note_reads(engine, recorder, 4)  # while the first batch is being written
    held.released.set()
    await until(lambda: recorder.status()["recorded"] == 3)
    await asyncio.sleep(0.05)  # the old writer would have taken the four by now
    assert held.appended == [3] and recorder.status()["recorded"] == 3 and recorder.status()["pending"] == 4
    await recorder.flush()
    assert held.appended == [3, 4] and recorder.status()["recorded"] == 7
    await recorder.close()


async def test_a_flush_waits_for_every_batch_in_hand_and_survives_being_cancelled(store: Store,
                                                                                   tmp_path: Path) -> None:
    """flush() returns once everything noted before it is in, including a batch another writer took first; and
    a flush cancelled half-way loses nothing (each batch is written by a task of its own)."""
    held = HeldStore(store)
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(held, engine, KEPT_S, batch_window_s=3600.0)  # type: ignore[arg-type]
    await recorder.open()
    note_reads(engine, recorder, 5)
    first = asyncio.create_task(recorder.flush())
    await until(lambda: bool(held.appended))  # the first flush has taken all five and is held writing them
    assert held.appended == [5] and recorder.status()["pending"] == 0
    second = asyncio.create_task(recorder.flush())  # nothing left in the queue: it waits for the batch in hand
    await asyncio.sleep(0.05)
    assert not second.done()
    first.cancel()  # the batch goes in all the same
    held.released.set()
    await second
    assert recorder.status()["recorded"] == 5 and recorder.status()["lost"] == 0
    assert len(await store.decision_inputs(DecisionInputQuery(since=0))) == 5
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await recorder.close()


async def test_closing_while_flushes_are_writing_waits_for_every_batch(store: Store, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """close() returns only once every batch is in, those that flushes still in flight took included (the store
    closes after the recorder: a batch written after close() is lost)."""
    monkeypatch.setattr(recorder_module, "MAX_BATCH", 2)
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, KEPT_S, batch_window_s=3600.0)
    await recorder.open()
    note_reads(engine, recorder, 5)
    flushes = [asyncio.create_task(recorder.flush()) for _ in range(2)]
    await asyncio.sleep(0)
    await recorder.close()
    assert (recorder.status()["recorded"], recorder.status()["lost"], recorder.status()["pending"]) == (5, 0, 0)
    assert len(await store.decision_inputs(DecisionInputQuery(since=0))) == 5
    await asyncio.gather(*flushes)


async def test_recorded_inputs_are_sealed_and_decide_again_as_they_were(store: Store, backend: StoreBackend,
                                                                        tmp_path: Path) -> None:
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, KEPT_S, batch_window_s=0.01)
    await recorder.open()
    principal = agent_principal(servers=("payments",))
    tool = engine.bundle.catalog.tools["payments__pay"].entry
    arguments = {"amount": 5, "payee": {"name": "Bo", "region": "eu"}, "memo": SECRET}
    decided = {}
    for when in (WEDNESDAY, WEDNESDAY_NIGHT):  # a write inside working hours, then after them (step-up)
        seen: list[CedarRequest] = []
        decision = engine.decide_tool(principal, tool, arguments, facts(when), seen=seen)
        recorder.note(principal, decision, "tool", tool.exposed_name, when, seen, tool.data_classes)
        decided[decision.decision_id] = decision.outcome
    assert sorted(decided.values()) == ["allow", "step_up"]
    await recorder.flush()
    rows = await store.decision_inputs(DecisionInputQuery(since=0))
    assert {r.decision_id: r.outcome for r in rows} == decided
    for stored in rows:
        document = recorder.cipher.open(stored.decision_id, stored.payload)
        assert document["context"]["input"]["memo"] == SECRET and document["arguments"]["memo"] == SECRET
        assert document["context"]["request"]["time"] == int(stored.at)  # the recorded time travels with it
        assert engine.redecide(document).outcome == stored.outcome
        with pytest.raises(UnreadableRecord):  # a payload moved to another row does not open
            recorder.cipher.open("dec_other", stored.payload)
        with pytest.raises(UnreadableRecord):  # nor with another key
            InputCipher(b"k" * 32).open(stored.decision_id, stored.payload)
    raw = await backend.fetch("SELECT payload FROM decision_inputs")
    assert len(raw) == 2 and not any(SECRET.encode() in bytes(p) or b"payments" in bytes(p) for (p,) in raw)
    await recorder.close()


async def test_a_failing_store_loses_recordings_not_decisions(store: Store, backend: StoreBackend, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, KEPT_S, batch_window_s=0.01)
    await recorder.open()
    await backend.fail_inserts_into("decision_inputs", "disk full")
    principal = agent_principal(servers=("files",))
    tool = engine.bundle.catalog.tools["files__read_file"].entry
    seen: list[CedarRequest] = []
    decision = engine.decide_tool(principal, tool, {"path": "/a"}, facts(), seen=seen)
    with caplog.at_level(logging.ERROR, "narrowgate.policy.recorder"):
        recorder.note(principal, decision, "tool", tool.exposed_name, WEDNESDAY, seen)
        await recorder.flush()
    assert decision.outcome == "allow"
    assert (recorder.recorded, recorder.lost) == (0, 1)
    assert "decision input recording lost 1 so far" in caplog.text and "the calls were not affected" in caplog.text
    await recorder.close()


async def test_a_full_queue_loses_recordings_not_decisions(store: Store, tmp_path: Path) -> None:
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, KEPT_S, max_pending=2)
    principal = agent_principal(servers=("files",))
    tool = engine.bundle.catalog.tools["files__read_file"].entry
    for path in ("/a", "/b", "/c"):  # the writer has not run yet: the third finds the queue full
        seen: list[CedarRequest] = []
        decision = engine.decide_tool(principal, tool, {"path": path}, facts(), seen=seen)
        recorder.note(principal, decision, "tool", tool.exposed_name, WEDNESDAY, seen)
        assert decision.outcome == "allow"
    await recorder.open()
    await recorder.flush()
    assert (recorder.recorded, recorder.lost) == (2, 1)
    assert len(await store.decision_inputs(DecisionInputQuery(since=0))) == 2
    await recorder.close()


async def test_recording_off_records_nothing_and_deletes_what_was_recorded(store: Store, tmp_path: Path) -> None:
    await store.append_decision_inputs([row("dec_old", 100.0)])
    engine = engine_for(_cedar(tmp_path), write_catalog(tmp_path / "catalog"))
    recorder = DecisionRecorder(store, engine, 0.0)
    await recorder.open()
    principal = agent_principal(servers=("files",))
    tool = engine.bundle.catalog.tools["files__read_file"].entry
    decision = engine.decide_tool(principal, tool, {"path": "/a"}, facts(), seen=[])
    recorder.note(principal, decision, "tool", tool.exposed_name, WEDNESDAY, [])
    await recorder.flush()
    assert await store.decision_inputs(DecisionInputQuery(since=0)) == []
    assert recorder.status()["enabled"] is False
    await recorder.close()


class HeldStore:
    """`store`, each append of decision inputs held until `released` is set; `appended`: each batch's size."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.released = asyncio.Event()
        self.appended: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def append_decision_inputs(self, rows: list[DecisionInputRow]) -> None:
        self.appended.append(len(rows))
        await self.released.wait()
        await self.store.append_decision_inputs(rows)


def note_reads(engine: PolicyEngine, recorder: DecisionRecorder, count: int) -> None:
    """`count` decisions of one agent reading files (each its own path), noted for recording."""
    principal = agent_principal(servers=("files",))
    tool = engine.bundle.catalog.tools["files__read_file"].entry
    for i in range(count):
        seen: list[CedarRequest] = []
        decision = engine.decide_tool(principal, tool, {"path": f"/f{i}"}, facts(WEDNESDAY), seen=seen)
        recorder.note(principal, decision, "tool", tool.exposed_name, WEDNESDAY, seen)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):  # 5 s at most
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("waited 5 s in vain")


def _cedar(tmp_path: Path) -> Path:
    target = tmp_path / "cedar"
    shutil.copytree(REPO_CEDAR, target, ignore=shutil.ignore_patterns("tests", "README.md"))
    return target
