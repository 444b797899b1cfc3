"""The agent registry: an in-memory view over the store, so the request path never touches disk.

Reads (`resolve`, `get`, `agents`) are plain dictionary lookups. Mutations are serialized by
one lock, written to the store first, and only then made visible in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.events import Observers
from gateway.file_problems import FileProblem
from gateway.json_values import JsonValue
from gateway.registry.agents_file import AgentsFile, parse_agents_file
from gateway.registry.errors import (
    AgentsFileError,
    Conflict,
    IdentityRefused,
    NotFound,
    Problem,
    RegistryError,
)
from gateway.registry.model import TRANSITIONS, Agent, Lifecycle, LifecycleEvent, WorkloadIdentity
from gateway.registry.spec import parse_create, parse_update
from gateway.store.base import Store

__all__ = [
    "AgentsFileError",
    "AgentsFileReport",
    "Conflict",
    "IdentityRefused",
    "NotFound",
    "Registry",
    "RegistryError",
]

T = TypeVar("T")
Clock = Callable[[], float]
BindingKey = tuple[str, str, str]  # (kind, issuer, subject)
Index = dict[BindingKey, tuple[tuple[str, WorkloadIdentity], ...]]

# verb -> (target state, states it may start from); TRANSITIONS is checked as well.
VERBS: dict[str, tuple[Lifecycle, frozenset[Lifecycle]]] = {
    "activate": (Lifecycle.ACTIVE, frozenset({Lifecycle.PENDING})),
    "suspend": (Lifecycle.SUSPENDED, frozenset({Lifecycle.ACTIVE})),
    "resume": (Lifecycle.ACTIVE, frozenset({Lifecycle.SUSPENDED})),
    "retire": (Lifecycle.RETIRED, frozenset({Lifecycle.PENDING, Lifecycle.ACTIVE, Lifecycle.SUSPENDED})),
}
HINTS = {("activate", Lifecycle.SUSPENDED): "; use resume", ("resume", Lifecycle.PENDING): "; use activate"}

NO_AGENT = "no agent is bound to this identity"


@dataclass(frozen=True, slots=True)
class AgentsFileReport:
    created: tuple[str, ...]
    updated: tuple[str, ...]
    unchanged: tuple[str, ...]
    skipped_retired: tuple[str, ...]  # declared, but retired (or expired) in the store: left alone


class Registry:
    def __init__(self, store: Store, agents: Iterable[Agent], clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = asyncio.Lock()
        self.on_change: Observers[[Agent, LifecycleEvent]] = []  # after every committed change
        # After `refresh` found an agent changed in the store by another replica: (as it is now, as it was here).
        self.on_refreshed: Observers[[Agent, Agent | None]] = []
        self._agents: dict[str, Agent] = {}
        self._index: Index = {}
        for agent in agents:
            self._put(agent)

    @classmethod
    async def open(cls, store: Store, clock: Clock = time.time) -> Registry:
        """Load every agent from a (migrated) store."""
        return cls(store, await store.list_agents(), clock)

    async def reload(self) -> None:
        """Replace the in-memory view with what the store holds (at start, or after another writer)."""

        async def work() -> None:
            agents = await self.store.list_agents()
            # Swap both maps at once, so a concurrent resolve never sees one without the other.
            self._agents, self._index = {a.id: a for a in agents}, build_index(agents)

        await self._serialized(work)

    async def refresh(self, agent_id: str | None = None, *, changed_since: float | None = None) -> list[Agent]:
        """Re-read one agent (None: every agent; or those changed at or after `changed_since`) from the
        store, changed there by another replica; the agents that changed here, each told to
        `on_refreshed` (not audited: its replica did that)."""

        async def work() -> list[tuple[Agent, Agent | None]]:
            if agent_id is None:
                stored = await self.store.list_agents(changed_since)
            else:
                one = await self.store.get_agent(agent_id)
                stored = [] if one is None else [one]
            changed = [(agent, self._agents.get(agent.id)) for agent in stored if agent != self._agents.get(agent.id)]
            for agent, _ in changed:
                self._put(agent)
            return changed

        changed = await self._serialized(work)
        for agent, before in changed:
            for observer in self.on_refreshed:
                observer(agent, before)
        return [agent for agent, _ in changed]

    # reads (hot path: no awaits, no disk)

    def agents(self) -> list[Agent]:
        return sorted(self._agents.values(), key=lambda a: a.id)

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def require(self, agent_id: str) -> Agent:
        """Like get, but an unknown id raises NotFound (for the admin API)."""
        agent = self._agents.get(agent_id)
        if agent is None:
            raise NotFound(f"no agent {agent_id!r}")
        return agent

    def bound_agent_id(self, kind: str, issuer: str, subject: str) -> str | None:
        """Some agent bound to (kind, issuer, subject) in any state, claim pins ignored; None if none.

        Deliberately broader than resolve: it answers "is this an agent's credential at all?"
        (the admin API refuses those), where erring towards "yes" is the safe side.
        """
        ids = [agent_id for agent_id, _ in self._index.get((kind, issuer, subject), ())]
        live = [agent_id for agent_id in ids if self._agents[agent_id].state is not Lifecycle.RETIRED]
        candidates = live or ids
        return candidates[0] if candidates else None

    def resolve(self, kind: str, issuer: str, subject: str, claims: Mapping[str, Any]) -> Agent:
        """The one active agent a verified token belongs to; IdentityRefused otherwise."""
        now = self.clock()
        matched = [
            self._agents[agent_id]
            for agent_id, identity in self._index.get((kind, issuer, subject), ())
            if pins_match(identity, claims)
        ]
        live = {a.id: a for a in matched if a.effective_state(now) is not Lifecycle.RETIRED}
        if len(live) > 1:
            # create/update prevent this; if the store was edited by hand, fail closed.
            raise IdentityRefused(f"identity is bound to several agents: {', '.join(sorted(live))}")
        if not live:
            if matched:
                agent = max(matched, key=lambda a: a.changed_at)
                raise IdentityRefused(f"agent {agent.id!r} is retired{_expiry_note(agent, now)}", agent.id)
            raise IdentityRefused(NO_AGENT)
        agent = next(iter(live.values()))
        if agent.state is not Lifecycle.ACTIVE:
            raise IdentityRefused(f"agent {agent.id!r} is {agent.state.value}", agent.id)
        return agent

    async def events(self, agent_id: str) -> list[LifecycleEvent]:
        self.require(agent_id)
        return await self.store.agent_events(agent_id)

    # mutations

    async def create(self, spec: Mapping[str, Any], actor: str, reason: str) -> Agent:
        _require_who_and_why(actor, reason)

        async def work() -> Agent:
            now = self.clock()
            parsed = parse_create(spec, now)
            existing = self._agents.get(parsed.id)
            if existing is not None:
                retired = " (retired; agent ids are never reused)" if existing.state is Lifecycle.RETIRED else ""
                raise Conflict(f"agent {parsed.id!r} already exists{retired}")
            agent = Agent(
                id=parsed.id, state=parsed.state, created_at=now, changed_at=now, **parsed.fields.as_kwargs()
            )
            self._refuse_conflicts(agent, now)
            event = LifecycleEvent(agent.id, None, agent.state, actor, reason, now, action="create")
            await self._commit(agent, event)
            return agent

        return await self._serialized(work)

    async def update(self, agent_id: str, changes: Mapping[str, Any], actor: str, reason: str) -> Agent:
        """Change attributes (not state). A change that changes nothing records nothing."""
        _require_who_and_why(actor, reason)

        async def work() -> Agent:
            now = self.clock()
            agent = self.require(agent_id)
            if agent.effective_state(now) is Lifecycle.RETIRED:
                raise Conflict(f"agent {agent_id!r} is retired{_expiry_note(agent, now)}; it cannot be updated")
            fields = parse_update(changes, agent, now)
            changed = fields.changed_from(agent)
            if not changed:
                return agent
            updated = replace(agent, changed_at=now, **fields.as_kwargs())
            self._refuse_conflicts(updated, now)
            event = LifecycleEvent(
                agent_id, agent.state, agent.state, actor, reason, now, action="update", fields=changed
            )
            await self._commit(updated, event)
            return updated

        return await self._serialized(work)

    async def activate(self, agent_id: str, actor: str, reason: str) -> Agent:
        return await self._transition(agent_id, "activate", actor, reason)

    async def suspend(self, agent_id: str, actor: str, reason: str) -> Agent:
        return await self._transition(agent_id, "suspend", actor, reason)

    async def resume(self, agent_id: str, actor: str, reason: str) -> Agent:
        return await self._transition(agent_id, "resume", actor, reason)

    async def retire(self, agent_id: str, actor: str, reason: str) -> Agent:
        """Final. Also allowed for an expired agent, so its record says what resolve already does."""
        return await self._transition(agent_id, "retire", actor, reason)

    async def load_agents_file(self, path: str | Path, actor: str = "agents-file") -> AgentsFileReport:
        """Apply a GitOps agents file: all of it, or (on any problem) none of it."""
        path = Path(path)
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except OSError as exc:
            raise AgentsFileError([FileProblem(str(path), 0, f"cannot read agents file: {exc.strerror}")]) from exc

        async def work() -> AgentsFileReport:
            now = self.clock()
            parsed = parse_agents_file(text, str(path), now)
            plan, report = self._plan_file(parsed, actor, f"declared in {path}", now)
            if parsed.problems:
                raise AgentsFileError(sorted(parsed.problems, key=lambda p: p.line))
            for agent, event in plan:
                await self._commit(agent, event)
            return report

        return await self._serialized(work)

    # internals

    async def _transition(self, agent_id: str, verb: str, actor: str, reason: str) -> Agent:
        _require_who_and_why(actor, reason)

        async def work() -> Agent:
            now = self.clock()
            agent = self.require(agent_id)
            target, sources = VERBS[verb]
            # retire goes by the stored state, so an expired (effectively retired) agent can be retired for real.
            current = agent.state if verb == "retire" else agent.effective_state(now)
            if current not in sources or target not in TRANSITIONS[current]:
                raise Conflict(_refusal(verb, agent, current, now))
            changed = replace(agent, state=target, changed_at=now)
            await self._commit(changed, LifecycleEvent(agent_id, agent.state, target, actor, reason, now, action=verb))
            return changed

        return await self._serialized(work)

    async def _serialized(self, work: Callable[[], Awaitable[T]]) -> T:
        async def locked() -> T:
            async with self._lock:
                return await work()

        # Shielded: a caller that goes away mid-write must not leave disk and memory disagreeing
        # (e.g. suspended in the store but still active here until the next restart).
        return await asyncio.shield(asyncio.ensure_future(locked()))

    async def _commit(self, agent: Agent, event: LifecycleEvent) -> None:
        await self.store.save_agent(agent, event)
        self._put(agent)  # only after the write succeeded
        for observer in self.on_change:
            observer(agent, event)

    def _put(self, agent: Agent) -> None:
        old = self._agents.get(agent.id)
        if old is not None:
            for identity in old.identities:
                key = _key(identity)
                rest = tuple(entry for entry in self._index.get(key, ()) if entry[0] != agent.id)
                if rest:
                    self._index[key] = rest
                else:
                    self._index.pop(key, None)
        self._agents[agent.id] = agent
        for identity in agent.identities:
            key = _key(identity)
            self._index[key] = (*self._index.get(key, ()), (agent.id, identity))

    def _refuse_conflicts(self, agent: Agent, now: float) -> None:
        problems = binding_conflicts(agent, self._index, self._agents, now)
        if problems:
            raise Conflict.of(problems)

    def _plan_file(
        self, parsed: AgentsFile, actor: str, reason: str, now: float
    ) -> tuple[list[tuple[Agent, LifecycleEvent]], AgentsFileReport]:
        plan: list[tuple[Agent, LifecycleEvent]] = []
        created: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        skipped: list[str] = []
        proposed = dict(self._agents)
        for entry in parsed.entries:
            spec, existing = entry.spec, self._agents.get(entry.spec.id)
            if existing is not None and existing.effective_state(now) is Lifecycle.RETIRED:
                skipped.append(spec.id)  # the store holds lifecycle: never resurrect
                continue
            if spec.fields.expires_at is not None and spec.fields.expires_at <= now and (
                existing is None or existing.expires_at != spec.fields.expires_at
            ):
                parsed.entry_problem(entry, ("expires_at",), "expires_at is in the past; retire the agent instead")
                continue
            if existing is None:
                agent = Agent(id=spec.id, state=spec.state, created_at=now, changed_at=now, **spec.fields.as_kwargs())
                event = LifecycleEvent(spec.id, None, spec.state, actor, reason, now, action="create")
                created.append(spec.id)
            else:
                changed = spec.fields.changed_from(existing)
                if not changed:
                    unchanged.append(spec.id)
                    continue
                agent = replace(existing, changed_at=now, **spec.fields.as_kwargs())
                event = LifecycleEvent(
                    spec.id, existing.state, existing.state, actor, reason, now, action="update", fields=changed
                )
                updated.append(spec.id)
            proposed[spec.id] = agent
            plan.append((agent, event))
        self._check_file_conflicts(parsed, proposed, {a.id for a, _ in plan}, now)
        report = AgentsFileReport(tuple(created), tuple(updated), tuple(unchanged), tuple(skipped))
        return plan, report

    def _check_file_conflicts(self, parsed: AgentsFile, proposed: dict[str, Agent], ids: set[str], now: float) -> None:
        index = build_index(proposed.values())
        for entry in parsed.entries:
            if entry.spec.id in ids:
                for problem in binding_conflicts(proposed[entry.spec.id], index, proposed, now):
                    parsed.entry_problem(entry, problem.path, str(problem))


def pins_match(identity: WorkloadIdentity, claims: Mapping[str, Any]) -> bool:
    """Every pinned claim is present and equal; non-string claims compare as str(value)."""
    for name, pinned in identity.claims.items():
        value = claim_value(claims, name)
        if value is None or (value if isinstance(value, str) else str(value)) != pinned:
            return False
    return True


def claim_value(claims: Mapping[str, Any], name: str) -> JsonValue:
    """A top-level claim, or a nested one named by a `/` path (Kubernetes: `kubernetes.io/namespace`)."""
    if name in claims:
        return claims[name]
    node: JsonValue = claims
    for part in name.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, Mapping | list) else node


def pins_overlap(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Could one token satisfy both pin sets? Only a claim pinned to different values rules that out."""
    return all(b[name] == value for name, value in a.items() if name in b)


