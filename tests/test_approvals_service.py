"""The approval service: requests, decisions, single use, expiry, endings, waiting and restarts.

Real SQLite in tmp_path, the real registry, audit log and task service; time moves only when a test
moves the fake clock (asyncio's own timeouts still run on real time, kept short).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from gateway.approvals.model import (
    Approval,
    ApprovalError,
    ApprovalNotFound,
    ApprovalState,
    Approver,
    NotAllowedToDecide,
)
from gateway.approvals.service import COMMENT_MAX, ApprovalService
from gateway.audit import AuditLog
from gateway.audit.digests import DigestKey
from gateway.catalog import Catalog, HttpTransport, ServerEntry, ToolEntry
from gateway.registry.service import Registry
from gateway.settings.approvals import ApprovalSettings
from gateway.store import Store
from gateway.store.base import AuditQuery
from gateway.tasks.model import Task
from gateway.tasks.service import TaskService
from tests.support.state import FakeClock

TTL = 900.0
TOOL = "gh__comment"
ALICE = Approver("admin:alice@example.com", "alice@example.com", roles=frozenset({"approver"}))  # bot-a's owner
MALLORY = Approver("admin:mallory@example.com", "mallory@example.com", roles=frozenset({"approver"}))
CAROL = Approver("oidc:carol", "carol@example.com", groups=frozenset({"payments-leads"}),
                 roles=frozenset({"approver"}))
DAVE = Approver("admin:dave@example.com", "dave@example.com", groups=frozenset({"payments-leads"}),
                roles=frozenset({"approver"}))
PAYMENTS = Approver("oidc:pat", "pat@example.com", groups=frozenset({"team-payments"}),
                    roles=frozenset({"approver"}))  # in the group that owns bot-b
ROOT = Approver("admin:root", "root", roles=frozenset({"admin"}))
BOT_A = Approver("bot-a", "bot-a", roles=frozenset({"approver"}))  # an agent's id posing as a person
Binding = tuple[str, str | None, str, str, str]


# --- fixtures and helpers ------------------------------------------------------------------------


def agent_spec(agent_id: str, owner: str) -> dict[str, Any]:
    return {"id": agent_id, "owner": owner, "purpose": f"{agent_id} at work", "state": "active",
            "identities": [{"kind": "oidc", "issuer": "https://idp.test", "subject": f"wl:{agent_id}"}],
            "entitlement": {"servers": ["gh"]}}


@pytest.fixture
async def registry(store: Store, clock: FakeClock) -> Registry:
    registry = await Registry.open(store, clock)
    await registry.create(agent_spec("bot-a", "alice@example.com"), "admin:root", "test agent")
    await registry.create(agent_spec("bot-b", "team-payments"), "admin:root", "test agent")
    return registry


class Services:
    """Opens approval services on the shared store (several of them, to stand in for restarts)."""

    def __init__(self, store: Store, registry: Registry, audit: AuditLog, clock: FakeClock) -> None:
        self.store, self.registry, self.audit, self.clock = store, registry, audit, clock
        self.opened: list[ApprovalService] = []

    async def open(self, **settings: Any) -> ApprovalService:
        service = ApprovalService(self.store, self.registry, self.audit, ApprovalSettings(**settings), self.clock)
        await service.open(background=False)  # sweeps are driven by the tests
        self.opened.append(service)
        return service


@pytest.fixture
async def services(store: Store, registry: Registry, audit: AuditLog,
                   clock: FakeClock) -> AsyncIterator[Services]:
    opened = Services(store, registry, audit, clock)
    yield opened
    for service in opened.opened:
        await service.close()


@pytest.fixture
async def service(services: Services) -> ApprovalService:
    return await services.open()


def draft(clock: FakeClock, agent_id: str = "bot-a", *, task_id: str | None = None, tool: str = TOOL,
          digest: str = "digest-1", version: str = "v1", ttl: float = TTL, group: str | None = None,
          started_by: str | None = None, owner: str = "alice@example.com") -> Approval:
    """What StepUpFlow.draft makes of a step-up decision."""
    return Approval(
        id="", state=ApprovalState.PENDING, agent_id=agent_id, task_id=task_id, tool=tool, args_digest=digest,
        policy_version=version, decision_id=f"dec-{clock.now}", mode="pending", created_at=clock.now,
        expires_at=clock.now + ttl, owner=owner, server_id="gh", risk="write", reason="comments need an approval",
        policy_ids=("comment-needs-approval",), preview={"body": "hello"}, agent_purpose=f"{agent_id} at work",
        approvers_group=group, task_started_by=started_by,
    )


def binding(approval: Approval) -> Binding:
    return (approval.agent_id, approval.task_id, approval.tool, approval.args_digest, approval.policy_version)


async def eventually(check: Callable[[], Any], timeout_s: float = 2.0) -> Any:
    """Poll an async check until it returns something truthy (used and cancelled rows are written behind)."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.01)


