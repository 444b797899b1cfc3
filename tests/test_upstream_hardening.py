"""Upstream hardening: what a stdio child can read, whose side traffic reaches whom, how large one
upstream message may be, whose serverInfo agents see, and children that die with the gateway.

Issue 18 items 6, 7 and 10, issue 13 item 13. One gateway in front of the behaviour upstream four
times: `pipe` (stdio), `web` (Streamable HTTP, SSE replies), `json` (Streamable HTTP, JSON replies)
and `zip` (JSON replies the upstream gzips), with the gateway's admin, approver and agent tokens
and web's secret in its environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import SERVER_INFO_META_KEY, CreateMessageRequestParams, CreateMessageResult, TextContent

from gateway.catalog.loader import CatalogError, load_catalog
from gateway.config import ConfigError, settings_from_mapping
from gateway.protocol.errors import UPSTREAM_ERROR
from gateway.upstream.base import without_server_info
from gateway.upstream.child_process import BASE_ENV_NAMES, LOCALE_PREFIX
from gateway.upstream.reply_limit import HEAD_BYTES, TAIL_BYTES, OversizedLine, capped_lines, sniff_message
from tests.support.clients import ERAS, mcp_client
from tests.support.processes import (
    BEHAVIOUR_SERVER,
    Gateway,
    behaviour_manifest,
    child_pids,
    running,
    start_listening,
    stop,
)

MiB = 1024 * 1024
REPLY_LIMIT = MiB
TOKEN_A, TOKEN_B = "agent-a-token-7f3e", "agent-b-token-91c2"
PIPE_SECRET = "pipe-own-secret-5d1a"
# What the gateway's environment holds that no stdio child may read.
GATEWAY_SECRETS = {
    "NARROWGATE_ADMIN_TOKEN": "admin-token-never-in-a-child-c0ffee",
    "APPROVER_TOKEN": "approver-token-never-in-a-child-beef",
    "AGENT_A_TOKEN": TOKEN_A,
    "AGENT_B_TOKEN": TOKEN_B,
    "WEB_API_KEY": "web-upstream-secret-never-in-pipe-f00d",
    "NARROWGATE_LIMITS__MAX_UPSTREAM_REPLY_BYTES": str(REPLY_LIMIT),
}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardening") / "events.jsonl"


@pytest.fixture(scope="module")
def http_upstreams(events: Path) -> Iterator[dict[str, int]]:
    """The behaviour upstream over HTTP twice: SSE replies (`web`) and JSON replies (`json`)."""
    # Each serves its resource under its own URI: a URI two upstreams list is served by neither.
    env = {"BEHAVIOUR_LOG": str(events), "BEHAVIOUR_RESOURCE_URI": "behaviour://web-status"}
    web, web_port = start_listening([sys.executable, str(BEHAVIOUR_SERVER), "--port", "0"], env=env)
    plain, json_port = start_listening([sys.executable, str(BEHAVIOUR_SERVER), "--port", "0", "--json-response"],
                                       env={"BEHAVIOUR_RESOURCE_URI": "behaviour://json-status"})
    # Compressed JSON: its Content-Length says nothing of how large the reply is once inflated.
    zipped, zip_port = start_listening([sys.executable, str(BEHAVIOUR_SERVER), "--port", "0", "--json-response",
                                        "--gzip"], env={"BEHAVIOUR_RESOURCE_URI": "behaviour://zip-status"})
    yield {"web": web_port, "json": json_port, "zip": zip_port}
    stop(web)
    stop(plain)
    stop(zipped)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, http_upstreams: dict[str, int], events: Path) -> Iterator[Gateway]:
    pipe = behaviour_manifest("pipe", {
        "command": "${PYTHON}", "args": [str(BEHAVIOUR_SERVER), "--stdio"],
        "env": {"BEHAVIOUR_LOG": str(events)}, "inherit_env": ["HOME"],
    }, timeout_s=10, tools=("echo", "slow", "progress", "announce", "big"))
    pipe["credentials"] = {"mode": "secret", "secret": {"env": "PIPE_API_KEY"}, "env_var": "API_TOKEN"}
    web = behaviour_manifest("web", {"url": f"http://127.0.0.1:{http_upstreams['web']}/mcp"}, timeout_s=10,
                             tools=("echo", "slow", "announce", "big"))
    web["credentials"] = {"mode": "secret", "secret": {"env": "WEB_API_KEY"}}
    plain = behaviour_manifest("json", {"url": f"http://127.0.0.1:{http_upstreams['json']}/mcp"}, timeout_s=10,
                               tools=("echo", "big"))
    zipped = behaviour_manifest("zip", {"url": f"http://127.0.0.1:{http_upstreams['zip']}/mcp"}, timeout_s=10,
                                tools=("echo", "big"))
    config = {
        "auth": {"static_tokens": [{"agent": "agent-a", "token_env": "AGENT_A_TOKEN"},
                                   {"agent": "agent-b", "token_env": "AGENT_B_TOKEN"}]},
        "admin": {"tokens": [{"name": "admin", "token_env": "NARROWGATE_ADMIN_TOKEN"},
                             {"name": "approver", "role": "approver", "token_env": "APPROVER_TOKEN"}]},
    }
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), [plain, zipped, pipe, web],
                      tokens={"agent-a": TOKEN_A, "agent-b": TOKEN_B}, extra_config=config,
                      env={**GATEWAY_SECRETS, "PIPE_API_KEY": PIPE_SECRET}).start()
    yield gateway
    gateway.stop()


def stdio_children(gateway: Gateway) -> list[int]:
    assert gateway.process is not None
    return [pid for pid in child_pids(gateway.process.pid)
            if b"--stdio" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment as it was started, read the way an attacker on the host would."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if entry)


# 18.6: a stdio child's environment ----------------------------------------------------------------


def test_stdio_child_gets_a_minimal_environment_and_none_of_the_gateways_secrets(gw: Gateway) -> None:
    [child] = stdio_children(gw)
    environ = environ_of(child)
    own = {"BEHAVIOUR_LOG", "API_TOKEN", "HOME"}  # env values, its secret, inherit_env
    extra = {name for name in set(environ) - own
             if name not in BASE_ENV_NAMES and not name.startswith(LOCALE_PREFIX)}
    assert extra == set(), f"the child got the gateway's {sorted(extra)}"
    raw = Path(f"/proc/{child}/environ").read_bytes()
    for name, value in GATEWAY_SECRETS.items():
        assert value.encode() not in raw, f"{name}'s value reached the stdio child"
    assert environ["API_TOKEN"] == PIPE_SECRET
    assert environ["HOME"] == os.environ["HOME"]
    assert environ["PATH"] == os.environ["PATH"]


def test_inherit_env_may_not_name_the_gateways_own_variables(tmp_path: Path) -> None:
    (tmp_path / "leaky.yaml").write_text("""id: leaky
