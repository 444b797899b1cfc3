"""Approvals and the console across replicas (issue 15, item 4), on a real Redis.

- The seams' contracts (tests/test_state_seams.py) hold for the Redis implementations, plus what only a
  shared one must do: one claim of two racing, no stale copy revived, nothing secret in keys.
- Two real replicas: a call held on B completes when a person approves on A (admin API, and the console
  in real Chromium); an approved call raced on both replicas runs upstream exactly once; a console session
  from A works on B; failed sign-ins count across replicas.
- Faults: the fleet's own Redis stopped: a held call is refused and never runs, the console asks to sign
  in; Redis restarted on the same port: all works again without restarting the gateways.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from selenium.webdriver.common.by import By

from gateway.approvals.model import Approval, ApprovalError, ApprovalState, Approver
from gateway.approvals.service import ApprovalService
from gateway.audit import AuditLog
from gateway.cluster.approvals import RedisApprovalWaiters, RedisOpenApprovals
from gateway.cluster.connection import Cluster
from gateway.cluster.console import RedisConsoleSessions, RedisLoginFailures
from gateway.registry.service import Registry
from gateway.settings.approvals import ApprovalSettings
from gateway.settings.cluster import ClusterSettings
from gateway.store import Store
from gateway.tasks.service import TaskService
from tests.support import engines
from tests.support.browser import chromium, sign_in
from tests.support.clients import mcp_client
from tests.support.console import Browser
from tests.support.fleet import Fleet, start_fleet
from tests.support.processes import ADMIN_TOKEN, behaviour_manifest, cedar_copy
from tests.support.state import FakeClock
from tests.test_approvals_e2e import (
    EXTRA_POLICIES,
    OWNER_TOKEN,
    admin,
    approval_meta,
    decide,
    pending_for,
    text_of,
    wait_for_pending,
)
from tests.test_approvals_service import ALICE, agent_spec, binding, catalog, draft, start_task, stored_state
from tests.test_console_browser import OWNER_TOKEN as BROWSER_OWNER_TOKEN
from tests.test_state_seams import approval
from tests.test_state_seams import test_approval_waiters_contract as approval_waiters_contract
from tests.test_state_seams import test_console_sessions_contract as console_sessions_contract
from tests.test_state_seams import test_login_failures_contract as login_failures_contract
from tests.test_state_seams import test_open_approvals_contract as open_approvals_contract


def cluster_on(redis_url: str) -> Cluster:
    return Cluster(ClusterSettings(redis_url=redis_url, key_prefix=f"test-{uuid.uuid4().hex[:12]}"))


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[Cluster]:
    cluster = cluster_on(redis_url)
    await cluster.open()
    yield cluster
    await cluster.close()


def soon(seconds: float = 600) -> Approval:
    """A pending request that expires in `seconds` (test_state_seams' requests have no real expiry)."""
    now = time.time()
    return replace(approval(f"apr_{uuid.uuid4().hex[:8]}"), created_at=now, expires_at=now + seconds)


# -- the contracts, on Redis ------------------------------------------------------------------------

async def test_open_approvals_contract_on_redis(cluster: Cluster) -> None:
    await open_approvals_contract(lambda: RedisOpenApprovals(cluster))


async def test_approval_waiters_contract_on_redis(cluster: Cluster) -> None:
    waiters = RedisApprovalWaiters(cluster)
    await waiters.start()
    try:
        await approval_waiters_contract(lambda: waiters)
    finally:
        await waiters.stop()


async def test_console_sessions_contract_on_redis(cluster: Cluster) -> None:
    await console_sessions_contract(lambda ttl_s, idle_s: RedisConsoleSessions(cluster, ttl_s, idle_s))


async def test_login_failures_contract_on_redis(cluster: Cluster) -> None:
    await login_failures_contract(lambda limit, window_s: RedisLoginFailures(cluster, limit, window_s))


# -- what only a shared implementation must do --------------------------------------------------------

async def test_of_many_replicas_claiming_one_approval_exactly_one_gets_it(redis_url: str) -> None:
    replicas = [cluster_on(redis_url) for _ in range(4)]
    prefix = replicas[0].keys.prefix
    for other in replicas[1:]:
        other.keys.prefix = prefix  # four processes' connections to one fleet's keys
    try:
        seams = [RedisOpenApprovals(c) for c in replicas]
        granted = replace(soon(), state=ApprovalState.APPROVED)
        assert await seams[0].put(granted)
        claims = await asyncio.gather(*(seam.pop(granted.id) for seam in seams for _ in range(5)))
        assert [c for c in claims if c is not None] == [granted]
    finally:
        for c in replicas:
            await c.close()


async def test_a_stale_copy_is_never_opened_again_and_a_decision_never_revives_a_cancelled_request(
        cluster: Cluster) -> None:
    seam = RedisOpenApprovals(cluster)
    granted = replace(soon(), state=ApprovalState.APPROVED)
    assert await seam.put(granted)
    assert await seam.pop(granted.id) == granted  # used
    # A replica reloading the store's row before its "used" write landed: refused, the claim stands.
    assert not await seam.put(granted)
    assert await seam.get(granted.id) is None

    pending = soon()
    assert await seam.put(pending)
    assert await seam.pop(pending.id) is not None  # cancelled on another replica meanwhile
    decided = replace(pending, state=ApprovalState.APPROVED, decided_by="admin:alice")
    assert not await seam.put(decided, replacing=pending)
    assert await seam.get(pending.id) is None


async def test_entries_expire_with_their_request_and_nothing_secret_is_in_a_key(cluster: Cluster) -> None:
    seam = RedisOpenApprovals(cluster)
    long_gone = replace(soon(), created_at=time.time() - 1000, expires_at=time.time() - 400)  # past the grace
    assert await seam.put(long_gone)
    assert [a.id for a in await seam.values()] == []  # dropped at the next read, with no replica's help
    live = soon(30)
    assert await seam.put(live)
    ttl = await cluster.redis.pttl(cluster.keys.key("approvals", "open"))
    assert 0 < ttl <= (30 + 300) * 1000  # the keys live no longer than their latest request

    sessions = RedisConsoleSessions(cluster, ttl_s=3600, idle_s=120)
    session = await sessions.create(Approver(name="alice", actor="admin:alice"), time.time() + 60)
    assert await RedisLoginFailures(cluster).attempt("10.9.8.7") is not None
    keys = [k.decode() for k in await cluster.redis.keys(f"{cluster.keys.prefix}:*")]
    assert keys and not any(session.id in k or session.csrf in k or "10.9.8.7" in k for k in keys)
    [session_key] = [k for k in keys if ":console:session:" in k]
    assert 0 < await cluster.redis.pttl(session_key) <= 60_000  # the credential's expiry is the sooner end
    stored = await cluster.redis.hgetall(session_key)
    assert set(stored) == {b"person", b"csrf", b"expires_at", b"last_seen", b"flashes"}  # no credential


async def test_a_wake_up_reaches_a_waiter_in_another_process(redis_url: str) -> None:
    here, there = cluster_on(redis_url), cluster_on(redis_url)
    there.keys.prefix = here.keys.prefix
    waker, waiters = RedisApprovalWaiters(here), RedisApprovalWaiters(there)
    await waiters.start()
    try:
        await asyncio.sleep(0.2)  # subscribed
        waiting = asyncio.create_task(waiters.wait("apr_x", 30))
        await asyncio.sleep(0.05)
        waker.wake("apr_x")
        await asyncio.wait_for(waiting, 3)
    finally:
        await waiters.stop()
        await waker.stop()
        await here.close()
        await there.close()


async def test_after_a_lost_subscription_every_held_call_reads_its_request_again() -> None:
    redis = engines.start_redis()
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    cluster = cluster_on(redis.url)
    waiters = RedisApprovalWaiters(cluster)
    cluster.runners.append(waiters)
    await cluster.open()
    try:
        waiting = asyncio.create_task(waiters.wait("apr_held", 60))
        await asyncio.to_thread(redis.stop)  # a wake-up sent now would be lost
        await asyncio.sleep(0.5)
        assert not waiting.done()
        redis = await asyncio.to_thread(engines.start_redis, port)
        await asyncio.wait_for(waiting, 10)  # woken once subscribed again, long before its 60 s
    finally:
        await cluster.close()
        redis.stop()


# -- the approval service on Redis: several processes on one store ----------------------------------

class Replicas:
    """Approval services on one store and one Redis key space, as replicas of one fleet are."""

    def __init__(self, redis_url: str, store: Store, audit: AuditLog, registry: Registry) -> None:
        self.redis_url, self.store, self.audit, self.registry = redis_url, store, audit, registry
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"
        self.opened: list[tuple[ApprovalService, Cluster]] = []

    async def start(self, open_approvals: Callable[[RedisOpenApprovals], Any] = lambda seam: seam) -> ApprovalService:
        """`open_approvals`: wraps the replica's open set (a test pausing it at one step)."""
        cluster = cluster_on(self.redis_url)
        cluster.keys.prefix = self.prefix
        waiters = RedisApprovalWaiters(cluster)
        cluster.runners.append(waiters)  # as shared_backends does
        await cluster.open()
        service = ApprovalService(self.store, self.registry, self.audit, ApprovalSettings(),
                                  open_approvals=open_approvals(RedisOpenApprovals(cluster)), waiters=waiters)
        await service.open(background=False)
        self.opened.append((service, cluster))
        return service

    async def stop(self) -> None:
        for service, cluster in self.opened:
            await service.close()
            await cluster.close()


@pytest.fixture
async def replicas(redis_url: str, store: Store, audit: AuditLog) -> AsyncIterator[Replicas]:
    registry = await Registry.open(store, time.time)
    await registry.create(agent_spec("bot-a", "alice@example.com"), "admin:root", "test agent")
    started = Replicas(redis_url, store, audit, registry)
    yield started
    await started.stop()


async def test_a_starting_replica_keeps_the_fleets_held_requests_and_decides_them_for_the_holder(
        replicas: Replicas) -> None:
    a = await replicas.start()
    held = await a.request(replace(draft(FakeClock(time.time())), mode="hold"))
    a.hold_begins(held.id)
    waiting = asyncio.create_task(a.wait(held.id, 30))
    b = await replicas.start()  # a replica (re)starting: the open request is another replica's, not its own
    assert (await b.get(held.id)).state is ApprovalState.PENDING
    await b.decide(held.id, ALICE, approve=True)
    assert (await asyncio.wait_for(waiting, 3)).state is ApprovalState.APPROVED  # woken across processes
    assert await a.usable(*binding(held)) is not None and await b.usable(*binding(held)) is not None
    spent = await asyncio.gather(a.spend(held.id, "dec-a"), b.spend(held.id, "dec-b"), return_exceptions=True)
    assert len([s for s in spent if isinstance(s, Approval)]) == 1  # used once
    assert len([s for s in spent if isinstance(s, ApprovalError)]) == 1
    await a.hold_ends(held.id)


async def test_a_stale_approved_row_cannot_reopen_a_used_approval(replicas: Replicas, store: Store) -> None:
    a = await replicas.start()
    pending = await a.request(draft(FakeClock(time.time())))
    granted = await a.decide(pending.id, ALICE, approve=True)
    await a.spend(granted.id, "dec-used")
    await store.save_approval(granted)  # as if the "used" row had not landed when another replica started
    b = await replicas.start()
    assert await b.usable(*binding(granted)) is None and await a.usable(*binding(granted)) is None
    with pytest.raises(ApprovalError):
        await b.spend(granted.id, "dec-again")


async def test_without_redis_no_request_opens_and_no_approval_is_used(store: Store, audit: AuditLog) -> None:
    redis = engines.start_redis()
    registry = await Registry.open(store, time.time)
    await registry.create(agent_spec("bot-a", "alice@example.com"), "admin:root", "test agent")
    replicas = Replicas(redis.url, store, audit, registry)
    try:
        service = await replicas.start()
        granted = await service.decide((await service.request(draft(FakeClock(time.time())))).id, ALICE, True)
        await asyncio.to_thread(redis.stop)
        with pytest.raises(ApprovalError, match="shared state unavailable"):
            await service.request(draft(FakeClock(time.time()), digest="digest-2"))
        assert await service.usable(*binding(granted)) is None  # nothing is open when nothing can be seen
        with pytest.raises(ApprovalError):
            await service.spend(granted.id, "dec-while-down")
        assert (await store.get_approval(granted.id)).state is ApprovalState.APPROVED  # not used: still good
    finally:
        await replicas.stop()
        redis.stop()


# -- two real replicas --------------------------------------------------------------------------------

def fleet_config(workdir: Path) -> dict[str, Any]:
    return {
        "policies": str(cedar_copy(workdir / "cedar", **{"70-tests": EXTRA_POLICIES})),
        "admin": {"tokens": [
            {"name": "test-admin", "token": ADMIN_TOKEN},
            {"name": "tests@example.com", "token": OWNER_TOKEN, "role": "approver"},
            {"name": "tests@example.com", "token": BROWSER_OWNER_TOKEN, "role": "approver"},
        ]},
        "approvals": {"keepalive": "1s", "default_mode": "hold"},
    }


def start_approvals_fleet(workdir: Path, behaviour_http: int, redis_url: str, postgres_url: str) -> Fleet:
    manifest = behaviour_manifest("appr", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=10,
                                  tools=("echo", "log", "progress", "whoami", "slow"))  # all EXTRA_POLICIES name
    manifest["tools"][0]["risk"] = "privileged"  # echo: held by the shipped step-up policy
    manifest["tools"][1]["risk"] = "write"  # log: asks in pending mode (EXTRA_POLICIES), retried once approved
    return start_fleet(workdir, [manifest], redis_url=redis_url, postgres_url=postgres_url,
                       extra_config=fleet_config(workdir),
                       tokens={"agent-a": "token-agent-a", "agent-b": "token-agent-b"})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, redis_url: str,
          postgres_url: str) -> Iterator[Fleet]:
    fleet = start_approvals_fleet(tmp_path_factory.mktemp("approvals-fleet"), behaviour_http, redis_url, postgres_url)
    yield fleet
    fleet.stop()