async def stored_state(store: Store, approval_id: str, state: ApprovalState) -> Approval:
    async def check() -> Approval | None:
        stored = await store.get_approval(approval_id)
        return stored if stored is not None and stored.state is state else None

    return await eventually(check)  # type: ignore[no-any-return]


async def approval_records(audit: AuditLog, store: Store, approval_id: str) -> list[dict[str, Any]]:
    await audit.flush()
    records = await store.audit_records(AuditQuery(kind="approval", limit=10_000))
    return [r for r in records if r["detail"].get("approval_id") == approval_id]


def catalog() -> Catalog:
    tools = {name: ToolEntry(name, f"gh__{name}", "gh", "write", (), "team") for name in ("comment", "merge")}
    entry = ServerEntry("gh", "gh", "team", "", HttpTransport("http://127.0.0.1:1/gh"), 5.0, MappingProxyType(tools),
                        Path("/dev/null"))
    return Catalog.of([entry])


@pytest.fixture
async def tasks(store: Store, registry: Registry, service: ApprovalService,
                clock: FakeClock) -> AsyncIterator[TaskService]:
    tasks = TaskService(store, registry, catalog(), clock)
    await tasks.open(background=False)
    tasks.on_end.append(service.task_ended)  # as gateway.app wires it
    yield tasks
    await tasks.close()


async def start_task(tasks: TaskService, agent_id: str = "bot-a") -> Task:
    return await tasks.start(agent_id, "answer issue 12", [TOOL], started_by="admin:dave@example.com")


# --- requests ------------------------------------------------------------------------------------


async def test_a_request_is_stored_pending_and_an_identical_one_reuses_it(service: ApprovalService, store: Store,
                                                                         clock: FakeClock) -> None:
    first = await service.request(draft(clock))
    assert first.id.startswith("apr_") and first.state is ApprovalState.PENDING
    assert await store.get_approval(first.id) == first
    assert await service.current(first.id) == first

    clock.now += 10
    retry = await service.request(replace(draft(clock), decision_id="dec-retry"))
    assert retry == first  # the retried call asks once
    other_args = await service.request(draft(clock, digest="digest-2"))
    clock.now += 1
    other_task = await service.request(draft(clock, task_id="task_other"))
    assert len({first.id, other_args.id, other_task.id}) == 3
    assert await service.pending_count() == 3
    assert [a.id for a in await service.list(states=["pending"])] == [other_task.id, other_args.id, first.id]


async def test_identical_requests_at_the_same_moment_ask_once(service: ApprovalService, clock: FakeClock) -> None:
    first, second = await asyncio.gather(service.request(draft(clock)), service.request(draft(clock)))
    assert first.id == second.id
    assert await service.pending_count() == 1


async def test_new_requests_are_announced_once(service: ApprovalService, clock: FakeClock) -> None:
    announced: list[str] = []
    service.on_new.append(lambda approval: announced.append(approval.id))
    first = await service.request(draft(clock))
    await service.request(draft(clock))
    second = await service.request(draft(clock, digest="digest-2"))
    assert announced == [first.id, second.id]


# --- using an approval ---------------------------------------------------------------------------


