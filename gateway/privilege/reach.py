"""The reach of one agent: every catalog tool decided by the live policies as allow, step_up or deny.

Computed from what the gateway enforces, never from hand-written rules: the live PolicyEngine's bundle
(the same Cedar policy set and catalog model calls are decided with) and the task stage's gate.

The contexts a tool is decided under (the worst case over each, because whoever holds the credential
picks the moment, the client and the arguments):
- caller-picked values (gateway/privilege/reach_policies.py): a relaxed copy of the policy set in which a
  condition on `context.input`, on the time (`context.request.hour`, `.weekday`, `.time`) or on the
  declared client (`context.request.client`) counts as met when some value could meet it, as listing
  relaxes input conditions (gateway/policy/listing.py). `allow` means "allowed for some arguments, at some
  moment, from some client";
- working hours: decided both ways (`context.request.working_hours` true and false), a context each;
- protocol era: both (`context.request.era`): the caller picks it when it connects;
- task: with `task_id`, that task (its purpose and tools as they are; only its tools pass the gate; an
  ended task passes nothing). Without one, a task the agent could grant itself at the token endpoint
  (any purpose and any entitled tools: conditions on `context.task.purpose` and `.tools` are relaxed too;
  the gate passes entitled tools only), and also no task at all when the entitlement does not require one;
- credential: each kind of workload identity the agent has (auth_method). Token claims are not modeled
  (the principal carries none): a tool that a claim or an earlier call could open is reported in
  `caveats`, never silently as deny;
- chain: nothing done yet (`NO_CHAIN`, no approval). `egress_after_read` answers "read sensitive data,
  then send it out": each egress tool decided again right after one allowed sensitive read (that read's
  data classes, `sensitive_read` true for the task and the agent, one call in the last minute).

A tool's verdict is the most permissive over the contexts (allow > step_up > deny); `verdicts` keeps
each context's answer, in the order of `AgentReach.contexts`. The gate's refusals carry the pseudo
policy ids `gate:*`. Results are cached by (policy version, catalog version, agent record, task record,
hour): a page view does not recompute, a change to any of them does. The Cedar work runs on a worker
thread, in batches of `CHUNK` tools.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.identity.principal import Principal
from gateway.policy.bundle import Bundle
from gateway.policy.context import NO_AGENT_CHAIN, NO_CHAIN
from gateway.policy.engine import PolicyEngine, RequestFacts
from gateway.policy.listing import FreePath, prune_context
from gateway.policy.model import ToolModel
from gateway.privilege.reach_policies import CALLER_PICKS, OWN_TASK, UNMODELED_PATHS, ReachPolicies, RelaxedSet
from gateway.protocol.eras import LEGACY_ERA, MODERN_ERA
from gateway.registry.model import Agent, agent_to_dict
from gateway.registry.service import Registry
from gateway.settings.monitoring import MonitoringSettings
from gateway.tasks.gate import chain_facts
from gateway.tasks.gate import task_facts as facts_of_task
from gateway.tasks.model import Task, TaskState, task_to_dict
from gateway.tasks.service import TaskService

VERDICTS = ("allow", "step_up", "deny")
_RANK = {"deny": 0, "step_up": 1, "allow": 2}
GATE_NOT_IN_TASK = "gate:not-in-task"
GATE_NEEDS_TASK = "gate:needs-task"
GATE_TASK_ENDED = "gate:task-ended"
GATE_OUTSIDE_ENTITLEMENT = "gate:outside-entitlement"
ERAS = (MODERN_ERA, LEGACY_ERA)  # the caller picks the protocol era (context.request.era)
# Tools per Cedar batch: Cedar holds the GIL while it decides one, and the event loop waits that long
# (32 tools: a few ms; 128 took 30-50 ms on a loaded machine).
CHUNK = 32
CHAIN_READS = 32  # sensitive reads whose egress follow-ups are decided (of each context)
CACHE_ROWS = 100_000  # tool rows kept (about 30 MiB)
Answer = tuple[str, tuple[str, ...]]  # (verdict, determining policy ids)
# (label, context.task, gate: tool name -> its refusal, the relaxed paths) of one way to call
_Grant = tuple[str, "Mapping[str, Any] | None", "Callable[[str], str | None]", "frozenset[FreePath]"]
_IDENTITY_METHODS = {"static": "static-token", "oidc": "oidc", "spiffe": "spiffe"}


class UnknownAgent(LookupError):
    """No agent with this id."""


class UnknownTask(LookupError):
    """No task with this id for this agent."""


@dataclass(frozen=True, slots=True)
class ToolReach:
    server_id: str
    tool: str  # the exposed (namespaced) tool name agents call
    risk: str  # the catalog's risk tier
    verdict: str  # "allow" | "step_up" | "deny": the most permissive over the contexts
    policy_ids: tuple[str, ...]  # the determining policies of that verdict (gate:* for the task gate)
    data_classes: tuple[str, ...] = ()
    egress: bool = False  # the catalog's egress flag, or monitoring.egress_servers / egress_tools
    sensitive: bool = False  # touches a data class in monitoring.sensitive_classes
    status: str = "approved"  # the catalog's review status
    approvers: str | None = None  # step_up: the @approvers groups of the determining policies
    verdicts: tuple[str, ...] = ()  # per context, in the order of AgentReach.contexts


@dataclass(frozen=True, slots=True)
class ChainStep:
    """An egress tool decided right after one allowed sensitive read (the chain context)."""

    read_tool: str
    egress_tool: str
    verdict: str
    policy_ids: tuple[str, ...]
    context: str  # the base context it was decided under


@dataclass(frozen=True, slots=True)
class AgentReach:
    agent_id: str
    task_id: str | None
    policy_version: str
    catalog_version: str
    agent_version: str
    computed_at: float
    contexts: tuple[str, ...]
    tools: tuple[ToolReach, ...]
    egress_after_read: tuple[ChainStep, ...] = ()
    sensitive_reads: int = 0  # allowed sensitive reads found (egress_after_read covers CHAIN_READS of them)
    task: Task | None = None
    caveats: tuple[str, ...] = ()  # tools the reach may under-report: what it does not model could open them

    def by_verdict(self, verdict: str) -> tuple[ToolReach, ...]:
        return tuple(t for t in self.tools if t.verdict == verdict)

    def tool(self, name: str) -> ToolReach | None:
        return next((t for t in self.tools if t.tool == name), None)


@dataclass(frozen=True, slots=True)
class _Context:
    label: str
    principal: Principal
    facts: RequestFacts
    gate: Callable[[str], str | None]  # tool name -> the gate's pseudo policy id when it refuses
    free: frozenset[FreePath] = CALLER_PICKS  # the paths the caller picks: relaxed (reach_policies.py)


@dataclass(frozen=True, slots=True)
class _Asked:
    """One context as Cedar sees it: the relaxed set and the request's principal and context JSON."""

    rules: RelaxedSet
    principal_json: str
    context_json: str

    def key(self, free: frozenset[FreePath]) -> tuple[frozenset[FreePath], str, str]:
        return free, self.principal_json, self.context_json


