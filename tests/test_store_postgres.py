"""What only the PostgreSQL store has: its URL (pool knobs, a password never shown), several processes on one
database (migrations, the audit chain, first keys and secrets, rotation), an unreachable server, and a server
that goes away and comes back. The contract both backends share is tests/test_store.py."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.audit import AuditEvent, AuditLog, AuditUnavailable, verify_chain
from gateway.audit.chain import unsealed_record
from gateway.store import Store, StoreError, UnsupportedStoreUrl, open_store
from gateway.store.base import AuditQuery, SigningKeyRecord
from gateway.store.postgres_schema import MIGRATIONS
from gateway.store.postgres_url import parse_postgres_url
from tests.support.engines import Engine, restart_postgres, start_postgres, stop_postgres_keeping_data
from tests.support.processes import NARROWGATE, REPO, free_port
from tests.support.store_backends import StoreBackend, postgres_database

SECRET = "pg-s3cret-pass"


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[str]:
    """A fresh database of this test's own on the session's server."""
    async with postgres_database(postgres_url) as url:
        yield url


async def stores(url: str, count: int) -> list[Store]:
    """`count` stores on one database, each with its own pool, as `count` replicas would have."""
    opened = [open_store(url) for _ in range(count)]
    await opened[0].migrate()
    return opened


async def close_all(opened: list[Store]) -> None:
    await asyncio.gather(*(store.close() for store in opened))


def record(n: int, writer: int) -> dict[str, Any]:
    event = AuditEvent("decision", "tools/call", f"bot-{writer}", agent_id=f"bot-{writer}", decision="deny",
                       tool="gh__create_issue", policy_ids=("p1",), preview={"title": f"#{n}"},
                       detail={"n": n, "writer": writer, "float": 0.1 + n})
    return unsealed_record(event, 1_767_225_600.0 + n / 7)


def verify_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), "audit", "verify", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=REPO, check=False)


def key(kid: str, created_at: float) -> SigningKeyRecord:
    return SigningKeyRecord(kid, "ES256", f"pem of {kid}", created_at, None, "current")


# the URL


def test_url_knobs_are_read_and_the_rest_goes_to_the_driver() -> None:
    url = parse_postgres_url(f"postgres://gw:{SECRET}@db.internal:6432/narrowgate?pool_min=2&pool_max=20"
                             "&connect_timeout=1.5&command_timeout=30&sslmode=require")
    assert (url.pool_min, url.pool_max, url.connect_timeout_s, url.command_timeout_s) == (2, 20, 1.5, 30.0)
    assert url.name == "postgres://db.internal:6432/narrowgate"
    assert url.dsn == f"postgresql://gw:{SECRET}@db.internal:6432/narrowgate?sslmode=require"
    assert SECRET not in repr(url) and SECRET not in repr(open_store(f"postgresql://gw:{SECRET}@db/x"))
    defaults = parse_postgres_url("postgresql://gw@db/narrowgate")
    assert (defaults.pool_min, defaults.pool_max) == (1, 10)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (f"postgresql://gw:{SECRET}@db/narrowgate?pool_max=0", "pool_max must be a whole number"),
        (f"postgresql://gw:{SECRET}@db/narrowgate?pool_max=many", "pool_max must be a whole number"),
        (f"postgresql://gw:{SECRET}@db/narrowgate?pool_min=5&pool_max=2", "at least pool_min"),
        (f"postgresql://gw:{SECRET}@db/narrowgate?command_timeout=-1", "command_timeout must be a positive"),
        (f"postgresql://gw:{SECRET}@db/narrowgate?connect_timeout=nan", "connect_timeout must be a positive"),
        (f"postgresql://gw:{SECRET}@db/", "needs a host and a database"),
        (f"postgresql://gw:{SECRET}@/narrowgate", "needs a host and a database"),
        (f"postgresql://gw:{SECRET}@db:99999/narrowgate", "host or port unreadable"),
    ],
)
def test_bad_postgres_urls_are_refused_in_one_line_without_the_password(url: str, fragment: str) -> None:
    with pytest.raises(UnsupportedStoreUrl) as caught:
        open_store(url)
    message = str(caught.value)
    assert fragment in message and "\n" not in message
    assert SECRET not in message


async def test_an_unreachable_server_is_one_clear_line_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    store = open_store(f"postgresql://gw:{SECRET}@127.0.0.1:{port}/narrowgate?connect_timeout=2")
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as caught:
        await store.migrate()
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert message.startswith(f"cannot connect to postgres store postgresql://127.0.0.1:{port}/narrowgate: ")
    assert "\n" not in message and SECRET not in message and SECRET not in caplog.text
    await store.close()


async def test_a_url_with_a_password_and_driver_options_connects_and_never_shows_it(database: str) -> None:
    admin = await asyncpg.connect(database)
    role = f"gw_{uuid.uuid4().hex[:8]}"  # roles belong to the whole server: a name no other run uses
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
    try:
        await admin.execute(f"CREATE SCHEMA tight AUTHORIZATION {role}")
        host = database.split("@", 1)[1]
        store = open_store(f"postgresql://{role}:{SECRET}@{host}?search_path=tight")
        # The URL's user, password and a driver option (search_path) are used; nothing shows the password.
        assert await store.migrate() == [m.version for m in MIGRATIONS]
        assert await admin.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'tight'") > 5
        assert SECRET not in repr(store)
        await store.close()
    finally:
        await admin.execute("DROP SCHEMA tight CASCADE")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


# several processes on one database


async def test_replicas_starting_together_apply_each_migration_once(database: str) -> None:
    replicas = [open_store(database) for _ in range(4)]
    applied = await asyncio.gather(*(store.migrate() for store in replicas))
    assert sorted(version for versions in applied for version in versions) == [m.version for m in MIGRATIONS]
    assert [await store.schema_version() for store in replicas] == [MIGRATIONS[-1].version] * 4
    await close_all(replicas)


async def test_appends_from_several_pools_form_one_chain(database: str) -> None:
    replicas = await stores(database, 3)

    async def writer(store: Store, index: int) -> None:
        for batch in range(15):
            await store.append_audit([record(batch * 10 + n, index) for n in range(1 + batch % 4)])

    await asyncio.gather(*(writer(store, i) for i, store in enumerate(replicas) for _ in range(2)))
    rows = await replicas[0].audit_records(AuditQuery(limit=10_000))
    assert len(rows) == 2 * 3 * sum(1 + batch % 4 for batch in range(15))
    assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1))
    assert verify_chain(rows) == []
    assert {row["detail"]["writer"] for row in rows} == {0, 1, 2}
    assert await replicas[1].audit_head() == (rows[-1]["seq"], rows[-1]["hash"])
    await close_all(replicas)


async def test_text_the_database_cannot_hold_never_jams_the_audit_log(database: str) -> None:
    """PostgreSQL text cannot hold NUL: a tool name carrying one (an agent's) must not fail the batch forever."""
    (store,) = await stores(database, 1)
    log = AuditLog(store)
    await log.open()
    await asyncio.wait_for(log.record_durable(AuditEvent("decision", "tools/call", "bot\x00a", tool="x\x00y",
                                                         decision="deny", detail={"q": "a\x00b"})), 5)
    (row,) = await store.audit_records(AuditQuery())
    assert row["tool"] == "x\ufffdy" and row["actor"] == "bot\ufffda" and row["detail"] == {"q": "a\x00b"}
    assert verify_chain([row]) == []
    await log.close()
    await store.close()


async def test_tampering_on_postgres_is_found_by_the_verify_command(database: str, tmp_path: Path) -> None:
    """As someone with the database owner's rights: triggers off, one field changed; the CLI finds the seq."""
    (store,) = await stores(database, 1)
    await store.append_audit([record(n, 0) for n in range(1, 9)])
    config = tmp_path / "narrowgate.yaml"
    config.write_text(f"state: {database}\n")
    assert verify_cli(config).returncode == 0
    await StoreBackend("postgres", database).drop_append_only("audit_log")
    await StoreBackend("postgres", database).execute("UPDATE audit_log SET decision = 'allow' WHERE seq = 5")
    problems = verify_chain(await store.audit_records(AuditQuery()))
    assert [(p.seq, p.kind) for p in problems] == [(5, "modified")]
    result = verify_cli(config)
    assert result.returncode == 1 and result.stdout.startswith("seq 5: modified"), result
    await store.close()


async def test_only_one_first_signing_key_and_one_gateway_secret_win(database: str) -> None:
    replicas = await stores(database, 4)
    stored = await asyncio.gather(*(store.add_first_signing_key(key(f"k{i}", 1.0)) for i, store in
                                    enumerate(replicas)))
    assert stored.count(True) == 1
    keys = await replicas[0].load_signing_keys()
    assert [k.kid for k in keys] == [f"k{stored.index(True)}"]

    secrets = await asyncio.gather(*(store.gateway_secret("digest", bytes([i]) * 32) for i, store in
                                     enumerate(replicas)))
    assert len(set(secrets)) == 1 and secrets[0] in {bytes([i]) * 32 for i in range(4)}
    await close_all(replicas)


async def test_racing_rotations_leave_exactly_one_current_key(database: str) -> None:
    replicas = await stores(database, 3)
    assert await replicas[0].add_first_signing_key(key("k0", 1.0))
    await asyncio.gather(*(store.rotate_signing_key(key(f"r{i}", 10.0 + i), retire_at=100.0, prune_before=0.0)
                           for i, store in enumerate(replicas)))
    keys = await replicas[0].load_signing_keys()
    assert [k.state for k in keys].count("current") == 1
    assert sorted(k.kid for k in keys) == ["k0", "r0", "r1", "r2"]
    await close_all(replicas)


# a server that goes away and comes back


@pytest.fixture
def own_server() -> Iterator[Engine]:
    """A PostgreSQL of this test's own: it is stopped and started again."""
    engine = start_postgres()
    yield engine
    engine.stop()


async def test_the_store_fails_closed_while_the_server_is_down_and_recovers_by_itself(
        own_server: Engine, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(own_server.url + "?connect_timeout=2")
    await store.migrate()
    log = AuditLog(store, retry_first_s=0.05, retry_max_s=0.2)
    await log.open()
    await log.record_durable(AuditEvent("decision", "tools/call", "bot", decision="deny", detail={"n": 1}))

    stop_postgres_keeping_data(own_server)
    with pytest.raises(StoreError, match=r"postgres store postgresql://127\.0\.0\.1"):
        await store.list_agents()
    with caplog.at_level(logging.ERROR, logger="narrowgate.audit"), pytest.raises(AuditUnavailable):
        await log.record_durable(AuditEvent("decision", "tools/call", "bot", decision="deny", detail={"n": 2}))
    assert not log.healthy
    assert any("audit log write failed" in r.getMessage() for r in caplog.records)

    restart_postgres(own_server)
    await asyncio.wait_for(log.flush(), 10)  # the writer's retries reach the server again: no restart
    assert log.healthy
    assert await store.list_agents() == []
    rows = await store.audit_records(AuditQuery())
    assert [row["detail"]["n"] for row in rows] == [1, 2] and verify_chain(rows) == []
    await log.close()
    await store.close()
