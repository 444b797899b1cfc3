"""The task service: an in-memory view over the tasks table, so the request path never touches disk.

Reads (`get`, `check`, `consume`) are plain dictionary work with no awaits. Starting a task is
written to the store before it becomes visible. Ending a task goes the other way round: it is
ended in memory first (and observers told) and then written, because refusing a moment early is
safe and letting calls through while the disk is slow is not. If that write fails, the task
stays ended in this process and the error is raised to the caller.

Call counting is the one thing persisted lazily: `consume` bumps a counter in memory and marks
the task dirty; a background flush writes dirty counts every `flush_interval_s` (and on every
state change and on close). A crash therefore loses at most the calls counted in the last flush
interval (default 1 s): after a restart a budgeted task may allow that many extra calls.
"""

from __future__ import annotations

import asyncio
import builtins  # `list` below is TaskService.list inside the class
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace

from gateway.catalog import Catalog
from gateway.events import Observers
from gateway.registry.model import Agent, Lifecycle, LifecycleEvent
from gateway.registry.service import Registry
from gateway.state.budgets import BudgetReservations, CallBudgets
from gateway.store.base import Store
from gateway.tasks.delegation import DelegationRefused, child_budget, child_chain, child_deadline, child_tools
from gateway.tasks.model import (
    DEADLINE_REASON,
    AgentNotActive,
    ChainLink,
    Task,
    TaskEnded,
    TaskError,
    TaskEvent,
    TaskNotFound,
    TaskState,
    ToolsRefused,
)

log = logging.getLogger("narrowgate.tasks")
Clock = Callable[[], float]
SYSTEM_ACTOR = "narrowgate"
BUDGET_EXHAUSTED = "call budget exhausted"


@dataclass(frozen=True, slots=True)
class TaskSettings:
    max_duration_s: float = 8 * 3600  # a requested deadline further out is capped to this
    default_duration_s: float = 3600  # when the request names no deadline
    flush_interval_s: float = 1.0  # call counts reach the store at most this late (crash loss bound)
    sweep_interval_s: float = 5.0  # how often past-deadline tasks are marked expired in the store
    ended_retention_s: float = 24 * 3600  # ended tasks stay in memory this long (precise refusals)
    # ...and at most this many of them (the most recently ended): memory stays flat however many
    # tasks a day brings. A forgotten task's token is still refused, as an unknown task.
    ended_retention_max: int = 4096
    # Active tasks one agent may hold at once: starting another is refused until one ends, so an
    # agent exchanging tokens in a loop cannot fill memory (or the store) with live tasks.
    max_active_per_agent: int = 1000
    # Delegation hops below a root task (tokens.max_delegation_depth): 2 allows root -> child -> grandchild.
    max_delegation_depth: int = 2


