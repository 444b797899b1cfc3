"""Chain signals shared by every replica: what each agent and task did lately, on Redis.

The same records, bounds and detectors as the in-memory `ChainTracker` (gateway/chain/tracker.py,
signals.py, detectors/), so a fleet answers exactly as one process does (tests/test_cluster_limits.py
runs the same sequences against both). Every operation is one Lua script, hence atomic and one round
trip: `context` reads the agent's and the task's records; `observe_call` / `observe_probe` judge the
detectors and record the call together, so two replicas never both fire a once-per-onset detector.

Keys (under the cluster prefix), each a MessagePack record unless said otherwise:
    chain:agent:<id>        the agent's record; expires `agent_ttl` after its last update
    chain:pairs:<id>        sorted set of its seen (previous, tool) pairs, oldest first (novel_sequence)
    chain:tasks:<id>        set of its task ids (for forget_agent)
    chain:task:<id>         the task's record; expires `task_ttl` after its last update
Time is Redis's clock (`TIME`) unless a clock is given (tests). Unreachable: ChainUnavailable (the
monitor refuses the call and audits why).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import RedisError

from gateway.catalog.model import ToolEntry
from gateway.chain.detectors import Detection, SensitiveThenEgress
from gateway.chain.detectors.burst import burst_detection
from gateway.chain.detectors.novel_sequence import MAX_PAIRS, NOVELTY_MIN_HISTORY, novel_detection
from gateway.chain.detectors.probing import probing_detection
from gateway.chain.detectors.repeated_denials import denials_detection
from gateway.chain.signals import (
    ALLOWED,
    COUNT_CAP,
    MAX_CLASSES,
    MINUTE,
    OUTCOMES,
    PERSON_SCOPE,
    READ_RISK,
    is_person_scope,
)
from gateway.chain.tracker import chain_record, empty_context, unknown_person_context
from gateway.cluster.chain_clock import LUA_CLOCK, ClockedSeam
from gateway.cluster.connection import Cluster
from gateway.settings.monitoring import MonitoringSettings
from gateway.state.chain import ChainUnavailable
from gateway.tasks.service import TaskSettings

T = TypeVar("T")

log = logging.getLogger("narrowgate.cluster")
FAILURES = (RedisError, OSError, TimeoutError)

# Shared by the scripts: the clock, loading and saving records, capped time lists.
PRELUDE = LUA_CLOCK + """
local function load(key)
  local raw = redis.call('GET', key)
  if raw then return cmsgpack.unpack(raw) end
  return nil
end
local function list(record, field)
  local l = record[field]
  if l == nil then l = {}; record[field] = l end
  return l
