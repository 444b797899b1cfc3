"""Chain signals: rate limits, the Cedar `context.chain` record, detectors and memory bounds (injected clock)."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest

from gateway.catalog.model import ToolEntry
from gateway.chain import (
    ChainTracker,
    Detection,
    MonitoringSettings,
    RateLimit,
    RateLimited,
    monitoring_settings_from_mapping,
    triggers_kill_switch,
)
from gateway.chain.signals import person_scope
from gateway.config import ConfigError

NO_LIMITS = MonitoringSettings(per_agent=None, per_task=None, per_tool=None, egress_servers=("mail",))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def tool(name: str, *, server: str = "files", risk: Any = "read", classes: tuple[str, ...] = ()) -> ToolEntry:
    return ToolEntry(name=name, exposed_name=name, server_id=server, risk=risk, data_classes=classes, owner="team")


READ_SECRET = tool("vault__read", server="vault", classes=("secrets",))
READ_DOC = tool("files__read", classes=("internal",))
WRITE_DOC = tool("files__write", risk="write", classes=("internal",))
SEND_MAIL = tool("mail__send", server="mail", risk="write")


def tracker(settings: MonitoringSettings = NO_LIMITS, **kwargs: Any) -> tuple[ChainTracker, Clock]:
    clock = Clock()
    return ChainTracker(settings, clock, **kwargs), clock


def names(found: list[Detection]) -> list[str]:
    return [d.detector for d in found]


# -- rate limits -------------------------------------------------------------------------------------


async def test_per_agent_limit_with_retry_after() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=RateLimit(3, 60.0), per_task=None))
    for _ in range(3):
        await t.admit("a", None, "x")
        clock.tick(10)
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", None, "y")
    assert caught.value.scope == "agent"
    assert caught.value.retry_after_s == pytest.approx(30.0)  # first call at 1000, now 1030
    assert "retry after 30.0 s" in str(caught.value)
    await t.admit("b", None, "x")  # other agents are unaffected
    clock.tick(29.9)
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", None, "x")
    assert caught.value.retry_after_s == pytest.approx(0.1)
    clock.tick(0.1)
    await t.admit("a", None, "x")  # exactly at retry_after: the oldest call has left the window
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", None, "x")
    assert caught.value.retry_after_s == pytest.approx(10.0)


async def test_refused_calls_do_not_count() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=RateLimit(1, 10.0), per_task=None))
    await t.admit("a", None, "x")
    for _ in range(5):
        clock.tick(1)
        with pytest.raises(RateLimited):
            await t.admit("a", None, "x")
    clock.tick(5)
    await t.admit("a", None, "x")


async def test_per_task_limit() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=RateLimit(100, 60.0), per_task=RateLimit(2, 60.0)))
    await t.admit("a", "t1", "x")
    clock.tick(5)
    await t.admit("a", "t1", "x")
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", "t1", "x")
    assert (caught.value.scope, caught.value.retry_after_s) == ("task", pytest.approx(55.0))
    await t.admit("a", "t2", "x")  # another task of the same agent
    await t.admit("a", None, "x")  # no task: no task limit


async def test_per_tool_limit_and_worst_scope_wins() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=RateLimit(3, 100.0), per_task=None,
                                          per_tool=RateLimit(1, 30.0)))
    await t.admit("a", None, "x")
    clock.tick(1)
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", None, "x")
    assert (caught.value.scope, caught.value.retry_after_s) == ("tool", pytest.approx(29.0))
    await t.admit("a", None, "y")
    await t.admit("a", None, "z")
    # Both the agent (99 s) and tool (29 s) limits refuse: the longer wait is the one to report.
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", None, "x")
    assert (caught.value.scope, caught.value.retry_after_s) == ("agent", pytest.approx(99.0))


async def test_other_upstream_requests_share_the_agent_and_task_windows_but_not_per_tool() -> None:
    """Issue 18.5: prompts, resources and completions (tool None) count in the agent and task windows."""
    t, _ = tracker(MonitoringSettings(per_agent=RateLimit(10, 60.0), per_task=RateLimit(3, 60.0),
                                      per_tool=RateLimit(1, 60.0)))
    await t.admit("a", "t", "x")
    await t.admit("a", "t", None)  # per_tool does not apply: x's single call does not block it
    await t.admit("a", "t", None)
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", "t", None)
    assert caught.value.scope == "task"
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", "t", "y")  # the task's window is shared with tools
    assert caught.value.scope == "task"
    for _ in range(7):
        await t.admit("a", None, None)
    with pytest.raises(RateLimited) as caught:
        await t.admit("a", None, None)
    assert caught.value.scope == "agent"


async def test_no_limits_admits_everything() -> None:
    t, _ = tracker()
    for _ in range(1000):
        await t.admit("a", "t", "x")
    assert t.stats() == {"agents": 0, "tasks": 0}


# -- context ------------------------------------------------------------------------------------------


async def test_context_shape_for_unknown_agent_and_task() -> None:
    t, _ = tracker()
    nothing = {"data_classes": [], "sensitive_read": False, "calls_last_minute": 0, "writes_last_minute": 0,
               "denials_last_minute": 0}
    empty = {"data_classes": [], "sensitive_read": False, "tools": [], "previous_tool": "",
             "calls_last_minute": 0, "writes_last_minute": 0, "denials_last_minute": 0, "agent": nothing}
    assert await t.context("a", None) == empty
    assert await t.context("a", "t") == empty


async def test_task_context_values() -> None:
    t, clock = tracker()
    await t.observe_call("a", "t", READ_DOC, "allow")
    clock.tick(1)
    await t.observe_call("a", "t", WRITE_DOC, "allow")
    clock.tick(1)
    await t.observe_call("a", "t", READ_SECRET, "deny")  # denied: its classes are not touched
    clock.tick(1)
    await t.observe_call("a", "t", WRITE_DOC, "step_up")  # not allowed: not a write
    await t.observe_call("a", "other", READ_SECRET, "allow")
    ctx = await t.context("a", "t")
    assert ctx == {
        "data_classes": ["internal"],
        "sensitive_read": False,
        "tools": ["files__read", "files__write", "vault__read", "files__write"],
        "previous_tool": "files__write",
        "calls_last_minute": 4,
        "writes_last_minute": 1,
        "denials_last_minute": 1,
        # The agent across both its tasks: the secret read in "other" is here.
        "agent": {"data_classes": ["internal", "secrets"], "sensitive_read": True, "calls_last_minute": 5,
                  "writes_last_minute": 1, "denials_last_minute": 1},
    }
    assert list(ctx) == ["data_classes", "sensitive_read", "tools", "previous_tool", "calls_last_minute",
                         "writes_last_minute", "denials_last_minute", "agent"]
    assert (await t.context("a", "other"))["sensitive_read"] is True
    clock.tick(58)  # the first call (t=1000) is now 61 s old, the write at 1001 is 60 s old: both out
    ctx = await t.context("a", "t")
    assert (ctx["calls_last_minute"], ctx["writes_last_minute"], ctx["denials_last_minute"]) == (2, 0, 1)
    assert ctx["data_classes"] == ["internal"]  # a task keeps its data classes for its whole life


async def test_agent_context_without_task_uses_window() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, window_s=100.0))
    await t.observe_call("a", "t", READ_SECRET, "allow")
    clock.tick(50)
    await t.observe_call("a", None, READ_DOC, "allow")
    ctx = await t.context("a", None)
    assert ctx["data_classes"] == ["internal", "secrets"]
    assert ctx["sensitive_read"] is True
    assert ctx["tools"] == ["vault__read", "files__read"]
    assert ctx["calls_last_minute"] == 2
    clock.tick(50)  # secrets were read exactly window_s ago: out of the window
    ctx = await t.context("a", None)
    assert (ctx["data_classes"], ctx["sensitive_read"], ctx["calls_last_minute"]) == (["internal"], False, 1)
    assert (await t.context("b", None))["tools"] == []


async def test_history_is_bounded_oldest_first() -> None:
    t, _ = tracker(MonitoringSettings(per_agent=None, per_task=None, max_history=3))
    for i in range(5):
        await t.observe_call("a", "t", tool(f"t{i}"), "allow")
    assert (await t.context("a", "t"))["tools"] == ["t2", "t3", "t4"]
    assert (await t.context("a", None))["tools"] == ["t2", "t3", "t4"]
    assert (await t.context("a", "t"))["previous_tool"] == "t4"


async def test_unknown_outcome_is_refused() -> None:
    t, _ = tracker()
    with pytest.raises(ValueError, match="outcome"):
        await t.observe_call("a", None, READ_DOC, "maybe")


# -- detectors ----------------------------------------------------------------------------------------


async def test_sensitive_then_egress_in_task() -> None:
    t, clock = tracker()
    assert await t.observe_call("a", "t", SEND_MAIL, "allow") == []  # egress with nothing sensitive read
    assert await t.observe_call("a", "t", READ_SECRET, "allow") == []
    assert await t.observe_call("b", "t2", SEND_MAIL, "allow") == []  # another agent read nothing
    found = await t.observe_call("a", "t", SEND_MAIL, "deny")  # any outcome counts; a held attempt is "high"
    assert found == [Detection("sensitive_then_egress", "high", "a", "t", "mail__send",
                               "egress tool mail__send called (deny) after sensitive data was read in this task")]
    clock.tick(1000)
    assert await t.observe_call("a", "t", SEND_MAIL, "allow") == []  # once per onset
    await t.observe_call("a", "t", READ_SECRET, "allow")  # a new sensitive read re-arms it
    allowed = await t.observe_call("a", "t", SEND_MAIL, "allow")  # went through: data may have left
    assert [(d.detector, d.severity) for d in allowed] == [("sensitive_then_egress", "critical")]


async def test_sensitive_read_follows_the_agent_into_a_new_task() -> None:
    """Issue 18.4: reading in task A, then sending from task B, is seen in B's context and by the detector."""
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, egress_servers=("mail",), window_s=600.0))
    await t.observe_call("a", "task-a", READ_SECRET, "allow")
    clock.tick(30)
    ctx = await t.context("a", "task-b")  # a task the tracker has never seen
    assert (ctx["sensitive_read"], ctx["data_classes"]) == (False, [])  # the task-only view beside it
    assert ctx["agent"]["sensitive_read"] is True
    assert ctx["agent"]["data_classes"] == ["secrets"]
    assert (await t.context("b", "task-c"))["agent"]["sensitive_read"] is False  # other agents are not tainted
    found = await t.observe_call("a", "task-b", SEND_MAIL, "step_up")
    assert found == [Detection("sensitive_then_egress", "high", "a", "task-b", "mail__send",
                               "egress tool mail__send called (step_up) after sensitive data was read by this "
                               "agent within 600 s, outside this task")]
    # Once per sensitive read, whichever task the next egress comes from.
    assert await t.observe_call("a", "task-a", SEND_MAIL, "step_up") == []
    assert await t.observe_call("a", "task-c", SEND_MAIL, "step_up") == []
    await t.observe_call("a", "task-c", READ_SECRET, "allow")  # a new read re-arms it, for every task
    assert names(await t.observe_call("a", "task-a", SEND_MAIL, "allow")) == ["sensitive_then_egress"]
    clock.tick(600)  # the window passed: a new task starts clean again
    ctx = await t.context("a", "task-d")
    assert (ctx["agent"]["sensitive_read"], ctx["agent"]["data_classes"]) == (False, [])
    await t.observe_call("a", "task-d", READ_SECRET, "allow")
    clock.tick(600)
    # A task remembers its own read for its whole life, past the agent's window.
    assert names(await t.observe_call("a", "task-d", SEND_MAIL, "deny")) == ["sensitive_then_egress"]


