"""The lean HTTP/1.1 client of the upstream hop (gateway/upstream/http1.py), through HttpUpstream.

Against a real upstream process that owns every byte of its connections
(tests/fixtures/upstreams/raw_http_server.py) and logs which connection carried which request:
a kept-alive connection the upstream closed is resent on a fresh one only for requests without side
effects; connections idle too long are not reused; one request at a time per connection (no
pipelining); a reply over the cap, a cancelled or timed-out call close their connection instead of
returning it to the pool; malformed answers give the errors they gave with aiohttp; no credential
appears in any error or log line. And https upstreams as with aiohttp: verified against the
system's CAs (SSL_CERT_FILE applies), an unknown issuer refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from gateway.catalog.model import HttpTransport, ServerEntry
from gateway.protocol.eras import MODERN_ERA
from gateway.protocol.errors import REQUEST_TIMEOUT, UPSTREAM_ERROR, UPSTREAM_UNAVAILABLE, RpcError
from gateway.upstream.base import CallContext
from gateway.upstream.http1 import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_INTERIM,
    BadResponse,
    Disconnected,
    Http1Client,
    Origin,
    Reply,
    origin_of,
)
from gateway.upstream.http_client import HttpUpstream
from gateway.upstream.reply_limit import ReplyTooLarge
from tests.support.clients import ERAS, mcp_client
from tests.support.processes import BEHAVIOUR_SERVER, REPO, Gateway, behaviour_manifest, start_listening, stop
from tests.support.tls import server_certificate

RAW_SERVER = REPO / "tests" / "fixtures" / "upstreams" / "raw_http_server.py"
DISCOVERY_SECRET = "discovery-secret-never-in-a-log-5b1e"
CALL_SECRET = "per-call-token-never-in-a-log-77aa"
REPLY_LIMIT = 1024 * 1024


class RawUpstream:
    def __init__(self, log: Path, port: int) -> None:
        self.log, self.port = log, port
        self.history: list[dict[str, Any]] = []  # every entry read so far

    def entries(self) -> list[dict[str, Any]]:
        """What the upstream logged since the last call."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        fresh = [json.loads(line) for line in lines[len(self.history):]]
        self.history += fresh
        return fresh

    async def wait_for(self, wanted: dict[str, Any]) -> list[dict[str, Any]]:
        """The entries logged until one with `wanted`'s items (the upstream's own pace; bounded)."""
        got: list[dict[str, Any]] = []
        for _ in range(1000):
            got += self.entries()
            if any(wanted.items() <= entry.items() for entry in got):
                return got
            await asyncio.sleep(0.01)
        raise AssertionError(f"the upstream never logged {wanted}: {got}")

    async def wait_closed(self, conn: int) -> str:
        """How connection `conn` ended, once the upstream saw it end."""
        for _ in range(1000):
            self.entries()
            ends = [entry["closed"] for entry in self.history if entry.get("conn") == conn and "closed" in entry]
            if ends:
                return str(ends[0])
            await asyncio.sleep(0.01)
        raise AssertionError(f"connection {conn} stayed open")


def start_raw(tmp: Path, *args: str) -> tuple[Any, RawUpstream]:
    log = tmp / "raw.jsonl"
    process, port = start_listening([sys.executable, str(RAW_SERVER), "--port", "0", *args], env={"RAW_LOG": str(log)})
    return process, RawUpstream(log, port)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawUpstream]:
    process, upstream = start_raw(tmp_path_factory.mktemp("raw"))
    yield upstream
    stop(process)


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawUpstream]:
    """Leaves tools/list and tools/call unanswered when they come on a kept-alive connection."""
    process, upstream = start_raw(tmp_path_factory.mktemp("dropping"), "--drop-reused", "tools/list,tools/call")
    yield upstream
    stop(process)


@pytest.fixture(scope="module")
def half_answering(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawUpstream]:
    """Answers tools/list on a kept-alive connection with a reply's head only, then closes it."""
    process, upstream = start_raw(tmp_path_factory.mktemp("half"), "--drop-reused", "tools/list", "--drop-after-head")
    yield upstream
    stop(process)