end
local function push(l, value, cap)
  l[#l + 1] = value
  while #l > cap do table.remove(l, 1) end
end
local function prune(l, cutoff)
  while #l > 0 and l[1] <= cutoff do table.remove(l, 1) end
end
local function count_since(l, cutoff)
  local n = 0
  for i = #l, 1, -1 do
    if l[i] <= cutoff then break end
    n = n + 1
  end
  return n
end
local function reached(l, n, cutoff)
  return #l >= n and l[#l - n + 1] > cutoff
end
"""

# context(now, window_s, agent key, task key or ''): {tools, agent classes in the window, agent counts x3,
# task found (0/1), task classes, task sensitive (0/1), task counts x3}; tools are the task's with a task,
# else the agent's.
CONTEXT_FUNCTION = """
local function context(now, window, agent_key, task_key)
  local minute_ago = now - 60
  local agent = load(agent_key) or {}
  local classes = {}
  for _, entry in ipairs(agent.classes or {}) do
    if entry[2] > now - window then classes[#classes + 1] = entry[1] end
  end
  local function counts(r)
    return count_since(r.calls or {}, minute_ago), count_since(r.writes or {}, minute_ago),
           count_since(r.denials or {}, minute_ago)
  end
  local ac, aw, ad = counts(agent)
  if task_key == '' then
    return {agent.tools or {}, classes, ac, aw, ad, 0, {}, 0, 0, 0, 0}
  end
  local task = load(task_key)
  if task == nil then
    return {{}, classes, ac, aw, ad, 0, {}, 0, 0, 0, 0}
  end
  local tc, tw, td = counts(task)
  local sensitive = task.sensitive_at
  -- a person's read counts within the window (a task's for its life): signals.own_sensitive_at
  if sensitive and string.find(task_key, '@PERSON_TASK@', 1, true) and sensitive <= now - window then
    sensitive = nil
  end
  return {task.tools or {}, classes, ac, aw, ad, 1, task.classes or {}, sensitive and 1 or 0, tc, tw, td}
end
""".replace("@PERSON_TASK@", ":chain:task:" + PERSON_SCOPE)

# KEYS: agent, task ('' without one). ARGV: now, window_s. Returns context(...).
CONTEXT = PRELUDE + CONTEXT_FUNCTION + """
return context(clock(ARGV[1]), tonumber(ARGV[2]), KEYS[1], KEYS[2])
"""

# KEYS: agent, pairs, agent's task set, task ('' without one).
# ARGV: now, agent id, task id, tool name, outcome, read (0/1), egress (0/1), sensitive (0/1), n, n classes.
# Leaves `found`: the detections in order, {name, detail}, detail the previous tool (novel_sequence) or
# 'task' / 'agent' (whose read sensitive_then_egress answers).
OBSERVE = """
local now = clock(ARGV[1])
local agent_id, task_id, name, outcome = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local read, egress, sensitive = ARGV[6] == '1', ARGV[7] == '1', ARGV[8] == '1'
local agent = load(KEYS[1]) or {}
local task = nil
local person = KEYS[4] ~= '' and string.sub(task_id, 1, @PERSON_SCOPE_LEN@) == '@PERSON_SCOPE@'
if KEYS[4] ~= '' then
  task = load(KEYS[4])
  if task == nil then
    task = {agent_id = agent_id}
    -- a person with no record (new, or expired) starts with the client's read in the window:
    -- signals.inherited_sensitive_at
    if person and agent.sensitive_at and agent.sensitive_at > now - @WINDOW@ then
      task.sensitive_at = agent.sensitive_at
    end
  end
end
local found = {}
local function fire(detector, detail) found[#found + 1] = {detector, detail} end
local NEG = -math.huge

-- sensitive_then_egress: the latest unanswered sensitive read, this task's or the agent's in the window;
-- a person's record (task id 'person:...') answers only the person's own reads, on their own record
if egress then
  local in_task = (task and task.sensitive_at) or NEG
  local answered = agent
  if person then
    answered = task
    if in_task <= now - @WINDOW@ then in_task = NEG end  -- a person's read counts within the window
  end
  local recent = NEG
  if answered == agent and agent.sensitive_at and agent.sensitive_at > now - @WINDOW@ then
    recent = agent.sensitive_at
  end
  local onset = math.max(in_task, recent)
  if onset > (answered.egress_answered or NEG) then
    answered.egress_answered = onset
    fire('sensitive_then_egress', onset == in_task and 'task' or 'agent')
  end
end

-- novel_sequence: judged on the previous tool of the task (or of the agent without one)
local history
if task then history = task.tools or {} else history = agent.tools or {} end
if #history > 0 then
  local previous = history[#history]
  local pair = previous .. '\\0' .. name
  if not redis.call('ZSCORE', KEYS[2], pair) then
    agent.pair_serial = (agent.pair_serial or 0) + 1
    redis.call('ZADD', KEYS[2], agent.pair_serial, pair)
    if redis.call('ZCARD', KEYS[2]) > @MAX_PAIRS@ then redis.call('ZPOPMIN', KEYS[2]) end
    if @NOVEL@ and (agent.total_calls or 0) >= @NOVELTY_MIN@ then fire('novel_sequence', previous) end
  end
end

-- the call's signals (gateway.chain.signals.record_call)
agent.total_calls = (agent.total_calls or 0) + 1
push(list(agent, 'tools'), name, @MAX_HISTORY@)
local calls = list(agent, 'calls')
prune(calls, now - @CALLS_HORIZON@)
push(calls, now, @CALLS_CAP@)
if task then
  push(list(task, 'tools'), name, @MAX_HISTORY@)
  local task_calls = list(task, 'calls')
  prune(task_calls, now - @CALLS_HORIZON@)
  push(task_calls, now, @CALLS_CAP@)
end
local allowed = outcome == 'allow' or outcome == 'approved'
if allowed then
  if not read then
    for _, r in ipairs({agent, task}) do
      local writes = list(r, 'writes')
      prune(writes, now - 60)
      push(writes, now, @COUNT_CAP@)
    end
  end
  local classes = list(agent, 'classes')
  for i = 10, 9 + tonumber(ARGV[9]) do
    local c = ARGV[i]
    local at = nil
    for j, entry in ipairs(classes) do if entry[1] == c then at = j; break end end
    if at then table.remove(classes, at)
    elseif #classes >= @MAX_CLASSES@ then table.remove(classes, 1) end
    classes[#classes + 1] = {c, now}
    if task then
      local own = list(task, 'classes')
      local known = false
      for _, k in ipairs(own) do if k == c then known = true; break end end
      if not known and #own < @MAX_CLASSES@ then own[#own + 1] = c end
    end
  end
  if sensitive then
    agent.sensitive_at = now
    if task then task.sensitive_at = now end
  end
elseif outcome == 'deny' then
  for _, r in ipairs({agent, task}) do
    local denials = list(r, 'denials')
    prune(denials, now - @DENIALS_HORIZON@)
    push(denials, now, @DENIALS_CAP@)
  end
end

-- burst, then repeated_denials: counting this call
if agent.burst_at and now - agent.burst_at >= @BURST_PER@ then agent.burst_at = nil end
if not agent.burst_at and reached(agent.calls, @BURST_CALLS@ + 1, now - @BURST_PER@) then
  agent.burst_at = now
  fire('burst', '')
end
if outcome == 'deny' then
  if agent.denials_at and now - agent.denials_at >= @DENIALS_PER@ then agent.denials_at = nil end
  if not agent.denials_at and reached(agent.denials or {}, @DENIALS_CALLS@, now - @DENIALS_PER@) then
    agent.denials_at = now
    fire('repeated_denials', '')
  end
end

redis.call('SET', KEYS[1], cmsgpack.pack(agent), 'PX', @AGENT_TTL_MS@)
redis.call('PEXPIRE', KEYS[2], @AGENT_TTL_MS@)
if task then
  redis.call('SET', KEYS[4], cmsgpack.pack(task), 'PX', @TASK_TTL_MS@)
  redis.call('SADD', KEYS[3], task_id)
  redis.call('PEXPIRE', KEYS[3], @TASK_TTL_MS@)
end
"""

# OBSERVE's keys and arguments. Returns the detections.
OBSERVE_CALL = PRELUDE + OBSERVE + """
return found
"""

# KEYS: agent. ARGV: now. Returns the probing level reached now (0: nothing to report).
OBSERVE_PROBE = PRELUDE + """
local now = clock(ARGV[1])
local agent = load(KEYS[1]) or {}
push(list(agent, 'probes'), now, 2 * @PROBE_CALLS@)
if agent.probe_at and now - agent.probe_at >= @PROBE_PER@ then
  agent.probe_at = nil
  agent.probe_level = 0
end
local cutoff = now - @PROBE_PER@
local level = 0
if reached(agent.probes, 2 * @PROBE_CALLS@, cutoff) then level = 2
elseif reached(agent.probes, @PROBE_CALLS@, cutoff) then level = 1 end
local fired = 0
if level > (agent.probe_level or 0) then
  agent.probe_level = level
  agent.probe_at = now
  fired = level
end
redis.call('SET', KEYS[1], cmsgpack.pack(agent), 'PX', @AGENT_TTL_MS@)
return fired
"""

# KEYS: the task. ARGV: the key of an agent's task set, without the agent id. Drops the task everywhere.
FORGET_TASK = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local task = cmsgpack.unpack(raw)
  if task.agent_id then redis.call('SREM', ARGV[1] .. task.agent_id, ARGV[2]) end
end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: agent, pairs, the agent's task set. ARGV: the key of a task, without the task id.
FORGET_AGENT = """
for _, task_id in ipairs(redis.call('SMEMBERS', KEYS[3])) do redis.call('DEL', ARGV[1] .. task_id) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""


def script_source(template: str, constants: dict[str, str]) -> str:
    for name, value in constants.items():
        template = template.replace(f"@{name}@", value)
    return template


class RedisChainSignals(ClockedSeam):
    """`ChainSignals` on Redis, for every replica of a fleet (see the module docstring)."""

    def __init__(self, cluster: Cluster, settings: MonitoringSettings,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(cluster, settings, clock)
        self._sensitive = frozenset(settings.sensitive_classes)
        self._egress = SensitiveThenEgress(settings)
        self._pending: set[asyncio.Task[None]] = set()
        constants = self.constants(settings)
        redis = cluster.redis
        self._context = redis.register_script(CONTEXT)
        self._observe_call = redis.register_script(script_source(OBSERVE_CALL, constants))
        self._observe_probe = redis.register_script(script_source(OBSERVE_PROBE, constants))
        self._forget_task = redis.register_script(FORGET_TASK)
        self._forget_agent = redis.register_script(FORGET_AGENT)

    @staticmethod
    def constants(s: MonitoringSettings) -> dict[str, str]:
        """The settings the scripts are built with (the same bounds ChainTracker keeps)."""
        agent_ttl = max(s.window_s, MINUTE, s.burst.per_s, s.repeated_denials.per_s, s.probing.per_s)
        # A task remembers its own sensitive read for its whole life, as in one process.
        task_ttl = max(agent_ttl, TaskSettings().max_duration_s)
        return {
            "WINDOW": repr(s.window_s), "MAX_HISTORY": str(s.max_history), "COUNT_CAP": str(COUNT_CAP),
            "CALLS_CAP": str(max(COUNT_CAP, s.burst.calls + 1)), "CALLS_HORIZON": repr(max(MINUTE, s.burst.per_s)),
            "DENIALS_CAP": str(max(COUNT_CAP, s.repeated_denials.calls)),
            "DENIALS_HORIZON": repr(max(MINUTE, s.repeated_denials.per_s)), "MAX_CLASSES": str(MAX_CLASSES),
            "MAX_PAIRS": str(MAX_PAIRS), "NOVEL": "true" if s.novel_sequence else "false",
            "NOVELTY_MIN": str(NOVELTY_MIN_HISTORY), "BURST_CALLS": str(s.burst.calls),
            "BURST_PER": repr(s.burst.per_s), "DENIALS_CALLS": str(s.repeated_denials.calls),
            "DENIALS_PER": repr(s.repeated_denials.per_s), "PROBE_CALLS": str(s.probing.calls),
            "PROBE_PER": repr(s.probing.per_s), "AGENT_TTL_MS": str(int(agent_ttl * 1000) + 1000),
            "TASK_TTL_MS": str(int(task_ttl * 1000) + 1000),
            "PERSON_SCOPE": PERSON_SCOPE, "PERSON_SCOPE_LEN": str(len(PERSON_SCOPE)),
        }

    def _key(self, kind: str, ident: str) -> str:
        return self.cluster.keys.key("chain", kind, ident)

    async def _run(self, what: str, call: Awaitable[T]) -> T:
        if self._pending:  # a forget_* of this process lands before anything read or written after it
            await self.drain()
        try:
            return await call
        except FAILURES as exc:
            log.warning("chain signals unreachable at %s (%s, %s)", self.cluster.settings.redis_location(), what,
                        type(exc).__name__)
            raise ChainUnavailable(f"shared chain signals unreachable ({type(exc).__name__})") from None

    async def context(self, agent_id: str, task_id: str | None) -> dict[str, Any]:
        keys = self.context_keys(agent_id, task_id)
        reply = await self._run("context", self._context(keys=keys, args=[self.now_arg(), self.settings.window_s]))
        return self.chain_context(reply, task_id)

    def context_keys(self, agent_id: str, task_id: str | None) -> list[str]:
        """The keys the Lua `context` reads: the agent's record and the task's ('' without a task)."""
        return [self._key("agent", agent_id), "" if task_id is None else self._key("task", task_id)]

    def chain_context(self, reply: list[Any], task_id: str | None) -> dict[str, Any]:
        """The `context.chain` record from the Lua `context`'s reply (as ChainTracker.context builds it)."""
        tools, agent_classes = _names(reply[0]), sorted(_names(reply[1]))
        agent_view = {"data_classes": agent_classes, "sensitive_read": not self._sensitive.isdisjoint(agent_classes),
                      "calls_last_minute": reply[2], "writes_last_minute": reply[3], "denials_last_minute": reply[4]}
        if task_id is None:
            return chain_record(agent_classes, agent_view["sensitive_read"], tools, agent_view, agent_view)
        if not reply[5]:
            return unknown_person_context(agent_view) if is_person_scope(task_id) else empty_context(agent_view)
        counts = {"calls_last_minute": reply[8], "writes_last_minute": reply[9], "denials_last_minute": reply[10]}
        return chain_record(sorted(_names(reply[6])), bool(reply[7]), tools, counts, agent_view)

    async def observe_call(self, agent_id: str, task_id: str | None, tool: ToolEntry,
                           outcome: str) -> list[Detection]:
        name = tool.exposed_name
        keys, args = self.observe_arguments(agent_id, task_id, tool, outcome)
        found = await self._run("observe", self._observe_call(keys=keys, args=args))
        return self.detections(found, agent_id, task_id, name, outcome)

    def observe_arguments(self, agent_id: str, task_id: str | None, tool: ToolEntry,
                          outcome: str) -> tuple[list[str], list[str | int | float]]:
        """The keys and arguments of the Lua OBSERVE."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        keys = [self._key("agent", agent_id), self._key("pairs", agent_id), self._key("tasks", agent_id),
                "" if task_id is None else self._key("task", task_id)]
        classes = tool.data_classes if outcome in ALLOWED else ()
        args = [self.now_arg(), agent_id, task_id or "", tool.exposed_name, outcome, int(tool.risk == READ_RISK),
                int(self._egress.is_egress(tool)), int(not self._sensitive.isdisjoint(classes)), len(classes),
                *classes]
        return keys, args

    def detections(self, found: list[list[bytes]], agent_id: str, task_id: str | None, name: str,
                   outcome: str) -> list[Detection]:
        """What the Lua OBSERVE found, as the detectors report it."""
        return [self._detection(detector.decode(), detail.decode(), agent_id, task_id, name, outcome)
                for detector, detail in found]

    def _detection(self, detector: str, detail: str, agent_id: str, task_id: str | None, name: str,
                   outcome: str) -> Detection:
        s = self.settings
        if detector == "sensitive_then_egress":
            return self._egress.detection(agent_id, task_id, name, outcome, in_task=detail == "task")
        if detector == "novel_sequence":
            return novel_detection(agent_id, task_id, detail, name)
        if detector == "burst":
            return burst_detection(s.burst, agent_id, task_id, name)
        return denials_detection(s.repeated_denials, agent_id, task_id, name)

    async def observe_probe(self, agent_id: str, task_id: str | None, tool_name: str) -> list[Detection]:
        probe = self._observe_probe(keys=[self._key("agent", agent_id)], args=[self.now_arg()])
        level = await self._run("probe", probe)
        return [probing_detection(self.settings.probing, level, agent_id, task_id, tool_name)] if level else []

    # Called from lifecycle observers (synchronous): deleted in the background; the records expire anyway.

    def forget_task(self, task_id: str) -> None:
        tasks_key = self._key("tasks", "")
        self._background("forget task", self._forget_task(keys=[self._key("task", task_id)], args=[tasks_key, task_id]))

    def forget_agent(self, agent_id: str) -> None:
        keys = [self._key("agent", agent_id), self._key("pairs", agent_id), self._key("tasks", agent_id)]
        self._background("forget agent", self._forget_agent(keys=keys, args=[self._key("task", "")]))

    async def drain(self) -> None:
        """Wait for the background deletions."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _background(self, what: str, call: Awaitable[object]) -> None:
        async def run() -> None:
            try:
                await call
            except FAILURES as exc:  # the records expire on their own; a resumed agent may see its old ones
                log.warning("chain signals: %s failed (%s); the record expires on its own", what, type(exc).__name__)
        pending = asyncio.get_running_loop().create_task(run())
        self._pending.add(pending)
        pending.add_done_callback(self._pending.discard)

    def stats(self) -> dict[str, int]:
        """Records held in this process's memory: none (they live in Redis, which expires them)."""
        return {"agents": 0, "tasks": 0}



def _names(values: Sequence[bytes] | dict[object, object]) -> list[str]:
    """A script's list of names (cmsgpack gives {} for an empty list)."""
    return [v.decode() for v in values] if isinstance(values, list) else []

