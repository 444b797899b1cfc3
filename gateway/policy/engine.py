"""The policy decision point: Cedar decides every tools/call, prompts/get and resources/read.

Fail closed everywhere: only a clean Allow (no evaluation errors) allows. Deny, NoDecision,
any error, a schema-invalid request or an unknown tool deny. A Deny whose determining policies
all carry `@step_up` is StepUp ("approval required").

Per request the entities are the principal (with its groups and claims), the resource, its
McpServer parent and the action (with its groups as parents), joined from strings serialized ahead
of time, so the cost of a decision does not grow with the catalog or the registry.

The context holds only what the policies read (context.py): Cedar parses it on every request, and
it was most of a decision's cost. A tools/call goes further (scoped.py): Cedar gets only the policies
that can apply to the tool (the others are false for it without an error, whoever calls with whatever
context) and only the context those read; no context at all when that is nothing.

Evaluation deliberately passes NO schema to Cedar: with a schema, Cedar derives every action
entity from it on each call, which made a decision cost O(catalog) (0.2 ms at 10 tools, 2 ms at
10,000). Type safety does not depend on it: policies are validated against the full schema at
load, and the engine builds every request from typed parts (context.input through the generated
type, see typing_.py, which denies arguments that do not fit), so a request is schema-valid by
construction. Should one not be, the ill-typed operation errors and the error denies.

Nothing proportional to the catalog, the policy set or the number of sessions runs on the event
loop in one piece: `reload_async` and `set_catalog_async` compile on a worker thread (cedarpy
releases the GIL there) and swap the finished bundle in with one assignment, decisions meanwhile
use the last good one; an unchanged policy directory is not compiled at all, and a catalog change
that leaves the generated schema alone (an approval, a quarantine) is not validated again.
`tools/list` goes through `gateway/policy/tool_listing.py` (one Cedar question per group of tools
Cedar cannot tell apart, in chunks with yields between); `visible_tools` here decides tool by tool
and stays as the reference the listing tests compare against.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import cedarpy
import orjson

from gateway.catalog.model import Catalog, ToolEntry
from gateway.frozen import maker
from gateway.heap import HEAP
from gateway.identity.principal import Principal
from gateway.policy.authorize import is_authorized, is_authorized_batch
from gateway.policy.bundle import Bundle, CompileError, compile_bundle, with_catalog
from gateway.policy.canonical import CanonicalizationError, canonicalize, normalize_path
from gateway.policy.context import NO_CHAIN as NO_CHAIN  # re-exported: policy tests and the demo build chains
from gateway.policy.context import ContextBuilder, nfc
from gateway.policy.context import RequestFacts as RequestFacts  # re-exported: the call path imports it from here
from gateway.policy.hours import WorkingHours
from gateway.policy.listing import ContextReads, prune_context
from gateway.policy.listing_memo import ListingKey, ListingMemo
from gateway.policy.model import (
    CatalogModel,
    ServerModel,
    ToolModel,
    build_catalog_model,
    prompt_action,
    resource_action,
)
from gateway.policy.principal_entities import PrincipalEntities
from gateway.policy.reauth import NO_AUTH_TIME, NO_PERSON, REAUTH, ReauthTerms, warn_no_auth_time
from gateway.policy.reauth import terms as reauth_terms
from gateway.policy.scoped import TOOLS_KEPT, ToolScope
from gateway.policy.sources import SourceFiles, read_files
from gateway.policy.typing_ import ArgumentMismatch, to_cedar
from gateway.random_draws import DECISION_ID
from gateway.settings.durations import parse_duration
from gateway.verifier import argument_digest

log = logging.getLogger("narrowgate.policy")

Outcome = Literal["allow", "deny", "step_up"]
REASON_DENIED = "denied by policy"
REASON_STEP_UP = "approval required"
REASON_REAUTH = "re-authentication required"
REASON_BAD_ARGUMENTS = "arguments do not match the tool's schema"
REASON_AMBIGUOUS = "no single meaning"  # a path or URI servers could read two ways (gateway.policy.paths)
SHADOW_HISTORY = 200
LISTING_CHUNK = 128  # tools per Cedar batch when listing off the hot path: each batch holds the loop ~10 ms
# Distinct (agent version + token claims, resource) entity sets kept parsed. Each is ~13 KiB of
# Cedar's (native) memory: 2,048 hold ~27 MiB (4,096 held ~55 MiB); a miss costs one parse.
ENTITY_CACHE_SIZE = 2048
# An entity set longer than this is parsed each time and never kept: a resource URI or prompt name is the agent's
# own text (up to the body size), so a kept one could hold gigabytes (the gateway's own sets are ~1-2 KiB).
ENTITY_CACHED_CHARS = 16 * 1024
DETERMINATION_CACHE_SIZE = 1024  # distinct sets of determining policies remembered
_POLICY_IN_ERROR = re.compile(r"policy\d+")
EMPTY_CONTEXT = b"{}"
ALLOW = cedarpy.Decision.Allow  # an Enum member: one object, compared by identity


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    decision_id: str
    policy_ids: tuple[str, ...]
    reason: str  # agent-facing: a policy's @reason or a generic text, never policy source
    errors: tuple[str, ...]  # for logs and audit only
    policy_version: str
    step_up_mode: str | None = None  # the @step_up annotation value for step_up ("" when empty: config default)
    # What Cedar saw (canonicalize made it for this decision alone); forward these upstream, unchanged.
    canonical_arguments: dict[str, Any] | None = None
    approvers: str | None = None  # step_up: the @approvers groups (comma-separated, all required), if any
    approval_ttl_s: float | None = None  # step_up: the shortest @approval_ttl of the determining policies
    # The policy texts alone (policy_version also covers the catalog's schema): what an approval is
    # bound to, so upstream tool churn does not void approvals while a changed rule does.
    rules_version: str = ""
    # SHA-256 of canonical_arguments (gateway.verifier.argument_digest), computed once per decision:
    # the audit record, the approval binding and the upstream token's args_sha256 all use it.
    args_digest: str | None = None
    # step_up by re-authentication (@step_up("reauth")): what the RFC 9470 challenge asks for.
    reauth: ReauthTerms | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"


# Decision's own constructor, made cheaper (gateway.frozen): one per decision. All 13 fields, in their order.
_new_decision = maker(Decision)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    problems: list[str]
    version: str  # the version in force after the attempt
    changed: bool = False
    at: float = field(default_factory=time.time)


class PolicyLoadError(Exception):
    """The policy set cannot be used; `problems` lists every problem, with file:line where known."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid policy set:\n" + "\n".join(problems))
        self.problems = problems