def build_index(agents: Iterable[Agent]) -> Index:
    index: dict[BindingKey, list[tuple[str, WorkloadIdentity]]] = {}
    for agent in agents:
        for identity in agent.identities:
            index.setdefault(_key(identity), []).append((agent.id, identity))
    return {key: tuple(entries) for key, entries in index.items()}


def binding_conflicts(agent: Agent, index: Index, agents: Mapping[str, Agent], now: float) -> list[Problem]:
    """Identities of `agent` that a token could share with another live (not retired) agent."""
    problems: list[Problem] = []
    for position, identity in enumerate(agent.identities):
        for other_id, theirs in index.get(_key(identity), ()):
            other = agents[other_id]
            if other_id == agent.id or other.effective_state(now) is Lifecycle.RETIRED:
                continue
            if not pins_overlap(identity.claims, theirs.claims):
                continue
            message = f"{identity.kind} identity {identity.subject!r} from {identity.issuer!r} is already bound to " \
                      f"agent {other_id!r}"
            if dict(identity.claims) != dict(theirs.claims):
                message += " (the claim pins do not exclude each other, so one token could match both)"
            problems.append(Problem(("identities", position), message))
    return problems


def _key(identity: WorkloadIdentity) -> BindingKey:
    return (identity.kind, identity.issuer, identity.subject)


def _require_who_and_why(actor: str, reason: str) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise RegistryError("actor is required: who is making this change")
    if not isinstance(reason, str) or not reason.strip():
        raise RegistryError("reason is required: say why this change is made")


def _refusal(verb: str, agent: Agent, current: Lifecycle, now: float) -> str:
    if current is Lifecycle.RETIRED and agent.state is not Lifecycle.RETIRED:
        return f"cannot {verb} agent {agent.id!r}: it is retired{_expiry_note(agent, now)}"
    article = "an" if current.value[0] in "aeiou" else "a"
    message = f"cannot {verb} {article} {current.value} agent ({agent.id!r})"
    if current is Lifecycle.RETIRED:
        return message + ": retirement is final"
    if current is VERBS[verb][0]:
        return message + f": it is already {current.value}"
    return message + HINTS.get((verb, current), "")


def _expiry_note(agent: Agent, now: float) -> str:
    if agent.state is Lifecycle.RETIRED or agent.expires_at is None or agent.expires_at > now:
        return ""
    return f" (expired at {datetime.fromtimestamp(agent.expires_at, UTC).isoformat()})"
