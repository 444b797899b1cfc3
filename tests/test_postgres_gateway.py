"""`narrowgate serve` with `state: postgresql://...`: real gateway processes, a real PostgreSQL, the real `mcp` SDK.

- end to end: an agent created through the admin API calls a tool, both calls are audited, and a restart keeps
  the agent and continues the chain;
- one chain: two more writers (own pools, as replicas) append while the gateway serves, and
  `narrowgate audit verify` accepts the whole log;
- faults: a PostgreSQL of the test's own is stopped under a running gateway: a call that needs a durable
  record is refused with a clear error, never allowed unaudited; started again on the same port, the
  gateway recovers without a restart. An unreachable server at start is one clear line.

The password in the state URL (the test server trusts loopback, so any is accepted) must never appear in
the gateway's output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from gateway.audit import AuditEvent, AuditLog, verify_chain
from gateway.store import Store, open_store
from gateway.store.base import AuditQuery
from tests.support.admin import bearer
from tests.support.clients import mcp_client
from tests.support.engines import Engine, restart_postgres, start_postgres, stop_postgres_keeping_data
from tests.support.processes import ADMIN_TOKEN, Gateway, behaviour_manifest, free_port
from tests.support.store_backends import create_database, drop_database
from tests.test_store_postgres import verify_cli

SECRET = "pg-gw-s3cret"
AGENT, TOKEN = "pg-agent", "token-pg-agent-0123456789"
ALLOWED, DENIED = "behav__echo", "other__echo"  # the agent is entitled to `behav` only
AUDIT_DOWN = "the audit log is unavailable"
WAIT_S = 20.0


def with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.replace('@', f':{SECRET}@', 1)}"


def pg_gateway(workdir: Path, state: str, behaviour_http: int) -> Gateway:
    """A gateway on `state` in front of the behaviour upstream twice; `pg-agent`'s static token is configured,
    its record comes from the admin API."""
    upstream = {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}
    manifests = [behaviour_manifest("behav", upstream, timeout_s=5), behaviour_manifest("other", upstream, timeout_s=5)]
    gateway = Gateway(workdir, manifests, tokens={})
    gateway.extra_config = {"state": state, "auth": {"static_tokens": [{"agent": AGENT, "token": TOKEN}]}}
    return gateway


def create_agent(gateway: Gateway) -> None:
    body = {"id": AGENT, "owner": "tests@example.com", "purpose": "postgres store test", "state": "active",
            "identities": [{"kind": "static", "issuer": "narrowgate", "subject": AGENT}],
            "entitlement": {"servers": ["behav"], "require_task": False}}
    response = httpx2.post(f"{gateway.base}/admin/v1/agents", json=body, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 201, response.text


def agent_exists(gateway: Gateway) -> bool:
    response = httpx2.get(f"{gateway.base}/admin/v1/agents/{AGENT}", headers=bearer(ADMIN_TOKEN))
    return response.status_code == 200 and response.json()["id"] == AGENT


async def call(client: Client, tool: str, text: str = "hi") -> str:
    """What the agent hears: the tool's text, or the refusal's message."""
    try:
        async with asyncio.timeout(WAIT_S):
            result = await client.call_tool(tool, {"text": text})
    except MCPError as exc:
        return f"refused: {exc}"
    content = " ".join(getattr(block, "text", "") for block in result.content)
    return f"refused: {content}" if result.is_error else content


async def audited(url: str, **filters: Any) -> list[dict[str, Any]]:
    store = open_store(url)
    try:
        return await store.audit_records(AuditQuery(limit=100_000, **filters))
    finally:
        await store.close()


def assert_password_never_shown(gateway: Gateway) -> None:
    assert SECRET not in gateway.log_text()


# one gateway on the session's server


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    """A database of this module's own, its URL carrying a password."""
    url = asyncio.run(create_database(postgres_url))
    yield with_password(url)
    asyncio.run(drop_database(url))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, database: str, behaviour_http: int) -> Iterator[Gateway]:
    gw = pg_gateway(tmp_path_factory.mktemp("pg-gateway"), database, behaviour_http).start()
    yield gw
    gw.stop()
    assert_password_never_shown(gw)


async def test_serve_on_postgres_end_to_end_and_across_a_restart(gateway: Gateway, database: str) -> None:
    create_agent(gateway)
    async with mcp_client(gateway.url, TOKEN, "legacy") as client:
        assert await call(client, ALLOWED, "first") == "first"
        assert (await call(client, DENIED)).startswith("refused: ")
    decisions = [(r["tool"], r["decision"]) for r in await audited(database, agent_id=AGENT, kind="decision")]
    assert (DENIED, "deny") in decisions  # durable before the agent heard of it
    agent_records = await audited(database, kind="agent")
    assert any(r["agent_id"] == AGENT for r in agent_records)

    gateway.stop()
    gateway.start()
    assert agent_exists(gateway)  # the admin API's agent lives in PostgreSQL, not in the process
    async with mcp_client(gateway.url, TOKEN, "2026-07-28") as client:
        assert await call(client, ALLOWED, "after restart") == "after restart"
        assert (await call(client, DENIED)).startswith("refused: ")
    expected = [(ALLOWED, "allow"), (DENIED, "deny")] * 2  # read allows are written soon after, not before
    deadline = time.monotonic() + WAIT_S
    while sorted(decisions) != sorted(expected) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        decisions = [(r["tool"], r["decision"]) for r in await audited(database, agent_id=AGENT, kind="decision")]
    assert sorted(decisions) == sorted(expected)
    rows = await audited(database)
    assert verify_chain(rows) == [] and [r["seq"] for r in rows] == list(range(1, len(rows) + 1))