def console_user(fleet: Fleet, replica: int) -> Browser:
    """A console user whose requests reach `replica`, as behind a load balancer (the Origin it sends stays
    the fleet's public URL); set `.http.base_url` to move it to another replica, cookies and all."""
    user = Browser(fleet[0])
    user.http.base_url = httpx2.URL(fleet[replica].base)
    return user


def upstream_ran(behaviour_log: Path, message: str) -> int:
    """How many times the upstream's log tool ran with this message (it records every run)."""
    if not behaviour_log.exists():
        return 0
    wanted = f"logged {message!r}"
    return sum(1 for line in behaviour_log.read_text().splitlines() if line and json.loads(line)["event"] == wanted)


@pytest.mark.serial  # woken within 0.9 s: run alone, not beside another xdist worker
async def test_a_call_held_on_b_completes_when_a_person_approves_on_a(fleet: Fleet) -> None:
    a, b = fleet[0], fleet[1]
    text = f"held-on-b-{time.time_ns()}"
    async with mcp_client(b.url, "token-agent-a", "legacy") as client:
        call = asyncio.create_task(client.call_tool("appr__echo", {"text": text}))
        approval = await wait_for_pending(a, "agent-a", "appr__echo")  # A sees B's request
        await asyncio.sleep(1.5)  # really held (keepalives flowing), not answered
        assert not call.done()
        started = time.monotonic()
        assert (await asyncio.to_thread(decide, a, approval["id"], "approve"))["state"] == "approved"
        result = await asyncio.wait_for(call, 15)
        woken_after = time.monotonic() - started
    assert not result.is_error and text_of(result) == text
    assert woken_after < 0.9  # the wake-up crossed replicas (not the 1 s keepalive re-read)
    for replica in (a, b):
        assert admin(replica, "GET", f"/{approval['id']}").json()["state"] == "used"


