"""Agents delegating to agents, end to end: RFC 8693 token exchange with an actor token.

A real gateway subprocess trusts the real test IdP; agents are registered through the admin API. The
delegating agent sends its task token (`subject_token`) and the other agent's real signed workload token
(`actor_token`) to the real token endpoint over HTTP; the child's task token drives the real `mcp` SDK
client; the verifying upstream (`examples/verifying_upstream/server.py`, `gateway.verifier`) checks each
per-call token and records its claims, whose nested `act` the tests read. A policy in the gateway's set
reads `context.task.chain` and `context.task.depth`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from secrets import token_hex
from typing import Any

import httpx2
import pytest

from gateway.oauth.delegation import MAX_ACTOR_TOKEN_LIFETIME_S
from tests.support.clients import ERAS, mcp_client
from tests.support.identity_provider import TestIdentityProvider, generate_key
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, cedar_copy, free_port, stop
from tests.test_shutdown import audit_records
from tests.test_tasks_e2e import (
    ACCESS_TOKEN_TYPE,
    ASSERTION_TYPE,
    BUILTINS,
    EXCHANGE,
    JWT_TYPE,
    Deployment,
    TaskGrant,
    accepted_record,
    assert_oauth_error,
    assert_refused_at_the_door,
    call_refused,
    granted,
    marker,
    post_initialize,
    start_verifying_upstream,
    tool_names,
    unverified_claims,
)

PLANNER, WORKER, HELPER, FOURTH, DORMANT, MIDDLE = "planner", "worker", "helper", "fourth", "dormant", "middle"
DIRECT = "direct"  # needs no task on /mcp: its workload token alone opens a session
OWNERS = {PLANNER: "plans@example.com", WORKER: "works@example.com", HELPER: "helps@example.com",
          FOURTH: "fourth@example.com", DORMANT: "dormant@example.com", MIDDLE: "middle@example.com",
          DIRECT: "direct@example.com"}
ALL_TOOLS = "vrf__echo vrf__add vrf__received"
# Policies see the chain: a task delegated twice under the planner may not read what the upstream received.
CHAIN_POLICY = f"""\
@id("delegation-test-chain")
@reason("delegated twice under the planner: not for a grandchild")
forbid (principal, action == Action::"vrf__received", resource)
when {{ context.task.depth >= 2
        && context.task.chain.contains({{"agent": "{PLANNER}", "owner": "{OWNERS[PLANNER]}"}}) }};

@id("delegation-test-order")
@reason("handed on directly from the planner's own root task: no adding")
forbid (principal, action == Action::"vrf__add", resource)
when {{ context.task.root == {{"agent": "{PLANNER}", "owner": "{OWNERS[PLANNER]}"}}
        && context.task.delegator.agent == "{PLANNER}" }};
"""


def subject(agent_id: str) -> str:
    return f"repo:acme/{agent_id}:ref:refs/heads/main"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("delegation-e2e")
    gateway_port, verifying_port = free_port(), free_port()
    base = f"http://127.0.0.1:{gateway_port}"
    idp = TestIdentityProvider(f"{base}/mcp", keys=[generate_key("ES256")])
    verifying_url = f"http://127.0.0.1:{verifying_port}/mcp"
    record = workdir / "verifying-upstream.jsonl"
    upstream = start_verifying_upstream(base, verifying_port, record)
    manifest = {"id": "vrf", "owner": "tools@example.com", "description": "verifies every per-call token",
                "transport": {"url": verifying_url}, "timeout_s": 10,
                "tools": [{"name": name, "risk": "read"} for name in ("echo", "add", "received")]}
    gateway = Gateway(workdir, [manifest], port=gateway_port, env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100"})
    gateway.extra_config = {
        "identity": {"audience": f"{base}/mcp", "clock_skew_s": 5, "oidc_issuers": [{"issuer": idp.issuer}]},
        "policies": str(cedar_copy(workdir / "cedar", **{"70-delegation": CHAIN_POLICY})),
    }
    try:
        gateway.start()
        deployment = Deployment(gateway, idp, verifying_url, "", record)
        for agent_id in (PLANNER, WORKER, FOURTH, DORMANT, MIDDLE):
            register(deployment, agent_id, {"servers": ["vrf"]})
        register(deployment, HELPER, {"tools": ["vrf__echo", "vrf__received"]})  # no vrf__add
        register(deployment, DIRECT, {"servers": ["vrf"]}, require_task=False)
        admin(deployment, "POST", f"/admin/v1/agents/{DORMANT}/suspend", {"reason": "delegation e2e"})
        yield deployment
    finally:
        gateway.stop()
        stop(upstream)
        idp.close()


def register(deployment: Deployment, agent_id: str, entitlement: dict[str, Any], require_task: bool = True) -> None:
    body = {"id": agent_id, "owner": OWNERS[agent_id], "purpose": f"delegation e2e: {agent_id}", "state": "active",
            "identities": [{"kind": "oidc", "issuer": deployment.idp.issuer, "subject": subject(agent_id),
                            "claims": {}}],
            "entitlement": {**entitlement, "require_task": require_task}}
    admin(deployment, "POST", "/admin/v1/agents", body, status=201)


def admin(deployment: Deployment, method: str, path: str, body: dict[str, Any] | None = None,
          status: int = 200) -> dict[str, Any]:
    response = httpx2.request(method, f"{deployment.base}{path}", json=body,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


def workload(deployment: Deployment, agent_id: str) -> str:
    return deployment.idp.mint(sub=subject(agent_id))


def actor(deployment: Deployment, agent_id: str, **claims: Any) -> str:
    """The agent's workload token for one delegation: the delegation audience and a fresh jti."""
    return deployment.idp.mint({"aud": delegation_audience(deployment), "jti": secrets_hex(), **claims},
                               sub=subject(agent_id))