owner: t@example.com
transport:
  command: /bin/true
  inherit_env: [HOME, NARROWGATE_ADMIN_TOKEN, "not a name"]
tools: []
""")
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    messages = [problem.message for problem in caught.value.problems]
    assert any("NARROWGATE_ADMIN_TOKEN is the gateway's own setting" in m for m in messages), messages
    assert any("'not a name' is not an environment variable name" in m for m in messages), messages
    assert len(messages) == 2


def test_an_upstream_url_with_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    (tmp_path / "basic.yaml").write_text("""id: basic
owner: t@example.com
transport:
  url: https://svc:hunter2-secret@upstream.example/mcp
tools: []
""")
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    messages = [problem.message for problem in caught.value.problems]
    assert messages == ["url must not carry credentials (user:password@): put them in headers or credentials"]
    assert "hunter2" not in str(caught.value)
    (tmp_path / "basic.yaml").write_text((tmp_path / "basic.yaml").read_text().replace("svc:hunter2-secret@", ""))
    assert load_catalog(tmp_path).servers["basic"].transport.url == "https://upstream.example/mcp"  # type: ignore[union-attr]


# 18.7: side traffic tied to no call reaches no agent -------------------------------------------------


async def wait_for_event(path: Path, event: str, timeout_s: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []
        if any(event in e for e in seen):
            return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {event!r} in {path}")


@pytest.mark.parametrize("upstream", ["pipe", "web"])
async def test_log_and_sampling_tied_to_no_call_reach_no_agent(gw: Gateway, events: Path, upstream: str) -> None:
    heard: list[Any] = []
    marker = f"meant for nobody on {upstream}"

    async def on_log(params: Any) -> None:
        heard.append(("log", params.data))

    async def on_sampling(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        heard.append(("sampling", params.messages[0].content))
        return CreateMessageResult(role="assistant", model="agent-a", content=TextContent(type="text", text="a"))

    async with (
        mcp_client(gw.url, TOKEN_A, "legacy", logging_callback=on_log, sampling_callback=on_sampling,
                   log_level="debug") as agent_a,
        mcp_client(gw.url, TOKEN_B, "legacy") as agent_b,
    ):
        # While agent A's call is the only one in flight on the upstream, the upstream speaks up on
        # its own (scheduled by agent B's earlier call): nothing ties it to A's call.
        in_flight = asyncio.create_task(agent_a.call_tool(f"{upstream}__slow", {"seconds": 2.5}))
        await asyncio.sleep(0.3)
        assert not (await agent_b.call_tool(f"{upstream}__announce", {"message": marker, "delay": 0.5})).is_error
        assert not (await in_flight).is_error
    assert heard == []
    # The upstream was not left waiting: its sampling request got an error back.
    seen = await wait_for_event(events, f"sampling for {marker!r} refused")
    assert not any(f"sampling for {marker!r} answered" in e for e in seen)


async def test_progress_still_reaches_each_caller_on_a_shared_stdio_child(gw: Gateway) -> None:
    seen: dict[str, list[float]] = {"a": [], "b": []}

    def recorder(agent: str) -> Any:
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen[agent].append(progress)
        return on_progress

    async with mcp_client(gw.url, TOKEN_A, "legacy") as agent_a, mcp_client(gw.url, TOKEN_B, "legacy") as agent_b:
        other = asyncio.create_task(agent_b.call_tool("pipe__progress", {"steps": 3, "delay": 0.05},
                                                      progress_callback=recorder("b")))
        mine = await agent_a.call_tool("pipe__progress", {"steps": 4, "delay": 0.05}, progress_callback=recorder("a"))
        theirs = await other
    assert not mine.is_error and not theirs.is_error
    assert seen == {"a": [1.0, 2.0, 3.0, 4.0], "b": [1.0, 2.0, 3.0]}


# 18.10: one upstream message is capped while it is read --------------------------------------------


def peak_rss(gateway: Gateway) -> int:
    assert gateway.process is not None
    for line in Path(f"/proc/{gateway.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("upstream", ["pipe", "web", "json", "zip"])
async def test_an_oversized_reply_is_refused_without_being_held(gw: Gateway, upstream: str) -> None:
    size = 24 * MiB
    async with mcp_client(gw.url, TOKEN_A, "legacy") as client:
        # Just under the limit (the text comes twice: content and structuredContent), many reads long.
        under = await client.call_tool(f"{upstream}__big", {"size": REPLY_LIMIT // 4})
        assert under.content[0].text == "x" * (REPLY_LIMIT // 4)  # type: ignore[union-attr]
        before = peak_rss(gw)
        with pytest.raises(MCPError) as caught:
            await client.call_tool(f"{upstream}__big", {"size": size})
        grown = peak_rss(gw) - before
        again = await client.call_tool(f"{upstream}__echo", {"text": "still answering"})
    assert caught.value.error.code == UPSTREAM_ERROR
    assert caught.value.error.message == (
        f"upstream {upstream!r} sent a message larger than limits.max_upstream_reply_bytes "
        f"({REPLY_LIMIT} bytes); it was discarded")
    assert grown < size // 3, f"the gateway's peak memory grew by {grown} bytes"
    assert again.content[0].text == "still answering"  # type: ignore[union-attr]


async def test_an_oversized_reply_in_the_modern_era(gw: Gateway) -> None:
    async with mcp_client(gw.url, TOKEN_A, "2026-07-28") as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("web__big", {"size": 4 * REPLY_LIMIT})
        again = await client.call_tool("web__echo", {"text": "next"})
    assert "limits.max_upstream_reply_bytes" in caught.value.error.message
    assert again.content[0].text == "next"  # type: ignore[union-attr]


def test_the_reply_limit_is_a_limits_key_of_4_mib_by_default(tmp_path: Path) -> None:
    assert settings_from_mapping({}, tmp_path).limits.max_upstream_reply_bytes == 4 * MiB
    chosen = settings_from_mapping({"limits": {"max_upstream_reply_bytes": 65536}}, tmp_path)
    assert chosen.limits.max_upstream_reply_bytes == 65536
    with pytest.raises(ConfigError, match="max_upstream_reply_bytes must be positive"):
        settings_from_mapping({"limits": {"max_upstream_reply_bytes": 0}}, tmp_path)


async def split(data: bytes, size: int) -> list[bytes | OversizedLine]:
    chunks = [data[i:i + size] for i in range(0, len(data), size)]

    async def read() -> bytes:
        return chunks.pop(0) if chunks else b""

    return [line async for line in capped_lines(read, 64)]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
async def test_capped_lines_splits_lines_and_skips_oversized_ones_whatever_the_chunking(chunk: int) -> None:
    reply = b'{"jsonrpc":"2.0","id":7,"result":{"text":"' + b"x" * 500 + b'"}}'
    stream = b'{"a":1}\n' + reply + b"\n" + b"y" * 64 + b"\n\n" + b"tail"
    lines = await split(stream, chunk)
    assert lines[0] == b'{"a":1}'
    oversized = lines[1]
    assert isinstance(oversized, OversizedLine) and oversized.size == len(reply)
    assert lines[2:] == [b"y" * 64, b"", b"tail"]
    assert sniff_message(oversized) == ("reply", 7)


@pytest.mark.parametrize(("line", "expected"), [
    (b'{"jsonrpc":"2.0","id":3,"result":{"big":"...', ("reply", 3)),
    (b'{"jsonrpc": "2.0", "id": "s-1", "error": {"code": 1, "message": "...', ("reply", "s-1")),
    (b'{"jsonrpc":"2.0","id":4,"method":"sampling/createMessage","params":{"...', ("request", 4)),
    (b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"...', None),
    # The id comes last: read only from the very end, where nothing nested can follow it.
    (b'{"result":{"content":"..."},"jsonrpc":"2.0","id":9}', ("reply", 9)),
    (b'{"result":{"content":"...","id":9}}', None),
    (b'{"result":{"content":"...\\",\\"id\\":9"}}', None),
    (b'{"params":{"x":"..."},"id":5,"method":"roots/list"}', None),
])
def test_an_oversized_message_is_attributed_only_when_certain(line: bytes, expected: Any) -> None:
    assert sniff_message(OversizedLine(len(line), line[:HEAD_BYTES], line[-TAIL_BYTES:])) == expected


# 13.13: agents see the gateway, not its upstreams -----------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_relayed_results_do_not_carry_the_upstreams_server_info(gw: Gateway, mode: str) -> None:
    async with mcp_client(gw.url, TOKEN_A, mode) as client:
        results = [await client.call_tool("web__echo", {"text": "hi"}),
                   await client.read_resource("behaviour://web-status")]
    for result in results:
        meta = result.meta or {}
        assert SERVER_INFO_META_KEY not in meta, meta
        assert "behaviour" not in json.dumps(meta)


def test_the_server_info_stamp_is_dropped_from_a_copy_and_the_rest_of_the_meta_kept() -> None:
    stamp = {SERVER_INFO_META_KEY: {"name": "behaviour", "version": "1"}}
    only = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "_meta": dict(stamp)}}
    mixed = {"jsonrpc": "2.0", "id": 2, "result": {"_meta": {**stamp, "trace": "t"}, "content": []}}
    before = json.dumps([only, mixed])
    assert json.dumps(without_server_info(only)) == '{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}'
    # (what is left of _meta goes last, as agents have always had it: the bytes they get are the same)
    assert json.dumps(without_server_info(mixed)) == \
        '{"jsonrpc": "2.0", "id": 2, "result": {"content": [], "_meta": {"trace": "t"}}}'
    assert json.dumps([only, mixed]) == before  # the replies as the upstream client has them are left as they were
    plain = {"jsonrpc": "2.0", "id": 3, "result": {"content": [], "_meta": {"trace": "t"}}}
    assert without_server_info(plain) is plain


# Children die with the gateway ------------------------------------------------------------------------


def lingering_gateway(workdir: Path, *extra_args: str) -> tuple[Gateway, int]:
    """A gateway whose stdio child would outlive a closed stdin by a minute; returns it and the child."""
    manifest = behaviour_manifest("stay", {
        "command": "${PYTHON}", "args": [str(BEHAVIOUR_SERVER), "--stdio", "--linger", "60", *extra_args],
    }, tools=("echo",))
    gateway = Gateway(workdir, [manifest]).start()
    [child] = stdio_children(gateway)
    return gateway, child


def wait_until_gone(pids: list[int], timeout_s: float = 5) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_stdio_child_dies_when_the_gateway_is_killed(tmp_path: Path) -> None:
    gateway, child = lingering_gateway(tmp_path)
    try:
        assert gateway.process is not None
        gateway.process.kill()  # SIGKILL: no shutdown code runs
        gateway.process.wait()
        assert wait_until_gone([child]) == [], "the stdio child outlived the killed gateway"
    finally:
        kill_leftovers([child])
        gateway.stop()


def test_a_clean_stop_ends_the_childs_whole_process_group(tmp_path: Path) -> None:
    gateway, child = lingering_gateway(tmp_path, "--grandchild")
    grandchildren = child_pids(child)
    try:
        assert len(grandchildren) == 1
        gateway.stop()  # SIGTERM: the gateway stops its children
        assert wait_until_gone([child, *grandchildren]) == []
    finally:
        kill_leftovers([child, *grandchildren])
