"""The real engines the fleet work runs on: a throwaway PostgreSQL and Redis (tests/support/engines.py), reached
through the real clients (asyncpg, redis-py), stopped without a process or a directory left behind."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.support.engines import Engine, EngineError, start_postgres, start_redis
from tests.support.processes import child_pids, free_port, running


async def test_postgres_answers_queries_through_asyncpg(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        assert await connection.fetchval("SELECT current_database()") == "narrowgate"
        await connection.execute("CREATE TEMPORARY TABLE calls (id serial PRIMARY KEY, tool text NOT NULL)")
        await connection.executemany("INSERT INTO calls (tool) VALUES ($1)", [("echo",), ("slow",)])
        assert [row["tool"] for row in await connection.fetch("SELECT tool FROM calls ORDER BY id")] == ["echo", "slow"]
        with pytest.raises(asyncpg.NotNullViolationError):
            await connection.execute("INSERT INTO calls (tool) VALUES (NULL)")
    finally:
        await connection.close()


async def test_redis_sets_and_gets_through_redis_py(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.set("narrowgate:test:engines", "up", ex=60)
        assert await client.get("narrowgate:test:engines") == b"up"
        assert await client.incr("narrowgate:test:counter") + 1 == await client.incr("narrowgate:test:counter")
        assert 0 < await client.ttl("narrowgate:test:engines") <= 60
    finally:
        await client.delete("narrowgate:test:engines", "narrowgate:test:counter")
        await client.aclose()


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def assert_stops_cleanly(engine: Engine, port: int) -> None:
    """Stopping leaves no process (the server and its children), no directory and no listener behind."""
    assert engine.process is not None and engine.directory is not None
    pids = [engine.process.pid, *child_pids(engine.process.pid)]
    assert all(running(pid) for pid in pids)
    engine.stop()
    assert [pid for pid in pids if running(pid)] == []
    assert not engine.directory.exists()
    assert refuses_connections(port)


async def test_a_stopped_postgres_leaves_no_process_no_directory_and_no_listener() -> None:
    port = free_port()
    engine = start_postgres(port)
    connection = await asyncpg.connect(engine.url)
    assert await connection.fetchval("SELECT 40 + 2") == 42
    await connection.close()
    assert len(child_pids(engine.process.pid if engine.process else 0)) >= 2  # the postmaster's own workers
    assert_stops_cleanly(engine, port)


async def test_a_stopped_redis_leaves_no_process_no_directory_and_no_listener() -> None:
    port = free_port()
    engine = start_redis(port)
    client = aioredis.from_url(engine.url)
    assert await client.ping()
    # persistence is off: nothing of a test run reaches a disk
    assert await client.config_get("save") == {"save": ""}
    assert await client.config_get("appendonly") == {"appendonly": "no"}
    await client.aclose()
    assert_stops_cleanly(engine, port)


@pytest.mark.parametrize("start", [start_postgres, start_redis], ids=["postgres", "redis"])
def test_an_engine_that_cannot_start_says_why_in_one_line_and_leaves_nothing(start: object, tmp_path: Path) -> None:
    """The port is taken: the error is one line carrying the engine's own log line, and its directory is gone."""
    before = set(Path("/tmp").glob("narrowgate-*"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(EngineError) as raised:
            start(taken.getsockname()[1])  # type: ignore[operator]
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(("PostgreSQL did not start: ", "Redis did not start: "))
    assert "already in use" in message, message
    assert set(Path("/tmp").glob("narrowgate-*")) - before == set()
