"""2025-11-25 sessions across a fleet (issue 15, item 1): the Redis `agent_sessions` and `StreamLog` seams.

The seams' contracts on a real Redis; then real `narrowgate serve` replicas on one PostgreSQL and one Redis,
driven over raw HTTP and with the `mcp` SDK client: a session opened on one replica continues on
another (requests, its GET stream, Last-Event-ID replay, DELETE), survives the SIGKILL of the replica
that opened it, and is refused to anyone else exactly as on one replica. Last, the fault: Redis stopped
refuses new sessions and serves no old one, and recovers when it is back.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.cluster.connection import Cluster
from gateway.cluster.sessions import RedisSessions
from gateway.identity.principal import Principal
from tests import test_cluster_limits
from tests.support import engines
from tests.support.fleet import Fleet, start_fleet
from tests.support.processes import REPO, Gateway, behaviour_manifest
from tests.test_state_seams import (
    LEGACY,
    agent_sessions_contract,
    next_frame,
    people_sessions_contract,
    stream_log_contract,
)
from tests.test_stream_resumption import HEADERS, open_session, parse_events, progress_call_dropped

# --- the seams' contracts on Redis ----------------------------------------------------------------

cluster = test_cluster_limits.cluster  # the fixture: a client of the session's Redis under a prefix of its own


@asynccontextmanager
async def running(*all_sessions: RedisSessions) -> AsyncIterator[None]:
    """Started as Cluster.open starts them (their channel reader), stopped as Cluster.close does."""
    for sessions in all_sessions:
        await sessions.start()
    try:
        yield
    finally:
        for sessions in all_sessions:
            sessions.release_local()
            await sessions.stop()


async def test_agent_sessions_contract_on_redis(cluster: Cluster) -> None:
    sessions = RedisSessions(cluster, 3600, max_per_agent=2, max_total=3)
    async with running(sessions):
        await agent_sessions_contract(sessions)


async def test_people_sessions_contract_on_redis(cluster: Cluster) -> None:
    sessions = RedisSessions(cluster, 3600, max_per_agent=2, max_total=10, max_per_client=3)
    async with running(sessions):
        await people_sessions_contract(sessions)


async def test_stream_log_contract_on_redis(cluster: Cluster) -> None:
    sessions = RedisSessions(cluster, 3600)
    async with running(sessions):
        session = await sessions.create(Principal("a", "static-token"), LEGACY, {}, None)
        await stream_log_contract(session.new_log("p1"))


async def test_two_processes_share_a_session_its_frames_and_its_end(cluster: Cluster) -> None:
    """Two RedisSessions on one Redis, as two replicas: what one opens the other serves, to its opener only."""
    a, b = RedisSessions(cluster, 3600), RedisSessions(cluster, 3600)
    owner = Principal("agent-a", "static-token")
    async with running(a, b):
        opened = await a.create(owner, LEGACY, {"sampling": {}}, {"name": "t"})
        assert await b.get(opened.id, Principal("agent-b", "static-token")) is None
        assert await b.get(opened.id, Principal("agent-a", "task-token", task_id="t1")) is None
        served = await b.get(opened.id, owner)
        assert served is not None and served is not opened
        assert (served.protocol_version, served.client_capabilities, served.client_info) == (
            LEGACY, {"sampling": {}}, {"name": "t"})
        served.log_level, served.subscriptions = "debug", {"file:///data/public/a.txt"}
        await b.save(served)
        again = await a.get(opened.id, owner)
        assert again is opened and (opened.log_level, opened.subscriptions) == ("debug", {"file:///data/public/a.txt"})

        resumed = await opened.resume(None)  # a GET stream held by `a`
        assert resumed is not None
        await served.publish({"jsonrpc": "2.0", "method": "notifications/resources/updated"})  # produced on `b`
        frame = await next_frame(resumed[1])
        assert frame is not None and b"id: s-1" in frame and b"resources/updated" in frame

        post = served.open_post_stream()  # a reply streamed by `b`, resumed at `a` by its Last-Event-ID
        first = await post.append(b'{"n":1}')
        await post.append(b'{"n":2}', final=True)
        replay = await opened.resume(f"{post.key}-1")
        assert replay is not None and await next_frame(replay[1]) == frame_of(post.key, 2, b'{"n":2}')
        assert await next_frame(replay[1]) is None and first == frame_of(post.key, 1, b'{"n":1}')
        assert await opened.resume(f"{a.post_prefix}999-1") is None  # an unknown stream: refused (404)

        assert await b.close(opened.id) is not None
        assert await next_frame(resumed[1]) is None  # the GET stream on `a` ends
        assert await a.get(opened.id, owner) is None and opened.id not in {s.id for s in a.all()}


async def test_a_reply_stream_followed_in_another_process_is_heard_where_it_is_written(cluster: Cluster) -> None:
    """A call held on one replica (its connection gone) keeps waiting while the agent follows its stream
    at another replica, and only while it does."""
    a, b = RedisSessions(cluster, 3600), RedisSessions(cluster, 3600)
    owner = Principal("agent-a", "static-token")
    async with running(a, b):
        opened = await a.create(owner, LEGACY, {}, None)
        post = opened.open_post_stream()  # the reply being written on `a`
        await post.append(b'{"n":1}')
        assert not post.listened()
        served = await b.get(opened.id, owner)
        assert served is not None
        resumed = await served.resume(f"{post.key}-1")
        assert resumed is not None
        await wait_for(post.listened, "the follower at the other process to be heard", timeout_s=5)
        resumed[0].followers.discard(resumed[1])  # the agent goes away
        await wait_for(lambda: not post.listened(), "silence", timeout_s=6)


def frame_of(key: str, seq: int, data: bytes) -> bytes:
    return b"id: " + f"{key}-{seq}".encode() + b"\nevent: message\ndata: " + data + b"\n\n"


# --- a fleet: three real replicas on one store and one Redis ---------------------------------------

RESOURCE_SERVER = REPO / "tests" / "fixtures" / "upstreams" / "resource_server.py"
TOKENS = {"agent-a": "token-agent-a", "agent-b": "token-agent-b"}
PUBLIC = "file:///data/public/a.txt"
WAIT_S = 15.0


def files_manifest() -> dict[str, Any]:
    """A stdio upstream per replica, each following `ops.jsonl` in its own replica's catalog directory (its cwd),
    so a test can make one replica's upstream, and only that one, send a resource update."""
    return {"id": "files", "owner": "files-owner@example.com", "description": "resource test upstream",
            "transport": {"command": "${PYTHON}", "args": [str(RESOURCE_SERVER), "--name", "files",
                                                           "--template", "file:///data/{+path}",
                                                           "--control-file", "ops.jsonl"]},
            "timeout_s": 10, "tools": [{"name": "read_file", "risk": "read", "data_classes": ["internal"]}]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, redis_url: str,
          postgres_url: str) -> Iterator[Fleet]:
    manifests = [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}), files_manifest()]
    replicas = start_fleet(tmp_path_factory.mktemp("session-fleet"), manifests, redis_url=redis_url,
                           postgres_url=postgres_url, replicas=3, tokens=TOKENS)
    yield replicas
    replicas.stop()