async def test_an_approved_call_raced_on_both_replicas_runs_upstream_once(fleet: Fleet, behaviour_log: Path) -> None:
    for round_ in range(3):
        message = f"raced-{round_}-{time.time_ns()}"
        arguments = {"message": message, "level": "info"}
        async with (mcp_client(fleet[0].url, "token-agent-b", "2026-07-28") as on_a,
                    mcp_client(fleet[1].url, "token-agent-b", "2026-07-28") as on_b):
            asked = await on_a.call_tool("appr__log", arguments)
            assert asked.is_error
            await asyncio.to_thread(decide, fleet[1], approval_meta(asked)["id"], "approve")
            outcomes = await asyncio.gather(on_a.call_tool("appr__log", arguments),
                                            on_b.call_tool("appr__log", arguments), return_exceptions=True)
        ran = [o for o in outcomes if not isinstance(o, BaseException) and not o.is_error]
        assert len(ran) == 1 and text_of(ran[0]) == "logged", outcomes
        assert upstream_ran(behaviour_log, message) == 1
    for stale in pending_for(fleet[0], "agent-b", "appr__log"):  # the losers' new requests
        decide(fleet[0], stale["id"], "deny")


def test_a_console_session_from_a_works_on_b_with_its_messages(fleet: Fleet) -> None:
    user = console_user(fleet, 0).signed_in(OWNER_TOKEN)
    try:
        user.http.base_url = httpx2.URL(fleet[1].base)
        inbox = user.get("/console")
        assert inbox.status_code == 200 and "Inbox" in inbox.text  # signed in on A, served by B
        logout = user.post("/console/logout", {})
        assert logout.status_code == 303
        user.http.base_url = httpx2.URL(fleet[0].base)
        assert user.get("/console").status_code == 303  # signed out on B: out on A too
    finally:
        user.close()


