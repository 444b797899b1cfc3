"""Fuzzing SSE: the decoder (gateway/protocol/sse.py) and the upstream side that reads tool replies
from an upstream's event stream (gateway/upstream/http_client.py).

Properties:
- any bytes, cut into lines as aiohttp cuts them, decode to events without raising;
- what encode_event/encode_retry write decodes back to the same data and ids, with LF or CRLF
  line ends, with comments and unknown fields in between;
- an HTTP upstream (a real aiohttp server on loopback) that answers a tools/call with any event
  stream makes `HttpUpstream.call` return the reply to that call or raise RpcError, nothing else;
  and a well-formed stream's notifications reach the calling agent in order, then its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.catalog.model import Credentials, HttpTransport, ServerEntry
from gateway.protocol.eras import MODERN_ERA
from gateway.protocol.errors import UPSTREAM_ERROR, RpcError
from gateway.protocol.sse import PING_FRAME, Event, decode_events, encode_event, encode_retry
from gateway.upstream.base import CallContext
from gateway.upstream.http_client import HttpUpstream
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.strategies import JSON_VALUES, ODD_TEXT, as_decoded, wire


def lines_of(stream: bytes) -> list[bytes]:
    """Cut a byte stream into lines the way aiohttp's StreamReader iterates them (on LF only)."""
    return stream.splitlines(keepends=True) if b"\r" not in stream else _lf_lines(stream)


def _lf_lines(stream: bytes) -> list[bytes]:
    parts = stream.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


async def _iterate(lines: list[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


def decode(stream: bytes) -> list[Event]:
    """Run decode_events to the end without an event loop: over an in-memory source it never waits."""
    events = decode_events(_iterate(lines_of(stream)))
    out: list[Event] = []
    while True:
        step = events.__anext__()
        try:
            step.send(None)
        except StopIteration as done:
            out.append(done.value)
            continue
        except StopAsyncIteration:
            return out
        step.close()
        raise AssertionError("decode_events waited on something other than its source")


# The decoder alone -------------------------------------------------------------------------------

SSE_LINES = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda name, value: name + b":" + value, st.sampled_from([b"data", b"id", b"event", b"retry", b""]),
              st.binary(max_size=20)),
    st.sampled_from([b"retry: \xc2\xb2", b"retry: \xd9\xa3", b"data: \xff\xfe", b"id: a\x00b", b":",
                     b"\xef\xbb\xbfdata: x"]),
)


@fuzz_settings(200)
@given(st.lists(SSE_LINES, max_size=12), st.sampled_from([b"\n", b"\r\n", b"\r"]))
@example([b"retry: \xc2\xb2", b""], b"\n")  # a digit to str.isdigit that int() refuses
@example([b"data: \xff", b""], b"\n")  # not UTF-8
def test_any_line_sequence_decodes_without_raising(lines: list[bytes], end: bytes) -> None:
    events = decode(end.join(lines) + end)
    for event in events:
        assert isinstance(event.data, str) and isinstance(event.event, str)
        assert event.retry is None or (isinstance(event.retry, int) and event.retry >= 0)


# What the gateway writes: JSON data (orjson never writes a raw newline) and ids like `<key>-<n>`.
FRAME_DATA = JSON_VALUES.map(wire).filter(lambda data: b"\n" not in data and b"\r" not in data)
EVENT_IDS = st.from_regex(r"\A[A-Za-z0-9_-]{1,16}\Z")
NOISE = st.sampled_from([PING_FRAME, b": comment\n\n", b"unknown: field\n", b"event: other\n"])


@st.composite
def written_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str | None]]]:
    """A stream as encode_event/encode_retry write it, with noise between frames; and what it carries."""
    parts: list[bytes] = []
    expected: list[tuple[str, str | None]] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            parts.append(draw(NOISE))
        if draw(st.integers(0, 4)) == 0:
            event_id = draw(EVENT_IDS)
            parts.append(encode_retry(event_id, draw(st.integers(0, 60_000))))
            expected.append(("", event_id))
            continue
        data, event_id = draw(FRAME_DATA), draw(st.none() | EVENT_IDS)
        parts.append(encode_event(data, event_id))
        expected.append((data.decode(), event_id))
    return b"".join(parts), expected


