"""The state seams (gateway/state/): each in-memory implementation satisfies its Protocol and its contract.

Every contract test is written against the Protocol and parametrized over the implementations in
IMPLEMENTATIONS-style factory lists, so a shared (Redis, issue 15) implementation joins by adding
its factory to the list. Last: the gateway is built with the backends it is given (swapping one is
a constructor argument) and the state package stays a leaf.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.approvals.model import Approval, ApprovalState, Approver
from gateway.catalog.model import Catalog, ToolEntry
from gateway.chain.tracker import ChainTracker, RateLimited
from gateway.cluster import backends
from gateway.cluster.backends import process_local_seams, shared_backends
from gateway.cluster.connection import Cluster
from gateway.config import Settings, settings_from_mapping
from gateway.console.pages import Console
from gateway.console.sessions import LoginThrottle, SessionStore
from gateway.credentials.revocations import Revocations
from gateway.identity.principal import Principal
from gateway.identity.user import UserIdentity
from gateway.identity.verified import VerifiedToken
from gateway.identity.verifier import VerifiedTokenCache
from gateway.in_memory_state import in_memory_backends
from gateway.settings.cluster import ClusterSettings
from gateway.settings.errors import ConfigError
from gateway.settings.monitoring import MonitoringSettings, RateLimit
from gateway.state import (
    AgentSessions,
    ApprovalWaiters,
    ChainSignals,
    ConsoleSessions,
    LoginFailures,
    Notices,
    OpenApprovals,
    RateWindows,
    RevocationList,
    StateBackends,
    StreamLog,
    TokenCache,
)
from gateway.state.memory import InMemoryApprovalWaiters, InMemoryOpenApprovals, LocalNotices
from gateway.state.notices import TOPIC_LIST_CHANGED
from gateway.transport.sessions import SessionLimitReached, SessionRegistry
from gateway.transport.sessions import StreamLog as InMemoryStreamLog
from tests.support.processes import REPO
from tests.test_import_graph import import_graph, within

LEGACY = "2025-11-25"
LIMITS = MonitoringSettings(per_agent=RateLimit(2, 60.0), per_task=None, per_tool=None)

# One list of factories per seam: a shared implementation is tested by adding its own.
REVOCATION_LISTS: list[Callable[[], RevocationList]] = [Revocations]
TOKEN_CACHES: list[Callable[[], TokenCache[VerifiedToken]]] = [lambda: VerifiedTokenCache(100)]
RATE_WINDOWS: list[Callable[[MonitoringSettings], RateWindows]] = [ChainTracker]
CHAIN_SIGNALS: list[Callable[[MonitoringSettings], ChainSignals[ToolEntry, Any]]] = [ChainTracker]
AGENT_SESSIONS: list[Callable[[int, int], AgentSessions[Principal, Any]]] = [
    lambda per_agent, total: SessionRegistry(3600, per_agent, total)]
STREAM_LOGS: list[Callable[[str], StreamLog]] = [InMemoryStreamLog]
OPEN_APPROVALS: list[Callable[[], OpenApprovals[Approval]]] = [InMemoryOpenApprovals]
APPROVAL_WAITERS: list[Callable[[], ApprovalWaiters]] = [InMemoryApprovalWaiters]
CONSOLE_SESSIONS: list[Callable[[float, float], ConsoleSessions[Approver, Any]]] = [SessionStore]
LOGIN_FAILURES: list[Callable[[int, float], LoginFailures]] = [
    lambda limit, window_s: LoginThrottle(limit, window_s)]
NOTICES: list[Callable[[], Notices]] = [LocalNotices]


def tool(name: str) -> ToolEntry:
    return ToolEntry(name=name, exposed_name=name, server_id="files", risk="read", data_classes=(), owner="team")


def approval(approval_id: str, state: ApprovalState = ApprovalState.PENDING) -> Approval:
    now = time.time()
    return Approval(id=approval_id, state=state, agent_id="agent", task_id=None, tool="files__write",
                    args_digest="0" * 64, policy_version="v1", decision_id="dec", mode="hold", created_at=now,
                    expires_at=now + 300, owner="team", server_id="files", risk="write", reason="step-up",
                    policy_ids=("p",))


# -- every in-memory implementation is an instance of its Protocol -----------------------------------

def test_every_in_memory_backend_satisfies_its_protocol(tmp_path: Path) -> None:
    backends = in_memory_backends(settings(tmp_path), empty_catalog())
    expected: dict[str, type] = {
        "agent_sessions": AgentSessions, "rate_windows": RateWindows, "chain_signals": ChainSignals,
        "revocations": RevocationList, "console_sessions": ConsoleSessions, "login_failures": LoginFailures,
        "verified_tokens": TokenCache, "open_approvals": OpenApprovals, "approval_waiters": ApprovalWaiters,
        "notices": Notices,
    }
    seams = set(StateBackends.__dataclass_fields__)
    assert set(expected) | {"call_budgets"} == seams, "a seam without a Protocol check"
    assert backends.call_budgets is None  # one process counts each task's calls in TaskService itself
    for name, protocol in expected.items():
        assert isinstance(getattr(backends, name), protocol), name
    assert isinstance(InMemoryStreamLog("s"), StreamLog)
    assert not isinstance(object(), RevocationList)  # the checks can fail


# -- RevocationList ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make", REVOCATION_LISTS)
def test_revocation_list_contract(make: Callable[[], RevocationList]) -> None:
    revocations, now = make(), time.time()
    revocations.revoke_task("task-1", until=now + 60)
    revocations.revoke_jti("jti-1", until=now + 60)
    revocations.revoke_task("task-gone", until=now - 1)  # already past: covers nothing
    revocations.revoke_task("task-1", until=now + 5)  # an earlier `until` does not shorten the entry
    assert revocations.is_revoked("task-1") and revocations.is_revoked(None, "jti-1")
    assert revocations.is_revoked("task-2", "jti-1")
    assert not revocations.is_revoked("task-2", "jti-2") and not revocations.is_revoked(None)
    assert not revocations.is_revoked("task-gone")
    snapshot = revocations.snapshot()
    assert snapshot["tasks"] == [{"id": "task-1", "until": now + 60}]
    assert snapshot["jtis"] == [{"id": "jti-1", "until": now + 60}]
    assert len(revocations) == 2


# -- TokenCache -------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", TOKEN_CACHES)
def test_token_cache_contract(make: Callable[[], TokenCache[VerifiedToken]]) -> None:
    cache = make()

    def token(subject: str, expires_at: float) -> VerifiedToken:
        return VerifiedToken("oidc", "https://idp", subject, types.MappingProxyType({"sub": subject}), expires_at)

    live, expired = token("live", time.time() + 60), token("old", time.time() - 1)
    cache.put(b"live", live)
    cache.put(b"old", expired)
    assert cache.get(b"live") == live
    assert cache.get(b"old") is None  # never past its expiry
    assert cache.get(b"unknown") is None
    cache.clear()
    assert cache.get(b"live") is None and len(cache) == 0


# -- RateWindows and ChainSignals -------------------------------------------------------------------

@pytest.mark.parametrize("make", RATE_WINDOWS)
async def test_rate_windows_contract(make: Callable[[MonitoringSettings], RateWindows]) -> None:
    windows = make(LIMITS)
    await windows.admit("a", None, "files__read")
    await windows.admit("a", "task-1", None)
    with pytest.raises(RateLimited) as refused:
        await windows.admit("a", None, "files__read")
    assert refused.value.scope == "agent" and 0 < refused.value.retry_after_s <= 60
    await windows.admit("b", None, "files__read")  # another agent has its own window
    with pytest.raises(RateLimited):  # the refused request was not counted, nor is this one
        await windows.admit("a", None, None)


@pytest.mark.parametrize("make", CHAIN_SIGNALS)
async def test_chain_signals_contract(make: Callable[[MonitoringSettings], ChainSignals[ToolEntry, Any]]) -> None:
    signals = make(MonitoringSettings(per_agent=None, per_task=None, novel_sequence=False))
    assert (await signals.context("a", "t1"))["tools"] == []
    await signals.observe_call("a", "t1", tool("files__read"), "allow")
    await signals.observe_call("a", "t1", tool("files__list"), "deny")
    in_task = await signals.context("a", "t1")
    assert in_task["tools"] == ["files__read", "files__list"] and in_task["previous_tool"] == "files__list"
    assert in_task["denials_last_minute"] == 1 and in_task["agent"]["calls_last_minute"] == 2
    assert (await signals.context("a", "t2"))["tools"] == []  # another task starts clean...
    assert (await signals.context("a", "t2"))["agent"]["calls_last_minute"] == 2  # ...beside what the agent did
    assert await signals.observe_probe("a", "t1", "nope") == []  # one probe is below any threshold
    signals.forget_task("t1")
    assert (await signals.context("a", "t1"))["tools"] == []
    signals.forget_agent("a")
    assert (await signals.context("a", None))["agent"]["calls_last_minute"] == 0
    assert signals.stats() == {"agents": 0, "tasks": 0}


# -- AgentSessions and StreamLog --------------------------------------------------------------------

@pytest.mark.parametrize("make", AGENT_SESSIONS)
async def test_agent_sessions_contract(make: Callable[[int, int], AgentSessions[Principal, Any]]) -> None:
    await agent_sessions_contract(make(2, 3))


async def agent_sessions_contract(sessions: AgentSessions[Principal, Any]) -> None:
    """The AgentSessions behaviour every implementation keeps (tests/test_cluster_sessions.py runs it on Redis)."""
    a, a_task = Principal("a", "static-token"), Principal("a", "task-token", task_id="t1")
    plain = await sessions.create(a, LEGACY, {}, None)
    tasked = await sessions.create(a_task, LEGACY, {}, None)
    with pytest.raises(SessionLimitReached):  # per agent: nothing is created
        await sessions.create(Principal("a", "static-token"), LEGACY, {}, None)
    other = await sessions.create(Principal("b", "static-token"), LEGACY, {}, None)
    with pytest.raises(SessionLimitReached):  # in all
        await sessions.create(Principal("c", "static-token"), LEGACY, {}, None)
    assert (await sessions.count(), await sessions.count("a"), await sessions.count("c")) == (3, 2, 0)
    assert await sessions.get(plain.id, a) is not None and await sessions.get("no-such-session", a) is None
    # Only to the caller it was opened for: another agent, or the same agent with another identity, sees nothing.
    assert await sessions.get(plain.id, Principal("b", "static-token")) is None
    assert await sessions.get(tasked.id, a) is None and await sessions.get(tasked.id, a_task) is not None
    assert await sessions.close_task("a", "t1") == 1 and await sessions.get(tasked.id, a_task) is None
    assert {s.id for s in sessions.all()} == {plain.id, other.id}
    assert await sessions.close_agent("a") == 1 and await sessions.get(plain.id, a) is None
    assert await sessions.close(other.id) is not None and await sessions.close(other.id) is None
    assert await sessions.count() == 0


async def test_people_sessions_contract_in_memory() -> None:
    await people_sessions_contract(SessionRegistry(3600, 2, 10, max_per_client=3))


def person(sub: str, agent_id: str = "team-client") -> Principal:
    """A person's principal through a client (as gateway.identity.people builds it)."""
    issuer = "https://login.example.com"
    user = UserIdentity(sub, issuer, "", False, (), "client-1", None, "", ())
    return Principal(agent_id, "client", types.MappingProxyType({"iss": issuer, "sub": sub}), user=user)


