"""The real engines the fleet work runs on: a throwaway PostgreSQL and Redis (tests/support/engines.py), reached
through the real clients (asyncpg, redis-py), stopped without a process or a directory left behind."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.support.engines import PIDS_FILE_ENV, Engine, EngineError, start_postgres, start_redis
from tests.support.processes import REPO, child_pids, descendants, free_port, running


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
    assert engine.process is not None
    assert len(child_pids(engine.process.pid)) >= 2  # the postmaster's own workers: they must go too
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


@pytest.fixture
def private_tempdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary root of this test's own for the engines' directories: other xdist workers' engines come and go
    in /tmp meanwhile. Traversable by all (as root, PostgreSQL's programs run as the `postgres` user)."""
    root = Path(tempfile.mkdtemp(prefix="narrowgate-engines-"))
    root.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("start", [start_postgres, start_redis], ids=["postgres", "redis"])
def test_an_engine_that_cannot_start_says_why_in_one_line_and_leaves_nothing(start: object,
                                                                              private_tempdir: Path) -> None:
    """The port is taken: the error is one line carrying the engine's own log line, and its directory is gone."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(EngineError) as raised:
            start(taken.getsockname()[1])  # type: ignore[operator]
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(("PostgreSQL did not start: ", "Redis did not start: "))
    assert "already in use" in message, message
    assert list(private_tempdir.iterdir()) == []


FIXTURE_TESTS = ["tests/test_engines.py::test_postgres_answers_queries_through_asyncpg",
                 "tests/test_engines.py::test_redis_sets_and_gets_through_redis_py"]


def run_pytest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
                          env={**os.environ, **(env or {})})


def test_the_session_fixtures_stop_their_engines_when_the_session_ends() -> None:
    """Every engine process seen under a pytest run while it ran (servers and their workers) is gone after it."""
    pids_file = Path(tempfile.mkdtemp(prefix="narrowgate-pids-")) / "pids"
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FIXTURE_TESTS],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                           env={**os.environ, PIDS_FILE_ENV: str(pids_file)})
    seen: dict[int, str] = {}  # the servers' own children too (PostgreSQL's backends), when the poll catches them
    while run.poll() is None:
        seen |= descendants(run.pid)
        time.sleep(0.05)
    output = run.communicate(timeout=10)[0]
    assert run.returncode == 0 and "2 passed" in output, output
    started = {int(pid): name for name, pid in (line.split() for line in pids_file.read_text().splitlines())}
    shutil.rmtree(pids_file.parent)
    assert sorted(started.values()) == ["PostgreSQL", "Redis"], started
    assert [pid for pid in {**seen, **started} if running(pid)] == []


def broken_engine_programs(directory: Path) -> None:
    """initdb, postgres, createdb and redis-server that exit at once, as from a broken install; readable by the
    `postgres` user, which runs PostgreSQL's programs when the tests run as root."""
    directory.chmod(0o755)
    for program in ("initdb", "postgres", "createdb", "redis-server"):
        script = directory / program
        script.write_text(f"#!/bin/sh\necho 'broken install: {program} cannot run'\nexit 3\n")
        script.chmod(0o755)


def test_an_engine_that_cannot_start_errors_the_test_in_one_line_never_skips() -> None:
    """Each test using an engine that cannot start errors with the engine's one line; none is skipped."""
    with tempfile.TemporaryDirectory(prefix="narrowgate-broken-") as broken:
        broken_engine_programs(Path(broken))
        done = run_pytest(*FIXTURE_TESTS, env={"PATH": f"{broken}:{os.environ['PATH']}"})
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "2 errors" in done.stdout and "skipped" not in done.stdout, output
    assert "PostgreSQL did not start: `initdb` exited 3: broken install: initdb cannot run" in output
    assert "Redis did not start: it exited 3: broken install: redis-server cannot run" in output
    assert "Traceback" not in output