async def test_writers_in_other_processes_and_the_gateway_form_one_chain(gateway: Gateway, database: str) -> None:
    """Two more pools (as two more replicas) append while the gateway records denials; verify accepts it all."""
    if not agent_exists(gateway):
        create_agent(gateway)
    before = len(await audited(database))
    replicas: list[Store] = [open_store(database) for _ in range(2)]
    logs = [AuditLog(store) for store in replicas]
    for log in logs:
        await log.open()

    async def replica_writes(log: AuditLog, index: int) -> None:
        for n in range(60):
            event = AuditEvent("decision", "tools/call", f"replica-{index}", decision="deny", detail={"n": n})
            if n % 3 == 0:
                await log.record_durable(event)
            else:
                log.record(event)
                await asyncio.sleep(0)

    async def gateway_denials() -> int:
        async with mcp_client(gateway.url, TOKEN, "2026-07-28") as client:
            answers = [await call(client, DENIED, str(n)) for n in range(20)]
        return sum(answer.startswith("refused: ") for answer in answers)

    results = await asyncio.gather(gateway_denials(), *(replica_writes(log, i) for i, log in enumerate(logs)))
    assert results[0] == 20
    for log in logs:
        await log.close()
    for store in replicas:
        await store.close()

    rows = await audited(database)
    assert len(rows) >= before + 2 * 60 + 20
    assert verify_chain(rows) == []
    assert {r["actor"] for r in rows[before:]} >= {"replica-0", "replica-1", AGENT}
    result = verify_cli(gateway.workdir / "gateway.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"audit log ok: {len(rows)} record(s)"), result.stdout
    assert SECRET not in result.stdout + result.stderr


# faults: a server of the test's own


@pytest.fixture
def own_server() -> Iterator[Engine]:
    engine = start_postgres()
    yield engine
    engine.stop()


@pytest.fixture
async def faulty_gateway(tmp_path: Path, own_server: Engine, behaviour_http: int) -> AsyncIterator[Gateway]:
    state = with_password(own_server.url) + "?connect_timeout=2&command_timeout=3"
    gw = pg_gateway(tmp_path, state, behaviour_http).start()
    yield gw
    gw.stop()
    assert_password_never_shown(gw)


async def test_postgres_going_away_refuses_what_needs_a_record_then_recovers_without_a_restart(
        faulty_gateway: Gateway, own_server: Engine) -> None:
    create_agent(faulty_gateway)
    async with mcp_client(faulty_gateway.url, TOKEN, "2026-07-28") as client:
        denied = await call(client, DENIED, "before")
        assert denied.startswith("refused: ") and AUDIT_DOWN not in denied

        stop_postgres_keeping_data(own_server)
        started = time.monotonic()
        refused = await call(client, DENIED, "during")
        assert AUDIT_DOWN in refused, refused  # not the policy's answer: no durable record, no answer
        assert time.monotonic() - started < 10
        assert await call(client, ALLOWED, "during") == "during"  # a read allow is served; its record waits
        change = httpx2.post(f"{faulty_gateway.base}/admin/v1/agents/{AGENT}/suspend", json={"reason": "outage"},
                             headers=bearer(ADMIN_TOKEN))
        assert change.status_code == 503 and "store is unavailable" in change.json()["error"], change.text
        process = faulty_gateway.process
        assert process is not None and process.poll() is None  # it keeps serving

        restart_postgres(own_server)
        deadline = time.monotonic() + WAIT_S
        answer = refused
        while AUDIT_DOWN in answer and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            answer = await call(client, DENIED, "after")
        assert answer.startswith("refused: ") and AUDIT_DOWN not in answer, answer  # the policy's deny again
        assert await call(client, ALLOWED, "back") == "back"
    assert process.poll() is None  # the same process all along

    deadline = time.monotonic() + WAIT_S
    rows = await audited(own_server.url)
    while not any(r["preview"] == {"text": "during"} and r["decision"] == "allow" for r in rows):
        assert time.monotonic() < deadline, "the read allowed during the outage was never written"
        await asyncio.sleep(0.05)
        rows = await audited(own_server.url)
    assert verify_chain(rows) == []
    denials = [r for r in rows if r["tool"] == DENIED]
    refusal = [r for r in denials if (r["detail"] or {}).get("refused") == "audit log unavailable"]
    assert refusal and all(r["decision"] == "deny" for r in denials)  # the outage's refusal is on record too


def test_an_unreachable_server_at_start_is_one_clear_line(tmp_path: Path, behaviour_http: int) -> None:
    port = free_port()  # nothing listens there
    gateway = pg_gateway(tmp_path, f"postgresql://gw:{SECRET}@127.0.0.1:{port}/narrowgate?connect_timeout=2",
                         behaviour_http)
    with pytest.raises(RuntimeError, match="gateway exited"):
        gateway.start(timeout_s=20)
    output = gateway.log_text()
    assert f"cannot connect to postgres store postgresql://127.0.0.1:{port}/narrowgate" in output
    assert SECRET not in output
    assert "Traceback" not in output
