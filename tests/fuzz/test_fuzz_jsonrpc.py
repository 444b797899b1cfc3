"""Fuzzing the JSON-RPC decoder (gateway/protocol/jsonrpc.py), alone and behind a real gateway.

Properties: any byte string is either a Message whose fields are exactly the decoded body's, or an
RpcError carrying -32700 or -32600 (never another exception); the depth limit refuses exactly the
documents nested past it; and over real HTTP no body, in either era, gets a 5xx or a non-JSON-RPC
answer, and the gateway keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from mcp.shared.inbound import encode_header_value

from gateway.protocol.errors import INVALID_REQUEST, PARSE_ERROR, RpcError
from gateway.protocol.jsonrpc import Message, parse_message
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.strategies import JSON_VALUES, as_decoded, message_dicts, nested, wire
from tests.support.processes import Gateway
from tests.test_bad_input import MODERN, headers, modern_params, open_session, session_headers, tool_names

MAX_DEPTH = 64


def decode(raw: bytes, max_depth: int = MAX_DEPTH) -> Message | RpcError:
    """parse_message's outcome; any exception other than RpcError fails the property."""
    try:
        return parse_message(raw, max_depth)
    except RpcError as exc:
        return exc


def assert_faithful(message: Message, raw: bytes) -> None:
    """The Message says exactly what the body says, and the body is what the bytes decode to."""
    body = orjson.loads(raw)
    assert message.body == body
    assert body["jsonrpc"] == "2.0"
    assert message.id == body.get("id")
    assert message.method == body.get("method")
    if message.kind == "response":
        assert message.method is None and "id" in body and ("result" in body or "error" in body)
        return
    assert isinstance(message.method, str)
    assert message.params == body.get("params")
    assert message.params is None or isinstance(message.params, dict)
    if message.kind == "request":
        assert "id" in body and isinstance(message.id, str | int) and not isinstance(message.id, bool)
    else:
        assert message.kind == "notification" and "id" not in body


def assert_refusal(outcome: RpcError) -> None:
    assert outcome.code in (PARSE_ERROR, INVALID_REQUEST)
    assert outcome.message.startswith(("Parse error", "Invalid Request"))


@fuzz_settings(300)
@given(st.binary(max_size=256))
@example(b"\xff\xfe{}")
@example(b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"a": "\\ud800"}}')
@example(b'{"jsonrpc": "2.0", "id": 1e400, "method": "x"}')
def test_any_bytes_decode_or_are_refused_with_a_spec_code(raw: bytes) -> None:
    assert_decoded_or_refused(raw)


def assert_decoded_or_refused(raw: bytes) -> None:
    """The decoder's whole contract for one body (the atheris target checks the same)."""
    outcome = decode(raw)
    if isinstance(outcome, RpcError):
        assert_refusal(outcome)
    else:
        assert_faithful(outcome, raw)


@fuzz_settings(150)
@given(message_dicts())
def test_message_shaped_objects_round_trip_or_are_refused(body: dict[str, Any]) -> None:
    raw = wire(body)
    outcome = decode(raw)
    if isinstance(outcome, RpcError):
        assert_refusal(outcome)
        return
    assert_faithful(outcome, raw)
    # Re-encoding what was decoded gives the same message: nothing was lost or invented.
    again = decode(wire(outcome.body))
    assert isinstance(again, Message)
    assert (again.kind, again.id, again.method, again.params) == (outcome.kind, outcome.id, outcome.method,
                                                                 outcome.params)


@fuzz_settings(100)
@given(st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=12)),
       st.sampled_from(["tools/call", "ping", "notifications/cancelled"]),
       st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), st.booleans())
def test_well_formed_requests_and_notifications_are_classified_as_such(
    request_id: int | str, method: str, params: dict[str, Any], is_request: bool,
) -> None:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if is_request:
        body["id"] = request_id
    raw = wire(body)
    outcome = decode(raw)
    if isinstance(outcome, RpcError):
        # Only the depth limit, or a number orjson cannot hold (1e400), may refuse a well-formed message.
        assert (outcome.code == INVALID_REQUEST and "nested deeper" in outcome.message) or outcome.code == PARSE_ERROR
        return
    assert outcome.kind == ("request" if is_request else "notification")
    # orjson reads an integer past 64 bits as the nearest double; that double is then what policy judges
    # and what is forwarded (the canonical arguments), so the rounding cannot split decision from call.
    assert (outcome.id, outcome.method, outcome.params) == (body.get("id"), method, as_decoded(params))


