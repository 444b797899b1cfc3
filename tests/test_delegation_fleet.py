"""Delegation in a fleet: two real replicas on one PostgreSQL store and one Redis.

A child task started on one replica is a child on the other too, and ending its parent (or suspending an
agent of the chain) on one replica ends every descendant on the other, through the cluster bus.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from secrets import token_hex
from typing import Any

import httpx2
import pytest

from tests.support.fleet import Fleet, start_fleet
from tests.support.identity_provider import TestIdentityProvider, generate_key
from tests.support.processes import Gateway, behaviour_manifest
from tests.test_cluster_bus import admin, echo_runs
from tests.test_tasks_e2e import ACCESS_TOKEN_TYPE, EXCHANGE, JWT_TYPE

AUDIENCE = "https://delegation-fleet.example/mcp"  # the workload tokens' audience, the same on both replicas
DELEGATION_AUDIENCE = "https://delegation-fleet.example/oauth/delegate"  # identity.delegation_audience
AGENTS = ("lead", "hand", "aide")
BOUND_S = 5.0  # generous on a loaded machine; the bus normally takes well under a second


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdentityProvider]:
    provider = TestIdentityProvider(AUDIENCE, keys=[generate_key("ES256")])
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, redis_url: str, postgres_url: str,
          idp: TestIdentityProvider) -> Iterator[Fleet]:
    manifests = [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=5)]
    config = {"identity": {"audience": AUDIENCE, "delegation_audience": DELEGATION_AUDIENCE,
                           "oidc_issuers": [{"issuer": idp.issuer}]}}
    started = start_fleet(tmp_path_factory.mktemp("delegation-fleet"), manifests, redis_url=redis_url,
                          postgres_url=postgres_url, extra_config=config)
    try:
        for agent_id in AGENTS:
            admin(started[0], "POST", "/admin/v1/agents", {
                "id": agent_id, "owner": f"{agent_id}@example.com", "purpose": "delegation fleet", "state": "active",
                "identities": [{"kind": "oidc", "issuer": idp.issuer, "subject": agent_id, "claims": {}}],
                "entitlement": {"servers": ["behav"], "require_task": True}}, status=201)
        yield started
    finally:
        started.stop()


def token_request(gateway: Gateway, form: Callable[[], dict[str, str]]) -> dict[str, Any]:
    """A task token from `gateway`'s token endpoint, retried while a task or agent made on the other replica
    is not known here yet (the bus brings it). `form` makes each attempt's form: a refused attempt may have
    used up its single-use actor token, so each attempt mints its own."""
    deadline = time.monotonic() + BOUND_S
    while True:
        response = httpx2.post(f"{gateway.base}/oauth/token", data=form(), timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer
        time.sleep(0.1)


def root_task(gateway: Gateway, idp: TestIdentityProvider, agent_id: str, **extra: str) -> dict[str, Any]:
    return token_request(gateway, lambda: {"grant_type": EXCHANGE, "subject_token": idp.mint(sub=agent_id),
                                           "subject_token_type": JWT_TYPE, "scope": "behav__echo",
                                           "purpose": "delegation fleet", **extra})


def delegate(gateway: Gateway, idp: TestIdentityProvider, parent: dict[str, Any], agent_id: str,
             **extra: str) -> dict[str, Any]:
    return token_request(gateway, lambda: delegation_form(parent, actor_token(idp, agent_id), **extra))


def delegation_form(parent: dict[str, Any], actor: str, **extra: str) -> dict[str, str]:
    return {"grant_type": EXCHANGE, "subject_token": parent["access_token"], "subject_token_type": ACCESS_TOKEN_TYPE,
            "actor_token": actor, "actor_token_type": JWT_TYPE, "scope": "behav__echo",
            "purpose": "delegation fleet", **extra}


def actor_token(idp: TestIdentityProvider, agent_id: str) -> str:
    return idp.mint(sub=agent_id, aud=DELEGATION_AUDIENCE, jti=token_hex(12))


async def runs_on(gateway: Gateway, token: str) -> bool:
    async with httpx2.AsyncClient(timeout=10) as http:
        return await echo_runs(http, gateway, token)


async def refused_on(gateway: Gateway, token: str) -> bool:
    return not await runs_on(gateway, token)


async def eventually(condition: Callable[[], bool | Awaitable[bool]]) -> None:
    deadline = time.monotonic() + BOUND_S
    while True:
        value = condition()
        if await value if inspect.isawaitable(value) else value:
            return
        assert time.monotonic() < deadline, "the other replica never followed"
        await asyncio.sleep(0.05)


def revoked_on(gateway: Gateway) -> set[str]:
    return {entry["id"] for entry in httpx2.get(f"{gateway.base}/oauth/revocations", timeout=5).json()["tasks"]}


async def test_revoking_a_parent_on_one_replica_ends_its_descendants_on_the_other(
    fleet: Fleet, idp: TestIdentityProvider,
) -> None:
    a, b = fleet[0], fleet[1]
    root = root_task(a, idp, "lead")
    child = delegate(b, idp, root, "hand")  # the parent started on A, delegated on B
    grandchild = delegate(a, idp, child, "aide")
    for token in (child["access_token"], grandchild["access_token"]):
        await eventually(lambda token=token: runs_on(b, token))
    admin(a, "POST", f"/admin/v1/tasks/{root['task_id']}/revoke", {"reason": "fleet cascade"})
    for token in (child["access_token"], grandchild["access_token"]):
        await eventually(lambda token=token: refused_on(b, token))
    family = {root["task_id"], child["task_id"], grandchild["task_id"]}
    await eventually(lambda: family <= revoked_on(b))
    task = admin(b, "GET", f"/admin/v1/tasks/{grandchild['task_id']}")
    assert task["state"] == "revoked" and "fleet cascade" in task["end_reason"], task
    assert [link["agent_id"] for link in task["chain"]] == ["lead", "hand", "aide"]


async def test_suspending_a_chain_agent_on_one_replica_ends_its_descendants_on_the_other(
    fleet: Fleet, idp: TestIdentityProvider,
) -> None:
    a, b = fleet[0], fleet[1]
    root = root_task(a, idp, "aide")
    child = delegate(a, idp, root, "lead")
    grandchild = delegate(a, idp, child, "hand")
    await eventually(lambda: runs_on(a, grandchild["access_token"]))
    admin(b, "POST", "/admin/v1/agents/lead/suspend", {"reason": "fleet suspension"})
    try:
        await eventually(lambda: refused_on(a, grandchild["access_token"]))
        assert await runs_on(a, root["access_token"])  # above the suspended agent: goes on
        await eventually(lambda: grandchild["task_id"] in revoked_on(a))
    finally:
        admin(b, "POST", "/admin/v1/agents/lead/resume", {"reason": "delegation fleet"})



async def test_an_actor_token_used_on_one_replica_is_refused_on_the_other(
    fleet: Fleet, idp: TestIdentityProvider,
) -> None:
    a, b = fleet[0], fleet[1]
    root = root_task(a, idp, "lead")
    token = actor_token(idp, "hand")
    first = httpx2.post(f"{a.base}/oauth/token", data=delegation_form(root, token), timeout=10)
    assert first.status_code == 200, first.text  # the root and both agents are a's own: no waiting
    replayed = httpx2.post(f"{b.base}/oauth/token", data=delegation_form(root, token), timeout=10)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant", replayed.text
    assert "used already" in replayed.json()["error_description"]


async def test_a_childs_budget_reserved_on_one_replica_counts_against_the_parent_on_the_other(
    fleet: Fleet, idp: TestIdentityProvider,
) -> None:
    a, b = fleet[0], fleet[1]
    root = root_task(a, idp, "lead", budget="3")
    delegate(b, idp, root, "hand", budget="2")  # reserved in the fleet's shared count of the root task
    assert await runs_on(a, root["access_token"])  # 2 reserved + 1 call = the budget of 3
    assert await refused_on(a, root["access_token"])
    assert await refused_on(b, root["access_token"])