async def test_an_approval_is_usable_only_for_exactly_its_call(service: ApprovalService, tasks: TaskService,
                                                              clock: FakeClock) -> None:
    approval = await service.request(draft(clock, task_id=(await start_task(tasks)).id))  # a real, active task
    assert await service.usable(*binding(approval)) is None  # pending is not granted
    decided = await service.decide(approval.id, ALICE, approve=True)
    assert await service.usable(*binding(approval)) == decided

    agent, task, tool, digest, version = binding(approval)
    for other in ((agent, task, tool, "digest-other", version), (agent, task, "gh__merge", digest, version),
                  (agent, "task_2", tool, digest, version), (agent, None, tool, digest, version),
                  ("bot-b", task, tool, digest, version), (agent, task, tool, digest, "v2")):
        assert await service.usable(*other) is None, other


async def test_an_approval_is_used_once(service: ApprovalService, store: Store, clock: FakeClock) -> None:
    approval = await service.request(draft(clock))
    await service.decide(approval.id, ALICE, approve=True)
    clock.now += 5
    used = await service.consume(approval.id, "dec-use")
    assert used.state is ApprovalState.USED
    assert (used.used_at, used.used_decision_id) == (clock.now, "dec-use")
    with pytest.raises(ApprovalError, match="not available"):
        await service.consume(approval.id, "dec-again")
    assert await service.usable(*binding(approval)) is None
    assert await service.current(approval.id) is None
    assert (await stored_state(store, approval.id, ApprovalState.USED)).used_decision_id == "dec-use"
    assert (await service.get(approval.id)).state is ApprovalState.USED


async def test_a_pending_or_unknown_approval_cannot_be_used(service: ApprovalService, clock: FakeClock) -> None:
    approval = await service.request(draft(clock))
    for approval_id in (approval.id, "apr_unknown"):
        with pytest.raises(ApprovalError):
            await service.consume(approval_id, "dec-use")
    assert (await service.current(approval.id)).state is ApprovalState.PENDING  # type: ignore[union-attr]


# --- expiry --------------------------------------------------------------------------------------


async def test_an_undecided_request_expires(service: ApprovalService, store: Store, audit: AuditLog,
                                            clock: FakeClock) -> None:
    approval = await service.request(draft(clock, ttl=60))
    clock.now += 59.9
    assert await service.pending_count() == 1
    clock.now += 0.1
    assert await service.pending_count() == 0
    assert (await service.current(approval.id)).state is ApprovalState.EXPIRED  # type: ignore[union-attr]
    assert await service.pending_for(*binding(approval)) is None

    await service.sweep()
    stored = await store.get_approval(approval.id)
    assert stored is not None and stored.state is ApprovalState.EXPIRED
    assert stored.end_reason == "nobody decided in time"
    assert await service.current(approval.id) is None
    [expired] = [r for r in await approval_records(audit, store, approval.id) if r["action"] == "expired"]
    assert expired["actor"] == "narrowgate" and expired["detail"]["reason"] == "nobody decided in time"
    fresh = await service.request(draft(clock))  # the same call asks anew
    assert fresh.id != approval.id


async def test_a_granted_approval_expires_unused(service: ApprovalService, store: Store, clock: FakeClock) -> None:
    approval = await service.request(draft(clock, ttl=60))
    await service.decide(approval.id, ALICE, approve=True)
    clock.now += 60
    assert await service.usable(*binding(approval)) is None
    with pytest.raises(ApprovalError):
        await service.consume(approval.id, "dec-late")
    await service.sweep()
    stored = await store.get_approval(approval.id)
    assert stored is not None and stored.state is ApprovalState.EXPIRED
    assert stored.end_reason == "the approval was not used in time"
    assert stored.decided_by == ALICE.actor  # the decision stays on record