async def test_a_person_signed_in_on_b_approves_on_a_in_chromium_a_call_held_on_b(
        fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download
    text = f"approved-across-replicas-{time.time_ns()}"
    async with mcp_client(fleet[1].url, "token-agent-a", "legacy") as client:
        call = asyncio.create_task(client.call_tool("appr__echo", {"text": text}))
        approval = await wait_for_pending(fleet[0], "agent-a", "appr__echo")
        seen = await asyncio.to_thread(sign_in_on_one_approve_on_other, fleet[1].base, fleet[0].base,
                                       approval["id"], tmp_path / "chromium")
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error and text_of(result) == text
    assert seen["flash"] == f"You approved {approval['id']}." and seen["state"] in ("approved", "used")
    assert admin(fleet[1], "GET", f"/{approval['id']}").json()["decided_by"] == "admin:tests@example.com"


def sign_in_on_one_approve_on_other(sign_in_base: str, approve_base: str, approval_id: str,
                                    user_data_dir: Path) -> dict[str, str]:
    """Sign in on one replica's console, then approve on another's page with the same cookie."""
    driver = chromium(user_data_dir)
    try:
        wait = sign_in(driver, f"{sign_in_base}/console", BROWSER_OWNER_TOKEN)
        wait.until(lambda d: d.find_elements(By.ID, "pending-count"))
        driver.get(f"{approve_base}/console/approvals/{approval_id}")  # cookies are per host, not per port
        wait.until(lambda d: d.find_elements(By.ID, "approve"))
        driver.find_element(By.ID, "approve").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
        return {"flash": driver.find_element(By.CSS_SELECTOR, ".flash").text,
                "state": driver.find_element(By.ID, "state").text}
    finally:
        driver.quit()


async def test_failed_sign_ins_are_counted_across_replicas(fleet: Fleet, redis_url: str) -> None:
    users = [console_user(fleet, 0), console_user(fleet, 1)]
    try:
        for attempt in range(10):  # the limit is 10 a minute per address: 5 on each replica
            refused = users[attempt % 2].login("not-a-credential")
            assert refused.status_code in (401, 403), refused.text
        for user in users:
            blocked = user.login(OWNER_TOKEN)  # even the right credential waits now
            assert blocked.status_code == 429 and 1 <= int(blocked.headers["Retry-After"]) <= 61
    finally:
        for user in users:
            user.close()
        cluster = cluster_on(redis_url)
        cluster.keys.prefix = fleet.key_prefix
        await cluster.redis.delete(RedisLoginFailures(cluster).key("127.0.0.1"))  # the other tests sign in
        await cluster.close()


# -- faults: the fleet's own Redis stopped and started again ------------------------------------------

async def test_without_redis_nothing_is_approved_and_the_console_asks_to_sign_in_then_all_recovers(
        tmp_path: Path, behaviour_http: int, behaviour_log: Path, postgres_url: str) -> None:
    redis = engines.start_redis()
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    fleet = start_approvals_fleet(tmp_path, behaviour_http, redis.url, postgres_url)
    user = console_user(fleet, 0).signed_in(OWNER_TOKEN)
    try:
        async with mcp_client(fleet[1].url, "token-agent-b", "2026-07-28") as client:
            asked = await client.call_tool("appr__log", {"message": "asked before the outage", "level": "info"})
        open_before = admin(fleet[0], "GET", f"/{approval_meta(asked)['id']}").json()
        assert open_before["state"] == "pending"
        redis.stop()
        message = f"no-redis-{time.time_ns()}"
        async with mcp_client(fleet[1].url, "token-agent-b", "2026-07-28") as client:
            with pytest.raises(MCPError):  # no request can be opened: the call neither holds nor runs
                await client.call_tool("appr__echo", {"text": message})
            with pytest.raises(MCPError):
                await client.call_tool("appr__log", {"message": message, "level": "info"})
        assert upstream_ran(behaviour_log, message) == 0
        refused = admin(fleet[0], "POST", f"/{open_before['id']}/approve")  # open before Redis stopped: cannot be seen
        assert refused.status_code == 409 and "cannot be decided now" in refused.json()["error"]
        user.http.base_url = httpx2.URL(fleet[1].base)
        assert user.get("/console").status_code == 303  # the session cannot be read: sign in again
        assert user.login(OWNER_TOKEN).status_code in (429, 503)  # and that cannot succeed now

        redis = engines.start_redis(port)  # empty, on the same port; the gateways were not restarted
        await eventually(lambda: user.login(OWNER_TOKEN).status_code == 303)
        assert user.get("/console").status_code == 200
        async with mcp_client(fleet[1].url, "token-agent-a", "legacy") as client:
            call = asyncio.create_task(client.call_tool("appr__echo", {"text": message}))
            approval = await wait_for_pending(fleet[0], "agent-a", "appr__echo")
            await asyncio.to_thread(decide, fleet[0], approval["id"], "approve")
            result = await asyncio.wait_for(call, 15)
        assert not result.is_error and text_of(result) == message
    finally:
        user.close()
        fleet.stop()
        redis.stop()


async def eventually(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.2)


# -- a decision, a stop, a task's end: what the shared set did not agree to never stands ----------------

class Gate:
    """A point where a replica's work stops until the test releases it."""

    def __init__(self) -> None:
        self.reached, self.released = asyncio.Event(), asyncio.Event()

    async def stop_here(self) -> None:
        self.reached.set()
        await self.released.wait()


class GatedOpenApprovals:
    """A replica's real open set, stopped at the gates the test places: after its n-th read from now
    (`after_read`), or before its next claim (`before_claim`)."""

    def __init__(self, inner: RedisOpenApprovals) -> None:
        self.inner = inner
        self.reads = 0
        self.after_read: dict[int, Gate] = {}
        self.before_claim: Gate | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, approval_id: str) -> Approval | None:
        found = await self.inner.get(approval_id)
        self.reads += 1
        gate = self.after_read.pop(self.reads, None)
        if gate is not None:
            await gate.stop_here()
        return found

    async def pop(self, approval_id: str) -> Approval | None:
        gate, self.before_claim = self.before_claim, None
        if gate is not None:
            await gate.stop_here()
        return await self.inner.pop(approval_id)