@pytest.fixture(scope="module")
def closing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawUpstream]:
    """Closes every connection right after its reply."""
    process, upstream = start_raw(tmp_path_factory.mktemp("closing"), "--close-after-reply")
    yield upstream
    stop(process)


STALL_OVER = 1024 * 1024
BIG_BODY_TEXT = "b" * (32 * 1024 * 1024)  # past what the kernel's socket buffers hold on loopback


@pytest.fixture(scope="module")
def stalling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawUpstream]:
    """Stops reading a request whose body is over STALL_OVER (answering it at once if asked to)."""
    process, upstream = start_raw(tmp_path_factory.mktemp("stalling"), "--stall-over", str(STALL_OVER))
    yield upstream
    stop(process)


@pytest.fixture(autouse=True)
def no_secret_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        assert DISCOVERY_SECRET not in text and CALL_SECRET not in text, text


async def discovery_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {DISCOVERY_SECRET}"}


async def on_event(server_id: str, message: dict[str, Any]) -> None:
    return None


async def connected(upstream: RawUpstream, headers: dict[str, str] | None = None, path: str = "/mcp") -> HttpUpstream:
    transport = HttpTransport(f"http://127.0.0.1:{upstream.port}{path}", MappingProxyType(headers or {}), MODERN_ERA)
    server = ServerEntry("raw", "raw", "team", "", transport, 10.0, MappingProxyType({}), Path("raw.yaml"))
    client = HttpUpstream(server, on_event, discovery_auth, REPLY_LIMIT)
    await client.start()
    assert client.available
    assert client.listen_task is not None
    await client.listen_task  # subscriptions/listen: 405, so the client stops asking
    upstream.entries()
    return client