async def test_agent_view_counts_every_task() -> None:
    t, _ = tracker()
    for task in ("t1", "t2", "t3"):
        await t.observe_call("a", task, WRITE_DOC, "allow")
        await t.observe_call("a", task, READ_SECRET, "deny")
    agent = (await t.context("a", "t4"))["agent"]
    assert (agent["calls_last_minute"], agent["writes_last_minute"], agent["denials_last_minute"]) == (6, 3, 3)
    assert (await t.context("a", "t1"))["writes_last_minute"] == 1


async def test_sensitive_then_egress_denied_read_does_not_count() -> None:
    t, _ = tracker()
    await t.observe_call("a", "t", READ_SECRET, "deny")
    await t.observe_call("a", "t", READ_SECRET, "step_up")
    assert await t.observe_call("a", "t", SEND_MAIL, "allow") == []


async def test_sensitive_then_egress_without_task_within_window() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, egress_tools=("chat__post",),
                                          window_s=100.0))
    post = tool("chat__post", server="chat")
    await t.observe_call("a", None, READ_SECRET, "allow")
    clock.tick(100)  # window passed
    assert await t.observe_call("a", None, post, "allow") == []
    await t.observe_call("a", "t", READ_SECRET, "allow")  # read in a task counts for the agent too
    clock.tick(99)
    assert names(await t.observe_call("a", None, post, "allow")) == ["sensitive_then_egress"]
    assert await t.observe_call("a", None, post, "allow") == []
    assert await t.observe_call("b", None, post, "allow") == []