async def lose_redis_data(replicas: Replicas) -> None:
    """Redis restarted without persistence (or evicted our keys): the fleet's approval keys are gone."""
    redis = replicas.opened[0][1].redis
    keys = [key async for key in redis.scan_iter(match=f"{replicas.prefix}:*")]
    if keys:
        await redis.delete(*keys)


async def test_a_store_writes_an_approval_conditionally_only_over_the_state_it_expects(store: Store) -> None:
    pending = soon()
    await store.save_approval(pending)
    approved = replace(pending, state=ApprovalState.APPROVED, decided_by="admin:alice")
    assert await store.save_approval_if(approved, "pending")
    assert not await store.save_approval_if(replace(pending, state=ApprovalState.DENIED), "pending")
    assert await store.get_approval(pending.id) == approved
    never_stored = replace(soon(), state=ApprovalState.APPROVED)
    assert not await store.save_approval_if(never_stored, "pending")  # no row: nothing is written
    assert await store.get_approval(never_stored.id) is None


async def test_a_denial_racing_an_approval_on_another_replica_is_never_saved_as_approved(
        replicas: Replicas, store: Store) -> None:
    gated: list[GatedOpenApprovals] = []

    def gate(seam: RedisOpenApprovals) -> GatedOpenApprovals:
        gated.append(GatedOpenApprovals(seam))
        return gated[-1]

    a, b = await replicas.start(gate), await replicas.start(gate)
    seam_a, seam_b = gated
    pending = await a.request(draft(FakeClock(time.time())))
    b_read = Gate()
    seam_b.reads, seam_b.after_read = 0, {2: b_read}  # decide reads twice: (expired?) then the request itself
    approving = asyncio.create_task(b.decide(pending.id, ALICE, approve=True))
    await asyncio.wait_for(b_read.reached.wait(), 5)  # B read it pending and goes on from there later
    a_claim = Gate()
    seam_a.before_claim = a_claim
    denying = asyncio.create_task(a.decide(pending.id, ALICE, approve=False))
    await asyncio.wait_for(a_claim.reached.wait(), 5)  # A's denial is in the shared set; A closes it next
    b_read.released.set()
    with pytest.raises(ApprovalError, match="already denied"):
        await asyncio.wait_for(approving, 5)
    a_claim.released.set()
    assert (await asyncio.wait_for(denying, 5)).state is ApprovalState.DENIED
    assert (await store.get_approval(pending.id)).state is ApprovalState.DENIED
    assert await a.usable(*binding(pending)) is None and await b.usable(*binding(pending)) is None

    await lose_redis_data(replicas)
    c = await replicas.start()  # restores the store's open rows into the emptied shared set
    assert await c.usable(*binding(pending)) is None
    assert (await store.get_approval(pending.id)).state is ApprovalState.DENIED