class TaskService:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        catalog: Catalog,
        clock: Clock = time.time,
        settings: TaskSettings | None = None,
        budgets: CallBudgets | None = None,
    ) -> None:
        self.store = store
        self.budgets = budgets  # a fleet's shared call counts; None: this process counts alone
        self.registry = registry
        self.catalog = catalog
        self.clock = clock
        self.settings = settings or TaskSettings()
        # Observers of every ended task (deny-list its minted tokens, kill its approvals). Called
        # synchronously, at most once per task, right when it ends in memory.
        self.on_end: Observers[[Task]] = []
        self.on_start: Observers[[Task]] = []  # observers of every started task (audit)
        # Observers of every task whose new state is in the store (started, or ended and written).
        self.on_saved: Observers[[Task]] = []
        # Observers of every task another replica ended (found by `refresh`): local reactions, no audit.
        self.on_ended_elsewhere: Observers[[Task]] = []
        self._tasks: dict[str, Task] = {}
        self._calls: dict[str, int] = {}  # live call counts; Task.calls_made is refreshed from here
        self._ended: dict[str, None] = {}  # ids of ended tasks still in memory, in the order they ended
        self._active: dict[str, dict[str, None]] = {}  # agent id -> ids of its tasks not yet ended in memory
        self._children: dict[str, dict[str, None]] = {}  # task id -> ids of its delegated tasks not yet ended
        self._dirty: set[str] = set()
        # Ended tasks whose write failed: retried by the background loop until written (then announced).
        self._unwritten: dict[str, tuple[Task, TaskEvent]] = {}
        # Ends of tasks ended here after another replica's end, to write if the store still holds them active.
        self._missed: dict[str, tuple[Task, TaskState]] = {}
        self._loading: set[str] = set()  # ids of ancestor tasks being loaded from the store
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    # lifecycle of the service

    async def open(self, *, background: bool = True) -> None:
        """Load active and recently ended tasks; watch the registry; start flushing and sweeping."""
        since = self.clock() - self.settings.ended_retention_s
        loaded = await self.store.list_tasks(ended_since=since)
        for task in sorted(loaded, key=lambda t: t.ended_at or 0.0):
            self._tasks[task.id] = task
            self._calls[task.id] = task.calls_made
            if task.ended_at is not None:
                self._remember_ended(task.id)
            else:
                self._hold_active(task)
        if self._agent_changed not in self.registry.on_change:  # open() twice must not revoke twice
            self.registry.on_change.append(self._agent_changed)
            self.registry.on_refreshed.append(self._agent_refreshed)
        # A cascade a crash (or a failed write) cut short left descendants active in the store: end them now.
        await self.end_unfit()
        if background and self._background is None:
            self._background = asyncio.create_task(self._run_background(), name="narrowgate-tasks")

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
            self._background = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        for step in (self._write_missed_pending, self._write_unwritten, self.flush):
            await self._logged(step)

    def set_catalog(self, catalog: Catalog) -> None:
        """A reloaded catalog applies to tasks started from now on (running tasks keep their tools)."""
        self.catalog = catalog

    # reads (hot path: no awaits, no disk)

    def get(self, task_id: str) -> Task | None:
        task = self._tasks.get(task_id)
        if task is None:
            return None
        return replace(task, calls_made=self._calls.get(task_id, task.calls_made)).effective(self.clock())

    def check(self, task_id: str) -> Task:
        """The task if it may be used now; TaskEnded (with the reason) otherwise."""
        task = self.get(task_id)
        if task is None:
            raise TaskEnded("unknown task", task_id)
        if task.state is not TaskState.ACTIVE:
            raise TaskEnded(_ended_reason(task), task_id, task.state)
        self._check_ancestors(task)
        # The registry is the authority on every agent of the chain; this covers the moment between a
        # suspension or an expiry and the tasks it ends being ended.
        inactive = self._inactive_agent(task, self.clock())
        if inactive is not None:
            raise TaskEnded(inactive, task_id, task.state)
        return task

    def consume(self, task_id: str) -> Task:
        """Count one call against the budget (check included). Synchronous, hence atomic on the loop.

        Over budget raises TaskEnded(BUDGET_EXHAUSTED) and counts nothing; the task stays active
        so the agent can still complete it, but no further calls pass.
        """
        task = self.check(task_id)
        if task.budget is not None and task.calls_made >= task.budget:
            raise TaskEnded(BUDGET_EXHAUSTED, task_id, task.state)
        self._calls[task_id] = task.calls_made + 1
        self._dirty.add(task_id)
        return replace(task, calls_made=task.calls_made + 1)

    async def count_call(self, task_id: str, budgets: CallBudgets | None = None) -> Task:
        """`consume`, fleet-wide when several processes serve the task: the shared counter checks and
        counts in one atomic step, and this process keeps (and flushes) the highest count it has seen,
        so the store's calls_made is the fleet's. BudgetUnavailable when the counter cannot be reached.
        `budgets`: the shared counter as this call reaches it (one that also observes it), if not directly."""
        if self.budgets is None:
            return self.consume(task_id)
        task = self.check(task_id)
        made = await (budgets or self.budgets).count(task_id, task.budget, task.calls_made, task.deadline)
        if made is None:
            raise TaskEnded(BUDGET_EXHAUSTED, task_id, task.state)
        if made > self._calls.get(task_id, 0):
            self._calls[task_id] = made
            self._dirty.add(task_id)
        return replace(task, calls_made=made)

    async def list(self, agent_id: str | None = None, state: TaskState | str | None = None,
                   limit: int | None = None, ended_since: float | None = None) -> list[Task]:
        """Tasks in the store (oldest first), with live call counts and derived expiry; with `limit`,
        only the newest that many are loaded, so a listing costs memory by its page, not by the
        store's history. `state=active` is selected in the store (an active task is stored active);
        any other state is picked from the newest `limit` (a task ended here may not be stored yet).
        `ended_since`: only active tasks and those ended since then."""
        wanted = None if state is None else TaskState(state)
        stored_state = TaskState.ACTIVE.value if wanted is TaskState.ACTIVE else None
        stored = await self.store.list_tasks(agent_id=agent_id, state=stored_state, limit=limit,
                                             ended_since=ended_since)
        tasks = [self.get(t.id) or t.effective(self.clock()) for t in stored]
        return [t for t in tasks if wanted is None or t.state is wanted]

    async def events(self, task_id: str) -> builtins.list[TaskEvent]:
        return await self.store.task_events(task_id)

    async def refresh(self, task_id: str | None = None) -> None:
        """Take over a task (None: every task loaded at open) as another replica left it in the store:
        one started there becomes usable here, one ended there ends here (told to `on_ended_elsewhere`)."""
        if task_id is None:
            stored = await self.store.list_tasks(ended_since=self.clock() - self.settings.ended_retention_s)
        else:
            one = await self.store.get_task(task_id)
            stored = [] if one is None else [one]
        for task in stored:
            self._take_stored(task)
        await self.end_unfit(None if task_id is None else [task_id])

    async def refresh_ended(self, since: float) -> int:
        """End here every task held as active that the store says ended at or after `since` (on another
        replica, whose notice did not arrive): the store sweep's backstop. Returns how many."""
        stored = await self.store.list_tasks(ended_since=since, ended_only=True)
        missed = [task for task in stored if self._held_active(task.id)]
        for task in missed:
            self._take_stored(task)
        await self.end_unfit()
        return len(missed)

    def _held_active(self, task_id: str) -> bool:
        known = self._tasks.get(task_id)
        return known is not None and known.state is TaskState.ACTIVE

    def _take_stored(self, stored: Task) -> None:
        known = self._tasks.get(stored.id)
        if stored.state is TaskState.ACTIVE:
            if known is None:  # started on another replica
                self._tasks[stored.id] = stored
                self._calls[stored.id] = stored.calls_made
                self._hold_active(stored)
        elif known is None:
            self._tasks[stored.id] = stored
            self._remember_ended(stored.id)
        elif known.state is TaskState.ACTIVE:
            reason = stored.end_reason or "ended elsewhere"
            ended = self._end_in_memory(known, stored.state, stored, self.clock(), reason,
                                        observers=self.on_ended_elsewhere)
            # The replica that ended it wrote its own end; the descendants are written here if it did not.
            self._write_missed_later(ended[1:])

    # mutations

    async def start(
        self,
        agent_id: str,
        purpose: str,
        tools: Iterable[str],
        *,
        started_by: str,
        deadline_s: float | None = None,
        deadline: float | None = None,
        budget: int | None = None,
        trim: bool = False,
        parent_id: str | None = None,
    ) -> Task:
        """Start a task; ToolsRefused / AgentNotActive / TaskError say why not. With `parent_id` it is
        delegated from that task (gateway.tasks.delegation): never more than the parent, DelegationRefused
        for a loop, too deep a chain or an ended parent; a budget is reserved out of the parent's."""
        now = self.clock()
        agent = self._active_agent(agent_id, now)
        purpose = _require_text(purpose, "purpose", "say what the task is for")
        _require_text(started_by, "started_by", "say who starts the task")
        task_id = "task_" + secrets.token_urlsafe(18)
        if parent_id is None:
            task = Task(
                id=task_id, agent_id=agent.id, purpose=purpose, tools=self._grantable(agent, _unique(tools), trim),
                deadline=self._deadline(now, deadline_s, deadline), budget=_budget(budget), calls_made=0,
                state=TaskState.ACTIVE, started_by=started_by, started_at=now,
                chain=(ChainLink(agent.id, agent.owner, task_id),),
            )
        else:
            task = self._child(self._parent(parent_id), agent, task_id, purpose, _unique(tools), started_by, now,
                               deadline_s, deadline, budget, trim)
        async with self._lock:
            self._require_room(agent.id, now)
            if task.parent_id is not None and task.budget is not None:
                await self._reserve(self._parent(task.parent_id), task.budget)
            await self.store.save_task(task, TaskEvent(task.id, None, task.state, started_by, purpose, now))
            self._tasks[task.id] = task
            self._calls[task.id] = 0
            self._hold_active(task)
        log.info("task %s started for agent %s by %s: %d tool(s), deadline in %.0f s%s",
                 task.id, agent.id, started_by, len(task.tools), task.deadline - now,
                 "" if task.parent_id is None else f", delegated from task {task.parent_id}")
        for observer in (*self.on_start, *self.on_saved):
            observer(task)
        if task.parent_id is not None and not self._held_active(task.parent_id):
            # The parent ended while this task was being written, so its cascade missed it: end it now.
            await self.revoke(task.id, SYSTEM_ACTOR, f"parent task {task.parent_id} ended as this task started")
            raise DelegationRefused(f"the parent task {task.parent_id} has ended")
        inactive = self._inactive_agent(task, self.clock())
        if inactive is not None:  # as the store has it, not as this replica's registry may still have it
            try:
                await self._confirm_inactive_agents([task])
                inactive = self._inactive_agent(task, self.clock())
            except Exception:  # not confirmed active: revoked as inactive (fail closed)
                log.exception("could not re-read the agents of task %s from the store", task.id)
        if inactive is not None:
            # An agent of the chain was suspended (or expired) while this task was being written: its ending
            # of tasks could not see this one. The re-read may have ended it here already (its observer).
            if self._still_active(task):
                await self.revoke(task.id, SYSTEM_ACTOR, f"{inactive} as this task started")
            raise AgentNotActive(f"{inactive}; every agent of a task's chain must be active")
        return task

    def _parent(self, parent_id: str) -> Task:
        try:
            return self.check(parent_id)
        except TaskEnded as exc:
            raise DelegationRefused(f"the parent task {parent_id} has ended ({exc.reason})") from None

    def _child(self, parent: Task, agent: Agent, task_id: str, purpose: str, tools: tuple[str, ...],
               started_by: str, now: float, deadline_s: float | None, deadline: float | None, budget: object,
               trim: bool) -> Task:
        """The delegated task as it may be: checked against the parent, then the agent's own entitlement."""
        if deadline is not None:
            raise TaskError("a delegated task takes deadline_s (seconds from now), not an epoch deadline")
        chain = child_chain(parent, agent, task_id, self.settings.max_delegation_depth)
        granted = self._grantable(agent, child_tools(parent, tools, trim), trim)
        duration = None if deadline_s is None else _number(deadline_s, "deadline")
        return Task(
            id=task_id, agent_id=agent.id, purpose=purpose, tools=granted,
            deadline=min(child_deadline(parent, now, duration), now + self.settings.max_duration_s),
            budget=child_budget(parent, _budget(budget)), calls_made=0, state=TaskState.ACTIVE,
            started_by=started_by, started_at=now, parent_id=parent.id, chain=chain,
        )

    async def _reserve(self, parent: Task, amount: int) -> None:
        """Set `amount` of the parent's calls aside for a child (fleet-wide in a fleet); TaskError if they
        are not left. Reserved calls count as made by the parent: its budget bounds its whole subtree."""
        assert parent.budget is not None
        made: int | None
        if self.budgets is None:
            made = parent.calls_made + amount if parent.calls_made + amount <= parent.budget else None
        elif isinstance(self.budgets, BudgetReservations):
            made = await self.budgets.reserve(parent.id, amount, parent.budget, parent.calls_made, parent.deadline)
        else:
            raise TaskError("budget refused: the shared call counts cannot reserve part of a budget")
        if made is None:
            raise TaskError(f"budget refused: the parent task {parent.id} has not {amount} call(s) left")
        if made > self._calls.get(parent.id, 0):
            self._calls[parent.id] = made
            self._dirty.add(parent.id)

    async def complete(self, task_id: str, actor: str, reason: str) -> Task:
        return await self._end(task_id, TaskState.COMPLETED, actor, reason)

    async def fail(self, task_id: str, actor: str, reason: str) -> Task:
        return await self._end(task_id, TaskState.FAILED, actor, reason)

    async def revoke(self, task_id: str, actor: str, reason: str) -> Task:
        return await self._end(task_id, TaskState.REVOKED, actor, reason)

    async def end_agent_tasks(self, agent_id: str, reason: str, actor: str = SYSTEM_ACTOR) -> builtins.list[Task]:
        """Revoke every active task of the agent (on suspension or retirement)."""
        ended = self._end_agent_in_memory(agent_id, reason)
        await self._persist(ended, actor, reason)
        return [task for task, _ in ended]

    async def expire_due(self) -> builtins.list[Task]:
        """Mark active tasks past their deadline expired in memory and in the store (the sweeper)."""
        now = self.clock()
        ended = [
            pair
            for task in list(self._tasks.values())
            if now >= task.deadline and self._still_active(task)  # (not ended above as a descendant)
            for pair in self._end_in_memory(task, TaskState.EXPIRED, replace(task, ended_at=task.deadline), now,
                                            DEADLINE_REASON)
        ]
        await self._persist(ended, SYSTEM_ACTOR, DEADLINE_REASON)
        self._forget_old(now)
        return [task for task, _ in ended] + await self.end_unfit()

    async def end_unfit(self, task_ids: Iterable[str] | None = None) -> builtins.list[Task]:
        """End (revoked, with their descendants) and write every task held as active that may no longer be
        used: one below a task that has ended (or that neither memory nor the store knows: ended long ago),
        or one with an agent in its chain that is not active (expired: no lifecycle event announces that).
        The backstop of every cascade a crash, a failed write, a replica or a lost notice cut short.
        `task_ids`: only those tasks (with their descendants); None: every task held as active."""
        held = [self._tasks[i] for ids in self._active.values() for i in ids] if task_ids is None else [
            task for task in map(self._tasks.get, task_ids) if task is not None]
        for ancestor_id in {link.task_id for task in held for link in task.chain[:-1]} - self._tasks.keys():
            stored = await self.store.get_task(ancestor_id)
            if stored is not None:
                self._take_stored(stored)
        await self._confirm_inactive_agents(held)
        now = self.clock()
        ended = [
            pair
            for task in held
            if self._still_active(task) and (why := self._unfit(task, now)) is not None
            for pair in self._end_in_memory(task, TaskState.REVOKED, None, now, why)
        ]
        await self._persist(ended, SYSTEM_ACTOR, "an ancestor task or an agent of the chain ended")
        return [task for task, _ in ended]

    async def _confirm_inactive_agents(self, held: Iterable[Task]) -> None:
        """Re-read from the store each agent of a held task's chain that this replica's registry holds as not
        active, before that is written as a task's end: the registry may be behind the store (agent and task
        notices are handled apart, so a task can be heard of before its agent's creation or resumption).
        Until then `check` refuses the task's calls, but nothing is written."""
        now = self.clock()
        doubtful = {agent_id for task in held if self._still_active(task)
                    for agent_id in task.chain_agents if self._agent_state(agent_id, now) is not Lifecycle.ACTIVE}
        for agent_id in sorted(doubtful):
            await self.registry.refresh(agent_id)

    def _agent_state(self, agent_id: str, now: float) -> Lifecycle | None:
        agent = self.registry.get(agent_id)
        return None if agent is None else agent.effective_state(now)

    def _still_active(self, task: Task) -> bool:
        """`task` (from a snapshot) is still held, and active: not ended (or forgotten) since the snapshot."""
        current = self._tasks.get(task.id)
        return current is not None and current.state is TaskState.ACTIVE

    def _unfit(self, task: Task, now: float) -> str | None:
        """Why a task held as active may not be used any more (see end_unfit); None if it may."""
        for link in task.chain[:-1]:
            above = self._tasks.get(link.task_id)
            if above is None:
                return f"parent task {link.task_id} ended (it is not found)"
            if above.state is not TaskState.ACTIVE:
                return f"parent task {above.id} {above.state.value}: {above.end_reason or 'ended'}"
        return self._inactive_agent(task, now)

    def _inactive_agent(self, task: Task, now: float) -> str | None:
        """Why an agent of the task's chain (its own included) may not act now; None if every one may."""
        for agent_id in task.chain_agents:
            agent = self.registry.get(agent_id)
            state = None if agent is None else agent.effective_state(now)
            if state is not Lifecycle.ACTIVE:
                expired = agent is not None and agent.state is not state  # past its expires_at
                return f"agent {agent_id!r} is {'unknown' if state is None else state.value}" + (
                    " (it expired)" if expired else "")
        return None

    async def flush(self) -> None:
        """Write the call counts made since the last flush."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        counts = {task_id: self._calls[task_id] for task_id in dirty if task_id in self._calls}
        try:
            await self.store.save_task_calls(counts)
        except Exception:
            self._dirty |= dirty  # retried on the next flush
            raise

    # internals

    def _active_agent(self, agent_id: str, now: float) -> Agent:
        agent = self.registry.get(agent_id)
        if agent is None:
            raise AgentNotActive(f"no agent {agent_id!r}")
        state = agent.effective_state(now)
        if state is not Lifecycle.ACTIVE:
            raise AgentNotActive(f"agent {agent_id!r} is {state.value}; only active agents can start tasks")
        return agent

    def _require_room(self, agent_id: str, now: float) -> None:
        """Refuse a new task while the agent holds max_active_per_agent live ones (O(that) at most)."""
        limit = self.settings.max_active_per_agent
        held = self._active.get(agent_id, {})
        if len(held) >= limit and sum(now < self._tasks[i].deadline for i in held) >= limit:
            raise TaskError(f"agent {agent_id!r} already has {limit} active tasks; "
                            "complete or fail one before starting another")

    def _grantable(self, agent: Agent, tools: tuple[str, ...], trim: bool) -> tuple[str, ...]:
        if not tools:
            raise ToolsRefused("name at least one tool the task needs")
        unknown = tuple(t for t in tools if t not in self.catalog.tools)
        outside = tuple(
            t for t in tools
            if t in self.catalog.tools and not agent.entitlement.allows(t, self.catalog.tools[t].server_id)
        )
        if unknown and not trim:
            raise ToolsRefused(f"unknown tool(s): {', '.join(unknown)}", unknown=unknown, outside=outside)
        if outside and not trim:
            raise ToolsRefused(
                f"tool(s) outside agent {agent.id!r}'s entitlement: {', '.join(outside)}", outside=outside
            )
        granted = tuple(t for t in tools if t not in unknown and t not in outside)
        if not granted:
            # Trimming everything away would start a task that can do nothing: say so instead.
            raise ToolsRefused(
                f"none of the requested tools is within agent {agent.id!r}'s entitlement",
                unknown=unknown, outside=outside,
            )
        return granted

    def _deadline(self, now: float, deadline_s: float | None, deadline: float | None) -> float:
        if deadline_s is not None and deadline is not None:
            raise TaskError("give deadline_s (seconds from now) or deadline (epoch), not both")
        if deadline is not None:
            deadline_s = _number(deadline, "deadline") - now
        duration = self.settings.default_duration_s if deadline_s is None else _number(deadline_s, "deadline")
        if duration <= 0:
            raise TaskError("the deadline must lie in the future")
        return now + min(duration, self.settings.max_duration_s)

    async def _end(self, task_id: str, state: TaskState, actor: str, reason: str) -> Task:
        _require_text(actor, "actor", "say who ends the task")
        reason = _require_text(reason, "reason", "say why the task ends")
        current = self.get(task_id)
        if current is None:
            raise TaskNotFound(f"no task {task_id!r}")
        if current.state is not TaskState.ACTIVE:
            # An expired-but-unswept task is persisted as expired, never as what was asked.
            if current.state is TaskState.EXPIRED and self._tasks[task_id].state is TaskState.ACTIVE:
                await self.expire_due()
            raise TaskEnded(f"task {task_id} already ended: {_ended_reason(current)}", task_id, current.state)
        ended = self._end_in_memory(self._tasks[task_id], state, None, self.clock(), reason)
        await self._persist(ended, actor, reason)
        return ended[0][0]

    def _end_in_memory(
        self, task: Task, state: TaskState, base: Task | None, now: float, reason: str,
        observers: Observers[[Task]] | None = None,
    ) -> builtins.list[tuple[Task, TaskState]]:
        """End `task` now, in memory, and every task delegated from it (revoked, saying why), telling the
        observers (`on_end` unless others are named) of each; returns (ended task, previous state)
        pairs, `task` first."""
        ended = [self._end_one(task, state, base, now, reason, observers)]
        for child_id in self._children.pop(task.id, {}):
            child = self._tasks.get(child_id)
            if child is None or child.state is not TaskState.ACTIVE:
                continue
            if now >= child.deadline:  # its own deadline came first (it is never later than the parent's)
                ended += self._end_in_memory(child, TaskState.EXPIRED, replace(child, ended_at=child.deadline), now,
                                             DEADLINE_REASON, observers)
            else:
                ended += self._end_in_memory(child, TaskState.REVOKED, None, now,
                                             f"parent task {task.id} {state.value}: {reason}", observers)
        return ended

    def _end_one(
        self, task: Task, state: TaskState, base: Task | None, now: float, reason: str,
        observers: Observers[[Task]] | None,
    ) -> tuple[Task, TaskState]:
        base = base or task
        ended = replace(
            base, state=state, ended_at=base.ended_at or now, end_reason=reason,
            calls_made=self._calls.get(task.id, task.calls_made),
        )
        self._tasks[task.id] = ended
        self._remember_ended(task.id)
        self._no_longer_active(task)
        self._dirty.discard(task.id)  # the state write below carries the count
        for observer in self.on_end if observers is None else observers:
            try:
                observer(ended)
            except Exception:
                # One broken observer must not keep the others (token deny-list, approvals) from running.
                log.exception("task end observer failed for task %s", task.id)
        log.info("task %s of agent %s %s: %s", task.id, task.agent_id, state.value, reason)
        return ended, task.state

    def _end_agent_in_memory(self, agent_id: str, reason: str,
                             observers: Observers[[Task]] | None = None) -> builtins.list[tuple[Task, TaskState]]:
        now = self.clock()
        return [
            pair
            for task in list(self._tasks.values())
            if task.agent_id == agent_id and task.effective(now).state is TaskState.ACTIVE
            and self._still_active(task)  # not ended above as another's descendant
            for pair in self._end_in_memory(task, TaskState.REVOKED, None, now, reason, observers)
        ]

    async def _persist(self, ended: builtins.list[tuple[Task, TaskState]], actor: str, reason: str) -> None:
        """Write each ended task (and announce it once written). One failed write neither stops the others nor
        is lost: it is retried in the background until written; the first failure is raised afterwards."""
        now = self.clock()
        # A descendant ended with its parent says so in its own reason.
        events = [(task, TaskEvent(task.id, previous, task.state, actor, task.end_reason or reason, now))
                  for task, previous in ended]
        self._unwritten.update((task.id, (task, event)) for task, event in events)
        failure = await self._write([task.id for task, _ in events])
        if failure is not None:
            raise failure

    async def _write(self, task_ids: Iterable[str]) -> Exception | None:
        """Write the unwritten ends of `task_ids`, announcing each written; the first failure, if any."""
        failure: Exception | None = None
        written: builtins.list[Task] = []
        async with self._lock:
            for task_id in task_ids:
                pending = self._unwritten.get(task_id)
                if pending is None:
                    continue  # written meanwhile by a retry
                try:
                    await self.store.save_task(*pending)
                except Exception as exc:
                    failure = failure or exc
                else:
                    del self._unwritten[task_id]
                    written.append(pending[0])
        for task in written:
            for observer in self.on_saved:
                observer(task)
        return failure

    async def _write_unwritten(self) -> None:
        if self._unwritten:
            failure = await self._write(builtins.list(self._unwritten))
            if failure is not None:
                raise failure

    def _write_missed_later(self, ended: builtins.list[tuple[Task, TaskState]]) -> None:
        """Write (in the background) the ends of tasks ended here after another replica's end, that the store
        still holds as active: that replica did not hold them, or its writes failed."""
        if ended:
            self._missed.update((task.id, (task, previous)) for task, previous in ended)
            self._later(self._logged(self._write_missed_pending))

    async def _write_missed_pending(self) -> None:
        """Write the ends in `_missed` that the store does not hold; one whose look-up fails stays for the next
        try (the background loop's, or close's), one whose write fails is retried as unwritten."""
        for task_id in builtins.list(self._missed):
            try:
                stored = await self.store.get_task(task_id)
            except Exception:  # this one stays for the next try; the others go on
                log.exception("could not read task %s from the store to write its end; retrying", task_id)
                continue
            pending = self._missed.pop(task_id, None)
            if pending is not None and (stored is None or stored.state is TaskState.ACTIVE):
                await self._persist([pending], SYSTEM_ACTOR, "ended elsewhere")

    def _agent_changed(self, agent: Agent, event: LifecycleEvent) -> None:
        """Registry observer: a suspended or retired agent's tasks end at once (in memory), then on disk."""
        if event.to_state not in (Lifecycle.SUSPENDED, Lifecycle.RETIRED) or event.from_state is event.to_state:
            return
        reason = f"agent {agent.id} {event.to_state.value} by {event.actor}: {event.reason}"
        self._persist_later(self._end_agent_in_memory(agent.id, reason), reason)

    def _persist_later(self, ended: builtins.list[tuple[Task, TaskState]], reason: str) -> None:
        if ended:
            self._later(self._persist_logged(ended, reason))

    def _later(self, work: Coroutine[object, object, None]) -> None:
        pending = asyncio.ensure_future(work)
        self._pending.add(pending)
        pending.add_done_callback(self._pending.discard)

    def _agent_refreshed(self, agent: Agent, before: Agent | None) -> None:
        """Registry observer: an agent another replica suspended or retired has its tasks ended here too
        (in memory; that replica writes them, and this one what the store still holds as active)."""
        if agent.state in (Lifecycle.SUSPENDED, Lifecycle.RETIRED) and (before is None or before.state != agent.state):
            reason = f"agent {agent.id} {agent.state.value}"
            self._write_missed_later(self._end_agent_in_memory(agent.id, reason, self.on_ended_elsewhere))

    async def _persist_logged(self, ended: builtins.list[tuple[Task, TaskState]], reason: str) -> None:
        try:
            await self._persist(ended, SYSTEM_ACTOR, reason)
        except Exception:
            log.exception("could not record the revocation of %d task(s); they stay ended in memory", len(ended))

    async def _run_background(self) -> None:
        """Flush call counts often, sweep deadlines less often; a store hiccup is logged, not fatal."""
        last_sweep = 0.0
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            # Each step on its own: one that keeps failing (a record this version cannot read) must not stop
            # the others, least of all the call-count flush and the deadline sweep.
            for step in (self._write_missed_pending, self._write_unwritten, self.flush):
                await self._logged(step)
            if time.monotonic() - last_sweep >= self.settings.sweep_interval_s:
                last_sweep = time.monotonic()
                await self._logged(self.expire_due)

    @staticmethod
    async def _logged(step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except Exception:
            log.exception("task background step %s failed; retrying", getattr(step, "__name__", step))

    def _hold_active(self, task: Task) -> None:
        self._active.setdefault(task.agent_id, {})[task.id] = None
        if task.parent_id is not None:
            self._children.setdefault(task.parent_id, {})[task.id] = None

    def _check_ancestors(self, task: Task) -> None:
        """A delegated task is refused once any task above it has ended here, even before the cascade
        that ends it has reached this process (ended on another replica, told in another order). A task
        above it that is not held here counts as ended (forgotten, or not heard of yet) until loaded."""
        for link in task.chain[:-1]:
            above = self._tasks.get(link.task_id)
            if above is None:
                self._load_later(link.task_id, task.id)
                raise TaskEnded(f"parent task {link.task_id} is not known here (ended, or not loaded yet)",
                                task.id, task.state)
            above = above.effective(self.clock())
            if above.state is not TaskState.ACTIVE:
                raise TaskEnded(f"parent task {above.id} has ended ({_ended_reason(above)})", task.id, task.state)

    def _load_later(self, task_id: str, below_id: str) -> None:
        """Load a task from the store, then end `below_id` if that task has ended (one load at a time)."""
        if task_id not in self._loading:
            self._loading.add(task_id)
            self._later(self._load(task_id, below_id))

    async def _load(self, task_id: str, below_id: str) -> None:
        try:
            await self.refresh(task_id)
            await self.refresh(below_id)  # as stored (another replica may have ended it), then ended here if unfit
        except Exception:
            log.exception("could not load task %s from the store", task_id)
        finally:
            self._loading.discard(task_id)

    def _remember_ended(self, task_id: str) -> None:
        self._ended.pop(task_id, None)
        self._ended[task_id] = None
        while len(self._ended) > self.settings.ended_retention_max:
            self._forget(next(iter(self._ended)))

    def _no_longer_active(self, task: Task) -> None:
        siblings = self._children.get(task.parent_id or "")
        if siblings is not None:
            siblings.pop(task.id, None)
            if not siblings:
                del self._children[task.parent_id or ""]
        held = self._active.get(task.agent_id)
        if held is not None:
            held.pop(task.id, None)
            if not held:
                del self._active[task.agent_id]

    def _forget_old(self, now: float) -> None:
        horizon = now - self.settings.ended_retention_s
        for task_id in [i for i in self._ended if (self._tasks[i].ended_at or now) < horizon]:
            self._forget(task_id)

    def _forget(self, task_id: str) -> None:
        del self._ended[task_id]
        self._tasks.pop(task_id, None)
        self._calls.pop(task_id, None)


def _ended_reason(task: Task) -> str:
    return f"task {task.state.value}" + (f": {task.end_reason}" if task.end_reason else "")


def _unique(tools: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tools, str):
        raise TaskError("tools must be a list of tool names")
    seen: dict[str, None] = {}
    for tool in tools:
        if not isinstance(tool, str) or not tool.strip():
            raise TaskError("tool names must be non-empty strings")
        seen.setdefault(tool.strip(), None)
    return tuple(seen)


def _require_text(value: object, name: str, hint: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TaskError(f"{name} is required: {hint}")
    if len(value) > 1000:
        raise TaskError(f"{name} is too long (at most 1000 characters)")
    return value.strip()


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN != NaN
        raise TaskError(f"{name} must be a number")
    return float(value)


def _budget(budget: object) -> int | None:
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise TaskError("budget must be a positive whole number of calls")
    return budget
