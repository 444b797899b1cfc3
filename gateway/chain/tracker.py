"""Chain signals: what each agent and task has done lately, rate limits, and the detectors.

All state is in memory and every call is O(1) apart from small bounded loops; nothing does I/O. The
call-path methods are `async` only because the seams they implement are (gateway/state/chain.py: a
shared implementation awaits Redis); here they never suspend.

Call order on the tools/call path:
    admit()         before the policy decision: per-agent / per-task / per-(agent, tool) rate limits
    context()       the Cedar `context.chain` record for the decision
    admit_call()    both for a tools/call, in one step (what the call path uses)
    observe_call()  after the decision (allow | deny | step_up): update signals, run detectors
    observe_probe() for a call to a tool that is unknown or not listed for the agent (refused before policy)

Scope: with a task, `context()` describes the task; without one, the agent (data classes within
`window_s`). Either way its `agent` record describes the agent across all its tasks (data classes
within `window_s`, counts over the last minute), so starting a new task does not shed what the agent
read. `tools` and `previous_tool` record every decided call; `data_classes`, `sensitive_read` and
`writes_last_minute` only allowed ones. A person's task-less calls through a client have a record like a
task's (signals.person_scope) whose sensitive read counts within `window_s`; a person without one (new or
evicted) reads, and starts, with the client agent's sensitive read in the window (never "nothing sensitive").

Detectors (one module each in gateway.chain.detectors, which also fixes their order) fire once per
onset. `burst`, `repeated_denials` and `probing` re-arm once their window has passed since they last
fired; `sensitive_then_egress` fires once per sensitive read (of this task, or of the agent in any task
within `window_s`) and re-arms on the next one; a novel (previous tool -> tool) pair is learned the first
time it is seen.

Memory bounds (everything else is O(1) per entry):
    tracked agents   at most max_agents (10,000), least recently used evicted
    tracked tasks    at most max_tasks (10,000), least recently used evicted
    per agent/task   tools: max_history names (references to catalog strings);
                     timestamps for calls, allowed writes and denials, dropped once older than
                     max(60 s, the detector's window), at most max(128, threshold + 1) each
                     (counts in the context saturate at 128); rate limiter: at most `calls` timestamps;
                     data classes: at most 64
    per agent only   probes: at most 2 x probing.calls; per-tool limiters: at most 64 tools
                     (least recently used evicted) x per_tool.calls; seen tool pairs: at most 256
    shared (gateway/cluster/chain_signals.py, on Redis): the same per-record bounds; records expire
                     instead of being evicted (docs/state.md)
    measured (CPython 3.11, tracemalloc, one agent with one task, default settings):
                     ~6 KiB for a quiet agent (20 reads), ~18 KiB for a busy one (120 calls/min with
                     writes, denials and probes); adversarial worst case ~31 KiB, ~85 KiB with a
                     per_tool limit of 30 calls. 10,000 busy agents and tasks: ~180 MB; worst ~0.3-0.9 GB.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.chain.detectors import AFTER_RECORD, BEFORE_RECORD, Detection, Probing
from gateway.chain.signals import (
    COUNT_CAP,
    MINUTE,
    OUTCOMES,
    AgentSignals,
    DecidedCall,
    TaskSignals,
    count_since,
    inherited_sensitive_at,
    is_person_scope,
    own_sensitive_at,
    prune,
    record_call,
)
from gateway.settings.monitoring import MonitoringSettings, RateLimit

if TYPE_CHECKING:
    from gateway.catalog.model import ToolEntry

MAX_AGENTS = 10_000
MAX_TASKS = 10_000
MAX_TOOL_LIMITERS = 64

__all__ = ["ChainTracker", "Detection", "RateLimited", "RatesUnavailable", "chain_record", "empty_agent_view",
           "empty_context", "unknown_person_context"]


class RateLimited(Exception):
    """A rate limit refused the call; the agent may retry after `retry_after_s` seconds."""

    def __init__(self, scope: str, retry_after_s: float, limit: RateLimit) -> None:
        self.scope = scope  # "agent" | "task" | "tool"
        self.retry_after_s = retry_after_s
        self.limit = limit
        super().__init__(f"rate limit exceeded for this {scope}: at most {limit.calls} calls per "
                         f"{limit.per_s:g} s; retry after {retry_after_s:.1f} s")


class RatesUnavailable(RateLimited):
    """Shared rate windows could not be reached: the request was not counted, so it is refused like one
    over a limit (never admitted uncounted); the agent may retry shortly."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        Exception.__init__(self, "rate limits cannot be checked right now (shared state unreachable)")
        self.scope = "gateway"
        self.retry_after_s = retry_after_s
        self.limit = RateLimit(0, retry_after_s)


