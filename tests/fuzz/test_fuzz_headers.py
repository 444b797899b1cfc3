"""Fuzzing the mirrored-header checks: Mcp-Method, Mcp-Name and Mcp-Param-* against the JSON body.

The gateway checks a 2026-07-28 request's headers against its body (gateway/transport/endpoint.py,
`modern_rejection`, with the SDK's rungs) and mirrors the canonical arguments into Mcp-Param-*
headers for the upstream (gateway/calls/forward.py). Properties:
- the header value codec round-trips any text;
- what the gateway emits upstream always passes a conforming server's own check;
- over real HTTP, through a real gateway to the conformance fixture upstream (whose
  `test_header_echo` tool mirrors `region` into `Mcp-Param-Region`), a call is carried out exactly
  when every mirrored header agrees with the body and appears once; otherwise -32020, HTTP 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from mcp.shared.inbound import (
    InboundLadderRejection,
    classify_inbound_request,
    decode_header_value,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    validate_mcp_param_headers,
    x_mcp_header_map,
)

from gateway.policy.canonical import canonicalize
from gateway.transport.endpoint import decoded_headers
from gateway.transport.envelope import names_repeat, plainly_agrees
from tests.conformance.runner import conformance_gateway
from tests.fixtures.conformance_server import HEADER_TOOL_SCHEMA
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.strategies import JSON_VALUES, ODD_TEXT
from tests.support.processes import Gateway
from tests.test_bad_input import MODERN, headers, modern_params

HEADER_MISMATCH = -32020
TOOL = "test_header_echo"


# The codec and the emit side -------------------------------------------------------------------


@fuzz_settings(300)
@given(st.text())
@example("=?base64?YQ==?=")  # a plain value that looks like the sentinel
@example(" padded ")
def test_header_values_round_trip(value: str) -> None:
    encoded = encode_header_value(value)
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded) and encoded == encoded.strip()
    assert decode_header_value(encoded) == value


HEADER_TOKENS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9\-]{0,11}\Z")


@st.composite
def annotated_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """Tool input schemas with x-mcp-header on some string/integer/boolean properties, some nested."""
    tokens = draw(st.lists(HEADER_TOKENS, max_size=4, unique_by=str.lower))
    properties: dict[str, Any] = {}
    for token in tokens:
        prop = {"type": draw(st.sampled_from(["string", "integer", "boolean"])), "x-mcp-header": token}
        name = draw(st.text(min_size=1, max_size=6))
        if draw(st.booleans()):
            properties[name] = prop
        else:
            properties.setdefault("nested", {"type": "object", "properties": {}})["properties"][name] = prop
    return {"type": "object", "properties": properties}


@st.composite
def schema_and_arguments(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = draw(annotated_schemas())
    def value_for(prop: dict[str, Any]) -> Any:
        if "properties" in prop:
            return {k: value_for(v) for k, v in prop["properties"].items() if draw(st.booleans())}
        kind = {"string": st.text(), "integer": st.integers(), "boolean": st.booleans()}[prop["type"]]
        return draw(st.one_of(kind, JSON_VALUES) if draw(st.integers(0, 5)) == 0 else kind)
    return schema, {k: value_for(v) for k, v in schema["properties"].items() if draw(st.booleans())}


@fuzz_settings(100)
@given(schema_and_arguments())
def test_what_the_gateway_mirrors_upstream_passes_the_upstreams_check(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    schema, arguments = case
    if find_invalid_x_mcp_header(schema) is not None:
        return
    canonical = canonicalize(arguments, schema)  # the gateway forwards canonical arguments
    sent = mcp_param_headers(x_mcp_header_map(schema), canonical)
    assert validate_mcp_param_headers(schema, canonical, {k.lower(): v for k, v in sent.items()}) is None


# The shortcuts before the SDK's ladder ---------------------------------------------------------------

VERSIONS = st.sampled_from(["2026-07-28", "2025-11-25", "2026-07-28 ", ""])
SOME_VALUES = st.one_of(st.none(), st.integers(-1, 1), st.lists(st.text(max_size=2), max_size=1), JSON_VALUES)
METHODS = st.sampled_from(["tools/call", "prompts/get", "resources/read", "tools/list", "ping"])
NAMES = st.one_of(st.sampled_from(["echo", "file:///a", "=?base64?ZWNobw==?=", " echo", "=?x"]), st.text(max_size=6))


@st.composite
def enveloped_requests(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request body and its headers, mostly agreeing, with each part now and then wrong or missing."""
    def sometimes(right: Any, wrong: st.SearchStrategy[Any]) -> Any:
        return right if draw(st.integers(0, 4)) else draw(wrong)
    version, method, name = draw(VERSIONS), draw(METHODS), draw(NAMES)
    meta: dict[str, Any] = {"io.modelcontextprotocol/protocolVersion": sometimes(version, SOME_VALUES),
                            "io.modelcontextprotocol/clientCapabilities": {}}
    if not draw(st.integers(0, 6)):
        del meta[draw(st.sampled_from(sorted(meta)))]
    params: dict[str, Any] = {"_meta": sometimes(meta, SOME_VALUES)}
    key = "uri" if method == "resources/read" else "name"
    params[key] = sometimes(name, SOME_VALUES)
    body = {"jsonrpc": "2.0", "id": 1, "method": sometimes(method, st.one_of(METHODS, SOME_VALUES)),
            "params": sometimes(params, SOME_VALUES)}
    headers = {"mcp-protocol-version": sometimes(version, st.one_of(VERSIONS, st.text(max_size=3))),
               "mcp-method": sometimes(method, st.one_of(METHODS, st.text(max_size=3))),
               "mcp-name": sometimes(draw(st.sampled_from([name, encode_header_value(name)])), NAMES)}
    for header in draw(st.sets(st.sampled_from(sorted(headers)), max_size=1)):
        del headers[header]
    return body, headers


