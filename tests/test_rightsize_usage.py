"""What right-sizing reads as use (gateway/privilege/usage.py), on SQLite and PostgreSQL: only `allow` decision
records count, the window is [since, until), and the metric's ledger reads the audit log incrementally
without counting a record twice."""

from __future__ import annotations

from gateway.audit import AuditLog
from gateway.audit.model import AuditEvent
from gateway.privilege.usage import Usage, audit_starts_at, read_usage
from gateway.store import Store


def decision(agent: str, tool: str, outcome: str, task: str | None = None) -> AuditEvent:
    return AuditEvent(kind="decision", action="call", actor=agent, agent_id=agent, tool=tool, decision=outcome,
                      task_id=task)


async def append(store: Store, at: float, *events: AuditEvent) -> None:
    log = AuditLog(store, lambda: at)
    await log.open()
    for event in events:
        log.record(event)
    await log.flush()
    await log.close()


async def test_only_allows_in_the_window_count_as_use(store: Store) -> None:
    await append(store, 100.0, decision("a1", "s__x", "allow", task="t1"))
    await append(store, 150.0, decision("a1", "s__y", "deny"), decision("a1", "s__w", "step_up"),
                 AuditEvent(kind="approval", action="approve", actor="admin:alice", agent_id="a1", tool="s__w"))
    await append(store, 200.0, decision("a1", "s__z", "allow", task="t1"), decision("a1", "s__z", "allow"))
    await append(store, 250.0, decision("a2", "s__x", "allow"))
    usage = await read_usage(store, 150.0, 250.0)
    assert usage.of("a1").calls == {"s__z": 2}  # s__x is before the window; the deny and step-up are not use
    assert usage.of("a1").task_calls == {"t1": {"s__z"}}
    assert usage.of("a2").calls == {}  # 250 is the window's (exclusive) end
    assert (usage.decisions, usage.first_at, usage.last_at) == (4, 150.0, 200.0)  # the approval record is not one
    assert (await read_usage(store, 150.0, 250.0, agent_id="a2")).decisions == 0
    assert await audit_starts_at(store) == 100.0


async def test_the_ledger_reads_on_from_where_it_stopped(store: Store) -> None:
    ledger = Usage(with_tasks=False)
    await append(store, 100.0, decision("a1", "s__x", "allow", task="t1"))
    await read_usage(store, 0.0, 1000.0, into=ledger)
    await append(store, 300.0, decision("a1", "s__y", "allow"), decision("a1", "s__x", "allow"))
    await read_usage(store, 0.0, 1000.0, into=ledger)
    await read_usage(store, 0.0, 1000.0, into=ledger)  # nothing new: nothing counted again
    assert ledger.of("a1").calls == {"s__x": 2, "s__y": 1}
    assert ledger.used_since("a1", 200.0) == {"s__x", "s__y"}  # s__x's last call is in the newer window
    assert ledger.used_since("a1", 301.0) == set()
    assert ledger.of("a1").task_calls == {}  # a ledger kept for good does not grow with every task


async def test_the_kept_ledger_forgets_what_left_the_window(store: Store) -> None:
    ledger = Usage(with_tasks=False)
    await append(store, 100.0, decision("a1", "files://doc-1", "allow"), decision("a2", "files://doc-2", "allow"))
    await append(store, 300.0, decision("a1", "s__x", "allow"))
    await read_usage(store, 0.0, 1000.0, into=ledger)
    ledger.forget_before(200.0)  # every distinct URI ever read would otherwise stay for good
    assert ledger.of("a1").calls == {"s__x": 1} and "a2" not in ledger.agents
    assert ledger.used_since("a1", 200.0) == {"s__x"}
