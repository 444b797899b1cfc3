"""Tasks: lifecycle, entitlement, budget, persistence, and the task tokens bound to them.

Real SQLite in tmp_path and the real registry. The gateway's signing keyring is stood in for by
`LocalSigner` (an EC P-256 key generated here, signing with the same {alg, kid, typ} header the
keyring uses), so these tests do not depend on gateway.credentials.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.catalog import Catalog, HttpTransport, ServerEntry, ToolEntry
from gateway.registry.service import Registry
from gateway.store import Store
from gateway.store.base import StoreError
from gateway.tasks.model import AgentNotActive, Task, TaskEnded, TaskError, TaskState, ToolsRefused
from gateway.tasks.service import BUDGET_EXHAUSTED, TaskService, TaskSettings
from gateway.tasks.tokens import TaskTokenIssuer, TaskTokenRejected, verify_task_token
from gateway.wiring.task_times import TaskTimes
from tests.support.state import T0, FakeClock
from tests.support.store_backends import StoreBackend

GATEWAY = "https://gw.test"
RESOURCE = f"{GATEWAY}/mcp"
IDP = "https://idp.test"



class LocalSigner:
    """Stand-in for gateway.credentials.keys.SigningKeyring: `sign(claims, typ)` with an ES256 key."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.kid = uuid.uuid4().hex[:16]

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers={"kid": self.kid, "typ": typ})

    def public_keys(self) -> dict[str, Any]:
        return {self.kid: self.private_key.public_key()}


def tool(server: str, name: str) -> ToolEntry:
    return ToolEntry(name, f"{server}__{name}", server, "read", (), "team")


def server(server_id: str, *names: str) -> ServerEntry:
    tools = {n: tool(server_id, n) for n in names}
    return ServerEntry(server_id, server_id, "team", "", HttpTransport(f"http://127.0.0.1:1/{server_id}"), 5.0,
                       MappingProxyType(tools), Path("/dev/null"))


def make_catalog() -> Catalog:
    return Catalog.of([server("gh", "read_issue", "comment", "delete_repo"), server("docs", "search", "read")])


def agent_spec(agent_id: str, *, tools: list[str] | None = None, servers: list[str] | None = None,
               subject: str | None = None, issuer: str = IDP) -> dict[str, Any]:
    return {
        "id": agent_id,
        "owner": "team-a",
        "purpose": "testing",
        "state": "active",
        "identities": [{"kind": "oidc", "issuer": issuer, "subject": subject or f"wl:{agent_id}"}],
        "entitlement": {"tools": tools or [], "servers": servers or []},
    }


async def add_agents(registry: Registry, issuer: str = IDP) -> None:
    # bot-a: two gh tools by name plus every docs tool by server; bot-b: nothing.
    await registry.create(agent_spec("bot-a", tools=["gh__read_issue", "gh__comment"], servers=["docs"],
                                     issuer=issuer), "alice", "test")
    await registry.create(agent_spec("bot-b", issuer=issuer), "alice", "test")



@pytest.fixture
async def registry(store: Store, clock: FakeClock) -> Registry:
    registry = await Registry.open(store, clock)
    await add_agents(registry)
    return registry


@pytest.fixture
async def tasks(store: Store, registry: Registry, clock: FakeClock) -> AsyncIterator[TaskService]:
    service = TaskService(store, registry, make_catalog(), clock)
    await service.open(background=False)  # the tests drive flush and sweep themselves
    yield service
    await service.close()


async def start(tasks: TaskService, **overrides: Any) -> Task:
    args: dict[str, Any] = {"agent_id": "bot-a", "purpose": "triage #12", "tools": ["gh__read_issue"],
                            "started_by": "orchestrator", "deadline_s": 600}
    args.update(overrides)
    return await tasks.start(**args)


# --- lifecycle ---------------------------------------------------------------------------------


async def test_started_task_is_active_persisted_and_usable(tasks: TaskService, store: Store) -> None:
    task = await start(tasks, tools=["gh__read_issue", "docs__search"], budget=3)
    assert task.id.startswith("task_") and len(task.id) > 20
    assert task.state is TaskState.ACTIVE
    assert task.tools == ("gh__read_issue", "docs__search")
    assert task.deadline == T0 + 600 and task.budget == 3 and task.started_by == "orchestrator"
    assert tasks.check(task.id) == task
    stored = await store.get_task(task.id)
    assert stored == task
    [event] = await store.task_events(task.id)
    assert (event.from_state, event.to_state, event.actor) == (None, TaskState.ACTIVE, "orchestrator")