async def people_sessions_contract(sessions: AgentSessions[Principal, Any]) -> None:
    """Through a client (max_per_agent 2, max_per_client 3): sessions count per person, so one person cannot
    take the places of the client's other people; all of them together stop at max_per_client."""
    alice = [await sessions.create(person("alice"), LEGACY, {}, None) for _ in range(2)]
    with pytest.raises(SessionLimitReached) as own:
        await sessions.create(person("alice"), LEGACY, {}, None)
    assert own.value.data == {"limit": "limits.max_sessions_per_agent", "max": 2}
    assert "you already have 2 open through this client" in own.value.message
    bob = await sessions.create(person("bob"), LEGACY, {}, None)  # Alice's two do not count against Bob
    with pytest.raises(SessionLimitReached) as client:
        await sessions.create(person("carol"), LEGACY, {}, None)
    assert (client.value.status, client.value.data) == (429, {"limit": "limits.max_sessions_per_client", "max": 3})
    assert await sessions.create(person("dave", "other-client"), LEGACY, {}, None) is not None  # another client
    await sessions.close(alice[0].id)  # a place of the client's, and of Alice's, is free again
    assert await sessions.create(person("carol"), LEGACY, {}, None) is not None
    with pytest.raises(SessionLimitReached):
        await sessions.create(person("alice"), LEGACY, {}, None)  # the client's three are taken
    await sessions.close(bob.id)
    assert await sessions.create(person("alice"), LEGACY, {}, None) is not None
    assert await sessions.count("team-client") == 3
    assert await sessions.close_agent("team-client") == 3 and await sessions.close_agent("other-client") == 1
    assert [await sessions.create(person("alice"), LEGACY, {}, None) is not None for _ in range(2)] == [True, True]