@dataclass(slots=True)
class _Cache:
    """Reaches of the policy set and catalog in force only (an older one can never be served again), at most
    CACHE_ROWS tool rows in all (a reach holds one row per catalog tool), least recently used out first."""

    entries: OrderedDict[tuple[str, ...], AgentReach] = field(default_factory=OrderedDict)
    rows: int = 0

    def get(self, key: tuple[str, ...]) -> AgentReach | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: tuple[str, ...], value: AgentReach) -> None:
        for old in [k for k in self.entries if k[:2] != key[:2]]:
            self._drop(old)
        self._drop(key)
        self.entries[key] = value
        self.rows += len(value.tools)
        while len(self.entries) > 1 and self.rows > CACHE_ROWS:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: tuple[str, ...]) -> None:
        gone = self.entries.pop(key, None)
        if gone is not None:
            self.rows -= len(gone.tools)


class ReachAnalyzer:
    """Decides agents' reach with the live engine; one per gateway (admin API, console, commands)."""

    def __init__(self, engine: PolicyEngine, registry: Registry, tasks: TaskService | None,
                 monitoring: MonitoringSettings, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.registry = registry
        self.tasks = tasks
        self.monitoring = monitoring
        self.clock = clock
        self.computed = 0  # reaches computed (not served from the cache), for tests
        self._cache = _Cache()
        self._catalog_versions: tuple[Bundle, str] | None = None
        self._policies: ReachPolicies | None = None

    async def agent_reach(self, agent_id: str, task_id: str | None = None) -> AgentReach:
        """The reach of `agent_id` (under `task_id`); UnknownAgent / UnknownTask for bad input."""
        agent = self.registry.get(agent_id)
        if agent is None:
            raise UnknownAgent(f"no agent {agent_id!r}")
        task = await self._task(agent, task_id)
        for _ in range(3):
            now = self.clock()
            bundle = self.engine.bundle
            contexts = self._contexts(bundle, agent, task, now)
            prepared = self._prepared(bundle, contexts)
            if prepared is not None:
                break
        else:
            raise RuntimeError("the policy set kept changing while the reach was prepared")
        catalog_version = self._catalog_versions[1] if self._catalog_versions and self._catalog_versions[0] is bundle \
            else await asyncio.to_thread(self.catalog_version, bundle)  # O(catalog), once per policy or catalog change
        key = (bundle.version, catalog_version, _digest(agent_to_dict(agent)),
               agent.effective_state(now).value, _task_key(task, now), str(int(now // 3600)))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        reach = await asyncio.to_thread(self._compute, bundle, agent, task, contexts, prepared, key, now)
        self.computed += 1
        self._cache.put(key, reach)
        return reach

    @property
    def cached(self) -> int:
        """Reaches kept (for tests and operators)."""
        return len(self._cache.entries)

    def catalog_version(self, bundle: Bundle) -> str:
        """A digest of the catalog the policies decide against (tool, server, status, risk, classes, egress)."""
        known = self._catalog_versions
        if known is not None and known[0] is bundle:
            return known[1]
        rows = [[m.entry.exposed_name, m.entry.server_id, m.entry.status, str(m.entry.risk),
                 sorted(m.entry.data_classes), self.is_egress(m)] for _, m in sorted(bundle.catalog.tools.items())]
        version = _digest(rows)
        self._catalog_versions = (bundle, version)
        return version

    def is_egress(self, model: ToolModel) -> bool:
        """Egress as chain monitoring counts it (gateway/chain/detectors/sensitive_then_egress.py)."""
        monitoring = self.monitoring
        return (model.entry.egress or model.entry.server_id in monitoring.egress_servers
                or model.entry.exposed_name in monitoring.egress_tools)

    def is_sensitive(self, model: ToolModel) -> bool:
        return bool(set(model.entry.data_classes) & set(self.monitoring.sensitive_classes))

    # ---- inputs --------------------------------------------------------------------------------

    async def _task(self, agent: Agent, task_id: str | None) -> Task | None:
        if task_id is None:
            return None
        task = self.tasks.get(task_id) if self.tasks is not None else None
        if task is None and self.tasks is not None:
            stored = await self.tasks.store.get_task(task_id)  # ended long ago, or started on another replica
            task = None if stored is None else stored.effective(self.clock())
        if task is None or task.agent_id != agent.id:
            raise UnknownTask(f"no task {task_id!r} of agent {agent.id!r}")
        return task

    def _contexts(self, bundle: Bundle, agent: Agent, task: Task | None, now: float) -> list[_Context]:
        methods = sorted({_IDENTITY_METHODS.get(i.kind, i.kind) for i in agent.identities}) or ["static-token"]
        grants = self._grants(bundle, agent, task)
        contexts = []
        for grant_label, task_facts, gate, free in grants:
            for method in methods:
                principal = Principal(agent.id, method, agent=agent, task_id=None if task is None else task.id)
                for era in ERAS:
                    for inside in (True, False):
                        facts = RequestFacts(now=now, era=era, working_hours=inside, task=task_facts, chain=NO_CHAIN)
                        label = f"{grant_label}, {method}, era {era}, {'in' if inside else 'outside'} working hours"
                        contexts.append(_Context(label, principal, facts, gate, free))
        return contexts

    @staticmethod
    def _grants(bundle: Bundle, agent: Agent, task: Task | None) -> list[_Grant]:
        """(label, context.task, gate, relaxed paths) for each way the credential holder can call."""
        if task is not None:
            tools = frozenset(task.tools)
            if task.state is not TaskState.ACTIVE:
                return [(f"task {task.id} ({task.state.value})", facts_of_task(task), lambda _: GATE_TASK_ENDED,
                         CALLER_PICKS)]
            return [(f"task {task.id}", facts_of_task(task),
                     lambda name: None if name in tools else GATE_NOT_IN_TASK, CALLER_PICKS)]
        entitled = tuple(name for name, m in sorted(bundle.catalog.tools.items())
                         if agent.entitlement.allows(name, m.entry.server_id))
        own = {"id": "", "purpose": agent.purpose, "tools": entitled, **chain_facts([(agent.id, agent.owner)])}
        grantable = frozenset(entitled)  # the token endpoint grants a task nothing outside the entitlement
        grants: list[_Grant] = [("a task it grants itself", own,
                                 lambda name: None if name in grantable else GATE_OUTSIDE_ENTITLEMENT, OWN_TASK)]
        if not agent.entitlement.require_task:
            grants.append(("no task", None, lambda _: None, CALLER_PICKS))
        return grants

    def _prepared(self, bundle: Bundle, contexts: Sequence[_Context]) -> list[tuple[str, str]] | None:
        """On the loop (cheap, touches the engine's caches): each context's principal JSON and context JSON;
        None when a policy or catalog swap landed since `bundle` was read."""
        prepared = [self.engine.listing_facts(c.principal, c.facts) for c in contexts]
        if any(p[0] is not bundle for p in prepared):
            return None
        return [(p[1], p[2]) for p in prepared]

    # ---- the Cedar work (worker thread) -------------------------------------------------------

    def _compute(self, bundle: Bundle, agent: Agent, task: Task | None, contexts: Sequence[_Context],
                 prepared: Sequence[tuple[str, str]], key: tuple[str, ...], now: float) -> AgentReach:
        models = [m for _, m in sorted(bundle.catalog.tools.items())]
        policies = self._reach_policies(bundle)
        asked = [_asked(policies.relaxed(c.free), p) for c, p in zip(contexts, prepared, strict=True)]
        # Contexts that reach Cedar as the same JSON (the policies read none of what tells them apart, e.g. no
        # policy reads context.task) share one answer per tool.
        decided: dict[tuple[frozenset[FreePath], str, str], dict[int, Answer]] = {}
        per_context = [self._decide(bundle, agent.id, c, decided.setdefault(a.key(c.free), {}), a, models)
                       for c, a in zip(contexts, asked, strict=True)]
        tools = tuple(self._tool_reach(bundle, m, [answers[i] for answers in per_context])
                      for i, m in enumerate(models))
        chain, reads = self._egress_after_read(bundle, agent, contexts, asked, per_context, models)
        caveats = self._caveats(bundle, agent, contexts, prepared, policies, models, tools, per_context)
        return AgentReach(agent.id, None if task is None else task.id, bundle.version, key[1], key[2], now,
                          tuple(c.label for c in contexts), tools, chain, reads, task, caveats)

    def _reach_policies(self, bundle: Bundle) -> ReachPolicies:
        """The relaxed sets of `bundle` (built once per policy or catalog change; worker thread)."""
        known = self._policies
        if known is None or known.bundle is not bundle:
            known = self._policies = ReachPolicies(bundle)
        return known

    def _decide(self, bundle: Bundle, agent_id: str, context: _Context, known: dict[int, Answer],
                asked: _Asked, models: Sequence[ToolModel]) -> list[Answer]:
        """Each tool's answer in `context`: the gate's refusal, else Cedar's (from `known`, else asked now)."""
        refusals = [context.gate(m.entry.exposed_name) for m in models]
        todo = [i for i, refused in enumerate(refusals) if refused is None and i not in known]
        for i, outcome in zip(todo, self._outcomes(bundle, agent_id, asked, [models[i] for i in todo]), strict=True):
            known[i] = outcome
        return [("deny", (refused,)) if refused is not None else known[i] for i, refused in enumerate(refusals)]

    def _outcomes(self, bundle: Bundle, agent_id: str, asked: _Asked, models: Sequence[ToolModel]) -> list[Answer]:
        """The engine's answer for each of `models`, CHUNK tools per Cedar batch."""
        answers: list[Answer] = []
        for start in range(0, len(models), CHUNK):
            answers.extend(self.engine.reach_outcomes(bundle, agent_id, asked.principal_json, asked.context_json,
                                                      models[start:start + CHUNK], asked.rules.policies))
        return answers

    def _caveats(self, bundle: Bundle, agent: Agent, contexts: Sequence[_Context],
                 prepared: Sequence[tuple[str, str]], policies: ReachPolicies, models: Sequence[ToolModel],
                 tools: Sequence[ToolReach], per_context: Sequence[Sequence[Answer]]) -> tuple[str, ...]:
        """The tools a token claim or an earlier call could open further than the reach says: decided again
        with those conditions relaxed too. Only tools that could change are: not allowed, and held by a policy
        that reads them in some context, or (when a permit reads them) any; relaxing only ever widens, so a
        verdict held by other policies alone stays as it is."""
        suspects = [i for i, t in enumerate(tools) if t.verdict != "allow" and (policies.permits_unmodeled or any(
            p in policies.unmodeled for answers in per_context for p in answers[i][1]))]
        if not suspects:
            return ()
        subset = [models[i] for i in suspects]
        decided: dict[tuple[frozenset[FreePath], str, str], dict[int, Answer]] = {}
        answers = []
        for context, done in zip(contexts, prepared, strict=True):
            free = context.free | UNMODELED_PATHS
            asked = _asked(policies.relaxed(free), done)
            answers.append(self._decide(bundle, agent.id, context, decided.setdefault(asked.key(free), {}), asked,
                                        subset))
        caveats = []
        for j, i in enumerate(suspects):
            reach = tools[i]
            verdict, ids = _most_permissive([a[j] for a in answers])
            if _RANK[verdict] > _RANK[reach.verdict]:
                # The permits that open it, or the forbids that held it; else every reader.
                named = [p for p in dict.fromkeys((*ids, *reach.policy_ids)) if p in policies.unmodeled] \
                    or sorted(policies.unmodeled)
                what = sorted({w for p in named for w in policies.unmodeled.get(p, ())})
                caveats.append(f"{reach.tool}: reported {reach.verdict}, but {verdict} when {' or '.join(what)} "
                               f"meet {', '.join(named)} (the reach does not model them)")
        return tuple(caveats)

    def _tool_reach(self, bundle: Bundle, model: ToolModel, answers: list[Answer]) -> ToolReach:
        verdict, policy_ids = _most_permissive(answers)
        entry = model.entry
        return ToolReach(entry.server_id, entry.exposed_name, str(entry.risk), verdict, policy_ids,
                         tuple(entry.data_classes), self.is_egress(model), self.is_sensitive(model), entry.status,
                         _approvers(bundle, policy_ids) if verdict == "step_up" else None,
                         tuple(a[0] for a in answers))

    def _egress_after_read(self, bundle: Bundle, agent: Agent, contexts: Sequence[_Context],
                           asked: Sequence[_Asked], per_context: list[list[Answer]],
                           models: Sequence[ToolModel]) -> tuple[tuple[ChainStep, ...], int]:
        """Per (sensitive read, egress tool): the most permissive verdict of the egress call over the contexts
        in which the read is allowed; and how many distinct sensitive reads are allowed."""
        egress = [i for i, m in enumerate(models) if self.is_egress(m)]
        steps: dict[tuple[str, str], ChainStep] = {}
        reads_seen: set[str] = set()
        followed: set[tuple[tuple[frozenset[FreePath], str, str], int]] = set()
        for context, done, answers in zip(contexts, asked, per_context, strict=True):
            if (done.key(context.free), id(context.gate)) in followed:  # same request behind the same gate
                continue
            followed.add((done.key(context.free), id(context.gate)))
            reads = [i for i, m in enumerate(models) if self.is_sensitive(m) and answers[i][0] == "allow"]
            reads_seen.update(models[i].entry.exposed_name for i in reads)
            open_egress = [models[i] for i in egress if context.gate(models[i].entry.exposed_name) is None]
            for r in reads[:CHAIN_READS]:
                for step in self._after(bundle, agent, context, done, models[r], open_egress):
                    known = steps.get((step.read_tool, step.egress_tool))
                    if known is None or _RANK[step.verdict] > _RANK[known.verdict]:
                        steps[(step.read_tool, step.egress_tool)] = step
        return tuple(steps[k] for k in sorted(steps)), len(reads_seen)

    def _after(self, bundle: Bundle, agent: Agent, context: _Context, asked: _Asked, read: ToolModel,
               egress: Sequence[ToolModel]) -> list[ChainStep]:
        if not egress:
            return []
        # The chain section replaced, pruned as the context is: what the relaxed policies read.
        chain = prune_context({"chain": _chain_after(read)}, asked.rules.reads)
        context_json = orjson.dumps({**orjson.loads(asked.context_json), **chain}).decode()
        outcomes = self._outcomes(bundle, agent.id, _Asked(asked.rules, asked.principal_json, context_json), egress)
        return [ChainStep(read.entry.exposed_name, e.entry.exposed_name, verdict, ids, context.label)
                for e, (verdict, ids) in zip(egress, outcomes, strict=True)]


async def agent_reach(analyzer: ReachAnalyzer, agent_id: str, task_id: str | None = None) -> AgentReach:
    """The reach of one agent (optionally under one task); see ReachAnalyzer.agent_reach."""
    return await analyzer.agent_reach(agent_id, task_id)


def reach_header(reach: AgentReach) -> dict[str, Any]:
    """Whose reach, decided from what, under which contexts: what every JSON shape built on a reach starts with."""
    return {
        "agent_id": reach.agent_id,
        "task_id": reach.task_id,
        "policy_version": reach.policy_version,
        "catalog_version": reach.catalog_version,
        "agent_version": reach.agent_version,
        "computed_at": reach.computed_at,
        "contexts": list(reach.contexts),
        "caveats": list(reach.caveats),
    }


def reach_to_dict(reach: AgentReach) -> dict[str, Any]:
    """The JSON shape (admin API, CLI --format json)."""
    return {
        **reach_header(reach),
        "tools": [{"server": t.server_id, "tool": t.tool, "risk": t.risk, "verdict": t.verdict,
                   "policy_ids": list(t.policy_ids), "data_classes": list(t.data_classes), "egress": t.egress,
                   "sensitive": t.sensitive, "status": t.status, "approvers": t.approvers,
                   "verdicts": list(t.verdicts)} for t in reach.tools],
    }


def _asked(rules: RelaxedSet, prepared: tuple[str, str]) -> _Asked:
    """`prepared` (principal JSON, context JSON as listing prunes it) for `rules`: the context pruned to what
    the relaxed set still reads (the time, once relaxed, no longer tells two contexts apart)."""
    principal_json, context_json = prepared
    return _Asked(rules, principal_json, orjson.dumps(prune_context(orjson.loads(context_json), rules.reads)).decode())


def _most_permissive(answers: Sequence[Answer]) -> Answer:
    # Of equal ones, what Cedar said over what the gate said (the gate's is a pseudo id).
    return max(answers, key=lambda a: (_RANK[a[0]], not any(p.startswith("gate:") for p in a[1])))


def _chain_after(read: ToolModel) -> dict[str, Any]:
    """The chain context right after one allowed call of `read` (a sensitive read) in a fresh task."""
    classes = sorted(set(read.entry.data_classes))
    writes = 0 if read.entry.risk == "read" else 1
    agent = {**NO_AGENT_CHAIN, "data_classes": classes, "sensitive_read": True, "calls_last_minute": 1,
             "writes_last_minute": writes}
    return {**NO_CHAIN, "data_classes": classes, "sensitive_read": True, "tools": [read.entry.exposed_name],
            "previous_tool": read.entry.exposed_name, "calls_last_minute": 1, "writes_last_minute": writes,
            "agent": agent}


def _task_key(task: Task | None, now: float) -> str:
    if task is None:
        return ""
    record = task_to_dict(task.effective(now))
    record.pop("calls_made")  # counted on every call; the reach does not depend on it
    return _digest(record)


def _approvers(bundle: Bundle, policy_ids: tuple[str, ...]) -> str | None:
    wanted = set(policy_ids)
    groups = sorted({s.annotations["approvers"].strip() for s in bundle.sources
                     if s.policy_id in wanted and s.annotations.get("approvers")})
    return ",".join(groups) if groups else None


def _digest(value: object) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

