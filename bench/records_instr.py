"""What recording one call costs, in process: the audit record and the decision input, request path and writers.

``valgrind --tool=callgrind .venv/bin/python -m bench.records_instr N [all|path|facts|rows]`` at N=0 and N=2000:
the difference over N is the instructions one call's recording executes (deterministic, unlike CPU time on a
shared machine); ``path`` counts the request path alone (what is queued is dropped, nothing is written);
``facts`` counts only ``Authorizer.facts``, the request facts the decide stage builds per call before Cedar;
``rows`` the decision recorder's sealing alone (``DecisionRecorder._rows``: each noted decision's
document built, serialized and encrypted), over N noted decisions of the mix, nothing written.

Per call, as the Authorizer does it for a tool decision (the decision itself is made once per case beforehand,
so Cedar is not counted): a fresh decision id, the recorder's ``note``, the audit event with its argument
digest and redacted preview, ``AuditLog.record``. The writers run as the gateway runs them, with fixed batch
sizes instead of time windows (so the count does not depend on timing): the audit writer every AUDIT_BATCH
calls (a 20 ms group window at ~800 calls/s), the decision recorder every RECORD_BATCH calls (its 0.5 s
window), both into one SQLite store with ``synchronous=FULL``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.policy import CASES, CatalogSet, build_engine, fixed_principal, gateway_facts, write_catalog, write_policies
from gateway.audit import AuditLog
from gateway.audit.digests import DigestKey
from gateway.policy.authorizer import Authorizer
from gateway.policy.engine import CedarRequest, RequestFacts, new_decision_id
from gateway.policy.recorder import DecisionRecorder, Noted
from gateway.store import open_store

CATALOG_TOOLS = 20
AUDIT_BATCH = 16
RECORD_BATCH = 400


async def run(calls: int, tmp: Path, mode: str, catalog_set: CatalogSet, facts: RequestFacts) -> None:
    principal = fixed_principal()
    engine, _ = build_engine(tmp / "cedar", catalog_set)
    store = open_store(f"sqlite:///{tmp / 'state.db'}")
    await store.migrate()
    digests = DigestKey()
    await digests.load(store)
    audit = AuditLog(store, digests=digests.keyed, max_batch=AUDIT_BATCH)
    audit.head = await store.audit_head()
    recorder = DecisionRecorder(store, engine, 7 * 86400.0, max_pending=10 * calls + 10)
    await recorder.cipher.load(store)
    authorizer = Authorizer(engine, audit, recorder=recorder)
    cases = []
    for name, arguments, _ in CASES:
        tool = catalog_set.catalog.tools[name]
        seen: list[CedarRequest] = []
        cases.append((tool, arguments, engine.decide_tool(principal, tool, arguments, facts, seen=seen), seen))
    if mode == "facts":
        client_info = {"name": "bench-client", "version": "1"}
        for _ in range(calls):
            authorizer.facts(facts.era, client_info, facts.task, facts.chain, facts.user)
        await store.close()
        return
    if mode == "rows":
        # (the cases' decisions as they are: a decision id used twice seals all the same, and a fresh decision
        # per record would count its making too)
        batch = [Noted(principal, decided, "tool", tool.exposed_name, facts.now, seen[0], tool.data_classes)
                 for tool, _, decided, seen in (cases[i % len(cases)] for i in range(calls))]
        assert len(recorder._rows(batch)) == calls
        await store.close()
        return
    write = mode == "all"
    for i in range(calls):
        tool, arguments, decided, seen = cases[i % len(cases)]
        decision = replace(decided, decision_id=new_decision_id())
        event, _ = authorizer.tool_event(decision, principal, tool, arguments, facts, seen)
        await authorizer.record(event, durable=False)  # the writers run below, at fixed batch sizes
        if not write:  # the request path alone: what was queued is dropped
            audit._pending.clear()
            recorder._pending.clear()
            continue
        if audit.pending >= AUDIT_BATCH:
            await audit._write_batch()
        if len(recorder._pending) >= RECORD_BATCH:
            await recorder.flush()
    while audit.pending:
        await audit._write_batch()
    await recorder.flush()
    assert not write or (audit.written == calls and recorder.recorded == calls), (audit.written, recorder.recorded)
    await store.close()


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    mode = sys.argv[2] if len(sys.argv) > 2 else "all"
    if mode not in ("all", "path", "facts", "rows"):
        sys.exit("usage: python -m bench.records_instr N [all|path|facts|rows]")
    with tempfile.TemporaryDirectory(prefix="narrowgate-records-instr-") as tmp:
        write_policies(Path(tmp) / "cedar")
        catalog_set = write_catalog(Path(tmp) / "catalog", CATALOG_TOOLS)
        facts = gateway_facts(catalog_set.catalog, fixed_principal())
        asyncio.run(run(calls, Path(tmp), mode, catalog_set, facts))


if __name__ == "__main__":
    main()