ALICE = person_scope("client", "https://login.example.com", "alice")
BOB = person_scope("client", "https://login.example.com", "bob")


async def test_an_evicted_persons_record_never_reads_as_nothing_sensitive() -> None:
    """The client agent starting tasks pushes Alice's record out of the LRU: her context and her next egress
    call still carry the client's sensitive read (she may have made it), in the policy and the detector."""
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, egress_servers=("mail",), window_s=600.0),
                       max_tasks=2)
    await t.observe_call("client", BOB, READ_DOC, "allow")  # Bob is known before Alice reads anything
    await t.observe_call("client", ALICE, READ_SECRET, "allow")
    assert (await t.context("client", BOB))["sensitive_read"] is False  # Bob's own record: not his read
    for task in ("task-1", "task-2"):  # evicts Bob's and Alice's records
        await t.observe_call("client", task, READ_DOC, "allow")
    clock.tick(10)
    unknown = await t.context("client", ALICE)
    assert (unknown["sensitive_read"], unknown["data_classes"]) == (True, [])
    await t.observe_call("client", ALICE, READ_DOC, "allow")  # her record comes back: still carrying the read
    assert (await t.context("client", ALICE))["sensitive_read"] is True
    found = await t.observe_call("client", ALICE, SEND_MAIL, "allow")
    assert [(d.detector, d.severity, d.task_id) for d in found] == [("sensitive_then_egress", "critical", ALICE)]
    clock.tick(600)  # the client's read left the window: nobody unknown inherits it any more
    assert (await t.context("client", BOB))["sensitive_read"] is False
    assert await t.observe_call("client", BOB, SEND_MAIL, "allow") == []