async def test_after_redis_lost_its_data_a_starting_replica_does_not_bring_a_grant_back(
        replicas: Replicas, store: Store) -> None:
    a = await replicas.start()
    granted = await a.decide((await a.request(draft(FakeClock(time.time())))).id, ALICE, approve=True)
    assert (await store.get_approval(granted.id)).state is ApprovalState.APPROVED
    await lose_redis_data(replicas)  # with it, possibly, a denial or a use of this grant on another replica
    b = await replicas.start()
    assert await b.usable(*binding(granted)) is None and await a.usable(*binding(granted)) is None
    with pytest.raises(ApprovalError):
        await a.spend(granted.id, "dec-after-loss")
    cancelled = await stored_state(store, granted.id, ApprovalState.CANCELLED)
    assert "shared state no longer held" in (cancelled.end_reason or "")
    pending = await a.request(draft(FakeClock(time.time()), digest="digest-after-loss"))
    assert (await b.get(pending.id)).state is ApprovalState.PENDING  # undecided requests open as before


async def test_an_approval_dies_with_a_stop_or_task_end_made_on_another_replica(
        replicas: Replicas, store: Store) -> None:
    a = await replicas.start()  # its registry and tasks see no change made elsewhere: no cancellation here
    elsewhere = await Registry.open(store, time.time)  # another replica's registry on the one store
    tasks_elsewhere = TaskService(store, elsewhere, catalog(), time.time)
    await tasks_elsewhere.open(background=False)
    try:
        task = await start_task(tasks_elsewhere)
        in_task = await a.decide((await a.request(draft(FakeClock(time.time()), task_id=task.id))).id, ALICE, True)
        no_task = await a.decide((await a.request(draft(FakeClock(time.time()), digest="d-2"))).id, ALICE, True)
        assert await a.usable(*binding(in_task)) is not None and await a.usable(*binding(no_task)) is not None
        await tasks_elsewhere.complete(task.id, "admin:root", "done")
        assert await a.usable(*binding(in_task)) is None  # its task ended
        await elsewhere.suspend("bot-a", "admin:root", "incident")
        await elsewhere.resume("bot-a", "admin:root", "all clear")
        assert await a.usable(*binding(no_task)) is None  # its agent stopped after it was asked for
        with pytest.raises(ApprovalError):
            await a.spend(no_task.id, "dec-after-resume")
        renewed = await a.request(draft(FakeClock(time.time()), digest="d-3"))  # asked for after the resume
        assert await a.usable(*binding(await a.decide(renewed.id, ALICE, True))) is not None
    finally:
        await tasks_elsewhere.close()