@fuzz_settings(600)
@given(enveloped_requests())
@example(({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "echo", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                              "io.modelcontextprotocol/clientCapabilities": {}}}},
          {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo"}))
@example(({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {  # a name only the ladder's decoding reads
    "name": "=?base64?ZWNobw==?=", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                             "io.modelcontextprotocol/clientCapabilities": {}}}},
          {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "=?base64?ZWNobw==?="}))
def test_the_envelope_shortcut_lets_past_only_what_the_sdks_ladder_accepts(
    case: tuple[dict[str, Any], dict[str, str]],
) -> None:
    body, headers = case
    if plainly_agrees(body, headers):
        assert not isinstance(classify_inbound_request(body, headers=headers), InboundLadderRejection)


def test_the_envelope_shortcut_takes_the_plain_request_and_leaves_a_wrapped_name_to_the_ladder() -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "_meta": meta}}
    assert plainly_agrees(body, headers)
    assert plainly_agrees({**body, "method": "tools/list", "params": {"_meta": meta}},
                          {**headers, "mcp-method": "tools/list"})
    wrapped = {**body, "params": {"name": "=?base64?ZWNobw==?=", "_meta": meta}}
    assert not plainly_agrees(wrapped, {**headers, "mcp-name": "=?base64?ZWNobw==?="})  # the ladder decodes it
    assert not plainly_agrees(body, {**headers, "mcp-protocol-version": "2025-11-25"})
    assert not plainly_agrees(body, {k: v for k, v in headers.items() if k != "mcp-name"})


RAW_NAMES = st.lists(st.sampled_from([b"host", b"Host", b"mcp-name", b"Mcp-Name", b"mcp-param-\xc0", b"mcp-param-\xe0",
                                      b"mcp-param-\xd7", b"x-\xdf", b"accept"]), max_size=6)