async def test_a_persons_sensitive_read_expires_after_the_window() -> None:
    """A person's record outlives any task: their read counts within monitoring.window_s, like the agent's."""
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, egress_servers=("mail",), window_s=100.0))
    await t.observe_call("client", ALICE, READ_SECRET, "allow")
    clock.tick(99)
    assert (await t.context("client", ALICE))["sensitive_read"] is True
    clock.tick(1)
    assert (await t.context("client", ALICE))["sensitive_read"] is False
    assert await t.observe_call("client", ALICE, SEND_MAIL, "allow") == []
    await t.observe_call("client", ALICE, READ_SECRET, "allow")  # a new read counts again
    assert names(await t.observe_call("client", ALICE, SEND_MAIL, "allow")) == ["sensitive_then_egress"]


async def test_sensitive_then_egress_uses_the_catalog_egress_flag() -> None:
    t, _ = tracker(MonitoringSettings(per_agent=None, per_task=None))
    flagged = ToolEntry(name="post", exposed_name="web__post", server_id="web", risk="write", data_classes=(),
                        owner="team", egress=True)
    await t.observe_call("a", "t", READ_SECRET, "allow")
    assert names(await t.observe_call("a", "t", flagged, "allow")) == ["sensitive_then_egress"]


async def test_burst_fires_once_and_rearms_after_window() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, burst=RateLimit(5, 10.0)))
    for _ in range(5):
        assert await t.observe_call("a", None, READ_DOC, "allow") == []
        clock.tick(1)
    found = await t.observe_call("a", "t", READ_DOC, "allow")  # 6th call within 10 s
    assert [(d.detector, d.severity, d.task_id) for d in found] == [("burst", "high", "t")]
    for _ in range(9):
        clock.tick(1)
        assert await t.observe_call("a", None, READ_DOC, "allow") == []  # still bursting: not again
    clock.tick(1)  # 10 s since it fired, and still more than 5 calls in 10 s: a new onset
    assert names(await t.observe_call("a", None, READ_DOC, "allow")) == ["burst"]
    assert await t.observe_call("b", None, READ_DOC, "allow") == []


