"""What the evidence is computed from: the running gateway's parts, the period, and one pass over the audit log.

The audit log is read once per report: the pass verifies the hash chain (the code behind `narrowgate
audit verify`) and tallies the period's records on the way, so a report costs one scan however many
facts use it. Hashing runs on a worker thread, a page at a time, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.chain import ChainVerifier
from gateway.audit.verify import audit_pages
from gateway.catalog.model import Catalog
from gateway.config import Settings
from gateway.discovery.service import ToolReviews
from gateway.policy.engine import PolicyEngine
from gateway.privilege.rightsize import RightsizeSources
from gateway.registry.model import Agent, Lifecycle
from gateway.registry.service import Registry
from gateway.store.base import Store

KILL_SWITCH_REASON = "kill switch:"  # how gateway.chain.detections words the suspensions it makes


@dataclass(frozen=True, slots=True)
class EvidenceSources:
    """The live parts a report reads; nothing here is written to."""

    settings: Settings
    registry: Registry
    store: Store
    policy: PolicyEngine
    reviews: ToolReviews
    catalog: Callable[[], Catalog]  # the effective catalog now (manifests plus reviewed discoveries)
    clock: Callable[[], float]
    rightsize: RightsizeSources | None = None  # None: right-sizing is not available, so nothing is measured


@dataclass(slots=True)
class AuditTally:
    """The chain check of the whole log, and the period's records counted by what they say."""

    verifier: ChainVerifier = field(default_factory=ChainVerifier)
    decisions: Counter[str] = field(default_factory=Counter)
    detections: Counter[str] = field(default_factory=Counter)
    severities: Counter[str] = field(default_factory=Counter)
    approvals: Counter[str] = field(default_factory=Counter)
    kill_switch: list[dict[str, Any]] = field(default_factory=list)
    first_at: float | None = None  # the oldest record in the whole log

    def count_page(self, page: list[dict[str, Any]], since: float) -> None:
        for row in page:
            self.verifier.check(row)
            at = float(row.get("at") or 0.0)
            self.first_at = at if self.first_at is None else min(self.first_at, at)
            if at >= since:
                self.count(row)

    def count(self, row: Mapping[str, Any]) -> None:
        kind, action, detail = row.get("kind"), str(row.get("action") or ""), row.get("detail") or {}
        if kind == "decision":
            self.decisions[str(row.get("decision") or "none")] += 1
        elif kind == "monitoring" and action != "unavailable":
            self.detections[action] += 1
            self.severities[str(detail.get("severity") or "unknown")] += 1
        elif kind == "approval":
            self.approvals[action] += 1
        elif kind == "agent" and action == "suspend" and str(detail.get("reason") or "").startswith(KILL_SWITCH_REASON):
            self.kill_switch.append({"agent_id": row.get("agent_id"), "at": row.get("at"), "seq": row.get("seq")})


@dataclass(slots=True)
class EvidenceRun:
    """One report: the sources, the period (`since` .. `now`), and what was read once for it."""

    sources: EvidenceSources
    since: float
    now: float
    _tally: AuditTally | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def audit(self) -> AuditTally:
        async with self._lock:
            if self._tally is None:
                tally = AuditTally()
                async for page in audit_pages(self.sources.store):
                    await asyncio.to_thread(tally.count_page, page, self.since)
                self._tally = tally
            return self._tally

    def live_agents(self) -> list[Agent]:
        """Agents not retired (an agent past its expiry counts as retired), by id."""
        agents = (a for a in self.sources.registry.agents() if a.effective_state(self.now) is not Lifecycle.RETIRED)
        return sorted(agents, key=lambda a: a.id)