def ctx(timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> CallContext:
    return CallContext(era=MODERN_ERA, timeout_s=timeout_s, auth={"Authorization": f"Bearer {CALL_SECRET}"},
                       headers=headers or {})


async def call_tool(client: HttpUpstream, tool: str, timeout_s: float = 10.0, headers: dict[str, str] | None = None,
                    **arguments: Any) -> dict[str, Any]:
    return await client.call("tools/call", {"name": tool, "arguments": arguments}, ctx(timeout_s, headers))


def no_secret_in(error: BaseException) -> None:
    for text in (str(error), repr(error), str(getattr(error, "message", ""))):
        assert DISCOVERY_SECRET not in text and CALL_SECRET not in text


def requests(entries: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry.get("method") == method]


async def test_a_dropped_kept_alive_connection_is_resent_fresh_only_without_side_effects(
        dropping: RawUpstream) -> None:
    client = await connected(dropping)
    try:
        for _ in range(3):
            reply = await client.call("tools/list", {}, ctx())
            assert reply["result"]["tools"][0]["name"] == "echo"
        lists = requests(dropping.entries(), "tools/list")
        # Each list after the first went out on a kept-alive connection, was dropped, then sent once
        # more on a connection of its own (its first request).
        dropped = [entry for entry in lists if entry["seq"] > 1]
        assert len(dropped) >= 2 and len(lists) == 3 + len(dropped)
        assert all(entry["seq"] == 1 for entry in lists if entry not in dropped)

        with pytest.raises(RpcError) as caught:
            await call_tool(client, "echo", text="once")
        calls = requests(dropping.entries(), "tools/call")
    finally:
        await client.close()
    assert caught.value.code == UPSTREAM_UNAVAILABLE
    assert caught.value.message == "upstream 'raw' is unavailable"
    assert len(calls) == 1 and calls[0]["seq"] > 1, "a tools/call reached the upstream twice"
    no_secret_in(caught.value)


async def test_a_connection_idle_past_the_upstreams_keep_alive_timeout_is_not_reused(
        tmp_path: Path, raw: RawUpstream) -> None:
    """An upstream that says `Keep-Alive: timeout=1` closes idle connections sooner than KEEPALIVE_S: the
    gateway reuses one only within a margin below it (here 0.5 s, not 1 s - 1 s = never), and closes one
    that idled past the margin itself; one that says nothing keeps them."""
    process, short = start_raw(tmp_path, "--keep-alive-timeout", "1")
    try:
        for upstream in (short, raw):
            client = await connected(upstream)
            try:
                await call_tool(client, "echo", text="a")
                await call_tool(client, "echo", text="b")
                assert client.http is not None
                [pooled] = client.http.idle
                pooled.idle_since -= 0.6  # idle longer than the margin, still within the upstream's 1 s
                await call_tool(client, "echo", text="c")
                first, second, third = requests(upstream.entries(), "tools/call")
            finally:
                await client.close()
            assert second["conn"] == first["conn"]
            assert (third["conn"] == first["conn"]) is (upstream is raw)
            if upstream is short:
                assert third["seq"] == 1
                assert await upstream.wait_closed(first["conn"]) == "by the client"  # not left to the upstream
    finally:
        stop(process)


async def test_the_catalogs_headers_are_sent_and_a_per_call_one_replaces_its_namesake(raw: RawUpstream) -> None:
    client = await connected(raw, {"X-Team": "blue", "authorization": "Bearer static-replaced-per-call",
                                   "Host": "upstream.example", "Content-Length": "999"})
    try:
        await call_tool(client, "echo", text="headers")
        [call] = requests(raw.entries(), "tools/call")
    finally:
        await client.close()
    sent = call["headers"]
    names = [name for name, _ in sent]
    assert ["authorization", f"Bearer {CALL_SECRET}"] in sent and names.count("authorization") == 1
    assert ["x-team", "blue"] in sent
    assert ["host", "upstream.example"] in sent and names.count("host") == 1
    assert names.count("content-length") == 1 and ["content-length", "999"] not in sent
    assert ["mcp-method", "tools/call"] in sent and ["mcp-name", "echo"] in sent
    assert ["mcp-protocol-version", MODERN_ERA] in sent


async def test_a_connection_that_answered_more_than_was_asked_is_not_reused(raw: RawUpstream) -> None:
    client = await connected(raw)
    try:
        first = await call_tool(client, "twice", text="one")
        second = await call_tool(client, "echo", text="two")
        twice, echo = requests(raw.entries(), "tools/call")
    finally:
        await client.close()
    assert first["result"]["content"][0]["text"] == "one"
    assert second["result"]["content"][0]["text"] == "two"  # not the stray "unasked"
    assert echo["conn"] != twice["conn"]


async def test_concurrent_calls_never_share_a_connection(raw: RawUpstream) -> None:
    """Six calls the upstream answers only once all six wait: pipelined on one connection, they would hang."""
    client = await connected(raw)
    try:
        replies = await asyncio.gather(*(call_tool(client, "gather", count=6) for _ in range(6)))
        gathered = requests(raw.entries(), "tools/call")
        await call_tool(client, "echo", text="after")
        after = requests(raw.entries(), "tools/call")
    finally:
        await client.close()
    assert len({reply["result"]["content"][0]["text"] for reply in replies}) == 6
    assert len({entry["conn"] for entry in gathered}) == 6
    assert not any(entry["pipelined"] for entry in gathered + after)
    assert after[0]["conn"] in {entry["conn"] for entry in gathered}  # and they were kept alive


async def test_a_reply_over_the_cap_is_refused_and_its_connection_closed(raw: RawUpstream) -> None:
    client = await connected(raw)
    try:
        under = await call_tool(client, "big", size=REPLY_LIMIT // 2)
        with pytest.raises(ReplyTooLarge) as caught:
            await call_tool(client, "big", size=8 * REPLY_LIMIT)
        over = requests(raw.entries(), "tools/call")[-1]
        closed = await raw.wait_closed(over["conn"])
        again = await call_tool(client, "echo", text="still here")
        [after] = requests(raw.entries(), "tools/call")
    finally:
        await client.close()
    assert len(under["result"]["content"][0]["text"]) >= REPLY_LIMIT // 2
    assert caught.value.code == UPSTREAM_ERROR
    assert "limits.max_upstream_reply_bytes" in caught.value.message
    assert again["result"]["content"][0]["text"] == "still here"
    assert after["conn"] != over["conn"]
    assert closed.startswith("by the client")  # not read to its end, not kept


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_a_call_given_up_closes_its_connection(raw: RawUpstream, how: str) -> None:
    client = await connected(raw)
    try:
        if how == "cancelled":
            task = asyncio.create_task(call_tool(client, "hold"))
            [held] = requests(await raw.wait_for({"tool": "hold"}), "tools/call")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(RpcError) as caught:
                await call_tool(client, "hold", timeout_s=0.2)
            assert caught.value.code == REQUEST_TIMEOUT
            [held] = requests(raw.entries(), "tools/call")
        assert await raw.wait_closed(held["conn"]) == "while held"
        assert client.http is not None
        assert all(connection.reply is None for connection in client.http.idle)
        await call_tool(client, "echo", text="next")
        [after] = requests(raw.entries(), "tools/call")
    finally:
        await client.close()
    assert after["conn"] != held["conn"]


@pytest.mark.parametrize(("tool", "code", "message"), [
    ("garbage", UPSTREAM_UNAVAILABLE, "upstream 'raw' is unavailable"),
    ("notjson", UPSTREAM_ERROR, "upstream 'raw' sent a malformed reply"),
])
async def test_a_malformed_answer_gives_the_same_error_as_before(
        raw: RawUpstream, tool: str, code: int, message: str) -> None:
    client = await connected(raw)
    try:
        with pytest.raises(RpcError) as caught:
            await call_tool(client, tool)
    finally:
        await client.close()
    assert (caught.value.code, caught.value.message) == (code, message)
    no_secret_in(caught.value)
    assert caught.value.__cause__ is not None
    no_secret_in(caught.value.__cause__)


@pytest.mark.parametrize("auth", [
    {"Authorization": f"Bearer {CALL_SECRET}\r\nX-Injected: 1"},  # a line break in a value
    {"Authorization\r\nX-Injected": f"Bearer {CALL_SECRET}"},  # in a name
    {"Author\x00ization": f"Bearer {CALL_SECRET}"},  # a NUL in a name
    {"Authoriz\u00e9": f"Bearer {CALL_SECRET}"},  # not a token
])
async def test_a_header_with_a_line_break_or_a_bad_name_is_refused_unsent(raw: RawUpstream,
                                                                         auth: dict[str, str]) -> None:
    client = await connected(raw)
    try:
        smuggled = CallContext(era=MODERN_ERA, timeout_s=10, auth=auth)
        with pytest.raises(RpcError) as caught:
            await client.call("tools/call", {"name": "echo", "arguments": {"text": "x"}}, smuggled)
        sent = requests(raw.entries(), "tools/call")
    finally:
        await client.close()
    assert sent == []
    assert caught.value.code == UPSTREAM_ERROR
    no_secret_in(caught.value)
    assert caught.value.__cause__ is not None
    no_secret_in(caught.value.__cause__)


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`trusted` serves https with a certificate from the CA named by the gateway's SSL_CERT_FILE;
    `unknown` with one from a CA the gateway was never told of; `misnamed` with one from the trusted CA
    for another host name."""
    tmp = tmp_path_factory.mktemp("tls")
    trusted_ca, trusted_cert, trusted_key = server_certificate(tmp, "trusted")
    _, unknown_cert, unknown_key = server_certificate(tmp, "unknown")
    _, misnamed_cert, misnamed_key = server_certificate(tmp, "misnamed", "other.example", signer="trusted")
    pairs = ((trusted_cert, trusted_key), (unknown_cert, unknown_key), (misnamed_cert, misnamed_key))
    servers = [start_listening([sys.executable, str(BEHAVIOUR_SERVER), "--port", "0", "--tls", str(cert), str(key)])
               for cert, key in pairs]
    manifests = [behaviour_manifest(name, {"url": f"https://127.0.0.1:{port}/mcp"}, timeout_s=10, tools=("echo",))
                 for name, (_, port) in zip(("trusted", "unknown", "misnamed"), servers, strict=True)]
    gateway = Gateway(tmp / "gateway", manifests, env={"SSL_CERT_FILE": str(trusted_ca)}).start()
    yield gateway
    gateway.stop()
    for process, _ in servers:
        stop(process)


@pytest.mark.parametrize("mode", ERAS)
async def test_an_https_upstream_is_verified_against_the_configured_cas(tls_gateway: Gateway, mode: str) -> None:
    async with mcp_client(tls_gateway.url, "token-agent-a", mode) as client:
        reply = await client.call_tool("trusted__echo", {"text": "over tls"})
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("unknown__echo", {"text": "never"})
        with pytest.raises(MCPError) as misnamed:
            await client.call_tool("misnamed__echo", {"text": "never"})
    assert reply.content[0].text == "over tls"  # type: ignore[union-attr]
    assert unknown.value.error.code == UPSTREAM_UNAVAILABLE
    assert misnamed.value.error.code == UPSTREAM_UNAVAILABLE  # a trusted CA, but not for this host


def wait_until_readable(client: HttpUpstream) -> None:
    """Block (no await: the loop must not read it first) until every pooled connection's socket holds the
    upstream's FIN, as when the upstream closed it while the gateway was busy. Bounded."""
    assert client.http is not None
    poller, waiting = select.poll(), 0
    for connection in client.http.idle:
        if connection.open and connection.transport is not None and not connection.transport.is_closing():
            poller.register(connection.transport.get_extra_info("socket").fileno(), select.POLLIN)
            waiting += 1
    for _ in range(1000):
        if len(poller.poll(10)) == waiting:
            return
    raise AssertionError("the upstream's FIN never arrived")


async def test_a_pooled_connection_the_upstream_closed_is_not_handed_out(closing: RawUpstream) -> None:
    """The kept-alive connection's FIN is in its socket but not yet read by the loop: a tools/call (never
    sent twice) must go out on a new connection, not fail on the dead one."""
    client = await connected(closing)
    try:
        wait_until_readable(client)  # the connection of the handshake's last request
        first = await call_tool(client, "echo", text="first")
        assert client.http is not None and len(client.http.idle) == 1
        wait_until_readable(client)  # no await since the reply: the loop has not seen the FIN
        second = await call_tool(client, "echo", text="second")
        calls = requests(closing.entries(), "tools/call")
    finally:
        await client.close()
    assert first["result"]["content"][0]["text"] == "first"
    assert second["result"]["content"][0]["text"] == "second"
    assert [entry["seq"] for entry in calls] == [1, 1]  # exactly one tools/call per call, none resent
    assert len({entry["conn"] for entry in calls}) == 2


@pytest.mark.parametrize(("tool", "arguments"), [
    ("headers", {"count": MAX_HEADERS + 1, "size": 8}),  # too many headers
    ("headers", {"count": 1, "size": 8191}),  # one header over aiohttp's max_field_size
    ("headers", {"count": 4000, "size": 1000}),  # a head streamed on and on (4 MB)
    ("interim", {"count": MAX_INTERIM + 1}),
])
async def test_a_reply_head_over_the_limits_is_refused_and_its_connection_closed(
        raw: RawUpstream, tool: str, arguments: dict[str, Any]) -> None:
    client = await connected(raw)
    try:
        with pytest.raises(RpcError) as caught:
            await call_tool(client, tool, **arguments)
        [refused] = requests(raw.entries(), "tools/call")
        closed = await raw.wait_closed(refused["conn"])
    finally:
        await client.close()
    assert (caught.value.code, caught.value.message) == (UPSTREAM_UNAVAILABLE, "upstream 'raw' is unavailable")
    assert isinstance(caught.value.__cause__, BadResponse)
    assert closed.startswith("by the client")


@pytest.mark.parametrize(("tool", "arguments", "text"), [
    ("headers", {"count": MAX_HEADERS - 10, "size": (MAX_HEAD_BYTES // MAX_HEADERS) - 40}, "many headers"),
    ("interim", {"count": MAX_INTERIM}, "after interim"),
])
async def test_a_reply_head_within_the_limits_is_read(raw: RawUpstream, tool: str, arguments: dict[str, Any],
                                                      text: str) -> None:
    client = await connected(raw)
    try:
        reply = await call_tool(client, tool, **arguments)
    finally:
        await client.close()
    assert reply["result"]["content"][0]["text"] == text


async def test_a_switching_protocols_answer_is_a_bad_response(raw: RawUpstream) -> None:
    client = await connected(raw)
    try:
        with pytest.raises(RpcError) as caught:
            await call_tool(client, "upgrade")
    finally:
        await client.close()
    assert caught.value.code == UPSTREAM_UNAVAILABLE
    assert isinstance(caught.value.__cause__, BadResponse)  # not Disconnected: never a reason to send again


async def test_a_client_whose_start_failed_sends_nothing(raw: RawUpstream) -> None:
    """A catalog header value the client refuses leaves no half-built client behind that would send
    requests without a request line (and with the credentials)."""
    transport = HttpTransport(f"http://127.0.0.1:{raw.port}/mcp", MappingProxyType({"X-Bad": "a\r\nb"}), MODERN_ERA)
    server = ServerEntry("raw", "raw", "team", "", transport, 10.0, MappingProxyType({}), Path("raw.yaml"))
    client = HttpUpstream(server, on_event, discovery_auth, REPLY_LIMIT)
    raw.entries()
    try:
        await client.start()
        assert not client.available
        with pytest.raises(RpcError) as caught:
            await call_tool(client, "echo", text="never")
        sent = raw.entries()
    finally:
        await client.close()
    assert caught.value.code == UPSTREAM_UNAVAILABLE
    assert sent == []


async def test_a_connection_answered_before_its_body_was_sent_is_not_reused(stalling: RawUpstream) -> None:
    """The upstream refused a body at once (413, kept alive) while most of it still waited in the gateway:
    a next request on that connection would queue behind the rest of the body."""
    client = await connected(stalling)
    try:
        refused = await call_tool(client, "echo", headers={"X-Raw-Answer-Early": "1"}, text=BIG_BODY_TEXT)
        [stalled] = [entry for entry in stalling.entries() if "stalled" in entry]
        reply = await call_tool(client, "echo", text="next")
        [after] = requests(stalling.entries(), "tools/call")
    finally:
        await client.close()
    assert refused["error"]["message"] == "body too large"
    assert reply["result"]["content"][0]["text"] == "next"
    assert after["conn"] != stalled["conn"]


async def test_a_call_given_up_drops_the_body_the_upstream_did_not_read(stalling: RawUpstream) -> None:
    """A timed-out call to an upstream that stopped reading: its connection is aborted, so the rest of the
    body is not kept in the gateway to be sent whenever the upstream reads again."""
    client = await connected(stalling)
    try:
        with pytest.raises(RpcError) as caught:
            await call_tool(client, "echo", timeout_s=0.5, text=BIG_BODY_TEXT)
        reply = await call_tool(client, "echo", text="next")  # another connection: the stalled one reads on
        ended = [entry for entry in await stalling.wait_for({"closed": "after the stall"}) if "received" in entry]
    finally:
        await client.close()
    assert caught.value.code == REQUEST_TIMEOUT
    assert reply["result"]["content"][0]["text"] == "next"
    assert ended[0]["received"] < len(BIG_BODY_TEXT)


async def test_a_request_the_upstream_began_to_answer_is_not_resent(half_answering: RawUpstream) -> None:
    """Even one without side effects: the upstream got it and answered; only a kept-alive connection
    that dropped before any byte of a reply is a reason to send again."""
    client = await connected(half_answering)
    try:
        with pytest.raises(RpcError) as caught:  # on the connection the handshake left in the pool
            await client.call("tools/list", {}, ctx())
        lists = requests(half_answering.entries(), "tools/list")
    finally:
        await client.close()
    assert caught.value.code == UPSTREAM_UNAVAILABLE
    assert [entry["seq"] > 1 for entry in lists] == [True]  # sent once, on the kept-alive connection


async def test_a_request_target_is_percent_encoded_where_a_request_line_cannot_carry_it(raw: RawUpstream) -> None:
    client = await connected(raw, path="/m cp/caf\u00e9/100%?team=a b&x=%41&q=%zz")
    try:
        await call_tool(client, "echo", text="target")
        [call] = requests(raw.entries(), "tools/call")
    finally:
        await client.close()
    # An existing escape is kept as it is; a % that starts none is sent as %25, as yarl did.
    assert call["target"] == "/m%20cp/caf%C3%A9/100%25?team=a%20b&x=%41&q=%25zz"


def test_a_non_ascii_host_is_sent_in_punycode() -> None:
    origin = origin_of("https://b\u00fccher.example:8443/mcp")
    assert (origin.host, origin.authority) == ("xn--bcher-kva.example", "xn--bcher-kva.example:8443")
    assert origin_of("https://fa\u00df.de/mcp").host == "xn--fa-hia.de"  # IDNA 2008: not IDNA 2003's fass.de


@pytest.fixture(scope="module")
def stalling_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawUpstream, Path]]:
    """As `stalling`, over https; with the CA that signed its certificate."""
    tmp = tmp_path_factory.mktemp("stalling-tls")
    ca, cert, key = server_certificate(tmp, "stalling")
    process, upstream = start_raw(tmp, "--stall-over", str(STALL_OVER), "--tls", str(cert), str(key))
    yield upstream, ca
    stop(process)


async def test_a_tls_connection_answered_before_its_body_was_sent_is_not_reused(
        stalling_tls: tuple[RawUpstream, Path]) -> None:
    """Over TLS the transport's write buffer is only the TLS layer's: the raw socket's may still hold most
    of the body after the early answer, so the connection must not go back to the pool."""
    upstream, ca = stalling_tls
    origin = Origin("127.0.0.1", upstream.port, ssl.create_default_context(cafile=str(ca)),
                    f"127.0.0.1:{upstream.port}", "/mcp")
    client = Http1Client(origin, 30.0)
    head = f"POST /mcp HTTP/1.1\r\nHost: {origin.authority}\r\nX-Raw-Answer-Early: 1\r\n"
    try:
        async with client.request(head, BIG_BODY_TEXT.encode()) as reply:
            body = b"".join([chunk async for chunk in read_all(reply)])
            assert reply.connection.tls
        pooled = list(client.idle)
    finally:
        client.close()
    assert reply.status == 413 and b"body too large" in body
    assert pooled == []
    [stalled] = [entry for entry in upstream.entries() if "stalled" in entry]
    assert stalled["stalled"] == len(BIG_BODY_TEXT)


async def read_all(reply: Reply) -> AsyncIterator[bytes]:
    while chunk := await reply.read_chunk():
        yield chunk


async def test_a_keep_alive_timeout_that_is_no_ascii_number_is_ignored(tmp_path: Path) -> None:
    """`timeout=²` ("²".isdigit() holds, float("²") raises, inside the parse): the reply is read as any other."""
    process, odd = start_raw(tmp_path, "--keep-alive-timeout", "\u00b2")
    try:
        client = await connected(odd)
        try:
            reply = await call_tool(client, "echo", text="kept")
            assert client.http is not None
            [pooled] = client.http.idle
        finally:
            await client.close()
    finally:
        stop(process)
    assert reply["result"]["content"][0]["text"] == "kept"
    assert pooled.keepalive_s is None


@pytest.mark.parametrize("reset", [False, True])
async def test_a_body_framed_by_the_connections_end_is_whole_only_if_the_upstream_closed_it(
        raw: RawUpstream, reset: bool) -> None:
    """No Content-Length, not chunked: a FIN ends the body; a reset mid-body is an error, never a short body."""
    client = Http1Client(origin_of(f"http://127.0.0.1:{raw.port}/mcp"), 30.0)
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "unframed", "arguments": {"reset": reset}}}
    head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{raw.port}\r\nContent-Type: application/json\r\n"
    try:
        async with client.request(head, json.dumps(call).encode()) as reply:
            if reset:
                with pytest.raises(Disconnected):
                    [chunk async for chunk in read_all(reply)]
            else:
                body = b"".join([chunk async for chunk in read_all(reply)])
                assert json.loads(body)["id"] == 7
    finally:
        client.close()