async def test_deciding_after_expiry_is_refused(service: ApprovalService, store: Store, audit: AuditLog,
                                                clock: FakeClock) -> None:
    approval = await service.request(draft(clock, ttl=60))
    clock.now += 61  # no sweep ran: deciding notices the expiry itself
    with pytest.raises(ApprovalError, match="already expired") as refused:
        await service.decide(approval.id, ALICE, approve=True)
    assert refused.value.status == 409
    stored = await store.get_approval(approval.id)
    assert stored is not None and stored.state is ApprovalState.EXPIRED
    actions = [r["action"] for r in await approval_records(audit, store, approval.id)]
    assert actions == ["requested", "expired"]


# --- who may decide ------------------------------------------------------------------------------


async def test_the_owner_decides_and_a_stranger_or_the_agent_may_not(service: ApprovalService,
                                                                     clock: FakeClock) -> None:
    approval = await service.request(draft(clock))
    assert service.refusal(approval, ALICE) is None
    assert service.refusal(approval, MALLORY) == "only the agent's owner (alice@example.com) may decide this request"
    assert service.refusal(approval, BOT_A) == "an agent cannot approve its own request"
    assert service.refusal(approval, ROOT) is not None  # admins decide as owners only, by default
    for person in (MALLORY, BOT_A, ROOT):
        with pytest.raises(NotAllowedToDecide) as refused:
            await service.decide(approval.id, person, approve=True)
        assert refused.value.status == 403
    assert (await service.current(approval.id)).state is ApprovalState.PENDING  # type: ignore[union-attr]
    decided = await service.decide(approval.id, ALICE, approve=False, comment="  no  ")
    assert (decided.state, decided.decided_by, decided.comment) == (ApprovalState.DENIED, ALICE.actor, "no")


async def test_a_member_of_the_owning_group_decides(service: ApprovalService, clock: FakeClock) -> None:
    approval = await service.request(draft(clock, "bot-b", owner="team-payments"))
    assert service.refusal(approval, PAYMENTS) is None
    assert service.refusal(approval, ALICE) == "only the agent's owner (team-payments) may decide this request"


async def test_the_registry_owner_counts_not_the_one_at_request_time(service: ApprovalService, registry: Registry,
                                                                     clock: FakeClock) -> None:
    approval = await service.request(draft(clock))
    await registry.update("bot-a", {"owner": "mallory@example.com"}, "admin:root", "handed over")
    assert service.refusal(approval, MALLORY) is None
    assert service.refusal(approval, ALICE) is not None


async def test_an_approvers_group_decides_instead_of_the_owner(service: ApprovalService, clock: FakeClock) -> None:
    approval = await service.request(draft(clock, group="payments-leads"))
    assert service.refusal(approval, CAROL) is None
    assert service.refusal(approval, ALICE) == "only members of group 'payments-leads' may decide this request"
    assert service.refusal(approval, ROOT) is not None
    with pytest.raises(NotAllowedToDecide, match="payments-leads"):
        await service.decide(approval.id, ALICE, approve=True)
    assert (await service.decide(approval.id, CAROL, approve=True)).decided_by == CAROL.actor


async def test_admins_decide_only_when_the_config_allows(services: Services, clock: FakeClock) -> None:
    service = await services.open(admins_may_approve=True)
    mine = await service.request(draft(clock))
    grouped = await service.request(draft(clock, digest="digest-2", group="payments-leads"))
    assert service.refusal(mine, ROOT) is None
    assert service.refusal(grouped, ROOT) is None
    assert service.refusal(mine, MALLORY) is not None  # approvers are not admins
    assert (await service.decide(grouped.id, ROOT, approve=True)).decided_by == ROOT.actor


async def test_self_approval_can_be_forbidden(services: Services, clock: FakeClock) -> None:
    service = await services.open(forbid_self_approval=True, admins_may_approve=True)
    owned = await service.request(draft(clock))
    assert "self-approval is forbidden" in (service.refusal(owned, ALICE) or "")
    assert service.refusal(owned, ROOT) is None  # someone else still can
    in_task = await service.request(draft(clock, task_id="task_1", group="payments-leads",
                                          started_by=DAVE.actor))
    assert "self-approval is forbidden" in (service.refusal(in_task, DAVE) or "")  # started the task
    assert service.refusal(in_task, CAROL) is None  # another member of the group
    with pytest.raises(NotAllowedToDecide):
        await service.decide(in_task.id, DAVE, approve=True)