def delegation_audience(deployment: Deployment) -> str:
    return f"{deployment.base}/oauth/delegate"  # identity.delegation_audience's default


def secrets_hex() -> str:
    return token_hex(12)


def root_task(deployment: Deployment, agent_id: str = PLANNER, scope: str = ALL_TOOLS, **extra: str) -> TaskGrant:
    return granted(httpx2.post(deployment.token_url, data={
        "grant_type": EXCHANGE, "subject_token": workload(deployment, agent_id), "subject_token_type": JWT_TYPE,
        "scope": scope, "purpose": "delegation e2e: root", "deadline": "600", **extra}))


def delegate(deployment: Deployment, parent: TaskGrant, actor_token: str, scope: str,
             **extra: str) -> httpx2.Response:
    """The delegating agent's task token and the other agent's workload token in, a child task token out."""
    form = {"grant_type": EXCHANGE, "subject_token": parent.token, "subject_token_type": ACCESS_TOKEN_TYPE,
            "actor_token": actor_token, "actor_token_type": JWT_TYPE, "scope": scope,
            "purpose": "delegation e2e: child", **extra}
    return httpx2.post(deployment.token_url, data={k: v for k, v in form.items() if v is not None})


def refused(response: httpx2.Response, error: str, *fragments: str, secrets: tuple[str, ...] = ()) -> str:
    """An RFC 6749 refusal that says why and prints no token."""
    status = 503 if error == "temporarily_unavailable" else 400
    description = assert_oauth_error(response, status, error, *fragments)
    assert response.headers.get("cache-control") == "no-store"
    for secret in secrets:
        assert secret.rpartition(".")[2] not in response.text
    return description


def identity(deployment: Deployment, agent_id: str) -> dict[str, str]:
    return {"sub": subject(agent_id), "iss": deployment.idp.issuer}


async def echo(deployment: Deployment, grant: TaskGrant, text: str) -> dict[str, Any]:
    """Call vrf__echo with the grant's token through the real SDK client; the upstream's verified claims."""
    async with mcp_client(deployment.gateway.url, grant.token, ERAS[1]) as client:
        result = await client.call_tool("vrf__echo", {"text": text})
    assert not result.is_error, result
    claims: dict[str, Any] = accepted_record(deployment, text)["claims"]
    return claims


def three_deep(deployment: Deployment) -> tuple[TaskGrant, TaskGrant, TaskGrant]:
    """planner's root task -> worker's child -> helper's grandchild."""
    root = root_task(deployment, budget="20")
    child = granted(delegate(deployment, root, actor(deployment, WORKER), "vrf__echo vrf__received",
                             deadline="300", budget="6"))
    grandchild = granted(delegate(deployment, child, actor(deployment, HELPER), "vrf__echo vrf__received",
                                  deadline="120", budget="2"))
    return root, child, grandchild


# --- the whole flow ------------------------------------------------------------------------------------