@pytest.mark.parametrize("make", STREAM_LOGS)
async def test_stream_log_contract(make: Callable[[str], StreamLog]) -> None:
    await stream_log_contract(make("p1"))


async def stream_log_contract(log: StreamLog) -> None:
    """The StreamLog behaviour every implementation keeps (`log` is new and empty, key p1)."""
    assert b"id: p1-0" in log.priming_frame(1000)
    first = await log.append(b'{"n":1}')
    assert not log.listened()
    live = await log.follow(None)  # only frames from now on
    assert log.listened()
    second = await log.append(b'{"n":2}')
    replay = await log.follow(1)  # resuming after p1-1
    assert live is not None and replay is not None
    assert b"id: p1-1" in first and b"id: p1-2" in second
    assert await next_frame(live) == second and await next_frame(replay) == second
    last = await log.append(b'{"n":3}', final=True)
    assert [await next_frame(live), await next_frame(live)] == [last, None]  # then the stream ends
    assert log.finished
    late = await log.follow(0)
    assert late is not None and [await next_frame(late) for _ in range(4)] == [first, second, last, None]


async def next_frame(queue: asyncio.Queue[bytes | None]) -> bytes | None:
    """The next frame a follower gets (a shared log delivers through pub/sub: allow it a moment)."""
    return await asyncio.wait_for(queue.get(), timeout=5)