@pytest.mark.parametrize(("verb", "state"), [("complete", TaskState.COMPLETED), ("fail", TaskState.FAILED),
                                             ("revoke", TaskState.REVOKED)])
async def test_ended_task_refuses_check_and_is_recorded(
    tasks: TaskService, store: Store, clock: FakeClock, verb: str, state: TaskState
) -> None:
    task = await start(tasks)
    clock.now += 10
    ended = await getattr(tasks, verb)(task.id, "bot-a", "done with it")
    assert (ended.state, ended.ended_at, ended.end_reason) == (state, T0 + 10, "done with it")
    with pytest.raises(TaskEnded) as caught:
        tasks.check(task.id)
    assert caught.value.state is state and "done with it" in caught.value.reason
    assert (await store.get_task(task.id)).state is state  # type: ignore[union-attr]
    events = await store.task_events(task.id)
    assert [(e.from_state, e.to_state, e.actor) for e in events] == [
        (None, TaskState.ACTIVE, "orchestrator"), (TaskState.ACTIVE, state, "bot-a")]
    with pytest.raises(TaskEnded, match="already ended"):
        await tasks.complete(task.id, "bot-a", "again")


async def test_end_requires_actor_and_reason(tasks: TaskService) -> None:
    task = await start(tasks)
    with pytest.raises(TaskError, match="reason is required"):
        await tasks.complete(task.id, "bot-a", " ")
    with pytest.raises(TaskError, match="no task"):
        await tasks.complete("task_nope", "bot-a", "x")


async def test_deadline_passes_then_sweeper_records_expiry(
    tasks: TaskService, store: Store, clock: FakeClock
) -> None:
    task = await start(tasks, deadline_s=60)
    clock.now += 59
    tasks.check(task.id)
    clock.now += 1
    # Derived at once, before any sweep: the hot path never waits for the sweeper.
    with pytest.raises(TaskEnded, match="deadline passed") as caught:
        tasks.check(task.id)
    assert caught.value.state is TaskState.EXPIRED
    assert (await store.get_task(task.id)).state is TaskState.ACTIVE  # type: ignore[union-attr]
    seen: list[Task] = []
    tasks.on_end.append(seen.append)
    [expired] = await tasks.expire_due()
    assert (expired.state, expired.ended_at) == (TaskState.EXPIRED, T0 + 60)
    assert seen == [expired]
    stored = await store.get_task(task.id)
    assert (stored.state, stored.ended_at, stored.end_reason) == (TaskState.EXPIRED, T0 + 60, "deadline passed")  # type: ignore[union-attr]
    assert await tasks.expire_due() == []  # once only


async def test_completing_an_unswept_expired_task_records_expiry(
    tasks: TaskService, store: Store, clock: FakeClock
) -> None:
    task = await start(tasks, deadline_s=60)
    clock.now += 120
    with pytest.raises(TaskEnded, match="expired"):
        await tasks.complete(task.id, "bot-a", "late")
    assert (await store.get_task(task.id)).state is TaskState.EXPIRED  # type: ignore[union-attr]


async def test_deadline_is_capped_and_defaulted(store: Store, registry: Registry, clock: FakeClock) -> None:
    service = TaskService(store, registry, make_catalog(), clock, TaskSettings(max_duration_s=3600,
                                                                               default_duration_s=300))
    await service.open(background=False)
    assert (await start(service, deadline_s=10 * 3600)).deadline == T0 + 3600
    assert (await start(service, deadline_s=None)).deadline == T0 + 300
    assert (await start(service, deadline_s=None, deadline=T0 + 100)).deadline == T0 + 100
    with pytest.raises(TaskError, match="future"):
        await start(service, deadline_s=None, deadline=T0 - 1)
    with pytest.raises(TaskError, match="not both"):
        await start(service, deadline=T0 + 100)
    await service.close()