def rpc(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def echo(request_id: int, text: str) -> dict[str, Any]:
    return rpc(request_id, "tools/call", {"name": "behav__echo", "arguments": {"text": text}})


def as_agent(session: dict[str, str], agent: str) -> dict[str, str]:
    return {**session, "Authorization": f"Bearer {TOKENS[agent]}"}


async def answer(http: httpx2.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """The JSON-RPC reply to one POST, whether it came as JSON or as an SSE stream."""
    response = await http.post(url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        replies = [orjson.loads(e["data"]) for e in parse_events(response.text) if e.get("data")]
        return next(r for r in replies if r.get("id") == body["id"])
    return response.json()


def text_of(reply: dict[str, Any]) -> str:
    assert "result" in reply, reply
    return str(reply["result"]["content"][0]["text"])


class Stream:
    """A GET stream read in the background: its events so far, and whether it has ended."""

    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []
        self.status = 0
        self.ended = asyncio.Event()

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(e["data"]) for e in self.events if e.get("data")]


@asynccontextmanager
async def get_stream(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> AsyncIterator[Stream]:
    stream = Stream()

    async def read() -> None:
        try:
            async with http.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}) as response:
                stream.status = response.status_code
                buffer = ""
                async for chunk in response.aiter_text():
                    buffer += chunk
                    stream.events = parse_events(buffer)
        except httpx2.TransportError:
            pass
        finally:
            stream.ended.set()

    reader = asyncio.create_task(read())
    try:
        await wait_for(lambda: stream.status or stream.ended.is_set(), "the GET stream to open")
        assert stream.status == 200, f"the GET stream was refused: {stream.status}"
        yield stream
    finally:
        reader.cancel()


async def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def test_requests_and_the_sdk_client_carry_on_at_another_replica(fleet: Fleet) -> None:
    a, b = fleet[0], fleet[1]
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, a.url)
        assert text_of(await answer(http, b.url, echo(2, "on b"), session)) == "on b"
        assert text_of(await answer(http, a.url, echo(3, "back on a"), session)) == "back on a"
        level = await answer(http, b.url, rpc(4, "logging/setLevel", {"level": "error"}), session)
        assert level["result"] == {}

    # The SDK client: initialize on A; every request carrying the session id goes to B.
    targets: list[tuple[int, str]] = []
    async with sdk_client(a, b, "legacy", targets) as client:
        assert (await client.call_tool("behav__echo", {"text": "via the sdk"})).content[0].text == "via the sdk"
        assert "behav__echo" in {tool.name for tool in (await client.list_tools()).tools}
    assert targets[0] == (a.port, "initialize") and (b.port, "tools/call") in targets
    assert all(port == b.port for port, _ in targets[1:])