async def test_sessions_keep_their_stream_logs_where_the_registry_says() -> None:
    made: list[str] = []

    def new_log(key: str) -> StreamLog:
        made.append(key)
        return InMemoryStreamLog(key)

    session = await SessionRegistry(3600, new_log=new_log).create(Principal("a", "static-token"), LEGACY, {}, None)
    session.open_post_stream()
    assert made == ["s", "p1"]


# -- OpenApprovals and ApprovalWaiters --------------------------------------------------------------

@pytest.mark.parametrize("make", OPEN_APPROVALS)
async def test_open_approvals_contract(make: Callable[[], OpenApprovals[Approval]]) -> None:
    approvals = make()
    first = approval("apr_1")
    assert await approvals.put(first) and await approvals.put(approval("apr_2"))
    assert not await approvals.put(approval("apr_1", ApprovalState.APPROVED))  # opened once, changed by CAS only
    granted = approval("apr_1", ApprovalState.APPROVED)
    assert await approvals.put(granted, replacing=await approvals.get("apr_1"))
    assert not await approvals.put(approval("apr_1", ApprovalState.DENIED), replacing=first)  # read before: stale
    replaced = await approvals.get("apr_1")
    assert await approvals.count() == 2 and replaced == granted
    assert sorted(a.id for a in await approvals.values()) == ["apr_1", "apr_2"]
    assert await approvals.pop("apr_1") == granted
    assert await approvals.pop("apr_1") is None  # the claim is single: a second pop gets nothing
    assert not await approvals.put(approval("apr_1", ApprovalState.DENIED), replacing=granted)  # closed: stays so
    assert await approvals.get("apr_1") is None and [a.id for a in await approvals.values()] == ["apr_2"]


