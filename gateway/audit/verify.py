"""Reading the audit log back in pages and verifying its hash chain: `narrowgate audit verify` and the
compliance evidence share it. Long logs are read in pages, so memory stays flat however long the log is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway.audit.chain import ChainVerifier
from gateway.store.base import AuditQuery, AuditStore

PAGE = 1000


async def audit_pages(store: AuditStore, since: float | None = None,
                      until: float | None = None) -> AsyncIterator[list[dict[str, Any]]]:
    """Every record (recorded in [since, until) when given), in seq order, a page at a time."""
    after = 0
    while True:
        page = await store.audit_records(AuditQuery(after_seq=after, limit=PAGE, since=since, until=until))
        if not page:
            return
        yield page
        after = page[-1]["seq"]


async def verify_audit(store: AuditStore) -> ChainVerifier:
    """The whole chain checked: the verifier's `problems`, `count` and head (`last_seq`, `last_hash`)."""
    verifier = ChainVerifier()
    async for page in audit_pages(store):
        for row in page:
            verifier.check(row)
    return verifier