async def test_memory_keeps_only_the_most_recently_ended_tasks(store: Store, registry: Registry,
                                                               clock: FakeClock) -> None:
    service = TaskService(store, registry, make_catalog(), clock, TaskSettings(ended_retention_max=3))
    await service.open(background=False)
    ended = []
    for n in range(5):
        clock.now += 1
        task = await start(service, purpose=f"task {n}")
        ended.append(await service.complete(task.id, "bot-a", "done"))
    assert [service.get(t.id) is not None for t in ended] == [False, False, True, True, True]
    # A forgotten task's token is still refused: fail closed, as an unknown task.
    with pytest.raises(TaskEnded, match="unknown task"):
        service.check(ended[0].id)
    with pytest.raises(TaskEnded, match="completed"):
        service.check(ended[-1].id)
    await service.close()
    # A restart loads the same most recent three from the store.
    reopened = TaskService(store, registry, make_catalog(), clock, TaskSettings(ended_retention_max=3))
    await reopened.open(background=False)
    assert [reopened.get(t.id) is not None for t in ended] == [False, False, True, True, True]
    await reopened.close()


async def test_bad_task_parameters_are_refused(tasks: TaskService) -> None:
    with pytest.raises(TaskError, match="purpose is required"):
        await start(tasks, purpose="")
    with pytest.raises(TaskError, match="budget"):
        await start(tasks, budget=0)
    with pytest.raises(ToolsRefused, match="at least one tool"):
        await start(tasks, tools=[])


# --- entitlement -------------------------------------------------------------------------------


async def test_tools_outside_entitlement_are_refused_and_named(tasks: TaskService, store: Store) -> None:
    with pytest.raises(ToolsRefused) as caught:
        await start(tasks, tools=["gh__read_issue", "gh__delete_repo"])
    assert caught.value.outside == ("gh__delete_repo",)
    assert "gh__delete_repo" in caught.value.message and "gh__read_issue" not in caught.value.message
    assert await store.list_tasks() == []  # nothing started


async def test_unknown_tools_are_refused_and_named(tasks: TaskService) -> None:
    with pytest.raises(ToolsRefused, match=r"unknown tool.*nope__x") as caught:
        await start(tasks, tools=["gh__read_issue", "nope__x"])
    assert caught.value.unknown == ("nope__x",)


async def test_server_entitlement_covers_every_tool_of_that_server(tasks: TaskService) -> None:
    task = await start(tasks, tools=["docs__search", "docs__read"])
    assert task.tools == ("docs__search", "docs__read")


async def test_trim_drops_what_is_not_granted_but_refuses_an_empty_task(tasks: TaskService) -> None:
    task = await start(tasks, tools=["gh__read_issue", "gh__delete_repo", "nope__x"], trim=True)
    assert task.tools == ("gh__read_issue",)
    with pytest.raises(ToolsRefused, match="none of the requested tools"):
        await start(tasks, tools=["gh__delete_repo", "nope__x"], trim=True)


async def test_only_active_agents_start_tasks(tasks: TaskService, registry: Registry) -> None:
    with pytest.raises(AgentNotActive, match="no agent"):
        await start(tasks, agent_id="ghost")
    await registry.suspend("bot-a", "alice", "incident")
    with pytest.raises(AgentNotActive, match="suspended"):
        await start(tasks)


# --- budget ------------------------------------------------------------------------------------


async def test_budget_counts_calls_and_refuses_the_one_too_many(tasks: TaskService, store: Store) -> None:
    task = await start(tasks, budget=2)
    assert tasks.consume(task.id).calls_made == 1
    assert tasks.consume(task.id).remaining_calls == 0
    with pytest.raises(TaskEnded, match=BUDGET_EXHAUSTED):
        tasks.consume(task.id)
    assert tasks.get(task.id).calls_made == 2  # type: ignore[union-attr]
    # Counts reach the store lazily, at the next flush.
    assert (await store.get_task(task.id)).calls_made == 0  # type: ignore[union-attr]
    await tasks.flush()
    assert (await store.get_task(task.id)).calls_made == 2  # type: ignore[union-attr]
    # The task itself is still active, so it can be completed properly.
    assert (await tasks.complete(task.id, "bot-a", "done")).calls_made == 2


async def test_background_flush_writes_counts_without_being_asked(
    store: Store, registry: Registry, clock: FakeClock
) -> None:
    service = TaskService(store, registry, make_catalog(), clock, TaskSettings(flush_interval_s=0.02))
    await service.open()
    task = await start(service)
    service.consume(task.id)
    for _ in range(100):
        await asyncio.sleep(0.02)
        if (await store.get_task(task.id)).calls_made == 1:  # type: ignore[union-attr]
            break
    assert (await store.get_task(task.id)).calls_made == 1  # type: ignore[union-attr]
    await service.close()