async def test_an_agent_suspended_during_a_redis_hiccup_cannot_use_its_old_approval_when_resumed(
        store: Store, audit: AuditLog, caplog: pytest.LogCaptureFixture) -> None:
    redis = engines.start_redis()
    registry = await Registry.open(store, time.time)
    await registry.create(agent_spec("bot-a", "alice@example.com"), "admin:root", "test agent")
    replicas = Replicas(redis.url, store, audit, registry)
    assert redis.process is not None
    try:
        service = await replicas.start()
        granted = await service.decide((await service.request(draft(FakeClock(time.time())))).id, ALICE, True)
        caplog.set_level(logging.WARNING)
        os.kill(redis.process.pid, signal.SIGSTOP)  # Redis hangs: its data stays, nobody gets an answer
        await registry.suspend("bot-a", "admin:root", "incident")  # cancels its approvals, in the background
        async with asyncio.timeout(10):  # that canceller could not read the open requests (2 s timeout)
            while True:
                if any(r.levelno >= logging.WARNING and r.name.startswith("narrowgate") for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
        os.kill(redis.process.pid, signal.SIGCONT)
        await registry.resume("bot-a", "admin:root", "all clear")
        assert await service.usable(*binding(granted)) is None
        with pytest.raises(ApprovalError):
            await service.spend(granted.id, "dec-after-hiccup")
        await stored_state(store, granted.id, ApprovalState.CANCELLED)
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
        await replicas.stop()
        redis.stop()
