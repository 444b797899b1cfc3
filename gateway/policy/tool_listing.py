"""Which catalog tools an agent may list: decided per class of tools (listing_classes), remembered.

Three layers, each keyed so that no answer outlives what it was computed from:
- the tool index, per bundle (policy set + catalog model): built on a worker thread, reusing the
  signatures of tools whose entities did not change;
- the listing memo (listing_memo), per (policy set, principal with its id renamed, listing
  context): each class's or singular tool's answer; a catalog change asks Cedar only about
  classes and tools it has not seen;
- the shown set, per (bundle, principal key, context): the visible exposed names over the whole
  catalog, so agents with equal relevant attributes and sessions of one agent share one set; kept
  for the newest bundle only (an entry holds its bundle alive).

Fail closed: a tool is shown only when Cedar answered Allow (or a step-up an approval would turn
into Allow) for it or for its class; an evaluation error hides; an index that cannot be built
falls back to deciding every tool on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence

from gateway.catalog.model import ToolEntry
from gateway.identity.principal import Principal
from gateway.policy.bundle import Bundle
from gateway.policy.engine import ListingJob, PolicyEngine, RequestFacts
from gateway.policy.listing_classes import (
    PolicyFacts,
    ShapeCache,
    ToolIndex,
    build_index,
    policy_facts,
    principal_key,
    strings_in,
)
from gateway.policy.listing_memo import ListingKey, ListingMemo

log = logging.getLogger("narrowgate.policy")

SHOWN_KEYS = 64  # distinct (principal key, context) visible sets kept, all of the newest bundle
STRINGS_KEYS = 1024  # parsed principal / context JSON kept
ShownKey = tuple[str, str, str]  # policy set digest, principal key, listing context
Groups = dict[ListingKey, tuple[int, ...]]  # memo key -> the index's tools it decides


class ToolLister:
    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine
        self.memo = ListingMemo()
        self._index: tuple[Bundle, ToolIndex] | None = None
        self._building: tuple[Bundle, asyncio.Future[ToolIndex]] | None = None
        self._policy_facts: tuple[str, PolicyFacts] | None = None
        self._shapes: ShapeCache = {}  # per tool entity JSON, whatever the policies
        # Shown sets of one bundle only: one of an older bundle can never be served again (see
        # _remembered), and each entry keeps its bundle alive (catalog model and two Cedar policy
        # sets): 64 stale bundles at a tool-list change every 20 s held tens of MiB for nothing.
        self._shown: OrderedDict[ShownKey, tuple[Bundle, frozenset[str]]] = OrderedDict()
        self._shown_bundle: Bundle | None = None
        self._strings: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._interned: OrderedDict[frozenset[str], frozenset[str]] = OrderedDict()
        self.evaluated = 0  # Cedar questions asked (classes and singular tools), for tests and benchmarks

    # ---- the answer ------------------------------------------------------------------------------

    async def visible(self, principal: Principal, tools: Sequence[ToolEntry], facts: RequestFacts) -> frozenset[str]:
        """Exposed names of `tools` this caller may list; Cedar work in batches with yields between."""
        bundle, principal_json, context = self.engine.listing_facts(principal, facts)
        index = await self.index_async(bundle)
        key, shown = self._remembered(bundle, index, principal.agent_id, principal_json, context)
        if not isinstance(shown, frozenset):
            job, groups = shown
            for chunk in job.chunks():
                self.engine.evaluate_listing(job, chunk)
                await asyncio.sleep(0)
            shown = self._finish(key, index, job, groups)
        return self._among(bundle, shown, tools)

    def visible_now(self, principal: Principal, tools: Sequence[ToolEntry], facts: RequestFacts) -> frozenset[str]:
        """visible() in one piece (commands and tests; on the event loop use visible)."""
        bundle, principal_json, context = self.engine.listing_facts(principal, facts)
        index = self.index_now(bundle)
        key, shown = self._remembered(bundle, index, principal.agent_id, principal_json, context)
        if not isinstance(shown, frozenset):
            job, groups = shown
            for chunk in job.chunks():
                self.engine.evaluate_listing(job, chunk)
            shown = self._finish(key, index, job, groups)
        return self._among(bundle, shown, tools)

    def _among(self, bundle: Bundle, shown: frozenset[str], tools: Sequence[ToolEntry]) -> frozenset[str]:
        """The shown names among `tools`, each the very entry the policies judged (else hidden).

        Equal answers are one object, so the pass over thousands of sessions after a change compares
        each pair of sets once (gateway.calls.visibility_pass) instead of once per session."""
        models = bundle.catalog.tools
        names = frozenset(t.exposed_name for t in tools if t.exposed_name in shown
                          and (m := models.get(t.exposed_name)) is not None and (m.entry is t or m.entry == t))
        interned = self._interned.setdefault(names, names)
        self._interned.move_to_end(interned)
        while len(self._interned) > SHOWN_KEYS:
            self._interned.popitem(last=False)
        return interned

    def _remembered(self, bundle: Bundle, index: ToolIndex, agent_id: str, principal_json: str,
                    context: str) -> tuple[ShownKey, frozenset[str] | tuple[ListingJob, Groups]]:
        """The visible set if known; else a job holding what Cedar still has to decide (one question per
        group not yet in the memo: its first tool stands for all of them) and the groups."""
        context_strings = self._strings_of(context)
        key = (bundle.base_digest, principal_key(principal_json, agent_id, set(context_strings), index), context)
        found = self._shown.get(key)
        if found is not None and found[0] is bundle:
            self._shown.move_to_end(key)
            return key, found[1]
        memo = self.memo.entry(key)
        groups = index.groups_for(index.singular(self._strings_of(principal_json) | context_strings))
        pending = [(index.models[members[0]], item) for item, members in groups.items() if item not in memo]
        job = ListingJob(bundle, agent_id, principal_json, context, [], [], memo, pending)
        self.evaluated += len(pending)
        return key, ((job, groups) if pending else self._finish(key, index, job, groups))

    def _finish(self, key: ShownKey, index: ToolIndex, job: ListingJob, groups: Groups) -> frozenset[str]:
        memo, models = job.memo, index.models
        names: set[str] = set()
        for item, members in groups.items():
            if memo.get(item) is True:
                names.update(models[i].entry.exposed_name for i in members)
        shown = frozenset(names)
        if job.bundle is not self._shown_bundle:
            self._shown.clear()  # a new bundle (or a listing that began before the swap): start over
            self._shown_bundle = job.bundle
        self._shown[key] = (job.bundle, shown)
        self._shown.move_to_end(key)
        while len(self._shown) > SHOWN_KEYS:
            self._shown.popitem(last=False)
        return shown

    def _strings_of(self, blob: str) -> frozenset[str]:
        found = self._strings.get(blob)
        if found is None:
            found = self._strings[blob] = frozenset(strings_in(blob))
            if len(self._strings) > STRINGS_KEYS:
                self._strings.popitem(last=False)
        return found

    # ---- the tool index --------------------------------------------------------------------------

    async def index_async(self, bundle: Bundle) -> ToolIndex:
        """The index for `bundle`, built on a worker thread once (concurrent listings share the build)."""
        current = self._index
        if current is not None and current[0] is bundle:
            return current[1]
        building = self._building
        if building is None or building[0] is not bundle:
            future = asyncio.ensure_future(asyncio.to_thread(self._build, bundle))
            self._building = building = (bundle, future)
        return await asyncio.shield(building[1])

    def index_now(self, bundle: Bundle) -> ToolIndex:
        current = self._index
        if current is not None and current[0] is bundle:
            return current[1]
        return self._build(bundle)

    def _build(self, bundle: Bundle) -> ToolIndex:
        """Safe on a worker thread: reads the immutable bundle, swaps the result in with one assignment."""
        try:
            if len(self._shapes) > 4 * max(len(bundle.catalog.tools), 1024):
                self._shapes = {}  # bounded: tools that left the catalog long ago
            index = build_index(bundle.catalog, self._facts_for(bundle), self._shapes)
        except Exception:  # never show more because analysis failed: every tool decided on its own
            log.exception("listing analysis failed; deciding every tool on its own")
            index = build_index(bundle.catalog, PolicyFacts(frozenset(), (), generic=False))
        self._index = (bundle, index)
        return index

    def _facts_for(self, bundle: Bundle) -> PolicyFacts:
        cached = self._policy_facts
        if cached is not None and cached[0] == bundle.base_digest:
            return cached[1]
        facts = policy_facts(source.text for source in bundle.sources)
        self._policy_facts = (bundle.base_digest, facts)
        return facts