async def test_unknown_and_already_decided_requests(service: ApprovalService, clock: FakeClock) -> None:
    with pytest.raises(ApprovalNotFound) as missing:
        await service.decide("apr_nosuch", ALICE, approve=True)
    assert missing.value.status == 404
    with pytest.raises(ApprovalNotFound):
        await service.get("apr_nosuch")
    approved = await service.request(draft(clock))
    denied = await service.request(draft(clock, digest="digest-2"))
    await service.decide(approved.id, ALICE, approve=True)
    await service.decide(denied.id, ALICE, approve=False)
    for approval, state in ((approved, "approved"), (denied, "denied")):
        with pytest.raises(ApprovalError, match=f"already {state}") as twice:
            await service.decide(approval.id, ALICE, approve=False)
        assert twice.value.status == 409


async def test_a_comment_is_trimmed_and_bounded(service: ApprovalService, clock: FakeClock) -> None:
    long = await service.request(draft(clock))
    blank = await service.request(draft(clock, digest="digest-2"))
    assert (await service.decide(long.id, ALICE, True, " " + "x" * (COMMENT_MAX + 50))).comment == "x" * COMMENT_MAX
    assert (await service.decide(blank.id, ALICE, True, "   ")).comment is None


# --- endings -------------------------------------------------------------------------------------


async def test_ending_a_task_cancels_its_approvals_and_wakes_a_waiter(service: ApprovalService, tasks: TaskService,
                                                                      store: Store, clock: FakeClock) -> None:
    task, other_task = await start_task(tasks), await start_task(tasks)
    pending = await service.request(draft(clock, task_id=task.id))
    granted = await service.request(draft(clock, task_id=task.id, digest="digest-2"))
    await service.decide(granted.id, ALICE, approve=True)
    elsewhere = await service.request(draft(clock, task_id=other_task.id))
    no_task = await service.request(draft(clock))

    waiter = asyncio.create_task(service.wait(pending.id, 30))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await tasks.complete(task.id, "admin:dave@example.com", "done")
    outcome = await asyncio.wait_for(waiter, 2)
    assert outcome.state is ApprovalState.CANCELLED
    assert outcome.end_reason == f"task {task.id} ended (completed)"
    assert await service.usable(*binding(granted)) is None
    for approval in (pending, granted):
        await stored_state(store, approval.id, ApprovalState.CANCELLED)
    assert {(await service.current(a.id)).state for a in (elsewhere, no_task)} == {ApprovalState.PENDING}  # type: ignore

    await tasks.revoke(other_task.id, "admin:root", "stop")
    assert (await stored_state(store, elsewhere.id, ApprovalState.CANCELLED)).end_reason == \
        f"task {other_task.id} ended (revoked)"
    assert await service.current(no_task.id) is not None


async def test_suspending_an_agent_cancels_its_approvals(service: ApprovalService, registry: Registry, store: Store,
                                                         audit: AuditLog, clock: FakeClock) -> None:
    pending = await service.request(draft(clock))
    granted = await service.request(draft(clock, digest="digest-2"))
    await service.decide(granted.id, ALICE, approve=True)
    theirs = await service.request(draft(clock, "bot-b", owner="team-payments"))

    await registry.suspend("bot-a", "admin:root", "misbehaving")
    # Final at once, even before the rows are written behind.
    assert (await service.get(granted.id)).state is ApprovalState.CANCELLED
    with pytest.raises(ApprovalError, match="already cancelled"):
        await service.decide(pending.id, ALICE, approve=True)
    for approval in (pending, granted):
        cancelled = await stored_state(store, approval.id, ApprovalState.CANCELLED)
        assert cancelled.end_reason == "agent bot-a is suspended"
    assert await service.usable(*binding(granted)) is None
    assert await service.pending_count() == 1 and await service.current(theirs.id) is not None
    [record] = [r for r in await approval_records(audit, store, pending.id) if r["action"] == "cancelled"]
    assert record["detail"]["reason"] == "agent bot-a is suspended"