@fuzz_settings(60)
@given(written_streams(), st.booleans())
def test_written_frames_decode_back_to_what_was_written(case: tuple[bytes, list[Any]], crlf: bool) -> None:
    stream, expected = case
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    # "event: other" noise frames stand alone (no data, no id): they carry nothing and dispatch nothing.
    assert [(e.data, e.id) for e in decode(stream)] == expected


# An upstream that answers with any event stream -----------------------------------------------


@dataclass
class ScriptedUpstream:
    """A real HTTP server on loopback: speaks 2026-07-28 just enough, and answers tools/call with
    `render(request_id)`, the stream under test."""

    render: Callable[[Any], bytes] = lambda request_id: b""
    posted: list[Any] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        method = body.get("method")
        if method == "server/discover":
            return web.json_response({"jsonrpc": "2.0", "id": body["id"],
                                      "result": {"supportedVersions": [MODERN_ERA], "capabilities": {},
                                                 "serverInfo": {"name": "scripted", "version": "0"}}})
        if method == "tools/call":
            return web.Response(body=self.render(body["id"]), content_type="text/event-stream")
        if method is None:  # the gateway's answer to a server-to-client request
            self.posted.append(body)
            return web.Response(status=202)
        return web.Response(status=405)


@dataclass
class RecordingSink:
    """The calling agent's side: what the upstream relays to it."""

    notified: list[dict[str, Any]] = field(default_factory=list)
    asked: list[dict[str, Any]] = field(default_factory=list)

    async def notify(self, message: dict[str, Any]) -> None:
        self.notified.append(message)

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(message)
        return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "not here"}}