@pytest.mark.parametrize("make", APPROVAL_WAITERS)
async def test_approval_waiters_contract(make: Callable[[], ApprovalWaiters]) -> None:
    waiters = make()
    waiters.hold_begins("apr_1")
    waiters.hold_begins("apr_1")
    assert waiters.is_held("apr_1") and not waiters.is_held("apr_2")
    assert waiters.hold_ends("apr_1") is False and waiters.is_held("apr_1")
    assert waiters.hold_ends("apr_1") is True and not waiters.is_held("apr_1")
    started = time.monotonic()
    await waiters.wait("apr_1", 0.05)  # nobody wakes it: the timeout ends the wait
    assert time.monotonic() - started >= 0.04
    waiting = asyncio.create_task(waiters.wait("apr_1", 30))
    await asyncio.sleep(0.01)
    waiters.wake("apr_1")
    await asyncio.wait_for(waiting, 2)  # woken long before its timeout


# -- ConsoleSessions and LoginFailures --------------------------------------------------------------

@pytest.mark.parametrize("make", CONSOLE_SESSIONS)
async def test_console_sessions_contract(make: Callable[[float, float], ConsoleSessions[Approver, Any]]) -> None:
    person = Approver(name="alice", actor="admin:alice", groups=frozenset({"ops"}), roles=frozenset({"approver"}))
    sessions = make(3600, 0.3)
    session = await sessions.create(person)
    found = await sessions.get(session.id)
    assert found is not None and found.id == session.id and found.person == person and found.csrf == session.csrf
    assert await sessions.get(None) is None and await sessions.get("forged") is None
    await sessions.keep_flashes(session.id, ["You approved apr_1."])
    assert (await sessions.get(session.id)).flashes == ["You approved apr_1."]
    await sessions.delete(session.id)
    assert await sessions.get(session.id) is None
    short = await sessions.create(person, credential_expires_at=time.time() + 0.1)  # the credential ends first
    idle = await sessions.create(person)
    used = await sessions.create(person)
    for _ in range(3):  # each get refreshes the idle limit
        await asyncio.sleep(0.15)
        assert await sessions.get(used.id) is not None
    assert await sessions.get(short.id) is None and await sessions.get(idle.id) is None


@pytest.mark.parametrize("make", LOGIN_FAILURES)
async def test_login_failures_contract(make: Callable[[int, float], LoginFailures]) -> None:
    await login_failures_contract(make(2, 60.0))


async def login_failures_contract(failures: LoginFailures) -> None:
    """Attempts count from admission; a success takes its attempt back; a concurrent burst is held
    to the limit (no check-then-count gap). Shared with the Redis implementation's test."""
    assert await failures.retry_after_s("10.0.0.1") == 0
    first = await failures.attempt("10.0.0.1")
    assert first is not None
    await failures.succeeded("10.0.0.1", first)
    assert await failures.retry_after_s("10.0.0.1") == 0  # a sign-in that worked is no failure
    assert await failures.attempt("10.0.0.1") is not None and await failures.attempt("10.0.0.1") is not None
    assert await failures.attempt("10.0.0.1") is None and 1 <= await failures.retry_after_s("10.0.0.1") <= 61
    burst = await asyncio.gather(*(failures.attempt("10.0.0.2") for _ in range(20)))
    assert len([ticket for ticket in burst if ticket is not None]) == 2
    assert await failures.attempt("10.0.0.3") is not None


# -- Notices ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", NOTICES)
async def test_notices_contract(make: Callable[[], Notices]) -> None:
    notices = make()
    heard: list[tuple[str, Mapping[str, Any]]] = []

    def recorder(name: str) -> Callable[[Mapping[str, Any]], Any]:
        async def handle(payload: Mapping[str, Any]) -> None:
            heard.append((name, payload))
        return handle

    notices.subscribe(TOPIC_LIST_CHANGED, recorder("first"))
    notices.subscribe(TOPIC_LIST_CHANGED, recorder("second"))
    notices.subscribe("other", recorder("other"))
    await notices.publish(TOPIC_LIST_CHANGED, {"kinds": ["tools"]})
    assert heard == [("first", {"kinds": ["tools"]}), ("second", {"kinds": ["tools"]})]