Judge = Callable[[DecidedCall], Detection | None]
_NO_TOOLS: deque[str] = deque(maxlen=0)
# context.chain's counts (and context.chain.agent's): calls, allowed writes and denials within the last minute.
CALLS, WRITES, DENIALS = "calls_last_minute", "writes_last_minute", "denials_last_minute"
_NO_COUNTS = {CALLS: 0, WRITES: 0, DENIALS: 0}


def _blocked(times: deque[float], limit: RateLimit, now: float) -> float:
    """Seconds until a call fits under `limit`, 0.0 when it fits now. `times` holds at most `calls` entries."""
    if len(times) < limit.calls:
        return 0.0
    wait = times[0] + limit.per_s - now
    return wait if wait > 0 else 0.0


class ChainTracker:
    def __init__(self, settings: MonitoringSettings, clock: Callable[[], float] = time.monotonic, *,
                 max_agents: int = MAX_AGENTS, max_tasks: int = MAX_TASKS) -> None:
        self.settings = settings
        self.clock = clock
        self.max_agents = max_agents
        self.max_tasks = max_tasks
        self._agents: OrderedDict[str, AgentSignals] = OrderedDict()
        self._tasks: OrderedDict[str, TaskSignals] = OrderedDict()
        self._sensitive = frozenset(settings.sensitive_classes)
        # Bound `judge` methods: the cheapest call on the hot path.
        self._before_record: tuple[Judge, ...] = tuple(make(settings).judge for make in BEFORE_RECORD)
        self._after_record: tuple[Judge, ...] = tuple(make(settings).judge for make in AFTER_RECORD)
        self._probing = Probing(settings).judge
        self._calls_cap = max(COUNT_CAP, settings.burst.calls + 1)
        self._denials_cap = max(COUNT_CAP, settings.repeated_denials.calls)
        self._calls_horizon = max(MINUTE, settings.burst.per_s)
        self._denials_horizon = max(MINUTE, settings.repeated_denials.per_s)

    # -- state lookup -------------------------------------------------------------------------------

    def _agent(self, agent_id: str) -> AgentSignals:
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = self._agents[agent_id] = AgentSignals(self.settings.max_history, self._calls_cap)
            if len(self._agents) > self.max_agents:
                self._agents.popitem(last=False)
        else:
            self._agents.move_to_end(agent_id)
        return agent

    def _task(self, task_id: str, agent_id: str) -> TaskSignals:
        task = self._tasks.get(task_id)
        if task is None:
            task = self._tasks[task_id] = TaskSignals(agent_id, self.settings.max_history, self._calls_cap)
            if is_person_scope(task_id):
                task.sensitive_at = inherited_sensitive_at(self._agents.get(agent_id), self.clock(),
                                                           self.settings.window_s)
            if len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(task_id)
        return task

    # -- rate limits --------------------------------------------------------------------------------

    async def admit(self, agent_id: str, task_id: str | None, tool: str | None) -> None:
        """Count this request against the rate limits, or raise RateLimited (nothing is counted then).

        `tool` is the exposed tool name of a tools/call; None for any other request that reaches an
        upstream (prompts, resources, completions, subscriptions), which per-tool limits do not cover.
        """
        self._admit(agent_id, task_id, tool)

    async def admit_call(self, agent_id: str, task_id: str | None, tool: str) -> dict[str, Any]:
        """`admit` then `context` for a tools/call (gateway.state.chain.CallAdmission), without a second await."""
        self._admit(agent_id, task_id, tool)
        return self._context(agent_id, task_id)

    def _admit(self, agent_id: str, task_id: str | None, tool: str | None) -> None:
        s = self.settings
        per_tool = s.per_tool if tool is not None else None
        if s.per_agent is None and per_tool is None and (s.per_task is None or task_id is None):
            return
        now = self.clock()
        agent = self._agent(agent_id)
        checks: list[tuple[str, RateLimit, deque[float]]] = []
        if s.per_agent is not None:
            if agent.rate is None:
                agent.rate = deque(maxlen=s.per_agent.calls)
            checks.append(("agent", s.per_agent, agent.rate))
        if s.per_task is not None and task_id is not None:
            task = self._task(task_id, agent_id)
            if task.rate is None:
                task.rate = deque(maxlen=s.per_task.calls)
            checks.append(("task", s.per_task, task.rate))
        if per_tool is not None and tool is not None:
            rates = agent.tool_rates
            if rates is None:
                rates = agent.tool_rates = OrderedDict()
            times = rates.get(tool)
            if times is None:
                times = rates[tool] = deque(maxlen=per_tool.calls)
                if len(rates) > MAX_TOOL_LIMITERS:
                    rates.popitem(last=False)
            else:
                rates.move_to_end(tool)
            checks.append(("tool", per_tool, times))
        worst: tuple[float, str, RateLimit] | None = None
        for scope, limit, times in checks:
            wait = _blocked(times, limit, now)
            if wait > 0 and (worst is None or wait > worst[0]):
                worst = (wait, scope, limit)
        if worst is not None:
            raise RateLimited(worst[1], worst[0], worst[2])
        for _, _, times in checks:
            times.append(now)

    # -- Cedar context ------------------------------------------------------------------------------

    async def context(self, agent_id: str, task_id: str | None) -> dict[str, Any]:
        """The `context.chain` record: the task's signals (the agent's when there is no task), and beside
        them, in `agent`, the agent's own across all its tasks, which a new task cannot shed."""
        return self._context(agent_id, task_id)

    def _context(self, agent_id: str, task_id: str | None) -> dict[str, Any]:
        now = self.clock()
        agent = self._agents.get(agent_id)
        agent_view = self._agent_view(agent, now)
        if task_id is None:
            if agent is None:
                return empty_context(agent_view)
            return chain_record(agent_view["data_classes"], agent_view["sensitive_read"], agent.tools, agent_view,
                           agent_view)
        task = self._tasks.get(task_id)
        if task is None:
            return unknown_person_context(agent_view) if is_person_scope(task_id) else empty_context(agent_view)
        sensitive = own_sensitive_at(task, task_id, now, self.settings.window_s) is not None
        return chain_record(sorted(task.classes), sensitive, task.tools, self._counts(task, now), agent_view)

    def _agent_view(self, agent: AgentSignals | None, now: float) -> dict[str, Any]:
        """The agent's data classes within `window_s` and its recent counts, whichever task it is in."""
        if agent is None:
            return empty_agent_view()
        cutoff = now - self.settings.window_s
        classes = agent.classes
        while classes:  # in last-touched order: the stale ones are at the front
            oldest = next(iter(classes))
            if classes[oldest] > cutoff:
                break
            del classes[oldest]
        names = sorted(classes)
        calls, writes, denials = self._recent(agent, now)
        return {"data_classes": names, "sensitive_read": not self._sensitive.isdisjoint(names),
                CALLS: calls, WRITES: writes, DENIALS: denials}

    def _counts(self, state: AgentSignals | TaskSignals, now: float) -> dict[str, int]:
        calls, writes, denials = self._recent(state, now)
        return {CALLS: calls, WRITES: writes, DENIALS: denials}

    def _recent(self, state: AgentSignals | TaskSignals, now: float) -> tuple[int, int, int]:
        """(calls, allowed writes, denials) within the last minute."""
        minute_ago = now - MINUTE
        calls, writes, denials = state.calls, state.writes, state.denials
        prune(calls, now - self._calls_horizon)
        if writes is not None:
            prune(writes, minute_ago)
        if denials is not None:
            prune(denials, now - self._denials_horizon)
        return (count_since(calls, minute_ago), len(writes) if writes is not None else 0,
                count_since(denials, minute_ago) if denials is not None else 0)

    # -- observations and detectors -----------------------------------------------------------------

    async def observe_call(self, agent_id: str, task_id: str | None, tool: ToolEntry, outcome: str) -> list[Detection]:
        """Record a decided tools/call and return what the detectors found (usually nothing)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        agent = self._agent(agent_id)
        task = self._task(task_id, agent_id) if task_id is not None else None
        call = DecidedCall(agent_id, task_id, agent, task, tool, outcome, self.clock())
        found: list[Detection] = []
        for detect in self._before_record:
            if (detection := detect(call)) is not None:
                found.append(detection)
        record_call(call, self._sensitive, self._denials_cap)
        for detect in self._after_record:
            if (detection := detect(call)) is not None:
                found.append(detection)
        return found

    async def observe_probe(self, agent_id: str, task_id: str | None, tool_name: str) -> list[Detection]:
        """Record a call to an unknown or unlisted tool; `probing` fires high, then critical at twice the count."""
        now = self.clock()
        agent = self._agent(agent_id)
        if task_id is not None:
            self._task(task_id, agent_id)
        detection = self._probing(agent, agent_id, task_id, tool_name, now)
        return [detection] if detection is not None else []

    # -- lifecycle ----------------------------------------------------------------------------------

    def forget_task(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    def forget_agent(self, agent_id: str) -> None:
        """Drop the agent and every task it owns (e.g. when it is suspended)."""
        self._agents.pop(agent_id, None)
        for task_id in [t for t, task in self._tasks.items() if task.agent_id == agent_id]:
            del self._tasks[task_id]

    def stats(self) -> dict[str, int]:
        return {"agents": len(self._agents), "tasks": len(self._tasks)}


def chain_record(classes: list[str], sensitive: bool, tools: Sequence[str], counts: Mapping[str, Any],
                 agent_view: dict[str, Any]) -> dict[str, Any]:
    return {
        "data_classes": classes,
        "sensitive_read": sensitive,
        "tools": list(tools),
        "previous_tool": tools[-1] if tools else "",
        CALLS: counts[CALLS],
        WRITES: counts[WRITES],
        DENIALS: counts[DENIALS],
        "agent": agent_view,
    }


def empty_context(agent_view: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nothing known about this task (or agent): empty signals, beside whatever the agent did elsewhere."""
    return chain_record([], False, _NO_TOOLS, _NO_COUNTS, empty_agent_view() if agent_view is None else agent_view)


def unknown_person_context(agent_view: dict[str, Any]) -> dict[str, Any]:
    """A person the gateway holds no record of (new, or evicted / expired): the client agent's sensitive read
    within window_s may be theirs, so never "nothing sensitive" (as the record they get starts:
    signals.inherited_sensitive_at); data classes stay their own."""
    return chain_record([], agent_view["sensitive_read"], _NO_TOOLS, _NO_COUNTS, agent_view)


def empty_agent_view() -> dict[str, Any]:
    """`context.chain.agent` for an agent the tracker does not know (yet, or any more)."""
    return {"data_classes": [], "sensitive_read": False, **_NO_COUNTS}
