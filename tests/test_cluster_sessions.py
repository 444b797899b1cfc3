"""2025-11-25 sessions across a fleet (issue 15, item 1): the Redis `agent_sessions` and `StreamLog` seams.

The seams' contracts on a real Redis; then real `narrowgate serve` replicas on one store and one Redis,
driven over raw HTTP and with the `mcp` SDK client: a session opened on one replica continues on
another (requests, its GET stream, Last-Event-ID replay, DELETE), survives the SIGKILL of the replica
that opened it, and is refused to anyone else exactly as on one replica. Last, the fault: Redis stopped
refuses new sessions and serves no old one, and recovers when it is back.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.cluster.connection import Cluster
from gateway.cluster.sessions import RedisSessions
from gateway.identity.principal import Principal
from gateway.settings.cluster import ClusterSettings
from tests.test_state_seams import LEGACY, agent_sessions_contract, stream_log_contract

# --- the seams' contracts on Redis ----------------------------------------------------------------


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[Cluster]:
    shared = Cluster(ClusterSettings(redis_url=redis_url, key_prefix=f"test-{uuid.uuid4().hex[:12]}"))
    await shared.open()
    yield shared
    await shared.close()


async def test_agent_sessions_contract_on_redis(cluster: Cluster) -> None:
    sessions = RedisSessions(cluster, 3600, max_per_agent=2, max_total=3)
    try:
        await agent_sessions_contract(sessions)
    finally:
        sessions.release_local()


async def test_stream_log_contract_on_redis(cluster: Cluster) -> None:
    sessions = RedisSessions(cluster, 3600)
    try:
        session = await sessions.create(Principal("a", "static-token"), LEGACY, {}, None)
        await stream_log_contract(session.new_log("p1"))
    finally:
        sessions.release_local()