@dataclass(slots=True)  # not frozen: made on every decision, and a frozen dataclass sets each field by a call
class _Request:
    """One prepared Cedar request: what live and shadow evaluation share."""

    kind: str  # tool | prompt | resource
    target: str
    cedar: dict[str, Any]
    entities: str
    invalid_reason: str  # what to tell the agent if Cedar cannot build the request (schema-invalid)
    context: dict[str, Any]  # the unserialized context, to ask "would an approval make this an Allow?"
    # What the context was built from: the recorder serializes the whole context from these, off the
    # request path (recorded_json), so a candidate policy reading more than the live set sees it all.
    facts: RequestFacts | None = None
    granted: bool = False  # decided as a call carrying an approval
    cedar_input: object = None
    input_whole: bool = False
    # The policies that can apply to it (gateway.policy.scoped: the others are false for it without an error),
    # with the ids they have in the whole set; None: the bundle's whole set.
    policies: cedarpy.PolicySet | None = None

    def approved(self, fresh: tuple[int, str] | None = None) -> dict[str, Any]:
        """The request as if approved; with `fresh` (auth_time, acr), also as if the person had just signed in."""
        context = {**self.context, "approval": {"granted": True}}
        if fresh is not None:
            context = _freshly_signed_in(context, *fresh)
        return {**self.cedar, "context": orjson.dumps(context).decode()}


@dataclass(frozen=True, slots=True)
class _Determined:
    """A set of determining policies, as a decision reports them (see PolicyEngine._determined)."""

    cedar_ids: tuple[str, ...]  # Cedar's "policyN" ids, in policy-file order
    policy_ids: tuple[str, ...]  # their @id (or the Cedar id)
    allow_reason: str  # the reason an Allow gives
    step_up_modes: tuple[str | None, ...]  # each one's @step_up value, None without one


@dataclass(frozen=True, slots=True)
class _ToolCalls:
    """What every call of one tool under one bundle shares (PolicyEngine._tool_calls)."""

    model: ToolModel
    server: ServerModel
    scope: ToolScope | None  # what it is decided with (gateway.policy.scoped); None: the bundle has no scoping
    name: str  # its exposed name
    # Cedar's action and resource for it, in every request made for it: only read (by cedarpy and the recorder).
    action: dict[str, str]
    resource: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A compile's result, made on a worker thread and installed on the loop."""

    bundle: Bundle | None  # None: the compile failed (problems say why), the last good set stays
    problems: list[str]
    shadow: Bundle | None = None
    shadow_problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ListingJob:
    """One listing: what is known already (memo) and the tools Cedar still has to decide (pending)."""

    bundle: Bundle
    agent_id: str
    principal_json: str
    context: str  # the pruned listing context, as JSON
    models: list[ToolModel]
    keys: list[ListingKey]
    memo: dict[ListingKey, bool]
    pending: list[tuple[ToolModel, ListingKey]]

    def chunks(self) -> list[list[tuple[ToolModel, ListingKey]]]:
        return [self.pending[i:i + LISTING_CHUNK] for i in range(0, len(self.pending), LISTING_CHUNK)]

    def visible(self) -> set[str]:
        memo = self.memo
        return {m.entry.exposed_name for m, key in zip(self.models, self.keys, strict=True) if memo.get(key)}


CedarRequest = _Request  # what `seen` collects: for the decision recorder (gateway.policy.recorder)


