"""Upstreams that crash, hang, vanish or restart, seen through a real `mcp` client, both eras.

These tests use gateways and upstream processes of their own (not the shared session `gateway`),
because they kill upstreams. Waits for recovery are bounded polls, never speed thresholds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import TOKEN
from tests.support.clients import ERAS, mcp_client
from tests.support.processes import (
    BEHAVIOUR_SERVER,
    Gateway,
    behaviour_manifest,
    free_port,
    start_listening,
    stdio_behaviour_transport,
    stop,
)

UNAVAILABLE = -32010
TIMEOUT = -32001
RECOVERY_S = 20.0
LIST_CHANGE_WITHIN_S = 45.0  # the gateway's stream reconnect backs off to 30 s between attempts


# Helpers ---------------------------------------------------------------------------------------


def start_http_upstream(log: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    return start_listening([sys.executable, str(BEHAVIOUR_SERVER), "--port", str(port)],
                           env={"BEHAVIOUR_LOG": str(log)})


def cancellations(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.strip() and json.loads(line)["event"] == "cancelled")


async def wait_for_cancellations(log: Path, more_than: int, within_s: float = 10.0) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        count = cancellations(log)
        if count > more_than:
            return count
        await anyio.sleep(0.05)
    return cancellations(log)


async def echo(client: Client, tool: str, text: str) -> str:
    result = await client.call_tool(tool, {"text": text})
    assert not result.is_error, result
    return str(result.content[0].text)  # type: ignore[union-attr]


async def echo_when_back(url: str, mode: str, tool: str, within_s: float = RECOVERY_S) -> tuple[str, int]:
    """Call `tool` through fresh clients until it answers; returns the answer and how many -32010s came first."""
    deadline = time.monotonic() + within_s
    refusals = 0
    while True:
        async with mcp_client(url, TOKEN, mode) as client:
            try:
                return await echo(client, tool, "back again"), refusals
            except MCPError as exc:
                assert exc.error.code == UNAVAILABLE, exc.error
                refusals += 1
                assert time.monotonic() < deadline, f"{tool} did not come back within {within_s}s"
        await anyio.sleep(0.25)


async def echo_in_session_when_back(client: Client, tool: str, text: str, within_s: float = RECOVERY_S) -> str:
    """`tool`'s answer in this same agent session, once its upstream is back. A re-sync that ran while the upstream
    was restarting takes its lists away until the watcher's next round (docs/operations.md, "Upstream failures"):
    meanwhile a call is refused with -32010 at once, and only that refusal is waited out."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await echo(client, tool, text)
        except MCPError as exc:
            assert exc.error.code == UNAVAILABLE and "its upstream is down" in exc.error.message, exc.error
            assert time.monotonic() < deadline, f"{tool} did not come back within {within_s}s"
        await anyio.sleep(0.25)


async def tool_names(url: str, mode: str) -> set[str]:
    async with mcp_client(url, TOKEN, mode) as client:
        return {tool.name for tool in (await client.list_tools()).tools}


def upstream_health(gw: Gateway) -> dict[str, bool]:
    response = httpx2.get(f"{gw.base}/healthz")
    assert response.status_code == 200
    upstreams: dict[str, bool] = response.json()["upstreams"]
    return upstreams


# Fixtures --------------------------------------------------------------------------------------


@dataclass
class Failures:
    """One gateway in front of upstreams that the tests below crash, stall and cancel."""

    gateway: Gateway
    web_log: Path  # HTTP upstream `web` (timeout 30 s)
    quick_log: Path  # HTTP upstream `quick` (timeout 1 s)
    pipe_log: Path  # stdio upstream `pipe` (timeout 30 s)
    quickpipe_log: Path  # stdio upstream `quickpipe` (timeout 1 s)

    def log_for(self, namespace: str) -> Path:
        return {"web": self.web_log, "quick": self.quick_log, "pipe": self.pipe_log,
                "quickpipe": self.quickpipe_log}[namespace]


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failures]:
    logs = tmp_path_factory.mktemp("failure-logs")
    web_log, quick_log, pipe_log, quickpipe_log = (logs / f"{n}.jsonl" for n in ("web", "quick", "pipe", "quickpipe"))
    web, web_port = start_http_upstream(web_log)
    quick, quick_port = start_http_upstream(quick_log)
    manifests = [
        behaviour_manifest("web", {"url": f"http://127.0.0.1:{web_port}/mcp"}, timeout_s=30),
        behaviour_manifest("quick", {"url": f"http://127.0.0.1:{quick_port}/mcp"}, timeout_s=1),
        behaviour_manifest("pipe", stdio_behaviour_transport(pipe_log), timeout_s=30),
        behaviour_manifest("quickpipe", stdio_behaviour_transport(quickpipe_log), timeout_s=1),
        behaviour_manifest("crashy", stdio_behaviour_transport(), timeout_s=30),
    ]
    gw = Gateway(tmp_path_factory.mktemp("failures-gateway"), manifests).start()
    try:
        yield Failures(gw, web_log, quick_log, pipe_log, quickpipe_log)
    finally:
        gw.stop()
        stop(web)
        stop(quick)