@fuzz_settings(100)
@given(st.integers(min_value=0, max_value=1200), st.integers(min_value=1, max_value=200))
@example(MAX_DEPTH - 2, MAX_DEPTH)
@example(MAX_DEPTH - 1, MAX_DEPTH)
@example(1022, 2000)
@example(1023, 2000)
@example(1100, 2000)  # past orjson's own limit of 1024 levels
def test_the_depth_limit_refuses_exactly_what_is_nested_past_it(levels: int, max_depth: int) -> None:
    # The body object is level 1 and params level 2, so the deepest container is at 2 + levels.
    inner = b"[" * levels + b"]" * levels if levels >= 1000 else wire(nested(levels))
    raw = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"v":' + inner + b"}}"
    deepest = 2 + levels
    outcome = decode(raw, max_depth)
    if deepest > max_depth or deepest > 1024:  # orjson itself stops at 1024
        assert isinstance(outcome, RpcError) and outcome.code == INVALID_REQUEST, outcome
        assert "nested deeper" in outcome.message
    else:
        assert isinstance(outcome, Message), outcome


# Behind a real gateway ---------------------------------------------------------------------------

SAFE_TOOLS = ("behav__echo", "local__echo", "behav__whoami", "narrowgate__nothing", "no_such_tool")


@st.composite
def wire_bodies(draw: st.DrawFn) -> bytes:
    """What an agent might POST: garbage, JSON-RPC-shaped objects, or nearly right tool calls."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        return wire(draw(message_dicts()))
    params: dict[str, Any] = {"name": draw(st.sampled_from(SAFE_TOOLS)),
                              "arguments": draw(st.one_of(st.dictionaries(st.sampled_from(["text", "x"]), JSON_VALUES,
                                                                          max_size=2), JSON_VALUES))}
    if choice == 3:
        params = modern_params(params)
    body = {"jsonrpc": "2.0", "id": draw(st.integers(1, 2**31)), "method": "tools/call", "params": params}
    return wire(body)


@pytest.fixture(scope="module")
def legacy_session(gateway: Gateway) -> str:
    return open_session(gateway)


def assert_json_rpc_answer(response: httpx2.Response) -> None:
    """No 5xx; a JSON answer is a JSON-RPC message; an SSE answer ends with one."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    ctype = response.headers.get("content-type", "")
    if response.status_code == 202 or not response.content:
        return
    if ctype.startswith("application/json"):
        body = response.json()
        assert body["jsonrpc"] == "2.0"
        assert ("result" in body) != ("error" in body), body
        if "error" in body:
            assert isinstance(body["error"]["code"], int) and isinstance(body["error"]["message"], str)
    else:
        assert ctype.startswith("text/event-stream"), ctype
        frames = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        final = orjson.loads(frames[-1])
        assert final["jsonrpc"] == "2.0" and ("result" in final or "error" in final)


@fuzz_settings(60, share=0.05)
@given(wire_bodies(), st.sampled_from(["modern", "legacy", "no-version"]))
def test_the_gateway_answers_every_body_with_json_rpc_and_keeps_serving(
    gateway: Gateway, legacy_session: str, client: httpx2.Client, raw: bytes, era: str,
) -> None:
    sent = {"modern": {**headers(**{"MCP-Protocol-Version": MODERN}), **mirrored_headers(raw)},
            "legacy": session_headers(legacy_session),
            "no-version": headers()}[era]
    assert_json_rpc_answer(client.post(gateway.url, content=raw, headers=sent))


def mirrored_headers(raw: bytes) -> dict[str, str]:
    """The Mcp-Method and Mcp-Name a conforming client would send, so fuzzed calls get past the header rung."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        return {}
    out = {"Mcp-Method": encode_header_value(body["method"])}
    params = body.get("params")
    if isinstance(params, dict) and isinstance(params.get("name"), str):
        out["Mcp-Name"] = encode_header_value(params["name"])
    return out


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as http:
        yield http


def test_gateway_still_serves_after_the_fuzzing(gateway: Gateway) -> None:
    assert "behav__echo" in tool_names(gateway)
