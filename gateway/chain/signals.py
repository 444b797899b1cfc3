"""The per-agent and per-task signal records the chain tracker keeps, and the time-window arithmetic on them.

A record only holds timestamps, names and flags; the tracker bounds how many records exist and the
detectors (gateway.chain.detectors) read them. Timestamps are in the tracker's clock, in time order.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from gateway.catalog.model import ToolEntry

COUNT_CAP = 128  # timestamps kept per signal (counts saturate here unless a threshold needs more)
MAX_CLASSES = 64
MINUTE = 60.0
# "approved": allowed because a person approved this exact call (a step-up that was granted).
OUTCOMES = ("allow", "approved", "deny", "step_up")
ALLOWED = frozenset({"allow", "approved"})
READ_RISK = "read"
NO_TIMES: deque[float] = deque(maxlen=0)
# A person's task-less calls through a client are recorded like a task of the client's agent under this key
# (never a task id: those are `task_...`), so one person's reads never colour another's signals.
PERSON_SCOPE = "person:"


@functools.lru_cache(maxsize=4096)  # asked on every call of a person: one hash per person, not per call
def person_scope(agent_id: str, issuer: str, subject: str) -> str:
    """The signal record key of one person (issuer, sub) acting through one client agent."""
    digest = hashlib.sha256("\0".join((agent_id, issuer, subject)).encode()).hexdigest()
    return PERSON_SCOPE + digest[:32]


def is_person_scope(task_id: str | None) -> bool:
    return task_id is not None and task_id.startswith(PERSON_SCOPE)


def own_sensitive_at(task: TaskSignals, task_id: str | None, now: float, window_s: float) -> float | None:
    """The record's last sensitive read that still counts: a task's for its whole life; a person's within
    `window_s` (a person's record outlives any task, so it follows the agent's window)."""
    at = task.sensitive_at
    if at is not None and is_person_scope(task_id) and at <= now - window_s:
        return None
    return at


def inherited_sensitive_at(agent: AgentSignals | None, now: float, window_s: float) -> float | None:
    """What a new person record starts with: the client agent's last sensitive read within `window_s`. A person
    with no record (new, or evicted / expired) may be the one who read it, so an unknown person never reads as
    "nothing sensitive" (else forcing their record out would launder their read)."""
    if agent is None or agent.sensitive_at is None or agent.sensitive_at <= now - window_s:
        return None
    return agent.sensitive_at


class TaskSignals:
    __slots__ = ("agent_id", "calls", "classes", "denials", "egress_answered", "rate", "sensitive_at", "tools",
                 "writes")

    def __init__(self, agent_id: str, max_history: int, calls_cap: int) -> None:
        self.agent_id = agent_id
        self.tools: deque[str] = deque(maxlen=max_history)
        self.calls: deque[float] = deque(maxlen=calls_cap)
        self.writes: deque[float] | None = None  # created on first use: most tasks never need them
        self.denials: deque[float] | None = None
        self.classes: set[str] = set()
        self.sensitive_at: float | None = None  # the task's last allowed sensitive read
        self.rate: deque[float] | None = None
        self.egress_answered = -math.inf  # a person's record only (person_scope): its own answered read


class AgentSignals:
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


class DecidedCall(NamedTuple):
    """One decided tools/call, with the records of its agent and (if any) task (a tuple: cheap to build)."""

    agent_id: str
    task_id: str | None
    agent: AgentSignals
    task: TaskSignals | None
    tool: ToolEntry
    outcome: str  # one of OUTCOMES
    now: float


def record_call(call: DecidedCall, sensitive_classes: frozenset[str], denials_cap: int) -> None:
    """Add a decided call to its agent's and task's signals: tools and calls always; writes, data classes
    and sensitive reads when allowed; denials when denied."""
    agent, task, tool, now = call.agent, call.task, call.tool, call.now
    name = tool.exposed_name
    agent.total_calls += 1
    agent.tools.append(name)
    agent.calls.append(now)
    if task is not None:
        task.tools.append(name)
        task.calls.append(now)
    if call.outcome in ALLOWED:
        if tool.risk != READ_RISK:
            push(agent, "writes", COUNT_CAP, now)
            if task is not None:
                push(task, "writes", COUNT_CAP, now)
        if tool.data_classes:
            _touch_classes(agent, task, tool.data_classes, sensitive_classes, now)
    elif call.outcome == "deny":
        push(agent, "denials", denials_cap, now)
        if task is not None:
            push(task, "denials", denials_cap, now)


def _touch_classes(agent: AgentSignals, task: TaskSignals | None, data_classes: tuple[str, ...],
                   sensitive_classes: frozenset[str], now: float) -> None:
    sensitive = False
    for c in data_classes:
        if c in sensitive_classes:
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


def push(state: AgentSignals | TaskSignals, attr: str, maxlen: int, now: float) -> None:
    times = getattr(state, attr)
    if times is None:
        times = deque(maxlen=maxlen)
        setattr(state, attr, times)
    times.append(now)


def prune(times: deque[float], cutoff: float) -> None:
    while times and times[0] <= cutoff:
        times.popleft()


def count_since(times: deque[float], cutoff: float) -> int:
    """Entries newer than `cutoff` (the deque is in time order)."""
    if not times or times[0] > cutoff:
        return len(times)
    count = 0
    for t in reversed(times):
        if t <= cutoff:
            break
        count += 1
    return count


def reached(times: deque[float], n: int, cutoff: float) -> bool:
    """At least `n` entries newer than `cutoff`: O(1)."""
    return len(times) >= n and times[-n] > cutoff
