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
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.approvals.model import Approval, ApprovalState, Approver
from gateway.cluster.approvals import RedisApprovalWaiters, RedisOpenApprovals
from gateway.cluster.connection import Cluster
from gateway.cluster.console import RedisConsoleSessions, RedisLoginFailures
from gateway.settings.cluster import ClusterSettings
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
    await waiters.open()
    try:
        await approval_waiters_contract(lambda: waiters)
    finally:
        await waiters.close()


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
    await RedisLoginFailures(cluster).failed("10.9.8.7")
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
    await waiters.open()
    try:
        await asyncio.sleep(0.2)  # subscribed
        waiting = asyncio.create_task(waiters.wait("apr_x", 30))
        await asyncio.sleep(0.05)
        waker.wake("apr_x")
        await asyncio.wait_for(waiting, 3)
    finally:
        await waiters.close()
        await waker.close()
        await here.close()
        await there.close()