async def test_modern_calls_need_no_session_and_go_to_any_replica(fleet: Fleet) -> None:
    """2026-07-28 keeps nothing between requests: one call answered on A, the next on B."""
    targets: list[tuple[int, str]] = []
    async with sdk_client(fleet[0], fleet[1], "2026-07-28", targets, alternate=True) as client:
        for n in range(2):
            assert (await client.call_tool("behav__echo", {"text": f"modern {n}"})).content[0].text == f"modern {n}"
    assert [port for port, method in targets if method == "tools/call"] == [fleet[0].port, fleet[1].port]


@asynccontextmanager
async def sdk_client(first: Gateway, then: Gateway, mode: str, targets: list[tuple[int, str]],
                     alternate: bool = False) -> AsyncIterator[Client]:
    """The SDK client on `first`, with every request that carries a session id (or, `alternate`, every
    second tools/call) sent to `then`: a load balancer without affinity. `targets`: (port, method) sent."""

    async def route(request: httpx2.Request) -> None:
        method = method_of(request)
        if alternate:
            calls = sum(1 for _, sent in targets if sent == "tools/call")
            port = (first, then)[calls % 2].port if method == "tools/call" else first.port
        else:
            port = then.port if "mcp-session-id" in request.headers else first.port
        request.url = request.url.copy_with(port=port)
        request.headers["host"] = f"127.0.0.1:{port}"
        targets.append((port, method))

    headers = {"Authorization": f"Bearer {TOKENS['agent-a']}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120),
                           event_hooks={"request": [route]}) as http,
        Client(streamable_http_client(first.url, http_client=http), mode=mode) as client,
    ):
        yield client


def method_of(request: httpx2.Request) -> str:
    """The JSON-RPC method a request carries ("" for a GET, a DELETE or a reply)."""
    try:
        return str(json.loads(request.content).get("method", ""))
    except (ValueError, AttributeError):
        return ""


async def test_a_notification_produced_on_b_reaches_the_get_stream_held_by_a(fleet: Fleet) -> None:
    a, b = fleet[0], fleet[1]
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, a.url)
        async with get_stream(http, a.url, session) as stream:
            subscribed = await answer(http, b.url, rpc(2, "resources/subscribe", {"uri": PUBLIC}), session)
            assert subscribed["result"] == {}
            # B's own upstream (B's stdio child, and only it) announces an update; B relays it to the session.
            with (b.workdir / "catalog" / "ops.jsonl").open("a", encoding="utf-8") as ops:
                ops.write(json.dumps({"op": "update", "uri": PUBLIC}) + "\n")
            updates = await wait_for(lambda: [e for e in stream.events if "resources/updated" in e.get("data", "")],
                                     "the update on A's GET stream")
        assert orjson.loads(updates[0]["data"])["params"]["uri"] == PUBLIC
        event_id = updates[0]["id"]
        # B replays the session's stream from the shared log.
        async with get_stream(http, b.url, {**session, "Last-Event-ID": "s-0"}) as replay:
            await wait_for(lambda: any(e.get("id") == event_id for e in replay.events), "the replay on B")


async def test_a_post_stream_written_on_a_is_resumed_on_b(fleet: Fleet) -> None:
    a, b = fleet[0], fleet[1]
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, a.url)
        seen = await progress_call_dropped(http, a.url, session)  # written on A
        last_id = [e for e in seen if "id" in e][-1]["id"]
        async with get_stream(http, b.url, {**session, "Last-Event-ID": last_id}) as resumed:
            await wait_for(resumed.ended.is_set, "the resumed stream to end with the reply")
        messages = resumed.messages()
        unknown = await http.get(b.url, headers={**session, "Accept": "text/event-stream",
                                                 "Last-Event-ID": "p0123abcd.999-1"})
    progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
    assert progress and progress[-1] == 3
    assert [text_of(m) for m in messages if m.get("id") == 7] == ["done 3"]
    assert unknown.status_code == 404