async def test_burst_not_fired_when_spread_out() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, burst=RateLimit(5, 10.0)))
    for _ in range(50):
        assert await t.observe_call("a", None, READ_DOC, "allow") == []
        clock.tick(2.0)  # 5 calls per 10 s, never more


async def test_repeated_denials_fires_once_and_rearms() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, repeated_denials=RateLimit(3, 60.0)))
    assert await t.observe_call("a", None, WRITE_DOC, "deny") == []
    assert await t.observe_call("a", None, WRITE_DOC, "allow") == []
    clock.tick(30)
    assert await t.observe_call("a", None, WRITE_DOC, "deny") == []
    found = await t.observe_call("a", "t", WRITE_DOC, "deny")
    assert [(d.detector, d.severity) for d in found] == [("repeated_denials", "high")]
    assert await t.observe_call("a", None, WRITE_DOC, "deny") == []
    clock.tick(60)  # re-armed; the old denials have left the window
    assert await t.observe_call("a", None, WRITE_DOC, "deny") == []
    assert await t.observe_call("a", None, WRITE_DOC, "deny") == []
    assert names(await t.observe_call("a", None, WRITE_DOC, "deny")) == ["repeated_denials"]


async def test_probing_high_then_critical_then_rearms() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, probing=RateLimit(3, 60.0)))
    assert await t.observe_probe("a", None, "admin__x") == []
    clock.tick(59)
    assert await t.observe_probe("a", None, "admin__y") == []
    clock.tick(2)  # the first probe is gone
    assert await t.observe_probe("a", None, "admin__z") == []
    found = await t.observe_probe("a", "t", "admin__w")
    assert [(d.detector, d.severity, d.tool, d.task_id) for d in found] == [("probing", "high", "admin__w", "t")]
    assert await t.observe_probe("a", None, "q") == []
    assert await t.observe_probe("a", None, "q") == []  # 5 in the window
    found = await t.observe_probe("a", None, "q")
    assert [(d.detector, d.severity) for d in found] == [("probing", "critical")]
    assert await t.observe_probe("a", None, "q") == []
    clock.tick(60)
    assert await t.observe_probe("a", None, "q") == []
    assert await t.observe_probe("a", None, "q") == []
    assert [d.severity for d in await t.observe_probe("a", None, "q")] == ["high"]


async def test_novel_sequence_needs_history() -> None:
    t, _ = tracker()
    tools = [tool(f"t{i}") for i in range(5)]
    for i in range(10):  # a new agent: every pair is new, nothing flagged
        assert await t.observe_call("a", None, tools[i % 2], "allow") == []
    assert await t.observe_call("a", None, tools[0], "allow") == []  # t1 -> t0 seen before
    found = await t.observe_call("a", None, tools[2], "deny")  # t0 -> t2 never seen
    assert [(d.detector, d.severity, d.tool) for d in found] == [("novel_sequence", "low", "t2")]
    assert "t0 -> t2" in found[0].message
    assert await t.observe_call("a", None, tools[0], "allow") != []  # t2 -> t0: also new
    assert await t.observe_call("a", None, tools[2], "allow") == []  # learned
    # In a task the previous tool is the task's: the first call of a task has none.
    assert await t.observe_call("a", "t", tools[3], "allow") == []
    assert names(await t.observe_call("a", "t", tools[4], "allow")) == ["novel_sequence"]


async def test_novel_sequence_can_be_turned_off() -> None:
    t, clock = tracker(MonitoringSettings(per_agent=None, per_task=None, novel_sequence=False))
    for i in range(30):
        assert await t.observe_call("a", None, tool(f"t{i}"), "allow") == []
        clock.tick(1)


def test_detection_messages_never_carry_arguments() -> None:
    fields = set(Detection.__dataclass_fields__)
    assert fields == {"detector", "severity", "agent_id", "task_id", "tool", "message", "user", "user_issuer"}


