"""Chain signals: what each agent and task has done lately, rate limits, and the detectors.

All state is in memory and every call is O(1) apart from small bounded loops; nothing does I/O.

Call order on the tools/call path:
    admit()         before the policy decision: per-agent / per-task / per-(agent, tool) rate limits
    context()       the Cedar `context.chain` record for the decision
    observe_call()  after the decision (allow | deny | step_up): update signals, run detectors
    observe_probe() for a call to a tool that is unknown or not listed for the agent (refused before policy)

Scope: with a task, `context()` describes the task; without one, the agent (data classes within
`window_s`). Either way its `agent` record describes the agent across all its tasks (data classes
within `window_s`, counts over the last minute), so starting a new task does not shed what the agent
read. `tools` and `previous_tool` record every decided call; `data_classes`, `sensitive_read` and
`writes_last_minute` only allowed ones.

Detectors fire once per onset. `burst`, `repeated_denials` and `probing` re-arm once their window has
passed since they last fired; `sensitive_then_egress` fires once per sensitive read (of this task, or
of the agent in any task within `window_s`) and re-arms on the next one; a novel
(previous tool -> tool) pair is learned the first time it is seen.

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
    measured (CPython 3.11, tracemalloc, one agent with one task, default settings):
                     ~6 KiB for a quiet agent (20 reads), ~18 KiB for a busy one (120 calls/min with
                     writes, denials and probes); adversarial worst case ~31 KiB, ~85 KiB with a
                     per_tool limit of 30 calls. 10,000 busy agents and tasks: ~180 MB; worst ~0.3-0.9 GB.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.settings.monitoring import MonitoringSettings, RateLimit

if TYPE_CHECKING:
    from gateway.catalog.model import ToolEntry

MAX_AGENTS = 10_000
MAX_TASKS = 10_000
COUNT_CAP = 128  # timestamps kept per signal (counts saturate here unless a threshold needs more)
MAX_CLASSES = 64
MAX_PAIRS = 256
MAX_TOOL_LIMITERS = 64
NOVELTY_MIN_HISTORY = 10  # calls an agent must have made before a new tool pair is flagged
MINUTE = 60.0
# "approved": allowed because a person approved this exact call (a step-up that was granted).
OUTCOMES = ("allow", "approved", "deny", "step_up")
ALLOWED = frozenset({"allow", "approved"})
READ_RISK = "read"


@dataclass(frozen=True, slots=True)
class Detection:
    detector: str  # "sensitive_then_egress" | "burst" | "repeated_denials" | "probing" | "novel_sequence"
    severity: str  # "low" | "medium" | "high" | "critical"
    agent_id: str
    task_id: str | None
    tool: str | None
    message: str  # never argument values


class RateLimited(Exception):
    """A rate limit refused the call; the agent may retry after `retry_after_s` seconds."""

    def __init__(self, scope: str, retry_after_s: float, limit: RateLimit) -> None:
        self.scope = scope  # "agent" | "task" | "tool"
        self.retry_after_s = retry_after_s
        self.limit = limit
        super().__init__(f"rate limit exceeded for this {scope}: at most {limit.calls} calls per "
                         f"{limit.per_s:g} s; retry after {retry_after_s:.1f} s")


class _Task:
    __slots__ = ("agent_id", "calls", "classes", "denials", "rate", "sensitive_at", "tools", "writes")

    def __init__(self, agent_id: str, max_history: int, calls_cap: int) -> None:
        self.agent_id = agent_id
        self.tools: deque[str] = deque(maxlen=max_history)
        self.calls: deque[float] = deque(maxlen=calls_cap)
        self.writes: deque[float] | None = None  # created on first use: most tasks never need them
        self.denials: deque[float] | None = None
        self.classes: set[str] = set()
        self.sensitive_at: float | None = None  # the task's last allowed sensitive read
        self.rate: deque[float] | None = None


class _Agent:
    __slots__ = ("burst_at", "calls", "classes", "denials", "denials_at", "egress_answered", "pairs", "probe_at",
                 "probe_level", "probes", "rate", "sensitive_at", "tool_rates", "tools", "total_calls", "writes")

    def __init__(self, max_history: int, calls_cap: int) -> None:
        self.tools: deque[str] = deque(maxlen=max_history)
        self.calls: deque[float] = deque(maxlen=calls_cap)
        self.writes: deque[float] | None = None  # created on first use
        self.denials: deque[float] | None = None
        self.probes: deque[float] | None = None
        self.classes: dict[str, float] = {}  # class -> last allowed touch
        self.sensitive_at: float | None = None  # the agent's last allowed sensitive read, in any task
        self.egress_answered = -math.inf  # the sensitive read the last sensitive_then_egress fired for
        self.pairs: dict[tuple[str, str], None] = {}  # insertion-ordered set of seen (previous, tool)
        self.total_calls = 0
        self.rate: deque[float] | None = None
        self.tool_rates: OrderedDict[str, deque[float]] | None = None
        self.burst_at: float | None = None  # when each detector last fired (None: armed)
        self.denials_at: float | None = None
        self.probe_at: float | None = None
        self.probe_level = 0


_NONE: deque[float] = deque(maxlen=0)
_NO_TOOLS: deque[str] = deque(maxlen=0)
_NO_COUNTS = {"calls_last_minute": 0, "writes_last_minute": 0, "denials_last_minute": 0}


def _push(state: _Agent | _Task, attr: str, maxlen: int, now: float) -> None:
    times = getattr(state, attr)
    if times is None:
        times = deque(maxlen=maxlen)
        setattr(state, attr, times)
    times.append(now)


def _prune(times: deque[float], cutoff: float) -> None:
    while times and times[0] <= cutoff:
        times.popleft()


def _count_since(times: deque[float], cutoff: float) -> int:
    """Entries newer than `cutoff` (the deque is in time order)."""
    if not times or times[0] > cutoff:
        return len(times)
    count = 0
    for t in reversed(times):
        if t <= cutoff:
            break
        count += 1
    return count


def _reached(times: deque[float], n: int, cutoff: float) -> bool:
    """At least `n` entries newer than `cutoff`: O(1)."""
    return len(times) >= n and times[-n] > cutoff


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
        self._agents: OrderedDict[str, _Agent] = OrderedDict()
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._sensitive = frozenset(settings.sensitive_classes)
        self._egress_servers = frozenset(settings.egress_servers)
        self._egress_tools = frozenset(settings.egress_tools)
        self._calls_cap = max(COUNT_CAP, settings.burst.calls + 1)
        self._denials_cap = max(COUNT_CAP, settings.repeated_denials.calls)
        self._calls_horizon = max(MINUTE, settings.burst.per_s)
        self._denials_horizon = max(MINUTE, settings.repeated_denials.per_s)

    # -- state lookup -------------------------------------------------------------------------------

    def _agent(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = self._agents[agent_id] = _Agent(self.settings.max_history, self._calls_cap)
            if len(self._agents) > self.max_agents:
                self._agents.popitem(last=False)
        else:
            self._agents.move_to_end(agent_id)
        return agent

    def _task(self, task_id: str, agent_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            task = self._tasks[task_id] = _Task(agent_id, self.settings.max_history, self._calls_cap)
            if len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(task_id)
        return task

    # -- rate limits --------------------------------------------------------------------------------

    def admit(self, agent_id: str, task_id: str | None, tool: str | None) -> None:
        """Count this request against the rate limits, or raise RateLimited (nothing is counted then).

        `tool` is the exposed tool name of a tools/call; None for any other request that reaches an
        upstream (prompts, resources, completions, subscriptions), which per-tool limits do not cover.
        """
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

    def context(self, agent_id: str, task_id: str | None) -> dict[str, Any]:
        """The `context.chain` record: the task's signals (the agent's when there is no task), and beside
        them, in `agent`, the agent's own across all its tasks, which a new task cannot shed."""
        now = self.clock()
        agent = self._agents.get(agent_id)
        agent_view = self._agent_view(agent, now)
        if task_id is None:
            if agent is None:
                return _empty_context(agent_view)
            return _record(agent_view["data_classes"], agent_view["sensitive_read"], agent.tools, agent_view,
                           agent_view)
        task = self._tasks.get(task_id)
        if task is None:
            return _empty_context(agent_view)
        return _record(sorted(task.classes), task.sensitive_at is not None, task.tools, self._counts(task, now),
                       agent_view)

    def _agent_view(self, agent: _Agent | None, now: float) -> dict[str, Any]:
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
        return {"data_classes": names, "sensitive_read": not self._sensitive.isdisjoint(names),
                **self._counts(agent, now)}

    def _counts(self, state: _Agent | _Task, now: float) -> dict[str, int]:
        minute_ago = now - MINUTE
        calls, writes, denials = state.calls, state.writes, state.denials
        _prune(calls, now - self._calls_horizon)
        if writes is not None:
            _prune(writes, minute_ago)
        if denials is not None:
            _prune(denials, now - self._denials_horizon)
        return {
            "calls_last_minute": _count_since(calls, minute_ago),
            "writes_last_minute": len(writes) if writes is not None else 0,
            "denials_last_minute": _count_since(denials, minute_ago) if denials is not None else 0,
        }

    # -- observations and detectors -----------------------------------------------------------------

    def observe_call(self, agent_id: str, task_id: str | None, tool: ToolEntry, outcome: str) -> list[Detection]:
        """Record a decided tools/call and return what the detectors found (usually nothing)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        s = self.settings
        now = self.clock()
        name = tool.exposed_name
        agent = self._agent(agent_id)
        task = self._task(task_id, agent_id) if task_id is not None else None
        found: list[Detection] = []

        # Sensitive read, then external egress: judged on what was read before this call.
        if tool.egress or tool.server_id in self._egress_servers or name in self._egress_tools:
            detection = self._sensitive_then_egress(agent, task, agent_id, task_id, name, outcome, now)
            if detection is not None:
                found.append(detection)

        # A (previous tool -> tool) pair this agent has never used.
        history = task.tools if task is not None else agent.tools
        if history:
            pair = (history[-1], name)
            pairs = agent.pairs
            if pair not in pairs:
                if s.novel_sequence and agent.total_calls >= NOVELTY_MIN_HISTORY:
                    found.append(Detection("novel_sequence", "low", agent_id, task_id, name,
                                           f"tool sequence {pair[0]} -> {name} never seen for this agent"))
                pairs[pair] = None
                if len(pairs) > MAX_PAIRS:
                    del pairs[next(iter(pairs))]

        # Update the signals.
        agent.total_calls += 1
        agent.tools.append(name)
        agent.calls.append(now)
        if task is not None:
            task.tools.append(name)
            task.calls.append(now)
        if outcome in ALLOWED:
            if tool.risk != READ_RISK:
                _push(agent, "writes", COUNT_CAP, now)
                if task is not None:
                    _push(task, "writes", COUNT_CAP, now)
            sensitive = False
            for c in tool.data_classes:
                if c in self._sensitive:
                    sensitive = True
                classes = agent.classes
                if c in classes:
                    del classes[c]  # re-insert: keeps the dict in last-touched order
                elif len(classes) >= MAX_CLASSES:
                    del classes[next(iter(classes))]
                classes[c] = now
                if task is not None and len(task.classes) < MAX_CLASSES:
                    task.classes.add(c)
            if sensitive:
                agent.sensitive_at = now
                if task is not None:
                    task.sensitive_at = now
        elif outcome == "deny":
            _push(agent, "denials", self._denials_cap, now)
            if task is not None:
                _push(task, "denials", self._denials_cap, now)

        # Burst: more than burst.calls decided calls by this agent in burst.per_s.
        burst = s.burst
        if agent.burst_at is not None and now - agent.burst_at >= burst.per_s:
            agent.burst_at = None
        if agent.burst_at is None and _reached(agent.calls, burst.calls + 1, now - burst.per_s):
            agent.burst_at = now
            found.append(Detection("burst", "high", agent_id, task_id, name,
                                   f"more than {burst.calls} calls in {burst.per_s:g} s"))

        # Repeated denials: repeated_denials.calls denials for this agent in its window.
        if outcome == "deny":
            rule = s.repeated_denials
            if agent.denials_at is not None and now - agent.denials_at >= rule.per_s:
                agent.denials_at = None
            if agent.denials_at is None and _reached(agent.denials or _NONE, rule.calls, now - rule.per_s):
                agent.denials_at = now
                found.append(Detection("repeated_denials", "high", agent_id, task_id, name,
                                       f"{rule.calls} or more denials in {rule.per_s:g} s"))
        return found

    def _sensitive_then_egress(self, agent: _Agent, task: _Task | None, agent_id: str, task_id: str | None,
                               name: str, outcome: str, now: float) -> Detection | None:
        """An egress call after a sensitive read by this task (any time in its life) or by this agent in
        any of its tasks within `window_s`: a new task does not shed the agent's reads.

        Fires once per sensitive read, whichever task the egress comes from. Egress: the catalog's
        `egress` flag, or the configured servers / tools. Critical when the call went through without a
        person's approval (data may have left); high when policy held it or a person approved it.
        """
        in_task = task.sensitive_at if task is not None and task.sensitive_at is not None else -math.inf
        by_agent = agent.sensitive_at
        recent = by_agent if by_agent is not None and by_agent > now - self.settings.window_s else -math.inf
        onset = max(in_task, recent)
        if onset <= agent.egress_answered:
            return None  # nothing read, or this read was already answered
        agent.egress_answered = onset
        # A person who approved this very call saw why it asked: contained, like a held attempt.
        severity = "critical" if outcome == "allow" else "high"
        where = ("in this task" if onset == in_task
                 else f"by this agent within {self.settings.window_s:g} s" + (", outside this task" if task else ""))
        return Detection("sensitive_then_egress", severity, agent_id, task_id, name,
                         f"egress tool {name} called ({outcome}) after sensitive data was read {where}")

    def observe_probe(self, agent_id: str, task_id: str | None, tool_name: str) -> list[Detection]:
        """Record a call to an unknown or unlisted tool; `probing` fires high, then critical at twice the count."""
        rule = self.settings.probing
        now = self.clock()
        agent = self._agent(agent_id)
        if task_id is not None:
            self._task(task_id, agent_id)
        probes = agent.probes
        if probes is None:
            probes = agent.probes = deque(maxlen=2 * rule.calls)
        probes.append(now)
        if agent.probe_at is not None and now - agent.probe_at >= rule.per_s:
            agent.probe_at = None
            agent.probe_level = 0
        cutoff = now - rule.per_s
        level = 2 if _reached(probes, 2 * rule.calls, cutoff) else 1 if _reached(probes, rule.calls, cutoff) else 0
        if level <= agent.probe_level:
            return []
        agent.probe_level = level
        agent.probe_at = now
        count = rule.calls * level
        return [Detection("probing", "critical" if level == 2 else "high", agent_id, task_id, tool_name,
                          f"{count} or more calls to unknown or unlisted tools in {rule.per_s:g} s")]

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


def _record(classes: list[str], sensitive: bool, tools: deque[str], counts: Mapping[str, Any],
            agent_view: dict[str, Any]) -> dict[str, Any]:
    return {
        "data_classes": classes,
        "sensitive_read": sensitive,
        "tools": list(tools),
        "previous_tool": tools[-1] if tools else "",
        "calls_last_minute": counts["calls_last_minute"],
        "writes_last_minute": counts["writes_last_minute"],
        "denials_last_minute": counts["denials_last_minute"],
        "agent": agent_view,
    }


def _empty_context(agent_view: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nothing known about this task (or agent): empty signals, beside whatever the agent did elsewhere."""
    return _record([], False, _NO_TOOLS, _NO_COUNTS, empty_agent_view() if agent_view is None else agent_view)


def empty_agent_view() -> dict[str, Any]:
    """`context.chain.agent` for an agent the tracker does not know (yet, or any more)."""
    return {"data_classes": [], "sensitive_read": False, **_NO_COUNTS}
