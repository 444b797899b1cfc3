"""What the per-call speed work (issue 19) must keep: the metrics a deployment scrapes (bounded), and
remembered principals that end exactly when their agent's standing does."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import pytest
from mcp.shared.inbound import validate_mcp_param_headers

from gateway.config import settings_from_mapping
from gateway.identity.authenticator import AccessRefused, Authenticator
from gateway.identity.verifier import TokenVerifier
from gateway.protocol.errors import RpcError
from gateway.protocol.jsonrpc import parse_message
from gateway.registry.service import Registry
from gateway.store import open_store
from gateway.telemetry import Telemetry
from gateway.telemetry.setup import MAX_SERIES
from gateway.transport import endpoint
from gateway.transport.endpoint import HeaderNames, decoded_headers
from gateway.transport.envelope import names_repeat
from gateway.transport.param_headers import check_param_headers, declares_param_headers

T0 = 1_767_225_600.0


def scraped(telemetry: Telemetry) -> str:
    return telemetry.metrics_response()[0].decode()


def counter(text: str, **labels: str) -> float:
    """narrowgate_requests_total for exactly these labels (absent ones empty, as the exporter writes them)."""
    names = ("error_type", "mcp_method_name", "narrowgate_decision", "narrowgate_upstream")
    want = ",".join(f'{name}="{labels.get(name, "")}"' for name in names)
    match = re.search(r"^narrowgate_requests_total\{" + re.escape(want) + r"\} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no series {want} in:\n{text}"
    return float(match.group(1))


def test_request_counter_counts_every_request_per_series() -> None:
    telemetry = Telemetry.from_env({})
    try:
        for _ in range(3):
            telemetry.record_request("tools/call", "allow", "bench", 0.001, None)
        telemetry.record_request("tools/call", "deny", "bench", 0.001, "-32003")
        telemetry.record_request("made/up", None, None, 0.001, None)
        text = scraped(telemetry)
        call = {"mcp_method_name": "tools/call", "narrowgate_upstream": "bench"}
        assert counter(text, **call, narrowgate_decision="allow") == 3
        assert counter(text, **call, narrowgate_decision="deny", error_type="-32003") == 1
        assert counter(text, mcp_method_name="_OTHER") == 1
        assert re.search(r'^narrowgate_request_duration_seconds_count\{.*narrowgate_decision="allow".*\} 3\.0$',
                         text, re.MULTILINE)
        telemetry.record_request("tools/call", "allow", "bench", 0.001, None)
        assert counter(scraped(telemetry), **call, narrowgate_decision="allow") == 4  # cumulative across scrapes
    finally:
        telemetry.shutdown()


def test_request_series_are_bounded_by_an_overflow_series() -> None:
    telemetry = Telemetry.from_env({})
    try:
        for code in range(MAX_SERIES + 50):  # an upstream answering with ever new error codes
            telemetry.record_request("tools/call", "allow", "bench", 0.001, str(code))
        assert len(telemetry._request_series) == MAX_SERIES + 1
        text = scraped(telemetry)
        overflow = re.search(r'^narrowgate_requests_total\{.*otel_metric_overflow="true".*\} (\S+)$', text,
                             re.MULTILINE)
        assert overflow is not None and float(overflow.group(1)) == 50
    finally:
        telemetry.shutdown()


async def test_a_remembered_static_principal_ends_with_its_agent(tmp_path: Path) -> None:
    """Static-token principals are remembered between requests, never past what resolve would say:
    a suspension (a new agent record) or the agent's expiry ends them at once."""
    now = {"t": T0}
    store = open_store(f"sqlite:///{tmp_path}/gw.db")
    await store.migrate()
    try:
        registry = Registry(store, [], clock=lambda: now["t"])
        await registry.create({
            "id": "bench-agent", "owner": "o@example.com", "purpose": "benchmark", "state": "active",
            "expires_at": T0 + 60, "identities": [{"kind": "static", "issuer": "narrowgate", "subject": "bench-agent"}],
            "entitlement": {"servers": ["bench"], "require_task": False}}, actor="test", reason="test")
        settings = settings_from_mapping({"auth": {"open_loopback": False, "static_tokens": [
            {"agent": "bench-agent", "token_sha256": hashlib.sha256(b"tok-1").hexdigest()}]}}, tmp_path)
        authenticator = Authenticator(settings, TokenVerifier(settings.identity), registry)
        first = await authenticator.authenticate("Bearer tok-1")
        assert await authenticator.authenticate("Bearer tok-1") is first  # remembered
        await registry.suspend("bench-agent", actor="test", reason="test")
        with pytest.raises(AccessRefused, match="suspended"):
            await authenticator.authenticate("Bearer tok-1")
        await registry.resume("bench-agent", actor="test", reason="test")
        resumed = await authenticator.authenticate("Bearer tok-1")
        assert resumed is not first and resumed.agent is registry.get("bench-agent")
        now["t"] = T0 + 61  # past its expiry: retired, whatever was remembered
        with pytest.raises(AccessRefused, match="retired"):
            await authenticator.authenticate("Bearer tok-1")
    finally:
        await store.close()