@dataclass
class UpstreamUnderTest:
    loop: asyncio.AbstractEventLoop
    script: ScriptedUpstream
    client: HttpUpstream

    def call(self, render: Callable[[Any], bytes]) -> tuple[dict[str, Any] | RpcError, RecordingSink]:
        self.script.render = render
        sink = RecordingSink()
        ctx = CallContext(era=MODERN_ERA, timeout_s=10, sink=sink)

        async def one() -> dict[str, Any] | RpcError:
            try:
                return await self.client.call("tools/call", {"name": "t", "arguments": {}}, ctx)
            except RpcError as exc:
                return exc
        return self.loop.run_until_complete(one()), sink


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamUnderTest]:
    loop = asyncio.new_event_loop()
    script = ScriptedUpstream()
    app = web.Application()
    app.router.add_post("/mcp", script.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    server = ServerEntry(id="scripted", namespace="scripted", owner="tests@example.com", description="",
                         transport=HttpTransport(url=f"http://127.0.0.1:{port}/mcp", protocol=MODERN_ERA),
                         timeout_s=10, tools=MappingProxyType({}), source=Path("scripted.yaml"),
                         credentials=Credentials(mode="none"))

    async def no_event(server_id: str, message: dict[str, Any]) -> None:
        return None

    async def no_auth() -> dict[str, str]:
        return {}

    client = HttpUpstream(server, no_event, no_auth)
    loop.run_until_complete(client.start())
    assert client.available, client.last_error
    yield UpstreamUnderTest(loop, script, client)
    loop.run_until_complete(client.close())
    loop.run_until_complete(runner.cleanup())
    with contextlib.suppress(RuntimeError):
        loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def frame(message: Any, event_id: str | None = None) -> bytes:
    return encode_event(wire(message), event_id)


@st.composite
def hostile_streams(draw: st.DrawFn) -> Callable[[Any], bytes]:
    """Event streams an upstream might send: garbage, wrong ids, side traffic, maybe the reply."""
    pieces = draw(st.lists(st.one_of(
        st.binary(max_size=30).map(lambda raw: b"data: " + raw + b"\n\n"),
        st.lists(SSE_LINES, max_size=3).map(lambda lines: b"\n".join(lines) + b"\n\n"),
        JSON_VALUES.map(lambda value: frame(value)),
        st.builds(lambda m: frame({"jsonrpc": "2.0", "method": m, "params": {}}), ODD_TEXT),
        st.builds(lambda i, m: frame({"jsonrpc": "2.0", "id": i, "method": m}), JSON_VALUES, ODD_TEXT),
        st.just(b"retry: \xc2\xb2\n\n"),
        st.just("WRONG_ID"), st.just("REPLY"),
    ), max_size=6))

    def render(request_id: Any) -> bytes:
        out = []
        for piece in pieces:
            if piece == "REPLY":
                out.append(frame({"jsonrpc": "2.0", "id": request_id, "result": {"content": []}}))
            elif piece == "WRONG_ID":
                out.append(frame({"jsonrpc": "2.0", "id": f"{request_id}x", "result": {}}))
            else:
                out.append(piece)
        return b"".join(out)
    return render


@fuzz_settings(60, share=0.05)
@given(hostile_streams())
@example(lambda request_id: b"data: {not json\n\n")
@example(lambda request_id: b"data: \xff\n\n")
def test_any_upstream_stream_ends_in_the_reply_or_an_rpc_error(upstream: UpstreamUnderTest,
                                                               render: Callable[[Any], bytes]) -> None:
    outcome, sink = upstream.call(render)
    if isinstance(outcome, RpcError):
        assert outcome.code < 0 and outcome.message
    else:
        assert isinstance(outcome, dict) and ("result" in outcome or "error" in outcome)
        assert "method" not in outcome
    for message in sink.notified:
        assert isinstance(message, dict) and "method" in message and "id" not in message


@fuzz_settings(60, share=0.05)
@given(st.lists(st.tuples(ODD_TEXT, JSON_VALUES), max_size=5), JSON_VALUES, st.none() | st.just("ev"))
def test_a_well_formed_stream_relays_its_notifications_in_order_then_the_reply(
    upstream: UpstreamUnderTest, notes: list[tuple[str, Any]], result: Any, ids: str | None,
) -> None:
    notifications = [{"jsonrpc": "2.0", "method": method, "params": {"v": value}} for method, value in notes]

    def render(request_id: Any) -> bytes:
        frames = [frame(n, f"{ids}-{i}" if ids else None) for i, n in enumerate(notifications)]
        return b"".join(frames) + frame({"jsonrpc": "2.0", "id": request_id, "result": {"v": result}})

    outcome, sink = upstream.call(render)
    assert isinstance(outcome, dict), outcome
    assert outcome["result"] == as_decoded({"v": result})
    assert sink.notified == as_decoded(notifications)


# Regressions found by the fuzzer ------------------------------------------------------------------


def test_retry_field_with_a_non_ascii_digit_is_ignored() -> None:
    """Found by the fuzzer: "²" passes str.isdigit() but int() refuses it, so the decoder raised."""
    assert decode("retry: ²\ndata: x\n\n".encode()) == [Event("x")]


def test_bytes_that_are_not_utf8_are_replaced_not_fatal() -> None:
    """Found by the fuzzer: one bad byte from an upstream raised UnicodeDecodeError out of the decoder."""
    assert decode(b"data: a\xffb\n\ndata: next\n\n") == [Event("a\ufffdb"), Event("next")]


def test_an_upstream_event_that_is_not_json_is_an_upstream_error(upstream: UpstreamUnderTest) -> None:
    """Found by the fuzzer: a reply event that was not JSON escaped HttpUpstream.call as a JSONDecodeError
    (the agent's request then ended without a JSON-RPC answer) instead of the upstream error it is."""
    outcome, _ = upstream.call(lambda request_id: b"data: {not json\n\n")
    assert isinstance(outcome, RpcError) and outcome.code == UPSTREAM_ERROR
    assert "malformed reply" in outcome.message