class PolicyEngine:
    def __init__(
        self,
        policies_dir: Path,
        catalog: Catalog | CatalogModel,
        *,
        working_hours: WorkingHours | None = None,
        shadow_dir: Path | None = None,
        tool_schemas: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.policies_dir = Path(policies_dir)
        self.working_hours = working_hours or WorkingHours()
        self._contexts = ContextBuilder(self.working_hours)
        self.shadow_dir = Path(shadow_dir) if shadow_dir is not None else None
        self.shadow_disagreements: deque[dict[str, Any]] = deque(maxlen=SHADOW_HISTORY)
        self._lock = threading.Lock()  # serializes writers; readers take self._bundle once, lock-free
        self._writer = asyncio.Lock()  # serializes the async writers (one compile thread at a time)
        self._known_schemas: dict[str, Mapping[str, Any] | None] = dict(tool_schemas or {})
        self._principals = PrincipalEntities()
        self._entity_handles: OrderedDict[str, cedarpy.Entities] = OrderedDict()
        self._joined_entities: dict[tuple[str, ...], str] = {}
        self._tool_memo: tuple[Bundle | None, dict[str, _ToolCalls]] = (None, {})  # see _tool_calls
        self._determinations: dict[tuple[str, ...], _Determined] = {}
        self._listings = ListingMemo()
        # set_catalog_async coalescing: the newest catalog asked for, and the newest one compiled.
        self._wanted_catalog: tuple[Catalog, dict[str, Mapping[str, Any] | None]] | None = None
        self._wanted_seq = self._applied_seq = 0
        # A CatalogModel: a live engine's (bundle.catalog), e.g. to compile a candidate set for replay.
        model = catalog if isinstance(catalog, CatalogModel) else build_catalog_model(catalog, self._known_schemas)
        try:
            self._bundle: Bundle = compile_bundle(self.policies_dir, model)
        except CompileError as exc:
            raise PolicyLoadError(exc.problems) from None
        self._shadow: Bundle | None = None
        self._shadow_problems: list[str] = []
        self._shadow_evaluated = 0
        self._shadow, self._shadow_problems = self._compile_shadow(model)
        self._log_shadow_problems()
        self._last_reload = ReloadOutcome(True, [], self._bundle.version, True)

    # ---- bundle management -------------------------------------------------------------------

    @property
    def version(self) -> str:
        return self._bundle.version

    @property
    def bundle(self) -> Bundle:
        """The bundle in force (immutable: read it once and use that one throughout)."""
        return self._bundle

    def reload(self) -> ReloadOutcome:
        """Re-read the policy files; keep the last good bundle if anything is wrong. Blocks while it
        compiles: for tests and commands; the gateway uses reload_async."""
        with self._lock:
            return self._install(self._prepare(None), "reload")

    async def reload_async(self) -> ReloadOutcome:
        """reload(), compiled on a worker thread; decisions use the last good set until the swap."""
        async with self._writer:
            return self._settled(self._install(await self._prepare_async(None), "reload"))

    def set_catalog(self, catalog: Catalog, tool_schemas: Mapping[str, Mapping[str, Any] | None]) -> ReloadOutcome:
        """Regenerate the catalog-derived schema (tool actions, input types, entities) and re-validate.

        A tool missing from `tool_schemas` (its upstream is down) keeps the last input schema seen
        for it, so a passing outage does not make input-reading policies fail validation; a tool
        never seen gets an empty input record. Blocks while it compiles (see set_catalog_async).
        """
        with self._lock:
            return self._install(self._prepare(self._catalog_wanted(catalog, tool_schemas)), "catalog")

    async def set_catalog_async(
        self, catalog: Catalog, tool_schemas: Mapping[str, Mapping[str, Any] | None]
    ) -> ReloadOutcome:
        """set_catalog() compiled on a worker thread. Calls that queue up behind a compile are
        coalesced: the next compile takes the newest catalog, and every call it covers returns its outcome."""
        self._wanted_catalog = self._catalog_wanted(catalog, tool_schemas)
        self._wanted_seq += 1
        mine = self._wanted_seq
        async with self._writer:
            if self._applied_seq >= mine:
                return self._last_reload
            wanted, seq = self._wanted_catalog, self._wanted_seq
            outcome = self._settled(self._install(await self._prepare_async(wanted), "catalog"))
            self._applied_seq = seq
            return outcome

    def _catalog_wanted(
        self, catalog: Catalog, tool_schemas: Mapping[str, Mapping[str, Any] | None]
    ) -> tuple[Catalog, dict[str, Mapping[str, Any] | None]]:
        """Remember the reported schemas; the input schema of each catalog tool, as known now."""
        for name, schema in tool_schemas.items():
            self._known_schemas[name] = schema
        known = {name: self._known_schemas.get(name) for name in catalog.tools}
        self._known_schemas = dict(known)  # only the catalog's tools: one that left it is not kept for good
        return catalog, known

    async def _prepare_async(self, wanted: tuple[Catalog, dict[str, Mapping[str, Any] | None]] | None) -> _Prepared:
        # Frozen first (sessions opened since the last swap, ...): the compile allocates enough to
        # start full collections, which would otherwise walk all of that with the GIL held.
        HEAP.settle()
        return await asyncio.to_thread(self._prepare_locked, wanted)

    @staticmethod
    def _settled(outcome: ReloadOutcome) -> ReloadOutcome:
        if outcome.changed:
            HEAP.settle()  # the new bundle is long-lived: out of later full collections' way
        return outcome

    def _prepare_locked(self, wanted: tuple[Catalog, dict[str, Mapping[str, Any] | None]] | None) -> _Prepared:
        with self._lock:
            return self._prepare(wanted)

    def _prepare(self, wanted: tuple[Catalog, dict[str, Mapping[str, Any] | None]] | None) -> _Prepared:
        """The bundle to install: a policy reload (wanted None) re-reads the directory; a catalog change
        compiles the policies in force against the new catalog. Safe on a worker thread."""
        base = self._bundle
        problems: list[str] = []
        files = read_files(self.policies_dir, problems) if wanted is None else base.files
        if files is None:
            return _Prepared(None, problems)
        model = base.catalog if wanted is None else build_catalog_model(*wanted)
        try:
            bundle = self._compile(base, self.policies_dir, files, model)
        except CompileError as exc:
            return _Prepared(None, exc.problems)
        shadow, shadow_problems = self._compile_shadow(model)
        return _Prepared(bundle, [], shadow, shadow_problems)

    @staticmethod
    def _compile(base: Bundle | None, directory: Path, files: SourceFiles, model: CatalogModel) -> Bundle:
        """Compile only what changed: the same files and catalog are `base` itself; the same files and
        generated schema are `base` with the new catalog's entities (nothing to validate again)."""
        if base is not None and files.digest == base.base_digest:
            if model is base.catalog:
                return base
            reused = with_catalog(base, model)
            if reused is not None:
                return reused
        return compile_bundle(directory, model, files)

    def _compile_shadow(self, model: CatalogModel) -> tuple[Bundle | None, list[str]]:
        if self.shadow_dir is None:
            return None, []
        problems: list[str] = []
        files = read_files(self.shadow_dir, problems)
        if files is None:
            return None, problems
        try:
            return self._compile(self._shadow, self.shadow_dir, files, model), []
        except CompileError as exc:
            # A broken candidate never affects live decisions; it is only reported.
            return None, exc.problems

    def _install(self, prepared: _Prepared, why: str) -> ReloadOutcome:
        """On the loop (or the caller's thread): swap the prepared bundle in, or keep the last good one."""
        before = self._bundle
        if prepared.bundle is None:
            log.error("policy %s rejected; version %s keeps serving:\n  %s", why, before.version,
                      "\n  ".join(prepared.problems))
            self._last_reload = ReloadOutcome(False, prepared.problems, before.version)
            return self._last_reload
        bundle = prepared.bundle
        self._bundle = bundle  # the atomic swap: one attribute assignment
        self._shadow, self._shadow_problems = prepared.shadow, prepared.shadow_problems
        self._log_shadow_problems()
        if bundle.base_digest != before.base_digest:
            self._listings.clear()  # what was remembered belongs to the old policies
        changed = bundle.version != before.version
        if changed:
            log.info("policy version %s in force (%s, %d policies)", bundle.version, why, len(bundle.sources))
        self._last_reload = ReloadOutcome(True, [], bundle.version, changed)
        return self._last_reload

    def _log_shadow_problems(self) -> None:
        if self._shadow_problems:
            log.error("shadow policy set %s rejected:\n  %s", self.shadow_dir, "\n  ".join(self._shadow_problems))

    def status(self) -> dict[str, Any]:
        bundle, last = self._bundle, self._last_reload
        return {
            "version": bundle.version,
            "loaded_at": bundle.loaded_at,
            "policy_count": len(bundle.sources),
            "directory": str(bundle.directory),
            "catalog_tools": len(bundle.catalog.tools),
            "last_reload": {"ok": last.ok, "problems": list(last.problems), "at": last.at, "version": last.version},
            "shadow": {
                "enabled": self.shadow_dir is not None,
                "directory": None if self.shadow_dir is None else str(self.shadow_dir),
                "version": None if self._shadow is None else self._shadow.version,
                "ok": self._shadow is not None,
                "problems": list(self._shadow_problems),
                "evaluated": self._shadow_evaluated,
                "disagreements": len(self.shadow_disagreements),
            },
        }

    # ---- decisions -------------------------------------------------------------------------

    def decide_tool(
        self,
        principal: Principal,
        tool: ToolEntry,
        arguments: dict[str, Any] | None,
        facts: RequestFacts,
        approved: bool = False,
        seen: list[CedarRequest] | None = None,
    ) -> Decision:
        """`seen`: the Cedar request made, if one was (the decision recorder's input)."""
        bundle = self._bundle
        model = bundle.catalog.tools.get(tool.exposed_name)
        # (the same entry object, call after call: compared field by field only when it is another one)
        if model is None or (model.entry is not tool and model.entry != tool):
            return self._refused(bundle, f"tool {tool.exposed_name!r} is not in the policy catalog", REASON_DENIED)
        try:
            canonical = canonicalize(arguments, _schema_dict(model.input_schema))
            cedar_input = to_cedar(canonical, model.input_type)
        except CanonicalizationError as exc:
            return self._refused(bundle, f"arguments: {exc}", f"{REASON_AMBIGUOUS}: {exc}")
        except ArgumentMismatch as exc:
            return self._refused(bundle, f"arguments: {exc}", REASON_BAD_ARGUMENTS)
        request = self._tool_request(bundle, principal, model, cedar_input, facts, approved)
        if seen is not None:
            seen.append(request)
        decision = self._evaluate(bundle, request, canonical, request.policies)
        self._shadow_check(request, decision, principal, facts.now, canonical)
        return decision

    def decide_prompt(self, principal: Principal, server_id: str, prompt_name: str, facts: RequestFacts,
                      seen: list[CedarRequest] | None = None) -> Decision:
        return self._decide_item(principal, server_id, prompt_name, facts, "prompt", seen)

    def decide_resource(self, principal: Principal, server_id: str, uri: str, facts: RequestFacts,
                        seen: list[CedarRequest] | None = None) -> Decision:
        return self._decide_item(principal, server_id, uri, facts, "resource", seen)

    def _decide_item(self, principal: Principal, server_id: str, name: str, facts: RequestFacts,
                     kind: str, seen: list[CedarRequest] | None = None) -> Decision:
        bundle = self._bundle
        try:
            request = self._item_request(bundle, principal, server_id, name, facts, kind)
        except CanonicalizationError as exc:
            return self._refused(bundle, f"uri: {exc}", f"{REASON_AMBIGUOUS}: {exc}")
        if request is None:
            return self._refused(bundle, f"server {server_id!r} is not in the policy catalog", REASON_DENIED)
        if seen is not None:
            seen.append(request)
        decision = self._evaluate(bundle, request, None)
        self._shadow_check(request, decision, principal, facts.now, None)
        return decision

    # ---- recorded inputs (what-if replay) ------------------------------------------------------

    def recorded_input(self, request: CedarRequest) -> dict[str, Any]:
        """What Cedar saw for one decision, as JSON-ready data: the principal, action and resource, the
        entities as sent, and the whole context (not only what the live policies read). Off the request
        path: the recorder calls it when it writes."""
        context = request.context
        if request.facts is not None:
            context = self._contexts.build(True, request.facts, request.granted, request.cedar_input,
                                           request.input_whole)
        return _recorded(request, context)

    def recorded_json(self, request: CedarRequest) -> dict[str, Any]:
        """recorded_input with its context serialized already (an orjson.Fragment holding the bytes orjson.dumps
        gives of recorded_input's context), for the recorder's sealed document: the whole context is serialized
        from its parts, without building it as a dict first (ContextBuilder.whole_json)."""
        if request.facts is None:
            context = orjson.dumps(request.context)
        else:
            context = self._contexts.whole_json(request.facts, request.granted, request.cedar_input)
        return _recorded(request, orjson.Fragment(context))

    def redecide(self, recorded: Mapping[str, Any]) -> Decision:
        """Decide a recorded input (recorded_input) again with the policies in force, at its recorded time
        (the context holds it). Nothing else of the engine is read or changed."""
        context = dict(recorded["context"])
        cedar = self._cedar_request(recorded["principal"]["id"], recorded["action"]["id"], recorded["resource"],
                                    orjson.dumps(context))
        invalid = REASON_BAD_ARGUMENTS if recorded["kind"] == "tool" else REASON_DENIED
        request = _Request(recorded["kind"], recorded["target"], cedar, recorded["entities"], invalid, context)
        return self._evaluate(self._bundle, request, None)

    # ---- listing -----------------------------------------------------------------------------

    def visible_tools(self, principal: Principal, tools: Sequence[ToolEntry], facts: RequestFacts) -> set[str]:
        """Exposed names of the tools whose call could be allowed or step-up for some arguments.

        Evaluated against the listing policy set (input-dependent conditions relaxed, see listing.py)
        with the part of the context it reads; approval is not granted. In one piece, tool by tool: the
        reference for gateway.policy.tool_listing, which tools/list uses.
        """
        job = self.listing_job(principal, tools, facts)
        for chunk in job.chunks():
            self.evaluate_listing(job, chunk)
        return job.visible()

    def listing_job(self, principal: Principal, tools: Sequence[ToolEntry], facts: RequestFacts) -> ListingJob:
        """What a listing needs, and which of its tools this principal's memo does not know yet."""
        bundle, principal_json, context = self.listing_facts(principal, facts)
        catalog = bundle.catalog
        models = [m for t in tools if (m := catalog.tools.get(t.exposed_name)) is not None
                  and (m.entry is t or m.entry == t)]
        servers = catalog.servers
        keys = [(m.entity_json, m.action_json, servers[m.entry.server_id].entity_json) for m in models]
        memo = self._listings.entry((bundle.base_digest, principal_json, context))
        pending = [(m, key) for m, key in zip(models, keys, strict=True) if key not in memo]
        return ListingJob(bundle, principal.agent_id, principal_json, context, models, keys, memo, pending)

    def evaluate_listing(self, job: ListingJob, chunk: list[tuple[ToolModel, ListingKey]]) -> None:
        """Decide one batch of a listing's pending tools and remember the answers."""
        bundle = job.bundle
        requests = [self._cedar_request(job.agent_id, m.entry.exposed_name, m.uid, job.context) for m, _ in chunk]
        servers = {m.entry.server_id for m, _ in chunk}
        entities = self._join(
            job.principal_json,
            *(m.entity_json for m, _ in chunk),
            *(m.action_json for m, _ in chunk),
            *(bundle.catalog.servers[s].entity_json for s in servers),
        )
        visible = self._visibility(bundle, bundle.listing, requests, entities)
        for (_, key), shown in zip(chunk, visible, strict=True):
            job.memo[key] = shown

    def visible_prompts(
        self, principal: Principal, prompts: Iterable[tuple[str, str]], facts: RequestFacts
    ) -> set[str]:
        """Of (server_id, exposed prompt name) pairs, the names whose prompts/get would be allowed or step-up."""
        return self._visible_items(principal, list(prompts), facts, "prompt")

    def visible_resources(
        self, principal: Principal, resources: Iterable[tuple[str, str]], facts: RequestFacts
    ) -> set[str]:
        """Of (server_id, uri) pairs, the URIs (as given) whose resources/read would be allowed or step-up."""
        return self._visible_items(principal, list(resources), facts, "resource")

    def _visible_items(
        self, principal: Principal, items: list[tuple[str, str]], facts: RequestFacts, kind: str
    ) -> set[str]:
        bundle = self._bundle
        resources, known = [], []
        for sid, name in items:
            try:
                if sid in bundle.catalog.servers:
                    resources.append(self._item_resource(kind, sid, name))
                    known.append((sid, name))
            except CanonicalizationError:
                continue  # a URI with no single meaning is never listed
        items = known
        if not items:
            return set()
        context = orjson.dumps(self._common_context(facts, False))
        action = prompt_action if kind == "prompt" else resource_action
        requests = [
            self._cedar_request(principal.agent_id, action(sid), uid, context)
            for (sid, _), (uid, _) in zip(items, resources, strict=True)
        ]
        unique = {orjson.dumps(uid): blob for uid, blob in resources}
        servers = [bundle.catalog.servers[s] for s in {sid for sid, _ in items}]
        entities = self._join(
            self._principal_json(bundle, principal, facts.now),
            *unique.values(),
            *(s.entity_json for s in servers),
            *(s.prompt_action_json if kind == "prompt" else s.resource_action_json for s in servers),
        )
        visible = self._visibility(bundle, bundle.policies, requests, entities)
        return {name for (_, name), v in zip(items, visible, strict=True) if v}

    # ---- explain -----------------------------------------------------------------------------

    def explain(
        self, principal: Principal, tool: ToolEntry, arguments: dict[str, Any] | None, facts: RequestFacts,
        approved: bool = False,
    ) -> dict[str, Any]:
        """The decision plus each determining policy's id, annotations, file:line and source text."""
        bundle = self._bundle
        decision = self.decide_tool(principal, tool, arguments, facts, approved)
        by_id = {s.policy_id: s for s in bundle.sources}
        return {
            "decision": {
                "outcome": decision.outcome,
                "decision_id": decision.decision_id,
                "reason": decision.reason,
                "step_up_mode": decision.step_up_mode,
                "errors": list(decision.errors),
                "policy_version": decision.policy_version,
            },
            "agent": principal.agent_id,
            "tool": tool.exposed_name,
            "canonical_arguments": decision.canonical_arguments,
            "policies": [
                {
                    "id": pid,
                    "effect": by_id[pid].effect,
                    "annotations": dict(by_id[pid].annotations),
                    "file": str(by_id[pid].file),
                    "line": by_id[pid].line,
                    "source": by_id[pid].text.strip(),
                }
                for pid in decision.policy_ids
                if pid in by_id
            ],
        }

    # ---- request building ----------------------------------------------------------------------

    def tool_entities(self, principal: Principal, tool: ToolEntry, now: float) -> str:
        """The entity JSON one tools/call decision sends to Cedar (exposed for tests and benchmarks)."""
        bundle = self._bundle
        return self._tool_entities(bundle, principal, bundle.catalog.tools[tool.exposed_name], now)

    def _tool_entities(self, bundle: Bundle, principal: Principal, model: ToolModel, now: float,
                       server: ServerModel | None = None) -> str:
        if server is None:
            server = bundle.catalog.servers[model.entry.server_id]
        parts = (self._principal_json(bundle, principal, now), model.entity_json, server.entity_json, model.action_json)
        # The same string object for the same parts: joined once, and hashed once as the entity cache's key.
        joined = self._joined_entities.get(parts)
        if joined is None:
            if len(self._joined_entities) >= ENTITY_CACHE_SIZE:
                self._joined_entities.clear()
            joined = self._joined_entities[parts] = self._join(*parts)
        return joined

    def _tool_request(
        self, bundle: Bundle, principal: Principal, model: ToolModel, cedar_input: Any, facts: RequestFacts,
        approved: bool,
    ) -> _Request:
        calls = self._tool_calls(bundle, model)
        reads, policies = self._tool_scope(bundle, calls)
        context, text = self._contexts.build_json(reads, facts, approved, cedar_input, model.input_whole)
        entities = self._tool_entities(bundle, principal, model, facts.now, calls.server)
        cedar: dict[str, Any] = {"principal": {"type": "Agent", "id": principal.agent_id}, "action": calls.action,
                                 "resource": calls.resource}
        if text != EMPTY_CONTEXT:  # none at all for the empty record: cedarpy takes an absent one so, parsing none
            cedar["context"] = text.decode()
        return _Request("tool", calls.name, cedar, entities, REASON_BAD_ARGUMENTS, context, facts,
                        approved, cedar_input, model.input_whole, policies)

    def _tool_calls(self, bundle: Bundle, model: ToolModel) -> _ToolCalls:
        """What every call of `model` under `bundle` shares, worked out on its first call (remembered for the
        bundle in force only: the next call under a new one starts afresh, so an old bundle is not held long).
        Its action and resource dicts go into every such call's Cedar request and recorded input: read them,
        never change them (a recorded input's reader copies what it would change, as redecide does)."""
        memo = self._tool_memo
        if memo[0] is not bundle:
            memo = self._tool_memo = (bundle, {})
        name = model.entry.exposed_name
        known = memo[1].get(name)
        if known is not None and known.model is model:
            return known
        server = bundle.catalog.servers[model.entry.server_id]
        scoped = bundle.scoped
        scope = None if scoped is None else scoped.for_tool(model, server, bundle.catalog)
        known = _ToolCalls(model, server, scope, name, {"type": "Action", "id": name}, dict(model.uid))
        if len(memo[1]) >= TOOLS_KEPT:
            memo[1].clear()
        memo[1][name] = known
        return known

    def _item_request(
        self, bundle: Bundle, principal: Principal, server_id: str, name: str, facts: RequestFacts, kind: str
    ) -> _Request | None:
        server = bundle.catalog.servers.get(server_id)
        if server is None:
            return None
        uid, blob = self._item_resource(kind, server_id, name)
        action = prompt_action(server_id) if kind == "prompt" else resource_action(server_id)
        context, text = self._contexts.build_json(self._reads(bundle), facts, False)
        action_blob = server.prompt_action_json if kind == "prompt" else server.resource_action_json
        entities = self._join(self._principal_json(bundle, principal, facts.now), blob, server.entity_json,
                              action_blob)
        cedar = self._cedar_request(principal.agent_id, action, uid, text)
        return _Request(kind, name, cedar, entities, REASON_DENIED, context, facts)

    @staticmethod
    def _item_resource(kind: str, server_id: str, name: str) -> tuple[dict[str, str], str]:
        if kind == "prompt":
            uid = {"type": "Prompt", "id": name}
            attrs = {"server": server_id, "name": name}
        else:
            # The URI is path-normalized so `like "file:///data/public/*"` cannot be walked around.
            uri = normalize_path(nfc(name))
            uid = {"type": "Resource", "id": uri}
            attrs = {"server": server_id, "uri": uri}
        entity = {"uid": uid, "attrs": attrs, "parents": [{"type": "McpServer", "id": server_id}]}
        return uid, orjson.dumps(entity).decode()

    def _common_context(self, facts: RequestFacts, approved: bool) -> dict[str, Any]:
        return self._contexts.full(facts, approved)

    def _reads(self, bundle: Bundle) -> ContextReads:
        """What a decision's context must hold: what the policies read; everything while a shadow set
        (which may read more) evaluates the same request."""
        return bundle.decision_reads if self._shadow is None else True

    def _tool_scope(self, bundle: Bundle, calls: _ToolCalls) -> tuple[ContextReads, cedarpy.PolicySet | None]:
        """What a call of this tool is decided with (scoped.py): the context the policies that can apply to it
        read, and those policies (None: the whole set); the whole set and its reads while a shadow set evaluates
        the same request with its own policies (see _reads)."""
        scope, scoped = calls.scope, bundle.scoped
        if self._shadow is not None or scope is None or scoped is None:
            return self._reads(bundle), None
        return scope.reads, scoped.policy_set(scope)

    def _principal_json(self, bundle: Bundle, principal: Principal, now: float) -> str:
        return self._principals.json(principal, now, bundle.catalog.server_ids)

    @staticmethod
    def _join(*blobs: str) -> str:
        return "[" + ",".join(blobs) + "]"

    @staticmethod
    def _cedar_request(agent_id: str, action: str, uid: Mapping[str, str],
                       context: bytes | str | None) -> dict[str, Any]:
        """`context` None: none is sent (Cedar's empty record)."""
        request: dict[str, Any] = {
            "principal": {"type": "Agent", "id": agent_id},
            "action": {"type": "Action", "id": action},
            # (a tool's uid is a read-only view: its copy() is the dict's own, dict() would go key by key)
            "resource": uid.copy() if type(uid) is MappingProxyType else dict(uid),
        }
        if context is not None:
            request["context"] = context.decode() if isinstance(context, bytes) else context
        return request

    # ---- evaluation --------------------------------------------------------------------------

    def _evaluate(self, bundle: Bundle, request: _Request, canonical: Any,
                  policies: cedarpy.PolicySet | None = None) -> Decision:
        """`policies`: of `bundle`'s, those that can apply to the request (its own set when None)."""
        try:
            result = is_authorized(request.cedar, bundle.policies if policies is None else policies,
                                   self._entities(request.entities))
        except (ValueError, RuntimeError) as exc:  # a malformed request or entity: deny, never raise into the caller
            return self._refused(bundle, f"evaluation failed: {exc}", REASON_DENIED)
        return self._interpret(bundle, request, result, canonical)

    def _interpret(self, bundle: Bundle, request: _Request, result: cedarpy.AuthzResult, canonical: Any) -> Decision:
        # Cedar reports both in no fixed order (it varies call to call): policy-file order makes the
        # reason an agent is told, and the ids and errors recorded, the same for the same request.
        diagnostics = result.diagnostics
        raw_errors = diagnostics.errors
        if raw_errors:
            raw_errors = sorted(raw_errors, key=_position_key)
        errors = tuple([bundle.describe_error(e) for e in raw_errors]) if raw_errors else ()
        determined = self._determined(bundle, diagnostics.reasons)
        determining, policy_ids = determined.cedar_ids, determined.policy_ids
        decision = result.decision
        if decision is ALLOW and not errors:
            return self._decision(bundle, "allow", policy_ids, determined.allow_reason, (), canonical)
        if decision == cedarpy.Decision.Deny and determining and not errors:
            modes = determined.step_up_modes
            if all(mode is not None for mode in modes):
                if REAUTH in modes:  # the person signs in again first; an approval, if also asked, after
                    return self._reauth(bundle, request, determining, policy_ids, canonical)
                if not self._approval_would_allow(bundle, request):
                    # Nothing would permit it even with an approval: a plain deny, not "ask for approval".
                    return self._decision(bundle, "deny", policy_ids, REASON_DENIED, (), canonical)
                reason = self._reason(bundle, determining, REASON_STEP_UP)
                # "pending" wins if any determining policy asks for it.
                mode = "pending" if "pending" in modes else next((m for m in modes if m), "")
                approvers, ttl = self._approval_terms(bundle, determining)
                return self._decision(bundle, "step_up", policy_ids, reason, (), canonical, mode, approvers, ttl)
        if decision == cedarpy.Decision.Deny and determining:
            return self._decision(bundle, "deny", policy_ids, self._reason(bundle, determining, REASON_DENIED),
                                  errors, canonical)
        # Default deny, an Allow spoiled by an error, or NoDecision (a request Cedar could not build).
        reason = request.invalid_reason if decision == cedarpy.Decision.NoDecision else REASON_DENIED
        erroring = tuple(dict.fromkeys(bundle.public_id(p) for p in _erroring_policies(raw_errors)))
        if errors:
            log.warning("policy evaluation error(s), failing closed: %s", "; ".join(errors))
        return self._decision(bundle, "deny", erroring, reason, errors, canonical)

    def _determined(self, bundle: Bundle, reasons: list[str]) -> _Determined:
        """What these determining policies mean in `bundle`, worked out once per policy texts: the same
        few sets come back call after call."""
        key = (bundle.base_digest, *reasons)
        known = self._determinations.get(key)
        if known is None:
            cedar_ids = tuple(sorted(reasons, key=_position_key))
            known = _Determined(cedar_ids, tuple(bundle.public_id(p) for p in cedar_ids),
                                self._reason(bundle, cedar_ids, ""),
                                tuple(self._step_up_mode(bundle, p) for p in cedar_ids))
            if len(self._determinations) >= DETERMINATION_CACHE_SIZE:
                self._determinations.clear()  # bounded; the common sets come straight back
            self._determinations[key] = known
        return known

    def _entities(self, blob: str) -> cedarpy.Entities:
        """A parsed entity set, cached by its JSON: one principal and one resource repeat call after
        call, and parsing them is most of what Cedar spends (about 130 µs vs 40 µs per decision)."""
        handle = self._entity_handles.get(blob)
        if handle is None:
            handle = cedarpy.Entities.from_json_str(blob)
            if len(blob) > ENTITY_CACHED_CHARS:
                return handle
            self._entity_handles[blob] = handle
            if len(self._entity_handles) > ENTITY_CACHE_SIZE:
                self._entity_handles.popitem(last=False)
        else:
            self._entity_handles.move_to_end(blob)
        return handle

    def _reauth(self, bundle: Bundle, request: _Request, determining: tuple[str, ...], policy_ids: tuple[str, ...],
                canonical: object) -> Decision:
        """Step-up by re-authentication (gateway.policy.reauth): only a person can, and only if it would help."""
        sources = [s for s in (bundle.source(p) for p in determining)
                   if s is not None and s.annotations.get("step_up") == REAUTH]
        terms = reauth_terms(sources)
        person = _signed_in(request)
        if person is None:
            return self._decision(bundle, "deny", policy_ids, NO_PERSON, (), canonical)
        now, user_acr, auth_time, issuer = person
        acr = terms.acr_values[0] if terms.acr_values else user_acr
        if not self._approval_would_allow(bundle, request, (now, acr)):
            return self._decision(bundle, "deny", policy_ids, REASON_DENIED, (), canonical)
        # A provider that sends no auth_time will not send one after the new sign-in either (0, as in context.user).
        if auth_time is None and not self._approval_would_allow(bundle, request, (0, acr)):
            if request.facts is not None:  # a live call, not a replay: say so to the operator
                warn_no_auth_time(issuer)
            return self._decision(bundle, "deny", policy_ids, NO_AUTH_TIME, (), canonical)
        reason = next((s.annotations["reason"] for s in sources if s.annotations.get("reason")), REASON_REAUTH)
        return self._decision(bundle, "step_up", policy_ids, reason, (), canonical, REAUTH, reauth=terms)

    def _approval_would_allow(self, bundle: Bundle, request: _Request, fresh: tuple[int, str] | None = None) -> bool:
        """A step-up forbid only means "approval required" if an approval would then allow the call.

        Cedar reports only the forbids behind a Deny; without this check a privileged tool the agent
        is not entitled to would read as step-up (and show in lists) instead of a plain deny.
        """
        try:
            result = is_authorized(request.approved(fresh), bundle.policies, self._entities(request.entities))
        except (ValueError, RuntimeError):
            return False
        return result.decision == cedarpy.Decision.Allow and not result.diagnostics.errors

    def _visibility(self, bundle: Bundle, policies: cedarpy.PolicySet, requests: list[dict[str, Any]],
                    entities: str) -> list[bool]:
        """Allow, or step-up that an approval would turn into Allow; two batches at most."""
        return [outcome != "deny" for outcome, _ in self._outcomes(bundle, policies, requests, entities)]

    def _outcomes(self, bundle: Bundle, policies: cedarpy.PolicySet, requests: list[dict[str, Any]],
                  entities: str) -> list[tuple[Outcome, cedarpy.AuthzResult | None]]:
        """Each request's outcome without approval (step_up: an approval would make it a clean Allow),
        with Cedar's answer (None when the batch failed); two batches at most."""
        results = self._batch(policies, requests, entities)
        if len(results) != len(requests):
            return [("deny", None)] * len(requests)
        outcomes: list[tuple[Outcome, cedarpy.AuthzResult | None]] = [
            ("allow" if _clean_allow(r) else "deny", r) for r in results]
        step_up = [i for i, r in enumerate(results) if self._is_step_up_shaped(bundle, r)]
        if step_up:
            approved = [_with_approval(requests[i], self._fresh_for(bundle, results[i])) for i in step_up]
            for i, r in zip(step_up, self._batch(policies, approved, entities), strict=False):
                if _clean_allow(r):
                    outcomes[i] = ("step_up", results[i])
        return outcomes

    def _is_step_up_shaped(self, bundle: Bundle, result: cedarpy.AuthzResult) -> bool:
        reasons = result.diagnostics.reasons
        return (result.decision == cedarpy.Decision.Deny and bool(reasons) and not result.diagnostics.errors
                and all(self._step_up_mode(bundle, p) is not None for p in reasons))

    def _batch(self, policies: cedarpy.PolicySet, requests: list[dict[str, Any]],
               entities: str) -> list[cedarpy.AuthzResult]:
        try:
            return is_authorized_batch(requests, policies, entities)
        except (ValueError, RuntimeError) as exc:
            log.error("listing evaluation failed, showing nothing: %s", exc)
            return []

    def _fresh_for(self, bundle: Bundle, result: cedarpy.AuthzResult) -> tuple[int, str] | None:
        """For a listing: a reauth step-up is shown if the person, signing in now as asked, could call."""
        reasons = result.diagnostics.reasons
        if not any(self._step_up_mode(bundle, p) == REAUTH for p in reasons):
            return None
        sources = [s for s in (bundle.source(p) for p in reasons) if s is not None]
        asked = reauth_terms(s for s in sources if s.annotations.get("step_up") == REAUTH).acr_values
        return (int(time.time()), asked[0] if asked else "")

    @staticmethod
    def _step_up_mode(bundle: Bundle, cedar_id: str) -> str | None:
        source = bundle.source(cedar_id)
        if source is None or "step_up" not in source.annotations:
            return None
        return source.annotations["step_up"]

    @staticmethod
    def _approval_terms(bundle: Bundle, determining: tuple[str, ...]) -> tuple[str | None, float | None]:
        """Who decides (@approvers) and how long the request lives (@approval_ttl, the shortest wins)."""
        sources = [s for s in (bundle.source(p) for p in determining) if s is not None]
        groups = sorted({s.annotations["approvers"].strip() for s in sources if s.annotations.get("approvers")})
        # Readable: the bundle refuses a policy set with an unreadable @approval_ttl.
        ttls = [parse_duration(s.annotations["approval_ttl"]) for s in sources if s.annotations.get("approval_ttl")]
        # Several policies naming groups: the approver must be in every one of them.
        return (",".join(groups) if groups else None), (min(ttls) if ttls else None)

    @staticmethod
    def _reason(bundle: Bundle, determining: tuple[str, ...], default: str) -> str:
        """The first @reason, preferring plain forbids: a deny must not read "get an approval"."""
        sources = [s for s in (bundle.source(p) for p in determining) if s is not None and s.annotations.get("reason")]
        sources.sort(key=lambda s: "step_up" in s.annotations)
        return sources[0].annotations["reason"] if sources else default

    @staticmethod
    def _decision(
        bundle: Bundle, outcome: Outcome, policy_ids: tuple[str, ...], reason: str, errors: tuple[str, ...],
        canonical: Any, step_up_mode: str | None = None, approvers: str | None = None,
        approval_ttl_s: float | None = None, reauth: ReauthTerms | None = None,
    ) -> Decision:
        return _new_decision(outcome, new_decision_id(), policy_ids, reason, errors, bundle.version, step_up_mode,
                             canonical, approvers, approval_ttl_s, bundle.base_digest[:16],
                             argument_digest(canonical) if canonical is not None else None, reauth)

    def _refused(self, bundle: Bundle, error: str, reason: str) -> Decision:
        return self._decision(bundle, "deny", (), reason, (error,), None)

    # ---- shadow ------------------------------------------------------------------------------

    def _shadow_check(self, request: _Request, live: Decision, principal: Principal, now: float,
                      canonical: Any) -> None:
        shadow = self._shadow
        if shadow is None:
            return
        self._shadow_evaluated += 1
        candidate = self._evaluate(shadow, request, canonical)
        if candidate.outcome == live.outcome:
            return
        record = {
            "decision_id": live.decision_id,
            "live": {"outcome": live.outcome, "policy_ids": list(live.policy_ids), "version": live.policy_version},
            "candidate": {"outcome": candidate.outcome, "policy_ids": list(candidate.policy_ids),
                          "version": candidate.policy_version, "errors": list(candidate.errors)},
            request.kind: request.target,
            "agent": principal.agent_id,
            "at": now,
        }
        self.shadow_disagreements.append(record)
        log.info("shadow disagreement %s: live %s, candidate %s for %s %s", live.decision_id, live.outcome,
                 candidate.outcome, request.kind, request.target)

    # ---- listing inputs (gateway.policy.tool_listing) ------------------------------------------

    def listing_facts(self, principal: Principal, facts: RequestFacts) -> tuple[Bundle, str, str]:
        """What a listing is decided from: the bundle in force, the principal's entity JSON and the
        part of the context the listing policies read (JSON). Evaluate with evaluate_listing."""
        bundle = self._bundle
        context = orjson.dumps(prune_context(self._common_context(facts, False), bundle.listing_reads)).decode()
        return bundle, self._principal_json(bundle, principal, facts.now), context

    # ---- reach (gateway.privilege.reach) ---------------------------------------------------------

    def reach_outcomes(self, bundle: Bundle, agent_id: str, principal_json: str, context: str,
                       models: Sequence[ToolModel], policies: cedarpy.PolicySet | None = None,
                       ) -> list[tuple[Outcome, tuple[str, ...]]]:
        """Each tool's outcome for the most permissive arguments (the listing set, see listing.py, or
        `policies`: another relaxed copy of the bundle's set, same policy ids) under `context` (from
        listing_facts): allow, step_up (an approval would allow) or deny, with the determining policy ids
        (the erroring ones for a deny by error; none for a default deny).
        One Cedar batch (two with step-ups); reads only `bundle`: safe on a worker thread."""
        if not models:
            return []
        requests = [self._cedar_request(agent_id, m.entry.exposed_name, m.uid, context) for m in models]
        servers = {m.entry.server_id for m in models}
        entities = self._join(principal_json, *(m.entity_json for m in models), *(m.action_json for m in models),
                              *(bundle.catalog.servers[s].entity_json for s in servers))
        return [(outcome, self._reach_ids(bundle, result))
                for outcome, result in self._outcomes(bundle, policies or bundle.listing, requests, entities)]

    def _reach_ids(self, bundle: Bundle, result: cedarpy.AuthzResult | None) -> tuple[str, ...]:
        if result is None:
            return ()
        if result.diagnostics.errors:
            erroring = _erroring_policies(result.diagnostics.errors)
            return tuple(dict.fromkeys(bundle.public_id(p) for p in erroring))
        return self._determined(bundle, result.diagnostics.reasons).policy_ids


def _schema_dict(schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An input schema as canonicalize reads it: the tool's own dict (it is only read), a copy of another mapping."""
    if not schema:
        return None
    return schema if type(schema) is dict else dict(schema)


def _clean_allow(result: cedarpy.AuthzResult) -> bool:
    return result.decision == cedarpy.Decision.Allow and not result.diagnostics.errors


def _with_approval(request: dict[str, Any], fresh: tuple[int, str] | None = None) -> dict[str, Any]:
    context = orjson.loads(request["context"])
    context["approval"] = {"granted": True}
    if fresh is not None:
        context = _freshly_signed_in(context, *fresh)
    return {**request, "context": orjson.dumps(context).decode()}


def _signed_in(request: _Request) -> tuple[int, str, int | None, str] | None:
    """The person of a request (now, acr, auth_time or None if unknown, issuer), None without one: from the
    live facts, or for a replayed recorded input (no facts) from its recorded context.user (auth_time 0 is
    how context.user says "unknown")."""
    facts = request.facts
    if facts is not None:
        user = facts.user
        return None if user is None else (int(facts.now), user.acr, user.auth_time, user.issuer)
    recorded = request.context.get("user")
    clock = request.context.get("request")
    if not isinstance(recorded, dict) or recorded.get("present") is not True or not isinstance(clock, dict):
        return None
    auth_time, now = recorded.get("auth_time"), clock.get("time")
    if not isinstance(now, int):
        return None
    return (now, str(recorded.get("acr", "")), auth_time if isinstance(auth_time, int) and auth_time > 0 else None,
            str(recorded.get("issuer", "")))


def _freshly_signed_in(context: dict[str, Any], auth_time: int, acr: str) -> dict[str, Any]:
    """The context as if the person (if there is one) had just signed in with `acr`: what a reauth step-up
    would bring. A workload's context stays as it is (it can never re-authenticate)."""
    user = context.get("user")
    if not isinstance(user, dict) or user.get("present") is not True:  # read whenever user is (listing.py)
        return context
    fresh = dict(user)
    if "auth_time" in fresh:
        fresh["auth_time"] = auth_time
    if "acr" in fresh and acr:
        fresh["acr"] = acr
    return {**context, "user": fresh}


def _recorded(request: CedarRequest, context: object) -> dict[str, Any]:
    """A recorded input with `context` (a dict, or its JSON as an orjson.Fragment): PolicyEngine.recorded_input."""
    cedar = request.cedar
    return {"kind": request.kind, "target": request.target, "principal": cedar["principal"],
            "action": cedar["action"], "resource": cedar["resource"], "entities": request.entities,
            "context": context}


def new_decision_id() -> str:
    return "dec_" + DECISION_ID.take()  # 64 random bits as secrets.token_hex(8) spells them, without a system call each


def _position_key(text: str) -> tuple[int, str]:
    """Order by the first Cedar policy id in `text` ("policyN": the N-th policy of the set), then text."""
    match = _POLICY_IN_ERROR.search(text)
    return (int(match.group(0)[6:]) if match else -1, text)


def _erroring_policies(errors: Iterable[str]) -> list[str]:
    return [m.group(0) for e in errors if (m := _POLICY_IN_ERROR.search(e))]