PARAM_CASES = [  # (schema, arguments, headers): what the SDK's check answers, the skip must answer too
    ({"type": "object", "properties": {"q": {"type": "string"}}}, {"q": "a"}, {}),
    ({"type": "object", "properties": {"q": {"type": "string"}}}, {"q": "a"}, {"mcp-param-q": "b"}),
    ({"type": "object", "properties": {"q": {"type": "string", "x-mcp-header": "Q"}}}, {"q": "a"}, {}),
    ({"type": "object", "properties": {"q": {"type": "string", "x-mcp-header": "Q"}}}, {"q": "a"},
     {"mcp-param-q": "b"}),
    ({"type": "object", "properties": {"q": {"type": "string", "x-mcp-header": "Q"}}}, {"q": "a"},
     {"mcp-param-q": "a"}),
    ({"type": "object", "properties": {"o": {"type": "object", "properties": {
        "n": {"type": "integer", "x-mcp-header": "N"}}}}}, {"o": {"n": 3}}, {"mcp-param-n": "4"}),
    ({"anyOf": [{"properties": {"q": {"type": "string", "x-mcp-header": "Q"}}}]}, {"q": "a"}, {}),
]


@pytest.mark.parametrize(("schema", "arguments", "headers"), PARAM_CASES)
def test_param_header_check_answers_as_the_sdk_does(schema: dict[str, object], arguments: dict[str, object],
                                                    headers: dict[str, str]) -> None:
    expected = validate_mcp_param_headers(schema, arguments, headers)
    assert check_param_headers(schema, arguments, headers) == expected
    assert check_param_headers(schema, arguments, headers) == expected  # remembered: the same answer
    assert declares_param_headers(schema) == ("x-mcp-header" in str(schema))


def nested(levels: int, filler: str = "") -> bytes:
    """A tools/call body whose arguments hold `levels` nested objects (the whole body: levels + 2 deep)."""
    inner = '{"d": ' * levels + f'"{filler}"' + "}" * levels
    envelope = '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t", "arguments": %s}}'
    return (envelope % inner).encode()


@pytest.mark.parametrize(("levels", "filler", "refused"), [
    (62, "", False),  # 64 deep: at the limit
    (63, "", True),  # 65 deep
    (2, "{[" * 100, False),  # brackets in a string make the walk run; it finds nothing too deep
    (63, "{[" * 100, True),
])
def test_the_depth_limit_holds_with_the_bracket_count_shortcut(levels: int, filler: str, refused: bool) -> None:
    body = nested(levels, filler)
    if refused:
        with pytest.raises(RpcError, match="nested deeper than 64"):
            parse_message(body, 64)
    else:
        assert parse_message(body, 64).method == "tools/call"


@pytest.mark.parametrize(("names", "repeat"), [
    ([b"host", b"mcp-method", b"mcp-name"], False),
    ([b"host", b"mcp-method", b"mcp-method"], True),  # the duplicate checks run and find it
    ([b"host", b"mcp-param-q", b"MCP-Param-Q"], True),  # equal once lowercased
    ([b"host", b"mcp-param-\xc0", b"mcp-param-\xe0"], True),  # one name once lowercased as latin-1, as the checks do
    ([b"host", b"mcp-param-\xc0", b"mcp-param-\xc1"], False),
    ([b"Mcp-Name", b"mcp-name"], True),  # a server that did not lowercase: still one name
])
def test_header_names_that_could_repeat_are_left_to_the_duplicate_checks(names: list[bytes], repeat: bool) -> None:
    raw = [(name, b"v") for name in names]
    assert names_repeat(decoded_headers(raw), raw) is repeat
    lowered = [name.decode("latin-1").lower() for name in names]  # how the duplicate checks compare names
    assert repeat is (len(set(lowered)) != len(lowered))


async def test_a_2026_request_is_watched_for_a_disconnect_only_once_it_has_run_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that ends quickly never gets a watcher task; one still running gets one, which cancels it when its
    connection closes; every entry goes when its request ends."""
    monkeypatch.setattr(endpoint, "WATCH_AFTER_S", 0.05)
    watches = endpoint.DisconnectWatches()
    closed = asyncio.Event()

    async def receive() -> dict[str, str]:
        await closed.wait()
        return {"type": "http.disconnect"}

    quick = asyncio.create_task(asyncio.sleep(0))
    watches.add(quick, receive)
    await quick
    watches.remove(quick)
    slow = asyncio.create_task(asyncio.Event().wait())  # runs until cancelled
    watches.add(slow, receive)
    await asyncio.sleep(0.1)  # the sweep (due at 0.05 s) runs first under any load: timers run in order
    assert list(watches.watchers) == [slow] and not watches.waiting and not slow.done()
    closed.set()
    with pytest.raises(asyncio.CancelledError):
        await slow
    watches.remove(slow)
    assert not watches.waiting and not watches.watchers


def test_header_names_are_decoded_as_latin_1_and_only_the_known_ones_kept() -> None:
    names = HeaderNames()
    known = dict(names)
    assert known[b"host"] == "host" and known[b"mcp-session-id"] == "mcp-session-id"
    made_up = [b"x-%d-\xe9" % index for index in range(1000)]
    assert [names[raw] for raw in made_up[:2]] == ["x-0-\xe9", "x-1-\xe9"]
    assert names[b"X-Custom-\xc9"] == "x-custom-\xe9"  # lowercased as latin-1 text, as the duplicate checks do
    for raw in made_up:
        names[raw]
    assert dict(names) == known  # made-up names are decoded, never kept
    assert names[b"host"] is known[b"host"]