def test_kill_switch_threshold() -> None:
    assert triggers_kill_switch(MonitoringSettings(), "critical")
    assert not triggers_kill_switch(MonitoringSettings(), "high")
    assert triggers_kill_switch(MonitoringSettings(kill_switch_severity="high"), "high")
    assert not triggers_kill_switch(MonitoringSettings(kill_switch_severity="high"), "low")
    assert not triggers_kill_switch(MonitoringSettings(kill_switch_severity="off"), "critical")


# -- bounds, eviction, forgetting ---------------------------------------------------------------------


async def test_lru_eviction_of_agents_and_tasks() -> None:
    t, _ = tracker(max_agents=3, max_tasks=2)
    for agent in ("a", "b", "c"):
        await t.observe_call(agent, f"task-{agent}", READ_SECRET, "allow")
    assert t.stats() == {"agents": 3, "tasks": 2}
    await t.observe_call("a", None, READ_DOC, "allow")  # a is now the most recently used
    await t.observe_probe("d", None, "x")  # evicts b
    assert t.stats() == {"agents": 3, "tasks": 2}
    assert (await t.context("b", None))["tools"] == []
    assert (await t.context("a", None))["tools"] == ["vault__read", "files__read"]
    assert (await t.context("a", "task-a"))["tools"] == []  # evicted by task-c
    assert (await t.context("c", "task-c"))["sensitive_read"] is True


async def test_forget_task_and_agent() -> None:
    t, _ = tracker()
    await t.observe_call("a", "t1", READ_SECRET, "allow")
    await t.observe_call("a", "t2", READ_DOC, "allow")
    await t.observe_call("b", "t3", READ_DOC, "allow")
    t.forget_task("t1")
    t.forget_task("nope")
    assert t.stats() == {"agents": 2, "tasks": 2}
    fresh = await t.context("a", "t1")  # a forgotten task starts empty; the agent's own read is still there
    assert (fresh["sensitive_read"], fresh["tools"], fresh["agent"]["sensitive_read"]) == (False, [], True)
    t.forget_agent("a")
    assert t.stats() == {"agents": 1, "tasks": 1}
    assert (await t.context("a", None))["tools"] == []
    assert (await t.context("b", "t3"))["tools"] == ["files__read"]


async def test_rate_limit_state_is_forgotten_with_agent() -> None:
    t, _ = tracker(MonitoringSettings(per_agent=RateLimit(1, 60.0), per_task=None))
    await t.admit("a", None, "x")
    with pytest.raises(RateLimited):
        await t.admit("a", None, "x")
    t.forget_agent("a")
    await t.admit("a", None, "x")