# --- waiting -------------------------------------------------------------------------------------


async def test_wait_returns_once_the_request_is_decided(service: ApprovalService, clock: FakeClock) -> None:
    approval = await service.request(draft(clock))
    waiter = asyncio.create_task(service.wait(approval.id, 30))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await service.decide(approval.id, ALICE, approve=True)
    outcome = await asyncio.wait_for(waiter, 2)
    assert outcome.state is ApprovalState.APPROVED and outcome.decided_by == ALICE.actor


async def test_wait_gives_up_after_its_timeout(service: ApprovalService, clock: FakeClock) -> None:
    approval = await service.request(draft(clock))
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await service.wait(approval.id, 0.05)
    assert outcome.state is ApprovalState.PENDING
    assert 0.04 <= loop.time() - started < 1
    decided = await service.decide(approval.id, ALICE, approve=False)  # a later waiter sees the outcome at once
    assert await asyncio.wait_for(service.wait(approval.id, 30), 1) == decided


async def test_wait_on_an_expired_or_unknown_request(service: ApprovalService, clock: FakeClock) -> None:
    approval = await service.request(draft(clock, ttl=60))
    clock.now += 60
    outcome = await asyncio.wait_for(service.wait(approval.id, 30), 1)
    assert outcome.state is ApprovalState.EXPIRED and outcome.end_reason == "nobody decided in time"
    with pytest.raises(ApprovalNotFound):
        await service.wait("apr_nosuch", 1)


# --- restarts ------------------------------------------------------------------------------------


async def test_a_restarted_service_restores_open_approvals(services: Services, service: ApprovalService,
                                                           clock: FakeClock) -> None:
    pending = await service.request(draft(clock))
    granted = await service.request(draft(clock, digest="digest-2"))
    await service.decide(granted.id, ALICE, approve=True)
    denied = await service.request(draft(clock, digest="digest-3"))
    await service.decide(denied.id, ALICE, approve=False)
    await service.close()

    restarted = await services.open()
    assert await restarted.pending_count() == 1
    assert await restarted.pending_for(*binding(pending)) == pending
    assert (await restarted.request(draft(clock))).id == pending.id  # a retry after the restart asks once
    assert await restarted.usable(*binding(granted)) == await restarted.get(granted.id)
    assert (await restarted.consume(granted.id, "dec-after-restart")).state is ApprovalState.USED
    assert await restarted.current(denied.id) is None and (await restarted.get(denied.id)).state is ApprovalState.DENIED
    assert (await restarted.decide(pending.id, ALICE, approve=True)).state is ApprovalState.APPROVED


async def test_a_restart_abandons_held_requests_and_keeps_those_an_agent_will_retry(
        services: Services, service: ApprovalService, store: Store, audit: AuditLog, clock: FakeClock) -> None:
    held = await service.request(replace(draft(clock), mode="hold"))
    held_and_granted = await service.request(replace(draft(clock, digest="digest-2"), mode="hold"))
    await service.decide(held_and_granted.id, ALICE, approve=True)  # granted, but its held call died
    told = await service.request(replace(draft(clock, digest="digest-3"), mode="hold"))
    await service.told_to_retry(told.id)  # e.g. the hold timed out: the agent got the pending answer
    pending = await service.request(draft(clock, digest="digest-4"))
    await service.close()

    restarted = await services.open()
    await restarted.close()  # writes what it settled
    for approval in (held, held_and_granted):
        stored = await store.get_approval(approval.id)
        assert stored is not None and stored.state is ApprovalState.ABANDONED
        assert stored.end_reason is not None and "the gateway restarted" in stored.end_reason
        assert await restarted.usable(*binding(approval)) is None
        with pytest.raises(ApprovalError, match="already abandoned"):
            await restarted.decide(approval.id, ALICE, approve=True)
    assert {a.id for a in await restarted.list(["pending"])} == {told.id, pending.id}
    assert (await restarted.get(told.id)).mode == "pending"
    await audit.flush()
    abandoned = await store.audit_records(AuditQuery(kind="approval"))
    assert {r["detail"]["approval_id"] for r in abandoned if r["action"] == "abandoned"} == {
        held.id, held_and_granted.id}