# A stdio upstream that crashes -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_stdio_crash_is_a_clear_error_and_the_upstream_comes_back(failures: Failures, mode: str) -> None:
    gw = failures.gateway
    async with mcp_client(gw.url, TOKEN, mode) as client:
        assert await echo(client, "crashy__echo", "before") == "before"
        with pytest.raises(MCPError) as caught:
            await client.call_tool("crashy__crash", {})
        assert caught.value.error.code == UNAVAILABLE
        assert "crashy" in caught.value.error.message
        assert any(word in caught.value.error.message for word in ("exited", "unavailable"))
        # Another upstream, same agent session: unaffected.
        assert await echo(client, "web__echo", "still here") == "still here"
        assert await echo(client, "pipe__echo", "still here too") == "still here too"
    # The child is restarted with backoff; its tools answer again within a bounded wait.
    answer, _ = await echo_when_back(gw.url, mode, "crashy__echo")
    assert answer == "back again"
    assert "crashy__echo" in await tool_names(gw.url, mode)
    assert upstream_health(gw)["crashy"] is True


def restart_delays(gw: Gateway, server_id: str) -> list[float]:
    marker = f"upstream {server_id} is down; restarting in "
    return [float(line.split(marker)[1].rstrip("s")) for line in gw.log_text().splitlines() if marker in line]


async def test_stdio_crash_loop_backs_off(failures: Failures) -> None:
    """A child that dies right after every restart is restarted with growing delays, not at a fixed rate."""
    gw = failures.gateway
    crashes = 3
    seen = len(restart_delays(gw, "crashy"))
    for _ in range(crashes):
        await echo_when_back(gw.url, ERAS[0], "crashy__echo")
        async with mcp_client(gw.url, TOKEN, ERAS[0]) as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("crashy__crash", {})
            assert caught.value.error.code == UNAVAILABLE
    await echo_when_back(gw.url, ERAS[0], "crashy__echo")
    delays = restart_delays(gw, "crashy")[seen:]
    assert len(delays) == crashes, delays
    assert delays == sorted(delays) and delays[-1] > delays[0], f"no backoff between quick crashes: {delays}"