async def test_a_delegated_task_calls_upstream_with_the_nested_act_chain_within_its_parent(
    deployment: Deployment, receiver: OtlpReceiver,
) -> None:
    root, child, grandchild = three_deep(deployment)
    assert child.scope == grandchild.scope == "vrf__echo vrf__received"
    # The child's task token: for the worker, acting now; the planner nested as the prior actor (RFC 8693 4.1).
    child_claims = unverified_claims(child.token)
    assert child_claims["sub"] == WORKER and child_claims["task_id"] == child.task_id
    assert child_claims["act"] == {**identity(deployment, WORKER), "act": identity(deployment, PLANNER)}
    nested = {**identity(deployment, HELPER), "act": {**identity(deployment, WORKER),
                                                     "act": identity(deployment, PLANNER)}}
    assert unverified_claims(grandchild.token)["act"] == nested

    # Each per-call upstream token carries the same chain, as the verifying upstream accepted it.
    async with mcp_client(deployment.gateway.url, child.token, ERAS[0]) as client:
        assert await tool_names(client) == {"vrf__echo", "vrf__received", *BUILTINS}
        assert "not part of task" in await call_refused(client, "vrf__add", {"a": 1, "b": 2})
    upstream = await echo(deployment, child, marker("child"))
    assert upstream["sub"] == WORKER and upstream["task_id"] == child.task_id
    assert upstream["act"] == child_claims["act"]
    upstream = await echo(deployment, grandchild, marker("grandchild"))
    assert upstream["sub"] == HELPER and upstream["act"] == nested

    # Policies see the chain and the depth: the grandchild is refused what the child and the root may do.
    async with mcp_client(deployment.gateway.url, grandchild.token, ERAS[1]) as client:
        assert "delegated twice under the planner" in await call_refused(client, "vrf__received", {})
    async with mcp_client(deployment.gateway.url, child.token, ERAS[1]) as client:
        assert not (await client.call_tool("vrf__received", {})).is_error

    # The trace: the request span of the grandchild's call names the chain.
    def chained(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.attributes.get("narrowgate.task.id") == grandchild.task_id
                and "narrowgate.task.chain" in s.attributes]

    spans = chained(receiver.wait_for_spans(lambda spans: bool(chained(spans))))
    assert {tuple(s.attributes["narrowgate.task.chain"]) for s in spans} == {(PLANNER, WORKER, HELPER)}

    # The records: parent and chain in the admin API; the child's budget reserved out of the parent's.
    record = admin(deployment, "GET", f"/admin/v1/tasks/{grandchild.task_id}")
    assert record["parent_id"] == child.task_id
    assert record["chain"] == [{"agent_id": PLANNER, "owner": OWNERS[PLANNER], "task_id": root.task_id},
                               {"agent_id": WORKER, "owner": OWNERS[WORKER], "task_id": child.task_id},
                               {"agent_id": HELPER, "owner": OWNERS[HELPER], "task_id": grandchild.task_id}]
    shown = subprocess.run([str(NARROWGATE), "tasks", "show", grandchild.task_id], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "NARROWGATE_URL": deployment.base,
                                            "NARROWGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout.partition("\nhistory:")[0])["chain"] == record["chain"]  # the CLI's view
    assert admin(deployment, "GET", f"/admin/v1/tasks/{root.task_id}")["calls_made"] == 6  # reserved for the child
    assert admin(deployment, "GET", f"/admin/v1/tasks/{child.task_id}")["calls_made"] == 2 + 2  # reserved + 2 calls

    # Ending the root ends every descendant at once, saying why; their tokens are refused and deny-listed.
    admin(deployment, "POST", f"/admin/v1/tasks/{root.task_id}/revoke", {"reason": "plan abandoned"})
    for grant in (child, grandchild):
        assert_refused_at_the_door(deployment, grant.token, "has ended")
        task = admin(deployment, "GET", f"/admin/v1/tasks/{grant.task_id}")
        assert task["state"] == "revoked", task
        assert "plan abandoned" in task["end_reason"] and "parent task" in task["end_reason"]
    listed = {entry["id"] for entry in httpx2.get(deployment.revocations_url).json()["tasks"]}
    assert {root.task_id, child.task_id, grandchild.task_id} <= listed

    # The audit log records the chain on decisions and task starts, and each descendant's end with its reason.
    records = await eventually_audited(deployment, grandchild.task_id, "revoked")
    decisions = [r for r in records if r["kind"] == "decision" and r["task_id"] == grandchild.task_id]
    assert decisions and all(r["detail"]["chain"] == [PLANNER, WORKER, HELPER] for r in decisions)
    start = next(r for r in records if r["kind"] == "task" and r["action"] == "start"
                 and r["task_id"] == child.task_id)
    assert start["detail"]["parent_id"] == root.task_id and start["detail"]["chain"] == [PLANNER, WORKER]
    ended = next(r for r in records if r["kind"] == "task" and r["action"] == "revoked"
                 and r["task_id"] == grandchild.task_id)
    assert "plan abandoned" in ended["detail"]["reason"]


async def eventually_audited(deployment: Deployment, task_id: str, action: str) -> list[dict[str, Any]]:
    """The audit log once it holds the record of `task_id`'s `action` (the writer batches); fails if it never does."""
    deadline = time.monotonic() + 20
    while True:
        records = audit_records(deployment.gateway.workdir, deployment.gateway.workdir / "gateway.yaml")
        if any(r["task_id"] == task_id and r["action"] == action for r in records):
            return records
        assert time.monotonic() < deadline, f"no {action!r} record of task {task_id} in the audit log"
        await asyncio.sleep(0.2)


# --- bad input -------------------------------------------------------------------------------------------


def test_a_child_can_never_exceed_its_parent(deployment: Deployment) -> None:
    root = root_task(deployment, scope="vrf__echo vrf__received", budget="5")
    secrets = (root.token,)
    worker = lambda: actor(deployment, WORKER)  # noqa: E731 - a fresh actor token each time: a refused request uses one up
    refused(delegate(deployment, root, worker(), "vrf__echo vrf__add", budget="1"), "invalid_scope",
            "not granted to the parent task", "vrf__add", secrets=secrets)
    refused(delegate(deployment, root, worker(), "vrf__echo", deadline="3600", budget="1"), "invalid_request",
            "cannot outlive", secrets=secrets)
    refused(delegate(deployment, root, worker(), "vrf__echo", budget="6"), "invalid_request",
            "budget refused", "5 call(s) left", secrets=secrets)
    refused(delegate(deployment, root, worker(), "vrf__echo"), "invalid_request", "budget required", secrets=secrets)
    # Within the parent but outside the child agent's own entitlement.
    bigger = root_task(deployment)
    refused(delegate(deployment, bigger, actor(deployment, HELPER), "vrf__add"), "invalid_scope",
            f"outside agent {HELPER!r}'s entitlement", secrets=(bigger.token,))
    # Two reservations cannot take more than the parent has: 3 + 3 > 5.
    granted(delegate(deployment, root, worker(), "vrf__echo", budget="3"))
    refused(delegate(deployment, root, actor(deployment, MIDDLE), "vrf__echo", budget="3"), "invalid_request",
            "budget refused", secrets=secrets)


def test_loops_too_deep_chains_and_bad_actors_are_refused(deployment: Deployment) -> None:
    root, child, grandchild = three_deep(deployment)
    refused(delegate(deployment, child, actor(deployment, PLANNER), "vrf__echo", budget="1"), "invalid_grant",
            "delegation loop", f"{PLANNER!r} is already in the chain", secrets=(child.token,))
    refused(delegate(deployment, root, actor(deployment, PLANNER), "vrf__echo", budget="1"), "invalid_grant",
            "delegation loop", secrets=(root.token,))
    refused(delegate(deployment, grandchild, actor(deployment, FOURTH), "vrf__echo", budget="1"),
            "invalid_grant", "too deep", "tokens.max_delegation_depth", secrets=(grandchild.token,))
    dormant = actor(deployment, DORMANT)
    refused(delegate(deployment, root, dormant, "vrf__echo", budget="1"), "invalid_grant",
            "actor_token refused", "suspended", secrets=(root.token, dormant))
    stranger = deployment.idp.mint(sub="repo:acme/nobody:ref:refs/heads/main", aud=delegation_audience(deployment),
                                   jti=secrets_hex())
    refused(delegate(deployment, root, stranger, "vrf__echo", budget="1"), "invalid_grant",
            "actor_token refused", secrets=(stranger,))
    foreign = deployment.idp.mint(sub=subject(WORKER), aud="https://elsewhere.example/mcp")
    refused(delegate(deployment, root, foreign, "vrf__echo", budget="1"), "invalid_grant",
            "actor_token refused", "audience", secrets=(foreign,))
    refused(delegate(deployment, root, actor(deployment, WORKER), "vrf__echo", budget="1",
                     actor_token_type="urn:ietf:params:oauth:token-type:saml2"), "invalid_request",
            "actor_token_type", secrets=(root.token,))
    refused(delegate(deployment, root, actor(deployment, WORKER), "vrf__echo", budget="1",
                     actor_token_type=None), "invalid_request", "actor_token and actor_token_type are required")
    # The subject token must be the delegating agent's task token, not a workload token.
    planner = workload(deployment, PLANNER)
    form = {"grant_type": EXCHANGE, "subject_token": planner, "subject_token_type": JWT_TYPE,
            "actor_token": actor(deployment, WORKER), "actor_token_type": JWT_TYPE, "scope": "vrf__echo",
            "purpose": "delegation e2e"}
    refused(httpx2.post(deployment.token_url, data=form), "invalid_grant", "send your task token",
            secrets=(planner,))


async def test_an_actor_token_is_good_for_one_delegation_and_nothing_else(deployment: Deployment) -> None:
    root = root_task(deployment)
    token = actor(deployment, DIRECT)
    # Not a login for the other agent: refused on /mcp (an agent needing no task), as a subject token and as a
    # client assertion, each for its audience.
    assert_refused_at_the_door(deployment, token, "audience")
    assert post_initialize(deployment, workload(deployment, DIRECT)).status_code == 200  # its own token opens it
    refused(httpx2.post(deployment.token_url, data={
        "grant_type": EXCHANGE, "subject_token": token, "subject_token_type": JWT_TYPE, "scope": "vrf__echo",
        "purpose": "an actor token as a login"}), "invalid_grant", "subject_token refused", "audience",
        secrets=(token,))
    assertion = httpx2.post(deployment.token_url, data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": token,
        "scope": "vrf__echo", "purpose": "an actor token as a client assertion"})
    assert_oauth_error(assertion, 401, "invalid_client", "client_assertion refused", "audience")
    # And a token for /mcp is no actor token.
    login = workload(deployment, WORKER)
    refused(delegate(deployment, root, login, "vrf__echo"), "invalid_grant", "actor_token refused", "audience",
            secrets=(login,))
    # Once for a delegation, then never again, whatever the parent.
    granted(delegate(deployment, root, token, "vrf__echo"))
    refused(delegate(deployment, root, token, "vrf__echo"), "invalid_grant", "actor_token refused", "used already",
            secrets=(token, root.token))
    refused(delegate(deployment, root_task(deployment), token, "vrf__echo"), "invalid_grant", "used already",
            secrets=(token,))
    # A token that cannot be told apart from another (no jti) cannot be held to one use: refused.
    anonymous = actor(deployment, WORKER, jti=None)
    refused(delegate(deployment, root, anonymous, "vrf__echo"), "invalid_grant", "no jti", secrets=(anonymous,))