async def test_memory_per_agent_and_task_is_bounded() -> None:
    settings = MonitoringSettings(per_tool=RateLimit(30, 60.0))
    t, clock = tracker(settings, max_agents=50, max_tasks=50)
    tools = [tool(f"t{i}", classes=("internal",)) for i in range(8)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for a in range(200):  # 4x the bound: evictions keep the count at 50
        for i in range(40):
            clock.tick(0.01)
            await t.admit(f"agent-{a}", f"task-{a}", tools[i % 8].exposed_name)
            await t.observe_call(f"agent-{a}", f"task-{a}", tools[i % 8], "allow")
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert t.stats() == {"agents": 50, "tasks": 50}
    # 50 agents and 50 tasks, each with full-ish windows: well under 20 KiB per agent+task.
    assert used < 50 * 20 * 1024, used


# -- config -------------------------------------------------------------------------------------------


def test_config_defaults_and_values() -> None:
    assert monitoring_settings_from_mapping({}) == MonitoringSettings()
    s = monitoring_settings_from_mapping({
        "per_agent": {"calls": 30, "per_s": 60},
        "per_task": None,
        "per_tool": {"calls": 5, "per_s": 1.5},
        "sensitive_classes": ["secrets", "health", "secrets"],
        "egress_servers": ["mail"],
        "egress_tools": ["web__post"],
        "burst": {"calls": 50, "per_s": 5},
        "repeated_denials": {"calls": 2, "per_s": 30},
        "probing": {"calls": 1, "per_s": 10},
        "novel_sequence": False,
        "kill_switch_severity": "high",
        "window_s": 600,
        "max_history": 16,
    })
    assert s == MonitoringSettings(
        per_agent=RateLimit(30, 60.0), per_task=None, per_tool=RateLimit(5, 1.5),
        sensitive_classes=("secrets", "health"), egress_servers=("mail",), egress_tools=("web__post",),
        burst=RateLimit(50, 5.0), repeated_denials=RateLimit(2, 30.0), probing=RateLimit(1, 10.0),
        novel_sequence=False, kill_switch_severity="high", window_s=600.0, max_history=16)
    assert isinstance(s.window_s, float) and isinstance(s.per_agent.per_s, float)  # type: ignore[union-attr]
    assert monitoring_settings_from_mapping({"per_agent": False}).per_agent is None
    assert monitoring_settings_from_mapping({"sensitive_classes": []}).sensitive_classes == ()
    assert monitoring_settings_from_mapping({"sensitive_classes": None}).sensitive_classes == ()


@pytest.mark.parametrize(("raw", "message"), [
    ({"rate": 1}, "unknown monitoring key"),
    ({"per_agent": 30}, "monitoring.per_agent must be a mapping"),
    ({"per_agent": {"calls": 30}}, "needs calls and per_s"),
    ({"per_agent": {"calls": 30, "per_s": 60, "burst": 1}}, "unknown monitoring.per_agent key"),
    ({"per_task": {"calls": 0, "per_s": 60}}, "per_task.calls must be between 1"),
    ({"per_task": {"calls": 10**6, "per_s": 60}}, "per_task.calls must be between 1"),
    ({"per_tool": {"calls": 1.5, "per_s": 60}}, "per_tool.calls must be a whole number"),
    ({"per_tool": {"calls": True, "per_s": 60}}, "per_tool.calls must be a whole number"),
    ({"per_tool": {"calls": 1, "per_s": 0}}, "per_tool.per_s must be a positive"),
    ({"per_tool": {"calls": 1, "per_s": "60"}}, "per_tool.per_s must be a number"),
    ({"burst": None}, "monitoring.burst must be a mapping"),
    ({"probing": {"calls": 1000, "per_s": 60}}, "probing.calls must be between 1"),
    ({"sensitive_classes": "secrets"}, "sensitive_classes must be a list"),
    ({"egress_servers": ["mail", ""]}, "egress_servers entries must be non-empty"),
    ({"egress_tools": [1]}, "egress_tools entries must be non-empty"),
    ({"novel_sequence": "yes"}, "novel_sequence must be true or false"),
    ({"kill_switch_severity": "medium"}, "kill_switch_severity must be one of off, high, critical"),
    ({"window_s": float("inf")}, "window_s must be a positive"),
    ({"window_s": -1}, "window_s must be a positive"),
    ({"max_history": 0}, "max_history must be between 1"),
    ({"max_history": 5000}, "max_history must be between 1"),
])
def test_config_refusals(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        monitoring_settings_from_mapping(raw)


def test_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="monitoring must be a mapping"):
        monitoring_settings_from_mapping(["x"])  # type: ignore[arg-type]


# -- cost ---------------------------------------------------------------------------------------------


async def test_hot_path_keeps_one_entry_per_agent_and_task() -> None:
    """admit + context + observe_call per call; the printed figure is what the docs quote."""
    settings = MonitoringSettings(per_agent=RateLimit(10**4, 60.0), per_task=RateLimit(10**4, 60.0),
                                  per_tool=RateLimit(10**4, 60.0), egress_servers=("mail",))
    clock = Clock()
    t = ChainTracker(settings, clock)
    tools = [READ_DOC, WRITE_DOC, READ_SECRET, SEND_MAIL] + [tool(f"x{i}") for i in range(12)]
    n = 20_000
    start = time.perf_counter()
    for i in range(n):
        clock.tick(0.05)
        entry = tools[i % len(tools)]
        agent = f"agent-{i % 100}"
        task = f"task-{i % 300}"
        await t.admit(agent, task, entry.exposed_name)
        await t.context(agent, task)
        await t.observe_call(agent, task, entry, "allow" if i % 7 else "deny")
    per_call_us = (time.perf_counter() - start) / n * 1e6
    print(f"chain hot path: {per_call_us:.1f} µs per call (admit + context + observe_call)")
    # No speed threshold here (benchmarks report speed); what must hold is the memory bound.
    assert t.stats() == {"agents": 100, "tasks": 300}