async def test_a_held_request_is_abandoned_when_its_last_waiter_leaves(service: ApprovalService, store: Store,
                                                                      clock: FakeClock) -> None:
    approval = await service.request(replace(draft(clock), mode="hold"))
    service.hold_begins(approval.id)
    service.hold_begins(approval.id)  # an identical call waits on the same request
    await service.hold_ends(approval.id, "abandoned: first client left")
    assert service.is_held(approval.id) and await service.current(approval.id) is not None  # one still waits
    await service.hold_ends(approval.id, "abandoned: second client left")
    assert not service.is_held(approval.id) and await service.current(approval.id) is None
    shown = await service.get(approval.id)
    assert shown.state is ApprovalState.ABANDONED and shown.end_reason == "abandoned: second client left"
    assert await eventually(lambda: _stored_state(store, approval.id, ApprovalState.ABANDONED))


async def test_a_hold_that_ends_with_its_answer_or_for_a_retry_abandons_nothing(service: ApprovalService,
                                                                               clock: FakeClock) -> None:
    answered = await service.request(replace(draft(clock), mode="hold"))
    service.hold_begins(answered.id)
    await service.hold_ends(answered.id)  # the call got its answer (here: still pending after the hold timed out)
    told = await service.request(replace(draft(clock, digest="digest-2"), mode="hold"))
    service.hold_begins(told.id)
    await service.told_to_retry(told.id)
    await service.hold_ends(told.id, "abandoned: the client left")  # a retry was promised: it stays good
    pending_mode = await service.request(draft(clock, digest="digest-3"))
    service.hold_begins(pending_mode.id)
    await service.hold_ends(pending_mode.id, "abandoned: the client left")
    for approval in (answered, told, pending_mode):
        assert (await service.get(approval.id)).state is ApprovalState.PENDING


async def _stored_state(store: Store, approval_id: str, state: ApprovalState) -> bool:
    stored = await store.get_approval(approval_id)
    return stored is not None and stored.state is state


async def test_a_restart_after_the_expiry_expires_them(services: Services, service: ApprovalService, store: Store,
                                                       clock: FakeClock) -> None:
    approval = await service.request(draft(clock, ttl=60))
    await service.close()
    clock.now += 120
    restarted = await services.open()
    assert await restarted.current(approval.id) is None
    stored = await store.get_approval(approval.id)
    assert stored is not None and stored.state is ApprovalState.EXPIRED


# --- the record ----------------------------------------------------------------------------------


async def test_every_change_is_in_the_audit_log(service: ApprovalService, tasks: TaskService, store: Store,
                                                audit: AuditLog, clock: FakeClock) -> None:
    used = await service.request(draft(clock))
    await service.decide(used.id, ALICE, approve=True, comment="ok")
    await service.consume(used.id, "dec-use")
    denied = await service.request(draft(clock, digest="digest-2"))
    await service.decide(denied.id, ALICE, approve=False)
    expired = await service.request(draft(clock, digest="digest-3", ttl=10))
    task = await start_task(tasks)
    cancelled = await service.request(draft(clock, task_id=task.id))
    clock.now += 10
    await service.sweep()
    await tasks.revoke(task.id, "admin:root", "stop")

    expected = {used.id: [("requested", "bot-a"), ("approved", ALICE.actor), ("used", "bot-a")],
                denied.id: [("requested", "bot-a"), ("denied", ALICE.actor)],
                expired.id: [("requested", "bot-a"), ("expired", "narrowgate")],
                cancelled.id: [("requested", "bot-a"), ("cancelled", "narrowgate")]}
    for approval_id, actions in expected.items():
        records = await approval_records(audit, store, approval_id)
        assert [(r["action"], r["actor"]) for r in records] == actions, approval_id
        assert {(r["agent_id"], r["tool"], r["owner"]) for r in records} == {("bot-a", TOOL, "alice@example.com")}
        assert [r["detail"]["state"] for r in records][-1] == records[-1]["action"]
        assert all(r["detail"]["policy_version"] == "v1" and r["args_digest"] for r in records)
    [approved] = [r for r in await approval_records(audit, store, used.id) if r["action"] == "approved"]
    assert approved["detail"]["comment"] == "ok"