# Timeouts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("namespace", ["quick", "quickpipe"])
async def test_slow_upstream_times_out_with_a_named_error(failures: Failures, mode: str, namespace: str) -> None:
    log = failures.log_for(namespace)
    before = cancellations(log)
    async with mcp_client(failures.gateway.url, TOKEN, mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(f"{namespace}__slow", {"seconds": 5})
        assert caught.value.error.code == TIMEOUT
        assert repr(namespace) in caught.value.error.message
        assert "1s" in caught.value.error.message
        # The gateway keeps serving: the same upstream, and another one.
        assert await echo(client, f"{namespace}__echo", "after timeout") == "after timeout"
        assert await echo(client, "web__echo", "elsewhere") == "elsewhere"
    # Timed out at the gateway means abandoned upstream too: stdio and handshake-era HTTP get
    # notifications/cancelled, a 2026-07-28 HTTP upstream sees its response stream closed.
    assert await wait_for_cancellations(log, before) == before + 1


# Cancellation by the agent ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("namespace", ["web", "pipe"])
async def test_agent_cancellation_reaches_the_upstream(failures: Failures, mode: str, namespace: str) -> None:
    log = failures.log_for(namespace)
    before = cancellations(log)
    async with mcp_client(failures.gateway.url, TOKEN, mode) as client:
        finished = False
        with anyio.move_on_after(1.0) as scope:
            await client.call_tool(f"{namespace}__slow", {"seconds": 20})
            finished = True
        assert scope.cancelled_caught and not finished
        assert await wait_for_cancellations(log, before) == before + 1
        # The session and the upstream are fine afterwards.
        assert await echo(client, f"{namespace}__echo", "after cancel") == "after cancel"


# An HTTP upstream that is down at start, then comes up -----------------------------------------


async def test_dead_http_upstream_at_start_then_reconnects(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "ghost.jsonl"
    manifests = [
        behaviour_manifest("ghost", {"url": f"http://127.0.0.1:{port}/mcp"}, timeout_s=5),
        behaviour_manifest("pipe", stdio_behaviour_transport(), timeout_s=5, tools=("echo",)),
    ]
    gw = Gateway(tmp_path / "gateway", manifests).start()
    upstream: subprocess.Popen[bytes] | None = None
    try:
        assert upstream_health(gw) == {"ghost": False, "pipe": True}
        for mode in ERAS:
            assert await tool_names(gw.url, mode) == {"pipe__echo"}
            async with mcp_client(gw.url, TOKEN, mode) as client:
                with pytest.raises(MCPError) as caught:
                    await client.call_tool("ghost__echo", {"text": "anyone?"})
                assert caught.value.error.code == UNAVAILABLE
                assert "ghost" in caught.value.error.message
                assert await echo(client, "pipe__echo", "local works") == "local works"

        upstream, _ = start_http_upstream(log, port)
        deadline = time.monotonic() + RECOVERY_S
        while "ghost__echo" not in await tool_names(gw.url, ERAS[0]):
            assert time.monotonic() < deadline, f"ghost never came back: {gw.log_text()[-2000:]}"
            await anyio.sleep(0.25)
        for mode in ERAS:
            assert {f"ghost__{t}" for t in ("echo", "slow", "whoami")} <= await tool_names(gw.url, mode)
            async with mcp_client(gw.url, TOKEN, mode) as client:
                assert await echo(client, "ghost__echo", f"hello {mode}") == f"hello {mode}"
        assert upstream_health(gw)["ghost"] is True
    finally:
        gw.stop()
        if upstream is not None:
            stop(upstream)


# An HTTP upstream that is killed mid-session and restarted on the same port ---------------------


@dataclass
class Phoenix:
    gateway: Gateway
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def kill_and_restart(self) -> None:
        stop(self.process, signal.SIGKILL)
        self.process, port = start_http_upstream(self.log, self.port)
        assert port == self.port


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    workdir = tmp_path_factory.mktemp("phoenix")
    log = workdir / "phoenix.jsonl"
    process, port = start_http_upstream(log)
    manifests = [behaviour_manifest("phoenix", {"url": f"http://127.0.0.1:{port}/mcp"}, timeout_s=10)]
    state = Phoenix(Gateway(workdir / "gateway", manifests).start(), port, log, process)
    try:
        yield state
    finally:
        state.gateway.stop()
        stop(state.process)


def upstream_session(result_headers: dict[str, str]) -> str | None:
    return result_headers.get("mcp-session-id")


@pytest.mark.parametrize("mode", ERAS)
async def test_http_upstream_restarted_mid_session(phoenix: Phoenix, mode: str) -> None:
    gw = phoenix.gateway
    async with mcp_client(gw.url, TOKEN, mode) as client:
        first = (await client.call_tool("phoenix__whoami", {})).structured_content
        assert first is not None
        assert await echo(client, "phoenix__echo", "before") == "before"

        phoenix.kill_and_restart()

        # Same agent session, upstream reborn without our session: the call works in it (once the gateway has the
        # upstream's lists back, if a re-sync saw it down while it restarted).
        assert await echo_in_session_when_back(client, "phoenix__echo", "after") == "after"
        second = (await client.call_tool("phoenix__whoami", {})).structured_content
        assert second is not None
    old_session = upstream_session(first["headers"])
    new_session = upstream_session(second["headers"])
    if mode == "legacy":
        # A handshake-era agent is served over a handshake-era upstream session, re-opened after the 404.
        assert old_session is not None and new_session is not None
        assert new_session != old_session
    else:
        assert old_session is None and new_session is None
    assert upstream_health(gw)["phoenix"] is True


async def test_list_changes_still_arrive_after_http_upstream_restart(tmp_path: Path) -> None:
    """A handshake-era upstream announces list changes on its session's GET stream; after the upstream
    restarts (and forgets that session) the gateway must open the stream again on its new session."""
    log = tmp_path / "legacyup.jsonl"
    process, port = start_http_upstream(log)
    manifest = behaviour_manifest("legacyup", {"url": f"http://127.0.0.1:{port}/mcp", "protocol": "2025-11-25"},
                                  timeout_s=10, tools=("echo", "grow", "extra", "extra2"))
    gw = Gateway(tmp_path / "gateway", [manifest]).start()
    try:
        async def grow_until_listed(name: str) -> bool:
            """Grow `name` upstream until agents see it, announcing it again every 2 s: an announcement made
            while the gateway's GET stream is still (re)connecting, which takes longer on a loaded machine, has
            no stream to go to. Only that stream brings the change (the resync backstop is minutes away)."""
            deadline = time.monotonic() + LIST_CHANGE_WITHIN_S
            while time.monotonic() < deadline:
                async with mcp_client(gw.url, TOKEN, "legacy") as client:
                    await client.call_tool("legacyup__grow", {"name": name})
                announced = time.monotonic()
                while time.monotonic() < min(deadline, announced + 2):
                    if f"legacyup__{name}" in await tool_names(gw.url, "legacy"):
                        return True
                    await anyio.sleep(0.2)
            return False

        assert await tool_names(gw.url, "legacy") == {"legacyup__echo", "legacyup__grow"}
        # Control: before any restart, a change upstream reaches agents.
        assert await grow_until_listed("extra")

        stop(process, signal.SIGKILL)
        process, _ = start_http_upstream(log, port)
        async with mcp_client(gw.url, TOKEN, "legacy") as client:
            assert await echo(client, "legacyup__echo", "after restart") == "after restart"
        # The restarted upstream lists no `extra` and says nothing of it: a change made while the gateway's
        # stream was down. Reopening the stream re-lists the upstream (before, the 5-minute backstop did).
        deadline = time.monotonic() + LIST_CHANGE_WITHIN_S
        while time.monotonic() < deadline:
            if "legacyup__extra" not in await tool_names(gw.url, "legacy"):
                break
            await anyio.sleep(0.2)
        assert await tool_names(gw.url, "legacy") == {"legacyup__echo", "legacyup__grow"}
        assert await grow_until_listed("extra2"), "tools/list_changed from the restarted upstream was lost"
    finally:
        gw.stop()
        stop(process)