async def test_delete_on_b_ends_the_session_on_a(fleet: Fleet) -> None:
    a, b = fleet[0], fleet[1]
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, a.url)
        async with get_stream(http, a.url, session) as stream:
            deleted = await http.delete(b.url, headers=session)
            assert deleted.status_code == 200
            await asyncio.wait_for(stream.ended.wait(), WAIT_S)  # A's open GET stream closes
        for replica in (a, b):
            gone = await http.post(replica.url, json=echo(2, "after delete"), headers=session)
            assert gone.status_code == 404, gone.text


async def test_forged_and_other_agents_session_ids_are_refused_on_another_replica(fleet: Fleet) -> None:
    a, b = fleet[0], fleet[1]
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, a.url)
        forged = {**session, "Mcp-Session-Id": secrets.token_urlsafe(24)}
        for headers in (forged, {**session, "Mcp-Session-Id": "../../x"}, as_agent(session, "agent-b")):
            refused = await http.post(b.url, json=echo(2, "not mine"), headers=headers)
            assert refused.status_code == 404, refused.text
            assert refused.json()["error"]["message"] == "Session not found"
            assert (await http.delete(b.url, headers=headers)).status_code == 404
        # The owner's session was not touched by any of it.
        assert text_of(await answer(http, b.url, echo(3, "still mine"), session)) == "still mine"


async def test_sigkill_of_the_replica_mid_session_and_the_client_carries_on(fleet: Fleet) -> None:
    doomed, survivor = fleet[2], fleet[1]  # the last test to use the third replica
    async with httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, doomed.url)
        assert text_of(await answer(http, doomed.url, echo(2, "before"), session)) == "before"
        in_flight = asyncio.create_task(http.post(doomed.url, json=rpc(3, "tools/call", {
            "name": "behav__slow", "arguments": {"seconds": 20}}), headers=session))
        await asyncio.sleep(0.5)
        assert doomed.process is not None
        doomed.process.kill()  # SIGKILL: no drain, no goodbye
        doomed.process.wait()
        with pytest.raises(httpx2.TransportError):  # the call it was serving is lost with it
            await in_flight
        assert text_of(await answer(http, survivor.url, echo(4, "after"), session)) == "after"
        async with get_stream(http, survivor.url, session):
            pass  # its GET stream opens there too


# --- Redis stopped, then back -------------------------------------------------------------------


async def test_redis_down_refuses_new_sessions_and_serves_no_old_one_then_recovers(
        tmp_path: Path, behaviour_http: int, postgres_url: str) -> None:
    redis = engines.start_redis()
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    manifests = [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"})]
    single = start_fleet(tmp_path, manifests, redis_url=redis.url, postgres_url=postgres_url, replicas=1,
                         tokens=TOKENS)
    gateway = single[0]
    try:
        async with httpx2.AsyncClient(timeout=30) as http:
            session = await open_session(http, gateway.url)
            assert text_of(await answer(http, gateway.url, echo(2, "up"), session)) == "up"

            redis.stop()
            stale = await http.post(gateway.url, json=echo(3, "down"), headers=session)
            assert stale.status_code == 404, stale.text  # never served from what the replica remembers
            refused = await http.post(gateway.url, json=INIT, headers=HEADERS)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert "cannot reach its shared session store" in error["message"]
            assert error["data"] == {"reason": "session_store_unavailable"}
            cause = f"refused a new session for agent agent-a: Redis at redis://127.0.0.1:{port}"
            await wait_for(lambda: cause in gateway.log_text(), "the logged cause")  # logging is off the event loop

            redis = engines.start_redis(port)  # the same address, empty: the gateway was not restarted
            fresh = await wait_for_session(http, gateway.url)
            assert text_of(await answer(http, gateway.url, echo(4, "back"), fresh)) == "back"
            assert (await http.post(gateway.url, json=echo(5, "old"), headers=session)).status_code == 404
    finally:
        single.stop()
        redis.stop()


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


async def wait_for_session(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    """Initialize until it succeeds (the client's pool reconnects on its next command)."""
    deadline = time.monotonic() + WAIT_S
    while (response := await http.post(url, json=INIT, headers=HEADERS)).status_code != 200:
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.1)
    return {**HEADERS, "Mcp-Session-Id": response.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