def test_a_token_naming_the_delegation_audience_and_another_is_good_for_neither(deployment: Deployment) -> None:
    """JWT audience matching takes a token if ANY of its audiences matches: one for both /mcp (or the token
    endpoint) and the delegation audience would be a login and an actor token at once. The actor token must
    name the delegation audience alone; every other door refuses a token that names it."""
    root = root_task(deployment)
    both = [f"{deployment.base}/mcp", delegation_audience(deployment)]
    token = actor(deployment, DIRECT, aud=both)
    refused(delegate(deployment, root, token, "vrf__echo"), "invalid_grant", "actor_token refused",
            "delegation audience alone", secrets=(token, root.token))
    assert_refused_at_the_door(deployment, actor(deployment, DIRECT, aud=both), "delegation audience")
    refused(httpx2.post(deployment.token_url, data={
        "grant_type": EXCHANGE, "subject_token": actor(deployment, DIRECT, aud=both), "subject_token_type": JWT_TYPE,
        "scope": "vrf__echo", "purpose": "a two-audience token as a login"}), "invalid_grant",
        "subject_token refused", "delegation audience")
    assertion = httpx2.post(deployment.token_url, data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "scope": "vrf__echo",
        "client_assertion": actor(deployment, DIRECT, aud=[deployment.token_url, delegation_audience(deployment)]),
        "purpose": "a two-audience token as a client assertion"})
    assert_oauth_error(assertion, 401, "invalid_client", "client_assertion refused", "delegation audience")
    # One audience each: both still work.
    assert post_initialize(deployment, workload(deployment, DIRECT)).status_code == 200
    granted(delegate(deployment, root, actor(deployment, WORKER, aud=[delegation_audience(deployment)]), "vrf__echo"))


