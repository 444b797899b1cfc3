"""Decision-input recording benchmark: the CPU that recording adds per decision, in process.

``.venv/bin/python -m bench.recording [--calls N]``

On bench/policy.py's 100-tool catalog and ~100 policies, deciding bench/policy.py's call mix as a running
gateway decides it (in a task, with 64 calls of chain history), with the deciding thread's CPU clock:

1. the request path: what the Authorizer adds per decision while recording is on (a list the engine puts
   its Cedar request in, and the recorder's ``note``), timed alone; ``decide_tool`` beside it for scale;
2. the writer, per record: building the document and encrypting it (the recorder's writer task,
   on the loop), and appending it to a SQLite store in batches of 500 (the store's thread; process CPU).

The sum of the three is the CPU recording adds to one decision; compare it with the gateway's CPU
per call from ``bench.run`` (whose ``--compare-unrecorded`` measures the same end to end, noisier).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.policy import (
    CASES,
    CatalogSet,
    build_engine,
    fixed_principal,
    gateway_facts,
    timed,
    write_catalog,
    write_policies,
)
from gateway.policy.engine import CedarRequest, RequestFacts
from gateway.policy.recorder import DecisionRecorder, Noted
from gateway.store import open_store

CATALOG_TOOLS = 100
BATCH = 500


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Narrowgate decision-input recording benchmark (in process)")
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per measurement (default 5000)")
    args = parser.parse_args(argv)
    if not 100 <= args.calls <= 200_000:
        parser.error("--calls must be between 100 and 200000")
    with tempfile.TemporaryDirectory(prefix="narrowgate-bench-recording-") as tmp:
        write_policies(Path(tmp) / "cedar")
        catalog_set = write_catalog(Path(tmp) / "catalog", CATALOG_TOOLS)
        facts = gateway_facts(catalog_set.catalog, fixed_principal())
        return asyncio.run(run(args.calls, Path(tmp), catalog_set, facts))


async def run(calls: int, tmp: Path, catalog_set: CatalogSet, facts: RequestFacts) -> int:
    engine, _ = build_engine(tmp / "cedar", catalog_set)
    store = open_store(f"sqlite:///{tmp / 'state.db'}")
    await store.migrate()
    recorder = DecisionRecorder(store, engine, 7 * 86400.0, max_pending=10 * calls)
    await recorder.cipher.load(store)
    principal = fixed_principal()
    cases = [(catalog_set.catalog.tools[name], arguments) for name, arguments, _ in CASES]

    notes: list[tuple[Any, ...]] = []
    for i in range(len(cases)):
        tool, arguments = cases[i]
        seen: list[CedarRequest] = []
        decision = engine.decide_tool(principal, tool, arguments, facts, seen=seen)
        notes.append((decision, tool, seen[0]))

    def decide(i: int) -> None:
        engine.decide_tool(principal, *cases[i % len(cases)], facts)

    def request_path(i: int) -> None:
        # What the Authorizer adds per decision while recording: a list for the request, and the note.
        decision, tool, request = notes[i % len(notes)]
        seen: list[CedarRequest] = []
        seen.append(request)
        recorder.note(principal, decision, "tool", tool.exposed_name, facts.now, seen, tool.data_classes)
        if len(recorder._pending) >= BATCH:  # as the writer does every half second: the queue stays short
            batch.extend(recorder._pending)
            recorder._pending.clear()

    batch: list[Noted] = []
    decided = timed(decide, calls, calls // 10)
    path = min((timed(request_path, calls, calls // 10) for _ in range(3)), key=lambda s: s.p50_us)
    batch = batch[:calls]
    started = time.thread_time_ns()
    rows = recorder._rows(batch)
    seal_us = (time.thread_time_ns() - started) / 1000 / len(batch)
    started = time.process_time_ns()
    for i in range(0, len(rows), BATCH):
        await store.append_decision_inputs(rows[i:i + BATCH])
    insert_us = (time.process_time_ns() - started) / 1000 / len(rows)
    await store.close()
    size = sum(len(r.payload) for r in rows) / len(rows)
    path_us = path.p50_us
    print(f"decide_tool p50 {decided.p50_us:.1f} us (for scale); recording on the request path p50 {path_us:.1f} us")
    print(f"writer per record: build + encrypt {seal_us:.1f} us, SQLite append {insert_us:.1f} us; "
          f"payload {size:.0f} bytes")
    print(f"recording adds {path_us + seal_us + insert_us:.1f} us CPU per decision "
          f"({path_us:.1f} us of it on the request path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