async def test_the_pending_count_is_reported_on_every_change(service: ApprovalService,
                                                             clock: FakeClock) -> None:
    counts: list[int] = []
    service.on_change.append(counts.append)
    first = await service.request(draft(clock))
    second = await service.request(draft(clock, digest="digest-2"))
    await service.request(draft(clock))  # reused: no change
    third = await service.request(draft(clock, digest="digest-3", ttl=10))
    assert await service.pending_count() == 3
    await service.decide(first.id, ALICE, approve=True)
    await service.decide(second.id, ALICE, approve=False)
    await service.consume(first.id, "dec-use")
    clock.now += 10
    await service.sweep()
    assert counts == [1, 2, 3, 2, 1, 1, 0]
    assert await service.pending_count() == 0
    assert third.id not in {a.id for a in await service.list(states=["pending"])}


async def test_several_named_groups_all_have_to_agree(service: ApprovalService, clock: FakeClock) -> None:
    both = Approver("oidc:sam", "sam@example.com", groups=frozenset({"finance", "security"}),
                    roles=frozenset({"approver"}))
    finance = Approver("oidc:fin", "fin@example.com", groups=frozenset({"finance"}), roles=frozenset({"approver"}))
    approval = await service.request(draft(clock, group="finance,security"))
    assert "'finance' and 'security'" in (service.refusal(approval, finance) or "")
    assert service.refusal(approval, ALICE) is not None  # the owner is not in the groups either
    assert service.refusal(approval, both) is None


async def test_arguments_are_shown_to_the_people_who_may_decide(service: ApprovalService, clock: FakeClock) -> None:
    approval = await service.request(draft(clock))
    assert service.may_see_arguments(approval, ALICE) and service.may_see_arguments(approval, ROOT)
    assert not service.may_see_arguments(approval, MALLORY)


async def test_only_those_who_may_see_the_arguments_get_their_digest_and_only_keyed(
        services: Services, clock: FakeClock) -> None:
    service = await services.open()
    service.digests = DigestKey(b"k" * 32)
    approval = await service.request(replace(draft(clock), args_digest="ab" * 32))
    theirs = service.shown_to(approval, MALLORY)
    assert theirs["preview"] is None and theirs["args_digest"] is None and "preview_hidden" in theirs
    owners = service.shown_to(approval, ALICE)
    assert owners["preview"] == {"body": "hello"}
    assert owners["args_digest"] == DigestKey(b"k" * 32).keyed("ab" * 32) != "ab" * 32
    assert "ab" * 32 not in str(owners) and "ab" * 32 not in str(theirs)
    service.digests = None  # no key: no digest at all, never the plain one
    assert service.shown_to(approval, ALICE)["args_digest"] is None


async def test_a_decision_names_the_person_as_people_read_it(service: ApprovalService, clock: FakeClock) -> None:
    approval = await service.request(draft(clock))
    decided = await service.decide(approval.id, ALICE, approve=False)
    assert decided.decided_by == "admin:alice@example.com"  # the audit actor stays as it was
    assert decided.decided_by_label == "alice@example.com (approver)"
    assert ROOT.label == "root (admin)"


async def test_usable_skips_an_approval_that_does_not_cover_the_call(service: ApprovalService,
                                                                     clock: FakeClock) -> None:
    old = await service.request(draft(clock))
    await service.decide(old.id, ALICE, approve=True)
    newer = await service.request(replace(draft(clock), policy_ids=("comment-needs-approval", "egress-rule")))
    await service.decide(newer.id, ALICE, approve=True)
    needs = {"comment-needs-approval", "egress-rule"}
    found = await service.usable(*binding(old), covers=lambda a: needs <= set(a.policy_ids))
    assert found is not None and found.id == newer.id