def test_an_actor_token_is_refused_from_its_exp_and_when_it_lives_too_long(deployment: Deployment) -> None:
    """The verifier allows identity.clock_skew_s (5 s here) past `exp`; a single-use actor token gets no such
    grace, or a replica could take it again once its used jti is dropped at `exp`. And one valid for hours
    would keep its used jti in the store for as long: refused."""
    root = root_task(deployment)
    late = actor(deployment, WORKER, exp=int(time.time()) - 1)  # within the skew: the verifier takes it
    refused(delegate(deployment, root, late, "vrf__echo"), "invalid_grant", "actor_token refused", "expired",
            secrets=(late, root.token))
    lasting = actor(deployment, WORKER, exp=int(time.time()) + MAX_ACTOR_TOKEN_LIFETIME_S + 600)
    refused(delegate(deployment, root, lasting, "vrf__echo"), "invalid_grant", "actor_token refused",
            "valid for more than 120 minutes", secrets=(lasting, root.token))
    granted(delegate(deployment, root, actor(deployment, WORKER, exp=int(time.time()) + 3600), "vrf__echo"))


async def test_policies_see_the_chains_order_its_root_and_who_delegated(deployment: Deployment) -> None:
    """planner -> middle and middle -> planner hold the same Set of agents; `root` and `delegator` tell them apart."""
    planners = root_task(deployment)
    middles = root_task(deployment, MIDDLE)
    under_planner = granted(delegate(deployment, planners, actor(deployment, MIDDLE), "vrf__add"))
    under_middle = granted(delegate(deployment, middles, actor(deployment, PLANNER), "vrf__add"))
    async with mcp_client(deployment.gateway.url, under_planner.token, ERAS[1]) as client:
        await tool_names(client)
        assert "no adding" in await call_refused(client, "vrf__add", {"a": 1, "b": 2})
    for allowed in (under_middle, planners):  # the same agents the other way round; the planner's root itself
        async with mcp_client(deployment.gateway.url, allowed.token, ERAS[1]) as client:
            await tool_names(client)
            assert not (await client.call_tool("vrf__add", {"a": 1, "b": 2})).is_error


