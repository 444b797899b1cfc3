"""Right-sizing proposals kept between reports: building one parses and edits the agents file.

A proposal depends only on the agents file's content (and path), the agent's id and current entitlement,
and what it narrows from (each granted tool and whether it was used, whether prompts or resources were
used). A report asked again over an unchanged file and unchanged use reuses every proposal and parses the
file not at all; a changed file or grant misses, so a stale proposal is never served.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.privilege.proposal import Proposal, declared_entitlements, propose
from gateway.registry.model import Agent, Entitlement

PROPOSALS_KEPT = 4096  # proposals kept (each holds at most a patch of the agents file)

_Key = tuple[str, str, str, Entitlement, tuple[tuple[str, str, bool], ...], bool]


class ProposalCache:
    """Least recently used out first; safe to share between the worker threads reports run on."""

    def __init__(self, limit: int = PROPOSALS_KEPT) -> None:
        self.limit = limit
        self.built = 0  # proposals built (not served from the cache), for tests
        self._entries: OrderedDict[_Key, Proposal] = OrderedDict()
        self._declared: tuple[str, Mapping[str, Entitlement]] | None = None  # (file digest, its entitlements)
        self._lock = threading.Lock()

    def proposal(self, agent: Agent, granted: Sequence[tuple[str, str, bool]], keeps_servers: bool,
                 agents_text: str | None, agents_file: Path | None) -> Proposal:
        digest = "" if agents_text is None else hashlib.sha256(agents_text.encode()).hexdigest()
        key: _Key = (digest, str(agents_file or ""), agent.id, agent.entitlement, tuple(granted), keeps_servers)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        declared = None if agents_text is None else self._declared_in(digest, agents_text)
        built = propose(agent, granted, keeps_servers, agents_text, agents_file, declared)
        with self._lock:
            self.built += 1
            self._entries[key] = built
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)
        return built

    def _declared_in(self, digest: str, agents_text: str) -> Mapping[str, Entitlement]:
        """The file's declared entitlements, parsed once per file content (only when a proposal is built)."""
        known = self._declared
        if known is not None and known[0] == digest:
            return known[1]
        declared = declared_entitlements(agents_text)
        self._declared = (digest, declared)
        return declared