@fuzz_settings(300)
@given(RAW_NAMES)
def test_header_names_repeat_exactly_when_the_duplicate_checks_could_find_one(names: list[bytes]) -> None:
    raw = [(name, b"v") for name in names]
    lowered = [name.decode("latin-1").lower() for name in names]  # how the duplicate checks compare names
    assert names_repeat(decoded_headers(raw), raw) is (len(set(lowered)) != len(lowered))


# Through a real gateway --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def header_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway in front of the conformance fixture upstream (bare tool names, open on loopback)."""
    with conformance_gateway(tmp_path_factory.mktemp("header-fuzz-gateway")) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client


PRINTABLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16)


def header_variants(right: str) -> st.SearchStrategy[list[str]]:
    """Copies of one header to send: the right value (plain or encoded), a wrong one, none, or several."""
    one = st.one_of(st.just(encode_header_value(right)), st.builds(encode_header_value, ODD_TEXT), PRINTABLE,
                    st.just("=?base64?not base64?="))
    return st.one_of(st.lists(st.just(encode_header_value(right)), min_size=1, max_size=1),
                     st.lists(one, max_size=3))


@st.composite
def header_cases(draw: st.DrawFn) -> tuple[str, dict[str, list[str]]]:
    region = draw(st.one_of(PRINTABLE, ODD_TEXT.filter(bool)))
    sent = {"Mcp-Method": draw(header_variants("tools/call")),
            "Mcp-Name": draw(header_variants(TOOL)),
            "Mcp-Param-Region": draw(header_variants(region))}
    return region, sent


def agrees(values: list[str], body_value: str) -> bool:
    """One copy, and its decoded value is the body's (surrounding whitespace is not part of a field value)."""
    return len(values) == 1 and decode_header_value(values[0].strip()) == body_value


@fuzz_settings(40, share=0.02)
@given(header_cases())
@example(("eu", {"Mcp-Method": ["tools/call"], "Mcp-Name": [TOOL], "Mcp-Param-Region": ["us", "eu"]}))
def test_a_call_runs_exactly_when_its_mirrored_headers_agree_with_its_body(
    header_gateway: Gateway, http: httpx2.Client, case: tuple[str, dict[str, list[str]]],
) -> None:
    region, mirrored = case
    arguments = {"region": region}
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": modern_params({"name": TOOL, "arguments": arguments})}
    sent = [*headers(token=None, **{"MCP-Protocol-Version": MODERN}).items(),
            *((name, value) for name, values in mirrored.items() for value in values)]
    response = http.post(header_gateway.url, json=body, headers=sent)
    consistent = (agrees(mirrored["Mcp-Method"], "tools/call") and agrees(mirrored["Mcp-Name"], TOOL)
                  and agrees(mirrored["Mcp-Param-Region"], region))
    if consistent:
        assert response.status_code == 200, response.text
        canonical = canonicalize(arguments, HEADER_TOOL_SCHEMA)["region"]
        assert response.json()["result"]["content"][0]["text"] == f"region={canonical}"
    else:
        assert response.status_code == 400, (mirrored, response.text)
        assert response.json()["error"]["code"] == HEADER_MISMATCH


# Regressions found by the fuzzer ------------------------------------------------------------------


def test_duplicated_mcp_param_header_is_refused_even_when_the_last_copy_agrees(
    header_gateway: Gateway, http: httpx2.Client,
) -> None:
    """Found by the fuzzer: only the last copy of an Mcp-Param-* header was checked, so an
    intermediary reading the first copy ("us") routed on a value the body never carried."""
    body = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
            "params": modern_params({"name": TOOL, "arguments": {"region": "eu"}})}
    sent = [*headers(token=None, **{"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                                    "Mcp-Name": TOOL}).items(),
            ("Mcp-Param-Region", "us"), ("mcp-param-region", "eu")]
    response = http.post(header_gateway.url, json=body, headers=sent)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == HEADER_MISMATCH and "mcp-param-region" in error["message"]