# -- the gateway is built with the backends it is given --------------------------------------------

def settings(tmp_path: Path) -> Settings:
    (tmp_path / "cedar" / "policies").mkdir(parents=True)
    shutil.copy(REPO / "cedar" / "schema.cedarschema", tmp_path / "cedar")
    deny_all = '@id("deny-all")\nforbid (principal, action, resource);\n'
    (tmp_path / "cedar" / "policies" / "deny.cedar").write_text(deny_all)
    return settings_from_mapping({"state": f"sqlite:///{tmp_path / 'state.db'}"}, tmp_path)


def empty_catalog() -> Catalog:
    return Catalog(types.MappingProxyType({}), types.MappingProxyType({}))


async def test_each_stage_uses_the_backend_the_gateway_is_given(tmp_path: Path) -> None:
    config, catalog = settings(tmp_path), empty_catalog()
    chosen = in_memory_backends(config, catalog)
    chosen.rate_windows = ChainTracker(LIMITS)  # a seam of its own, not the signals' tracker
    gateway = Gateway(config, catalog, state=chosen)
    assert gateway.state is chosen
    assert gateway.sessions is chosen.agent_sessions and gateway.endpoint.sessions is chosen.agent_sessions
    assert gateway.methods.monitor.signals is chosen.chain_signals and gateway.chain is chosen.chain_signals
    assert gateway.methods.monitor.rates is chosen.rate_windows
    assert gateway.upstream_auth.revocations is chosen.revocations
    assert gateway.verifier.cache is chosen.verified_tokens
    assert gateway.approvals._open is chosen.open_approvals and gateway.approvals._waiters is chosen.approval_waiters
    console = Console(gateway.approvals, gateway.registry, gateway.tasks, gateway.store, gateway.admin_auth,
                      config, gateway.reviews, gateway.resource_reviews, sessions=chosen.console_sessions,
                      throttle=chosen.login_failures)
    assert console.sessions is chosen.console_sessions and console.throttle is chosen.login_failures
    heard: list[Mapping[str, Any]] = []

    async def listen(payload: Mapping[str, Any]) -> None:
        heard.append(payload)

    chosen.notices.subscribe(TOPIC_LIST_CHANGED, listen)
    await gateway.list_changes.publish_list_changed({"prompts", "resources"})  # what a policy reload or review sends
    assert heard == [{"kinds": ["prompts", "resources"]}]


def test_two_gateways_built_by_default_share_no_state(tmp_path: Path) -> None:
    one = Gateway(settings(tmp_path / "one"), empty_catalog())
    two = Gateway(settings(tmp_path / "two"), empty_catalog())
    for name in StateBackends.__dataclass_fields__:
        mine = getattr(one.state, name)
        assert mine is None or mine is not getattr(two.state, name), name  # None: counted in the stage itself


def test_the_state_package_is_a_leaf() -> None:
    """Protocols only: a stage may import them, they import no stage (protocol and settings at most)."""
    wrong = [f"{source} -> {target}" for source, targets in sorted(import_graph().items())
             if within(source, "gateway.state") for target in sorted(targets)
             if not any(within(target, allowed) for allowed in ("gateway.state", "gateway.protocol",
                                                                "gateway.settings"))]
    assert not wrong, wrong


def test_a_fleet_shares_every_seam_and_refuses_to_build_with_one_left_in_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With cluster.redis_url every seam but the per-process token cache is shared; a seam with no shared
    implementation (here: one removed) makes the build refuse rather than enforce it per process."""
    config = replace(settings(tmp_path), cluster=ClusterSettings(redis_url="redis://127.0.0.1:1/0"))
    state = shared_backends(config, empty_catalog(), Cluster(config.cluster))
    assert process_local_seams(state) == []
    assert [name for name in StateBackends.__dataclass_fields__
            if not getattr(getattr(state, name), "shared", False)] == ["verified_tokens"]
    monkeypatch.setattr(backends, "RedisChain", lambda *args: ChainTracker(LIMITS))
    with pytest.raises(ConfigError, match="no shared implementation of rate_windows"):
        shared_backends(config, empty_catalog(), Cluster(config.cluster))