async def test_unbudgeted_task_counts_without_limit(tasks: TaskService) -> None:
    task = await start(tasks)
    for _ in range(50):
        tasks.consume(task.id)
    assert tasks.get(task.id).calls_made == 50  # type: ignore[union-attr]


async def test_ended_task_refuses_consume(tasks: TaskService) -> None:
    task = await start(tasks, budget=5)
    await tasks.fail(task.id, "bot-a", "gave up")
    with pytest.raises(TaskEnded, match="failed"):
        tasks.consume(task.id)


async def test_state_survives_a_restart_with_flushed_counts(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    live = await start(tasks, budget=3)
    done = await start(tasks)
    tasks.consume(live.id)
    await tasks.complete(done.id, "bot-a", "ok")
    await tasks.close()  # flushes
    again = TaskService(store, registry, make_catalog(), clock)
    await again.open(background=False)
    assert again.check(live.id).calls_made == 1
    with pytest.raises(TaskEnded, match="completed"):
        again.check(done.id)
    listed = await again.list(agent_id="bot-a", state="active")
    assert [t.id for t in listed] == [live.id]
    await again.close()


# --- agent lifecycle ---------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["suspend", "retire"])
async def test_suspending_or_retiring_the_agent_revokes_its_tasks(
    tasks: TaskService, registry: Registry, store: Store, verb: str
) -> None:
    mine = [await start(tasks), await start(tasks)]
    seen: list[str] = []
    tasks.on_end.append(lambda t: seen.append(t.id))
    await getattr(registry, verb)("bot-a", "alice", "incident 7")
    # Ended in memory the moment the registry committed the change...
    for task in mine:
        with pytest.raises(TaskEnded, match="revoked"):
            tasks.check(task.id)
    assert sorted(seen) == sorted(t.id for t in mine)
    await tasks.close()  # ...and on disk once the scheduled write ran.
    for task in mine:
        stored = await store.get_task(task.id)
        assert stored.state is TaskState.REVOKED and "incident 7" in (stored.end_reason or "")  # type: ignore[union-attr]


async def test_end_agent_tasks_leaves_other_agents_alone(
    tasks: TaskService, registry: Registry
) -> None:
    await registry.update("bot-b", {"entitlement": {"servers": ["docs"]}}, "alice", "grant docs")
    mine = await start(tasks)
    theirs = await start(tasks, agent_id="bot-b", tools=["docs__search"])
    [revoked] = await tasks.end_agent_tasks("bot-a", "offboarding")
    assert revoked.id == mine.id
    assert tasks.check(theirs.id).state is TaskState.ACTIVE


async def test_an_observer_that_raises_does_not_stop_the_others(tasks: TaskService) -> None:
    seen: list[str] = []

    def broken(task: Task) -> None:
        raise RuntimeError("boom")

    tasks.on_end.extend([broken, lambda t: seen.append(t.id)])
    task = await start(tasks)
    await tasks.revoke(task.id, "admin", "no longer needed")
    assert seen == [task.id]


async def test_task_history_is_append_only(tasks: TaskService, store: Store, backend: StoreBackend) -> None:
    task = await start(tasks)
    await tasks.complete(task.id, "bot-a", "done")
    # White box: the database trigger is the guarantee, so go around the store's API.
    with pytest.raises(backend.refusal, match="append-only"):
        await backend.execute(f"DELETE FROM task_events WHERE task_id = '{task.id}'")
    assert len(await store.task_events(task.id)) == 2


# --- task tokens -------------------------------------------------------------------------------


async def test_task_token_claims_and_verification(tasks: TaskService, registry: Registry, clock: FakeClock) -> None:
    signer = LocalSigner()
    issuer = TaskTokenIssuer(signer, GATEWAY, RESOURCE, ttl_s=900, clock=clock)
    task = await start(tasks, tools=["gh__read_issue", "docs__search"], deadline_s=3600)
    token, expires_in = issuer.issue(task, registry.require("bot-a"))
    assert expires_in == 900
    header = jwt.get_unverified_header(token)
    assert (header["typ"], header["alg"], header["kid"]) == ("at+jwt", "ES256", signer.kid)
    claims = verify_task_token(token, signer.public_keys(), GATEWAY, RESOURCE, clock)
    assert claims["iss"] == GATEWAY and claims["aud"] == RESOURCE
    assert claims["sub"] == claims["client_id"] == "bot-a"
    assert claims["task_id"] == task.id and claims["scope"] == "gh__read_issue docs__search"
    assert (claims["iat"], claims["exp"]) == (int(T0), int(T0) + 900)
    assert claims["jti"] != verify_task_token(issuer.issue(task, registry.require("bot-a"))[0],
                                              signer.public_keys(), GATEWAY, RESOURCE, clock)["jti"]


async def test_task_token_never_outlives_the_deadline(tasks: TaskService, registry: Registry,
                                                      clock: FakeClock) -> None:
    issuer = TaskTokenIssuer(LocalSigner(), GATEWAY, RESOURCE, ttl_s=900, clock=clock)
    task = await start(tasks, deadline_s=120.5)
    token, expires_in = issuer.issue(task, registry.require("bot-a"))
    assert expires_in == 120
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == int(T0) + 120
    clock.now += 121
    with pytest.raises(TaskEnded):
        issuer.issue(task, registry.require("bot-a"))


async def test_task_token_rejections(tasks: TaskService, registry: Registry, clock: FakeClock) -> None:
    signer, stranger = LocalSigner(), LocalSigner()
    issuer = TaskTokenIssuer(signer, GATEWAY, RESOURCE, ttl_s=60, clock=clock)
    task = await start(tasks)
    token, _ = issuer.issue(task, registry.require("bot-a"))
    keys = signer.public_keys()

    def refused(candidate: str, fragment: str, **kwargs: Any) -> None:
        args: dict[str, Any] = {"public_keys": keys, "issuer": GATEWAY, "audience": RESOURCE, "clock": clock}
        args.update(kwargs)
        with pytest.raises(TaskTokenRejected, match=fragment) as caught:
            verify_task_token(candidate, **args)
        assert candidate.rpartition(".")[2] not in str(caught.value)

    refused(token, "audience", audience="https://other.test/mcp")
    refused(token, "issuer", issuer="https://other.test")
    refused(token, "unknown key", public_keys=stranger.public_keys())
    forged = TaskTokenIssuer(stranger, GATEWAY, RESOURCE, clock=clock).issue(task, registry.require("bot-a"))[0]
    refused(forged, "signature is invalid", public_keys={stranger.kid: signer.private_key.public_key()})
    refused(signer.sign({"iss": GATEWAY, "aud": RESOURCE}, "JWT"), "typ")
    refused(signer.sign({"iss": GATEWAY, "aud": RESOURCE, "sub": "x", "exp": T0 + 9, "iat": T0, "jti": "j",
                         "scope": "a"}, "at+jwt"), "task_id")
    hmac = jwt.encode({"iss": GATEWAY}, "s" * 32, algorithm="HS256", headers={"kid": signer.kid, "typ": "at+jwt"})
    refused(hmac, "algorithm does not match")
    refused("not-a-jwt", "malformed")
    clock.now += 61
    refused(token, "expired")


# --- delegation --------------------------------------------------------------------------------


async def test_a_delegated_task_is_stored_with_its_chain_and_still_cascades_after_a_restart(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    root = await start(tasks, tools=["gh__read_issue", "gh__comment"], budget=5)
    child = await start(tasks, agent_id="bot-c", tools=["gh__comment"], budget=2, parent_id=root.id)
    stored = await store.get_task(child.id)
    assert stored is not None and stored.parent_id == root.id and stored.depth == 1
    assert [(link.agent_id, link.owner, link.task_id) for link in stored.chain] == [
        ("bot-a", "team-a", root.id), ("bot-c", "team-a", child.id)]
    await tasks.close()
    again = TaskService(store, registry, make_catalog(), clock)
    await again.open(background=False)
    assert again.check(root.id).calls_made == 2  # the child's budget, reserved out of the parent's
    await again.complete(root.id, "bot-a", "all done")
    with pytest.raises(TaskEnded, match=f"parent task {root.id} completed: all done"):
        again.check(child.id)
    assert [(e.to_state, e.reason) for e in await again.events(child.id)][-1] == (
        TaskState.REVOKED, f"parent task {root.id} completed: all done")
    await again.close()


async def test_a_parent_ending_while_its_child_is_written_ends_the_child_too(
    tasks: TaskService, registry: Registry
) -> None:
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    root = await start(tasks)
    # The child's start yields at its store write; the parent's end runs then, before the child is held.
    starting = asyncio.ensure_future(start(tasks, agent_id="bot-c", parent_id=root.id))
    await asyncio.sleep(0)
    await tasks.revoke(root.id, "admin:test", "stop everything")
    with pytest.raises(TaskError, match=f"the parent task {root.id} has ended"):
        await starting
    [child] = [t for t in await tasks.list(agent_id="bot-c")]
    assert child.state is TaskState.REVOKED and "ended as this task started" in (child.end_reason or "")


async def test_a_child_started_elsewhere_under_a_parent_ended_here_is_ended_here(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    """Two services on one store, as two replicas: B starts a child under a parent A has just ended (B has
    not heard yet). When A hears of the child, A ends it and writes that; B then hears of the end."""
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    root = await start(tasks)
    other = TaskService(store, registry, make_catalog(), clock)
    await other.open(background=False)
    await tasks.revoke(root.id, "admin:test", "called off")
    child = await start(other, agent_id="bot-c", parent_id=root.id)  # `other` still holds the parent as active
    await tasks.refresh(child.id)  # the child's task_changed notice reaches the replica that ended the parent
    with pytest.raises(TaskEnded, match=f"parent task {root.id} revoked: called off"):
        tasks.check(child.id)
    await tasks.close()  # waits for the write
    stored = await store.get_task(child.id)
    assert stored is not None and stored.state is TaskState.REVOKED
    await other.refresh(child.id)
    with pytest.raises(TaskEnded, match="revoked"):
        other.check(child.id)
    await other.close()


async def test_an_agent_of_the_chain_expiring_ends_the_tasks_below_it(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    """No lifecycle event announces an expiry: each check asks the registry about every agent of the chain,
    and the sweeper ends (and writes) the tasks of the chain."""
    await registry.create({**agent_spec("bot-p", servers=["gh"]), "expires_at": T0 + 100}, "alice", "test")
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    root = await start(tasks, agent_id="bot-p")
    child = await start(tasks, agent_id="bot-c", parent_id=root.id)
    clock.now = T0 + 101
    with pytest.raises(TaskEnded, match=r"agent 'bot-p' is retired \(it expired\)"):
        tasks.check(child.id)
    assert {t.id for t in await tasks.expire_due()} == {root.id, child.id}
    stored_root, stored_child = await store.get_task(root.id), await store.get_task(child.id)
    assert stored_root is not None and stored_root.state is TaskState.REVOKED
    assert stored_root.end_reason == "agent 'bot-p' is retired (it expired)"
    assert stored_child is not None and stored_child.state is TaskState.REVOKED
    assert stored_child.end_reason == f"parent task {root.id} revoked: agent 'bot-p' is retired (it expired)"


async def test_an_agent_expiring_while_its_task_is_written_ends_that_task(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    await registry.create({**agent_spec("bot-c", servers=["gh"]), "expires_at": T0 + 100}, "alice", "test")
    root = await start(tasks)
    starting = asyncio.ensure_future(start(tasks, agent_id="bot-c", parent_id=root.id))
    await asyncio.sleep(0)  # the child's start yields at its store write; the agent expires meanwhile
    clock.now = T0 + 101
    with pytest.raises(AgentNotActive, match=r"agent 'bot-c' is retired \(it expired\)"):
        await starting
    [child] = await tasks.list(agent_id="bot-c")
    assert child.state is TaskState.REVOKED and "as this task started" in (child.end_reason or "")
    assert tasks.check(root.id).state is TaskState.ACTIVE


async def test_the_sweeper_survives_forgetting_a_task_during_its_pass(
    store: Store, registry: Registry, clock: FakeClock
) -> None:
    """Expiring tasks pushes older ended ones out of memory (ended_retention_max) while the pass still walks them."""
    service = TaskService(store, registry, make_catalog(), clock, TaskSettings(ended_retention_max=2))
    await service.open(background=False)
    first, second = await start(service), await start(service)
    done = await start(service)
    await service.complete(done.id, "bot-a", "done")
    clock.now = T0 + 601
    assert {t.id for t in await service.expire_due()} == {first.id, second.id}
    for task in (first, second):
        stored = await store.get_task(task.id)
        assert stored is not None and stored.state is TaskState.EXPIRED
    await service.close()


async def test_a_restart_ends_the_descendants_a_cut_short_cascade_left_active(
    store: Store, registry: Registry, clock: FakeClock
) -> None:
    """A crash after the parent's end was written, before its descendants' were: the store holds them active.
    On open they are ended and written: below a parent loaded as ended, and below one ended so long ago that
    it is not loaded with the others (it is looked up in the store)."""
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    long = TaskSettings(max_duration_s=3 * 86400)
    first = TaskService(store, registry, make_catalog(), clock, long)
    await first.open(background=False)
    old_root, root = await start(first, deadline_s=3 * 86400), await start(first, deadline_s=3 * 86400)
    old_child = await start(first, agent_id="bot-c", parent_id=old_root.id)
    child = await start(first, agent_id="bot-c", parent_id=root.id)
    await first.close()
    # What the crashed process wrote: the parents' ends only.
    for parent, ended_at in ((old_root, T0 + 1), (root, T0 + 2 * 86400)):
        await store.save_task(replace(parent, state=TaskState.REVOKED, ended_at=ended_at, end_reason="stop"))
    clock.now = T0 + 2 * 86400 + 1  # old_root ended beyond ended_retention_s: not loaded at open
    again = TaskService(store, registry, make_catalog(), clock, long)
    await again.open(background=False)
    for task, reason in ((child, f"parent task {root.id} revoked: stop"), (old_child, f"parent task {old_root.id}")):
        stored = await store.get_task(task.id)
        assert stored is not None and stored.state is TaskState.REVOKED, stored
        assert (stored.end_reason or "").startswith(reason)
        with pytest.raises(TaskEnded):
            again.check(task.id)
    await again.close()


async def test_a_replica_whose_registry_is_behind_never_writes_a_revocation_for_an_agent_reason(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    """Agent and task notices are handled apart: replica B can hear of a task before its registry re-read the
    task's agent. B refuses the task's calls meanwhile, but ends it (and writes that) only for an agent that
    the store says is not active: through a task notice (refresh), the lease sweep and the deadline sweep."""
    behind = await Registry.open(store, clock)  # replica B's registry, loaded before the changes below
    other = TaskService(store, behind, make_catalog(), clock)
    await other.open(background=False)
    await registry.create({**agent_spec("bot-x", servers=["gh"]), "expires_at": T0 + 100}, "alice", "test")
    created = await start(tasks, agent_id="bot-x")  # B has not heard of bot-x
    await other.refresh(created.id)  # the task notice
    await registry.suspend("bot-a", "alice", "pause")
    await behind.refresh("bot-a")  # B heard of that suspension...
    await registry.resume("bot-a", "alice", "go on")
    resumed = await start(tasks)  # ...but not yet of the resumption
    assert await TaskTimes(other).still_active(resumed.id)  # the lease sweep, which loads the task
    await registry.update("bot-x", {"expires_at": T0 + 500}, "alice", "longer")
    clock.now = T0 + 101  # past the expiry B's registry still holds (the registry is re-read above for bot-a only)
    assert behind.get("bot-x").expires_at == T0 + 100  # type: ignore[union-attr]
    assert await other.expire_due() == []  # the deadline sweep
    for task in (created, resumed):
        stored = await store.get_task(task.id)
        assert stored is not None and stored.state is TaskState.ACTIVE, stored
        assert other.check(task.id).id == task.id  # B's registry was re-read for it
    clock.now = T0 + 501  # past the expiry the store holds: that reason is written
    assert [t.id for t in await other.expire_due()] == [created.id]
    stored = await store.get_task(created.id)
    assert stored is not None and stored.state is TaskState.REVOKED
    assert stored.end_reason == "agent 'bot-x' is retired (it expired)"
    await other.close()


class FailingOnce:
    """Delegates to a real store but fails the first write of one task's end (or the first read of it, with
    `reads`), like a dropped connection."""

    def __init__(self, inner: Store, task_id: str, reads: bool = False) -> None:
        self.inner = inner
        self.task_id = task_id
        self.reads = reads

    def fails(self, task_id: str) -> bool:
        if task_id != self.task_id:
            return False
        self.task_id = ""
        return True

    async def save_task(self, task: Task, event: Any = None) -> None:
        if not self.reads and task.state is not TaskState.ACTIVE and self.fails(task.id):
            raise StoreError("connection lost")
        await self.inner.save_task(task, event)

    async def get_task(self, task_id: str) -> Task | None:
        if self.reads and self.fails(task_id):
            raise StoreError("connection lost")
        return await self.inner.get_task(task_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_failed_write_in_a_cascade_neither_skips_the_rest_nor_is_lost(
    store: Store, registry: Registry, clock: FakeClock
) -> None:
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    await registry.create(agent_spec("bot-d", servers=["gh"]), "alice", "test")
    failing = FailingOnce(store, "")
    service = TaskService(failing, registry, make_catalog(), clock)  # type: ignore[arg-type]
    await service.open(background=False)
    root = await start(service)
    child = await start(service, agent_id="bot-c", parent_id=root.id)
    grandchild = await start(service, agent_id="bot-d", parent_id=child.id)
    saved: list[str] = []
    service.on_saved.append(lambda task: saved.append(task.id))
    failing.task_id = child.id
    with pytest.raises(StoreError, match="connection lost"):
        await service.revoke(root.id, "admin:test", "stop")
    states = {t.id: (await store.get_task(t.id)).state for t in (root, child, grandchild)}  # type: ignore[union-attr]
    assert states == {root.id: TaskState.REVOKED, child.id: TaskState.ACTIVE, grandchild.id: TaskState.REVOKED}
    assert saved == [root.id, grandchild.id]  # announced once written
    await service.close()  # retries what is unwritten (as the background loop does)
    stored = await store.get_task(child.id)
    assert stored is not None and stored.state is TaskState.REVOKED and saved[-1] == child.id


async def test_an_end_heard_from_elsewhere_whose_check_in_the_store_fails_is_written_later(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    """Replica A wrote its root task's end but not the child's (it crashed). B hears of the root's end and ends
    the child; its look-up of the child in the store fails once: the child's end is kept and written later."""
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    root = await start(tasks)
    child = await start(tasks, agent_id="bot-c", parent_id=root.id)
    failing = FailingOnce(store, "", reads=True)
    other = TaskService(failing, registry, make_catalog(), clock)  # type: ignore[arg-type]
    await other.open(background=False)
    await store.save_task(replace(root, state=TaskState.REVOKED, ended_at=T0 + 1, end_reason="stop"))
    failing.task_id = child.id
    await other.refresh(root.id)  # the root's task notice
    with pytest.raises(TaskEnded, match=f"parent task {root.id}"):
        other.check(child.id)
    await other.close()  # waits for the failed look-up, then tries again (as the background loop does)
    stored = await store.get_task(child.id)
    assert stored is not None and stored.state is TaskState.REVOKED, stored
    assert failing.task_id == ""  # the look-up did fail once


async def test_an_end_whose_look_up_keeps_failing_holds_up_neither_the_flush_nor_the_others(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    """One end heard from elsewhere whose look-up in the store keeps failing (a record this version cannot
    read): closing still writes the call counts; before, the first failing step skipped every later one."""
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    root = await start(tasks)
    child = await start(tasks, agent_id="bot-c", parent_id=root.id)
    counted = await start(tasks)

    class AlwaysFailing(FailingOnce):
        def fails(self, task_id: str) -> bool:
            return task_id == self.task_id

    failing = AlwaysFailing(store, child.id, reads=True)
    other = TaskService(failing, registry, make_catalog(), clock)  # type: ignore[arg-type]
    await other.open(background=False)
    await store.save_task(replace(root, state=TaskState.REVOKED, ended_at=T0 + 1, end_reason="stop"))
    await other.refresh(root.id)  # the root's end: the child's end is missed here and its look-up fails
    other.consume(counted.id)
    await other.close()
    stored = await store.get_task(counted.id)
    assert stored is not None and stored.calls_made == 1, stored  # flushed despite the failing look-up


async def test_a_task_above_that_is_not_held_here_counts_as_ended_until_loaded(
    store: Store, registry: Registry, clock: FakeClock, tasks: TaskService
) -> None:
    await registry.create(agent_spec("bot-c", servers=["gh"]), "alice", "test")
    root = await start(tasks)
    child = await start(tasks, agent_id="bot-c", parent_id=root.id)
    # A replica that hears of the child, but whose look-up of the parent fails: it holds the child only.
    other = TaskService(FailingOnce(store, root.id, reads=True), registry, make_catalog(), clock)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await other.refresh(child.id)
    assert other.get(root.id) is None and other.get(child.id) is not None
    with pytest.raises(TaskEnded, match=f"parent task {root.id} is not known here"):
        other.check(child.id)
    await other.close()  # waits for the load the refusal started
    assert other.check(child.id).id == child.id  # the store says the parent is active
