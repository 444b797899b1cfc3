"""Shared fixtures: real upstream processes and a real gateway process on loopback."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gateway.audit.log import AuditLog
from gateway.store import Store
from tests.provision import missing_programs
from tests.support import engines, leftovers
from tests.support.identity_provider import TestIdentityProvider
from tests.support.processes import (
    BEHAVIOUR_SERVER,
    Gateway,
    behaviour_manifest,
    free_port,
    start_listening,
    stdio_behaviour_transport,
    stop,
)
from tests.support.state import FakeClock
from tests.support.store_backends import BACKENDS, StoreBackend, store_backend

TOKEN = "token-agent-a"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serial: timing-sensitive; `make test` runs it after the parallel run, "
                                       "alone (docs/development.md)")
    if not hasattr(config, "workerinput"):  # the run's top process: what its tests or workers orphan comes to it
        leftovers.become_subreaper()


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Iterator[None]:
    """After everything else has finished (session fixtures, xdist's workers): fail the run if any process it
    started is still there, killing it (tests/support/leftovers.py)."""
    yield
    if hasattr(session.config, "workerinput"):
        return
    killed = leftovers.kill_leftovers()
    if killed:
        listed = ", ".join(f"{name} ({pid})" for pid, name in sorted(killed.items()))
        print(f"\nthe test run left processes behind; killed: {listed}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse in one line, before any test, when a program the tests run is missing (`make test` installs them)."""
    missing = missing_programs()
    if missing:
        pytest.exit(f"the tests need {', '.join(missing)} on PATH: run `make test`, which installs them", returncode=4)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL (or NARROWGATE_TEST_POSTGRES_URL's), started only when a test asks for it."""
    yield from _engine_url(engines.postgres)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway Redis (or NARROWGATE_TEST_REDIS_URL's), started only when a test asks for it."""
    yield from _engine_url(engines.redis)


def _engine_url(start: Callable[[], engines.Engine]) -> Iterator[str]:
    try:
        engine: engines.Engine | None = start()
    except engines.EngineError as exc:
        engine, failure = None, str(exc)
    if engine is None:
        pytest.fail(failure, pytrace=False)  # the test errors with this one line, never a skip
    yield engine.url
    engine.stop()


@pytest.fixture(scope="session")
def behaviour_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("behaviour") / "events.jsonl"


@pytest.fixture(scope="session")
def behaviour_http(behaviour_log: Path) -> Iterator[int]:
    """The behaviour upstream over Streamable HTTP; yields its port."""
    process, port = start_listening([sys.executable, str(BEHAVIOUR_SERVER), "--port", "0"],
                                    env={"BEHAVIOUR_LOG": str(behaviour_log)})
    yield port
    stop(process)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, behaviour_log: Path) -> Iterator[Gateway]:
    """The gateway in front of the behaviour upstream twice: `behav__*` over HTTP, `local__*` over stdio."""
    manifests = [
        behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=5),
        behaviour_manifest("local", stdio_behaviour_transport(behaviour_log), timeout_s=5,
                           tools=("echo", "slow", "progress", "log", "crash")),
    ]
    # Every test file on this worker shares this gateway, and many open 2025-11-25 sessions they leave to
    # idle out: the per-agent cap (64 by default, tested on gateways of their own in test_abuse_limits.py)
    # would make one file's sessions refuse another's, depending on which files ran here before.
    gw = Gateway(tmp_path_factory.mktemp("gateway"), manifests,
                 extra_config={"limits": {"max_sessions_per_agent": 10_000}}).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def port() -> int:
    """A gateway port fixed before start, for modules whose OIDC audience names it."""
    return free_port()


@pytest.fixture(scope="module")
def idp(port: int) -> Iterator[TestIdentityProvider]:
    """A real OIDC issuer (JWKS over HTTP) whose tokens carry the audience of the gateway on `port`."""
    provider = TestIdentityProvider(f"http://127.0.0.1:{port}")
    yield provider
    provider.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    """A fresh store backend: a SQLite file, and (a second run of the test) a PostgreSQL database of its own."""
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    async with store_backend(request.param, tmp_path, postgres) as fresh:
        yield fresh


@pytest.fixture
async def store(backend: StoreBackend) -> AsyncIterator[Store]:
    """A migrated store on `backend` (so each test using it runs on SQLite and on PostgreSQL)."""
    opened = await backend.open()
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def audit(store: Store, clock: FakeClock) -> AsyncIterator[AuditLog]:
    """The audit log over `store`, on `clock`."""
    log = AuditLog(store, clock)
    await log.open()
    yield log
    await log.close()
