"""Evidence facts on a real store, where the truth is set up by the test."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gateway.audit import AuditLog
from gateway.audit.model import AuditEvent
from gateway.catalog import Catalog
from gateway.config import Settings
from gateway.privilege.evidence.facts import audit_chain
from gateway.privilege.evidence.model import OK, UNAVAILABLE
from gateway.privilege.evidence.sources import EvidenceRun, EvidenceSources
from gateway.store import open_store


async def test_an_empty_audit_log_is_no_evidence_and_one_record_is(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    unused: Any = None  # the fact reads the store only
    sources = EvidenceSources(Settings(), unused, store, unused, unused, lambda: Catalog.of([]), time.time)
    try:
        empty = await audit_chain(EvidenceRun(sources, since=0.0, now=time.time()))
        assert empty.status == UNAVAILABLE and "no record" in empty.statement  # never "0 record(s) verified" as met
        log = AuditLog(store, time.time)
        await log.open()
        log.record(AuditEvent(kind="policy", action="reload", actor="narrowgate"))
        await log.flush()
        await log.close()
        one = await audit_chain(EvidenceRun(sources, since=0.0, now=time.time()))
        assert one.status == OK and one.data["records"] == 1
    finally:
        await store.close()