async def test_a_parents_token_replayed_after_the_parent_ended_is_refused(deployment: Deployment) -> None:
    root = root_task(deployment)
    async with mcp_client(deployment.gateway.url, root.token, ERAS[1]) as client:
        await tool_names(client)  # the SDK validates a result against listed tools (and lists again if none)
        result = await client.call_tool("narrowgate__complete_task", {"reason": "done before delegating"})
    assert not result.is_error, result
    refused(delegate(deployment, root, actor(deployment, WORKER), "vrf__echo"), "invalid_grant",
            root.task_id, "has ended", "done before delegating", secrets=(root.token,))


async def test_suspending_an_agent_in_the_chain_ends_its_tasks_and_their_descendants(
    deployment: Deployment,
) -> None:
    root = root_task(deployment)
    child = granted(delegate(deployment, root, actor(deployment, MIDDLE), "vrf__echo vrf__received"))
    grandchild = granted(delegate(deployment, child, actor(deployment, HELPER), "vrf__echo"))
    await echo(deployment, grandchild, marker("before-suspension"))
    admin(deployment, "POST", f"/admin/v1/agents/{MIDDLE}/suspend", {"reason": "compromised"})
    try:
        for grant in (child, grandchild):
            assert_refused_at_the_door(deployment, grant.token)
        task = admin(deployment, "GET", f"/admin/v1/tasks/{grandchild.task_id}")
        assert task["state"] == "revoked" and f"parent task {child.task_id} revoked" in task["end_reason"]
        assert "compromised" in task["end_reason"]
        # The agent above it goes on: its own task was never the suspended agent's.
        await echo(deployment, root, marker("root-still-works"))
        assert admin(deployment, "GET", f"/admin/v1/tasks/{root.task_id}")["state"] == "active"
    finally:
        admin(deployment, "POST", f"/admin/v1/agents/{MIDDLE}/resume", {"reason": "delegation e2e"})
