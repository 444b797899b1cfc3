"""Observability seen from the outside: real gateway processes, a real OTLP/HTTP receiver, real MCP clients.

Four gateways share the behaviour upstream (tests/conftest.py) under three server ids:

* `traced`: exports to the OTLP receiver started here; spans, /metrics, the audit CLI and the logs are
  all checked against this one process, so trace ids, decision ids and audit records can be joined.
* `quiet`: no OTEL_* configuration at all; it must serve and export nothing.
* `dead`: an OTLP endpoint on a closed port; it must still serve every call and stop cleanly.
* `crashing`: SIGKILLed under a load of denied calls, then restarted on the same state file.

Servers: `behav` (echo, whoami: read; progress: privileged, so a step-up), `vault` (echo with the
`secrets` data class, so its audit preview is redacted) and `other` (echo; agent-a is not entitled).
Nothing is mocked: every assertion is about what a process sent over the wire, wrote to its state
file or to its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import select
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry import attributes as A
from gateway.verifier import argument_digest
from tests.support.clients import ERAS
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.processes import (
    ADMIN_TOKEN,
    NARROWGATE,
    REPO,
    Gateway,
    behaviour_manifest,
    closed_port,
    static_agent,
)
from tests.support.state import stored_digest_key

MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ACCESS_DENIED = -32030
APPROVAL_REQUIRED = -32031
DECISION_ID = re.compile(r"^dec_[0-9a-f]{16}$")
SERVER_KIND, CLIENT_KIND = 2, 3
STATUS_ERROR = 2
STAGES = ("authenticate", "policy", "mint", "upstream_call")
WAIT_S = 15.0

# Distinctive values, so a leak anywhere (span, log, audit export) is found by plain substring search.
TOKENS = {"agent-a": "static-tok-a-3f9d27c1e8b54a06", "agent-b": "static-tok-b-7c1e0a9b42d6f385"}
TOKEN_A = TOKENS["agent-a"]
PLANTED_ARG = "planted-argument-value-5e8c1a"  # an ordinary (internal) argument: never on a span
VAULT_SECRET = "planted-vault-secret-91b7d4c2"  # an argument of a `secrets` tool: never anywhere
PLAIN_TEXT = "plain audit preview text"  # an argument of an internal tool: shown in the audit preview

BEHAV_TOOLS = {"echo": "read", "whoami": "read", "progress": "privileged"}


# --- helpers -------------------------------------------------------------------------------------


def new_traceparent() -> tuple[str, str, str]:
    """A fresh W3C traceparent, its trace id and its parent span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def manifests(upstream_port: int) -> list[dict[str, Any]]:
    url = {"url": f"http://127.0.0.1:{upstream_port}/mcp"}
    behav = behaviour_manifest("behav", url, timeout_s=10, tools=tuple(BEHAV_TOOLS))
    for tool in behav["tools"]:
        tool["risk"] = BEHAV_TOOLS[tool["name"]]
    vault = behaviour_manifest("vault", url, timeout_s=10, tools=("echo",))
    vault["tools"][0]["data_classes"] = ["secrets"]
    other = behaviour_manifest("other", url, timeout_s=10, tools=("echo",))
    return [behav, vault, other]


def make_gateway(workdir: Path, upstream_port: int, env: dict[str, str] | None = None) -> Gateway:
    """agent-a is entitled to behav and vault (not other); agent-b to other only."""
    workdir.mkdir(parents=True, exist_ok=True)
    agents_file = workdir / "obs-agents.yaml"
    agents = [static_agent("agent-a", ["behav", "vault"]), static_agent("agent-b", ["other"])]
    agents_file.write_text(yaml.safe_dump({"agents": agents}))
    return Gateway(workdir, manifests(upstream_port), tokens=dict(TOKENS), env=dict(env or {}),
                   # Held step-up calls give up at once; tests/test_approvals_e2e.py covers the approval flow.
                   extra_config={"agents_file": str(agents_file), "approvals": {"hold_timeout": "0.2s"}})


def modern_call(gw: Gateway, tool: str, arguments: dict[str, Any], *, token: str = TOKEN_A,
                headers: dict[str, str] | None = None, meta: dict[str, Any] | None = None,
                request_id: int = 1) -> dict[str, Any]:
    """A raw 2026-07-28 tools/call over HTTP; the JSON-RPC reply body."""
    sent, body = modern_request(tool, arguments, token=token, headers=headers, meta=meta, request_id=request_id)
    response = httpx2.post(gw.url, json=body, headers=sent, timeout=WAIT_S)
    assert response.status_code in (200, 403), response.text
    reply: dict[str, Any] = response.json()
    return reply


def modern_request(tool: str, arguments: dict[str, Any], *, token: str = TOKEN_A,
                   headers: dict[str, str] | None = None, meta: dict[str, Any] | None = None,
                   request_id: int = 1) -> tuple[dict[str, str], dict[str, Any]]:
    sent = {"Accept": "application/json", "Content-Type": "application/json", "Authorization": f"Bearer {token}",
            "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool, **(headers or {})}
    params_meta = {PROTOCOL_VERSION_META_KEY: MODERN, CLIENT_CAPABILITIES_META_KEY: {},
                   CLIENT_INFO_META_KEY: {"name": "observability-e2e", "version": "0"}, **(meta or {})}
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": params_meta}}
    return sent, body


def error_data(reply: dict[str, Any], code: int) -> dict[str, Any]:
    assert "error" in reply, reply
    assert reply["error"]["code"] == code, reply
    data: dict[str, Any] = reply["error"]["data"]
    assert DECISION_ID.match(data["decisionId"]), data
    return data


def upstream_headers(result: dict[str, Any]) -> dict[str, str]:
    """What the upstream received, from a whoami result (raw JSON-RPC result)."""
    received = result["structuredContent"]
    assert received["transport"] == "http", received
    headers: dict[str, str] = received["headers"]
    return headers


def minted_token(headers: dict[str, str]) -> str:
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer" and token.count(".") == 2, headers["authorization"]
    return token


@asynccontextmanager
async def client_with_headers(url: str, mode: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    """A real MCP SDK client whose every HTTP request carries `headers` (the agent's traceparent, say)."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN_A}", **headers},
                           timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


async def rpc_error(call: Any) -> Any:
    with pytest.raises(MCPError) as caught:
        await call
    return caught.value.error


def request_tree(receiver: OtlpReceiver, match: Callable[[ReceivedSpan], bool],
                 stages: tuple[str, ...] = STAGES) -> tuple[ReceivedSpan, dict[str, ReceivedSpan]]:
    """The one SERVER span `match` selects, and its stage children, once all have arrived."""

    def found(spans: list[ReceivedSpan]) -> bool:
        servers = [s for s in spans if s.kind == SERVER_KIND and match(s)]
        if len(servers) != 1:
            return False
        children = {s.name for s in spans if s.parent_span_id == servers[0].span_id}
        return set(stages) <= children

    spans = receiver.wait_for_spans(found, timeout_s=WAIT_S)
    server = next(s for s in spans if s.kind == SERVER_KIND and match(s))
    children = {s.name: s for s in spans if s.parent_span_id == server.span_id}
    return server, children


def by_trace(trace_id: str, name: str) -> Callable[[ReceivedSpan], bool]:
    return lambda span: span.trace_id == trace_id and span.name == name


def by_decision(decision_id: str) -> Callable[[ReceivedSpan], bool]:
    return lambda span: span.attributes.get(A.DECISION_ID) == decision_id


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def export_records(config: Path) -> tuple[str, list[dict[str, Any]]]:
    done = run_cli("audit", "export", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return done.stdout, [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def exported_until(config: Path, ready: Callable[[list[dict[str, Any]]], bool]) -> tuple[str, list[dict[str, Any]]]:
    """Export until `ready(records)` (allows of read tools are committed by the writer shortly after the reply)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        text, records = export_records(config)
        if ready(records) or time.monotonic() > deadline:
            return text, records
        time.sleep(0.2)


def metric_samples(gw: Gateway) -> list[tuple[str, dict[str, str], float]]:
    response = httpx2.get(f"{gw.base}/metrics", timeout=WAIT_S)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(response.text) for sample in family.samples]


def sample(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels` (0 when there is none)."""
    return sum(value for sample_name, got, value in samples
               if sample_name == name and all(got.get(k) == v for k, v in labels.items()))


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, receiver: OtlpReceiver) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path_factory.mktemp("traced"), behaviour_http, env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "narrowgate-obs-e2e",
    }).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def minted() -> list[str]:
    """Upstream tokens the tests saw the traced gateway mint (whoami); none may appear in its log or spans."""
    return []


@pytest.fixture(params=ERAS)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- tracing -------------------------------------------------------------------------------------


async def test_a_call_is_one_server_span_with_its_stages_and_the_agents_trace_continues(
    traced: Gateway, receiver: OtlpReceiver, mode: str, minted: list[str],
) -> None:
    traceparent, trace_id, agent_span = new_traceparent()
    async with client_with_headers(traced.url, mode, {"traceparent": traceparent}) as client:
        echoed = await client.call_tool("behav__echo", {"text": PLANTED_ARG})
        whoami = await client.call_tool("behav__whoami", {})
    assert not echoed.is_error and PLANTED_ARG in str(echoed.content)
    assert whoami.structured_content is not None
    upstream = whoami.structured_content["headers"]
    minted.append(minted_token(upstream))

    server, stages = request_tree(receiver, by_trace(trace_id, "tools/call behav__echo"))
    assert server.parent_span_id == agent_span  # continued from the agent's traceparent header
    assert server.resource["service.name"] == "narrowgate-obs-e2e"
    # The replica id (here the default, host-pid): workers and replicas export series apart.
    assert server.resource["service.instance.id"] == f"{socket.gethostname()}-{traced.process.pid}"
    attrs = server.attributes
    assert attrs[A.MCP_METHOD_NAME] == "tools/call"
    assert attrs[A.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert attrs[A.GEN_AI_TOOL_NAME] == "behav__echo"
    assert attrs[A.AGENT_ID] == "agent-a"
    assert attrs[A.AGENT_OWNER] == "tests@example.com"
    assert attrs[A.DECISION] == "allow"
    assert DECISION_ID.match(attrs[A.DECISION_ID]), attrs
    assert attrs[A.POLICY_IDS] == ["permit-entitled-tools"]
    assert attrs[A.UPSTREAM] == "behav"
    assert A.ERROR_TYPE not in attrs and server.status_code != STATUS_ERROR
    assert (A.MCP_SESSION_ID in attrs) == (mode == "legacy")
    for name in STAGES:
        assert stages[name].trace_id == trace_id, name
    assert stages["upstream_call"].kind == CLIENT_KIND
    assert stages["upstream_call"].attributes[A.UPSTREAM] == "behav"

    # The upstream was called within the same trace, as a child of the upstream_call span.
    who_server, who_stages = request_tree(receiver, by_trace(trace_id, "tools/call behav__whoami"))
    version, sent_trace, sent_parent, _flags = upstream["traceparent"].split("-")
    assert (version, sent_trace) == ("00", trace_id)
    assert sent_parent == who_stages["upstream_call"].span_id
    assert who_server.attributes[A.DECISION_ID] != attrs[A.DECISION_ID]

    # Neither argument values nor tokens anywhere: any span this gateway exported so far.
    everything = repr([(s.name, s.attributes, s.resource, s.status_message) for s in receiver.spans])
    for leak in (PLANTED_ARG, TOKEN_A, *minted):
        assert leak not in everything


def test_traceparent_in_meta_is_continued_and_propagated_upstream(
    traced: Gateway, receiver: OtlpReceiver, minted: list[str],
) -> None:
    traceparent, trace_id, agent_span = new_traceparent()
    reply = modern_call(traced, "behav__whoami", {}, meta={"traceparent": traceparent})
    upstream = upstream_headers(reply["result"])
    minted.append(minted_token(upstream))
    server, stages = request_tree(receiver, by_trace(trace_id, "tools/call behav__whoami"))
    assert server.parent_span_id == agent_span
    assert server.attributes[A.GEN_AI_TOOL_NAME] == "behav__whoami"
    assert A.MCP_SESSION_ID not in server.attributes  # the sessionless era
    assert upstream["traceparent"].split("-")[1:3] == [trace_id, stages["upstream_call"].span_id]


def test_a_denied_call_span_says_deny_with_the_agents_decision_id(traced: Gateway, receiver: OtlpReceiver) -> None:
    traceparent, trace_id, _ = new_traceparent()
    reply = modern_call(traced, "other__echo", {"text": PLANTED_ARG}, headers={"traceparent": traceparent})
    data = error_data(reply, ACCESS_DENIED)
    assert data["decision"] == "deny"
    server, stages = request_tree(receiver, by_trace(trace_id, "tools/call other__echo"),
                                  stages=("authenticate", "policy"))
    assert server.attributes[A.DECISION] == "deny"
    assert server.attributes[A.DECISION_ID] == data["decisionId"]
    assert server.attributes[A.ERROR_TYPE] == str(ACCESS_DENIED)
    assert server.attributes[A.UPSTREAM] == "other"
    assert server.status_code == STATUS_ERROR
    # Denied at the policy stage: nothing was minted and nothing went upstream.
    assert "mint" not in stages and "upstream_call" not in stages
    assert PLANTED_ARG not in repr(server.attributes)


def test_the_jsonrpc_request_id_is_a_string_attribute(traced: Gateway, receiver: OtlpReceiver) -> None:
    # The MCP conventions type jsonrpc.request.id as a string, and attributes.py says "as a string" too.
    traceparent, trace_id, _ = new_traceparent()
    assert "result" in modern_call(traced, "behav__echo", {"text": "id"}, headers={"traceparent": traceparent},
                                   request_id=4242)
    server, _ = request_tree(receiver, by_trace(trace_id, "tools/call behav__echo"))
    assert server.attributes[A.JSONRPC_REQUEST_ID] == "4242"


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_count_requests_by_method_and_decision(traced: Gateway) -> None:
    before = metric_samples(traced)
    for n in range(3):
        assert "result" in modern_call(traced, "behav__echo", {"text": f"m{n}"})
    for _ in range(2):
        error_data(modern_call(traced, "other__echo", {"text": "no"}), ACCESS_DENIED)
    after = metric_samples(traced)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    call = {"mcp_method_name": "tools/call"}
    assert delta("narrowgate_requests_total", **call, narrowgate_decision="allow", narrowgate_upstream="behav") == 3
    assert delta("narrowgate_requests_total", **call, narrowgate_decision="deny", narrowgate_upstream="other",
                 error_type=str(ACCESS_DENIED)) == 2
    assert delta("narrowgate_request_duration_seconds_count", **call, narrowgate_decision="allow") == 3
    assert delta("narrowgate_request_duration_seconds_count", **call, narrowgate_decision="deny") == 2
    assert delta("narrowgate_request_duration_seconds_sum", **call, narrowgate_decision="allow") > 0
    assert delta("narrowgate_policy_evaluation_duration_seconds_count", narrowgate_decision="allow") == 3
    assert delta("narrowgate_policy_evaluation_duration_seconds_count", narrowgate_decision="deny") == 2
    buckets = [s for s in after if s[0] == "narrowgate_request_duration_seconds_bucket"
               and s[1].get("narrowgate_decision") == "allow" and s[1].get("le") == "+Inf"]
    assert buckets and buckets[0][2] >= 3


# --- audit ---------------------------------------------------------------------------------------


def test_audit_records_join_the_agent_the_trace_and_the_cli(traced: Gateway, receiver: OtlpReceiver) -> None:
    config = traced.workdir / "gateway.yaml"
    calls = {
        "allow": ("behav__echo", {"text": PLAIN_TEXT}),
        "sensitive": ("vault__echo", {"text": VAULT_SECRET}),
        "deny": ("other__echo", {"text": "not entitled"}),
        "step_up": ("behav__progress", {"steps": 1}),
    }
    # Distinctive JSON-RPC ids find each call's span; no traceparent is sent, so the gateway starts each trace.
    request_ids = {label: 7001 + n for n, label in enumerate(calls)}
    replies = {label: modern_call(traced, tool, args, request_id=request_ids[label])
               for label, (tool, args) in calls.items()}
    assert "result" in replies["allow"] and "result" in replies["sensitive"]
    assert error_data(replies["deny"], ACCESS_DENIED)["decision"] == "deny"
    step_up = replies["step_up"]["result"]
    assert step_up["isError"] and DECISION_ID.match(step_up["_meta"]["narrowgate/approval"]["decisionId"])

    decision_ids: dict[str, str] = {}
    spans: dict[str, ReceivedSpan] = {}
    for label, (tool, _) in calls.items():
        wanted = str(request_ids[label])
        spans[label], _ = request_tree(
            receiver, lambda s, tool=tool, wanted=wanted: s.name == f"tools/call {tool}"
            and str(s.attributes.get(A.JSONRPC_REQUEST_ID)) == wanted, stages=("policy",))
        assert spans[label].parent_span_id is None
        decision_ids[label] = spans[label].attributes[A.DECISION_ID]
        if "error" in replies[label]:  # the agent sees the decision id on refusals: the same one
            assert replies[label]["error"]["data"]["decisionId"] == decision_ids[label]
    assert step_up["_meta"]["narrowgate/approval"]["decisionId"] == decision_ids["step_up"]
    assert len(set(decision_ids.values())) == len(calls)
    assert len({span.trace_id for span in spans.values()}) == len(calls)

    # An admin suspends and resumes agent-b; an admin reloads the policies.
    agent_b = f"{traced.base}/admin/v1/agents/agent-b"
    for action in ("suspend", "resume"):
        changed = httpx2.post(f"{agent_b}/{action}", json={"reason": f"observability e2e {action}"}, headers=ADMIN)
        assert changed.status_code == 200, changed.text
    reloaded = httpx2.post(f"{traced.base}/admin/v1/policies/reload", headers=ADMIN)
    assert reloaded.status_code == 200, reloaded.text

    def complete(records: list[dict[str, Any]]) -> bool:
        ids = {r.get("decision_id") for r in records}
        actions = {(r["kind"], r["action"], r.get("agent_id")) for r in records}
        return (set(decision_ids.values()) <= ids and ("agent", "resume", "agent-b") in actions
                and any(r["kind"] == "policy" for r in records))

    text, records = exported_until(config, complete)
    assert complete(records), records[-10:]
    by_id = {r["decision_id"]: r for r in records if r.get("decision_id") and r["kind"] == "decision"}
    digest_key = stored_digest_key(traced.workdir / "state.db")
    for label, (tool, args) in calls.items():
        record = by_id[decision_ids[label]]
        assert record["kind"] == "decision" and record["tool"] == tool, record
        assert record["agent_id"] == "agent-a" and record["actor"] == "agent-a"
        assert record["decision"] == spans[label].attributes[A.DECISION]
        assert record["trace_id"] == spans[label].trace_id, label
        # Keyed with the gateway's own secret: only whoever holds the state store can match arguments to it.
        assert record["args_digest"] == digest_key.keyed(argument_digest(args)), label
    assert by_id[decision_ids["deny"]]["decision"] == "deny"
    assert by_id[decision_ids["step_up"]]["decision"] == "step_up"
    assert by_id[decision_ids["step_up"]]["policy_ids"] == ["step-up-privileged-destructive"]
    assert by_id[decision_ids["allow"]]["preview"] == {"text": PLAIN_TEXT}
    assert by_id[decision_ids["sensitive"]]["preview"] == {"text": "[redacted]"}
    assert VAULT_SECRET not in text
    assert TOKEN_A not in text and ADMIN_TOKEN not in text

    lifecycle = [r for r in records if r["kind"] == "agent" and r.get("agent_id") == "agent-b"
                 and r["action"] in ("suspend", "resume")]
    assert [r["action"] for r in lifecycle][-2:] == ["suspend", "resume"]
    assert all("test-admin" in r["actor"] for r in lifecycle[-2:]), lifecycle
    assert lifecycle[-2]["detail"]["reason"] == "observability e2e suspend"
    reloads = [r for r in records if r["kind"] == "policy" and r["action"] == "reload"]
    assert reloads and "admin" in reloads[-1]["detail"]["why"]

    # search: filters by agent, decision and kind.
    searched = run_cli("audit", "search", "--config", str(config), "--agent", "agent-a")
    assert searched.returncode == 0, searched.stderr
    for label, (tool, _) in calls.items():
        expected = "deny" if label == "deny" else "step_up" if label == "step_up" else "allow"
        lines = searched.stdout.splitlines()
        assert any(tool in line and f" {expected} " in line for line in lines), (tool, searched.stdout)
    assert "agent-b" not in searched.stdout
    denied = run_cli("audit", "search", "--config", str(config), "--agent", "agent-a", "--decision", "deny")
    assert "other__echo" in denied.stdout and "behav__echo" not in denied.stdout
    lifecycle_rows = run_cli("audit", "search", "--config", str(config), "--agent", "agent-b", "--kind", "agent")
    assert "suspend" in lifecycle_rows.stdout and "resume" in lifecycle_rows.stdout
    assert "reload" in run_cli("audit", "search", "--config", str(config), "--kind", "policy").stdout

    verified = run_cli("audit", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("audit log ok:"), verified.stdout

    # Tampering: an attacker with the file drops the triggers and rewrites one field of the deny record.
    # Done on a copy so the running gateway's own file stays whole for the other tests.
    copy_dir = traced.workdir / "tampered"
    copy_dir.mkdir(exist_ok=True)
    copy_db = copy_dir / "state.db"
    with sqlite3.connect(traced.workdir / "state.db") as source, sqlite3.connect(copy_db) as target:
        source.backup(target)
    copy_config = copy_dir / "gateway.yaml"
    copy_config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "state": f"sqlite:///{copy_db}"}))
    assert run_cli("audit", "verify", "--config", str(copy_config)).returncode == 0
    seq = by_id[decision_ids["deny"]]["seq"]
    conn = sqlite3.connect(copy_db, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit_log SET decision = 'allow' WHERE seq = ?", (seq,))
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("DROP TRIGGER audit_log_no_delete")
        conn.execute("UPDATE audit_log SET decision = 'allow' WHERE seq = ?", (seq,))
    finally:
        conn.close()
    broken = run_cli("audit", "verify", "--config", str(copy_config))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"seq {seq}: modified" in broken.stdout, broken.stdout
    assert [line for line in broken.stdout.splitlines() if line.startswith("seq ")] == [
        line for line in broken.stdout.splitlines() if line.startswith(f"seq {seq}:")]


# --- logs ----------------------------------------------------------------------------------------


def test_no_token_or_sensitive_argument_in_the_debug_log(traced: Gateway, minted: list[str]) -> None:
    reply = modern_call(traced, "behav__whoami", {})
    minted.append(minted_token(upstream_headers(reply["result"])))
    assert "result" in modern_call(traced, "vault__echo", {"text": VAULT_SECRET})
    error_data(modern_call(traced, "other__echo", {"text": VAULT_SECRET}), ACCESS_DENIED)
    # An unknown token must not be echoed into the log either.
    assert httpx2.post(traced.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                       headers={"Authorization": "Bearer wrong-token-6d0c5b2a", "Accept": ACCEPT}).status_code == 401
    log_text = traced.log_text()
    assert "DEBUG" in log_text  # the log is the debug-level one: the strictest case
    assert len(minted) >= 3
    for leak in (*TOKENS.values(), ADMIN_TOKEN, "wrong-token-6d0c5b2a", *minted, VAULT_SECRET):
        assert leak not in log_text, leak
    # A JWT's signature alone would be enough to replay it: not even that.
    for token in minted:
        assert token.rsplit(".", 1)[1] not in log_text


# --- no collector, dead collector ----------------------------------------------------------------


def test_without_a_collector_the_gateway_serves_and_exports_nothing(
    tmp_path_factory: pytest.TempPathFactory, behaviour_http: int,
) -> None:
    assert not [k for k in os.environ if k.startswith("OTEL_EXPORTER_OTLP") or k == "OTEL_TRACES_EXPORTER"]
    # A listener on the default OTLP/HTTP port: a gateway that exported by default would connect to it.
    sentinel: socket.socket | None = socket.socket()
    try:
        sentinel.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sentinel.bind(("127.0.0.1", 4318))
        sentinel.listen(16)
    except OSError:
        sentinel.close()
        sentinel = None
    print(f"sentinel on the default OTLP port: {'yes' if sentinel else 'no (port busy)'}")
    gw = make_gateway(tmp_path_factory.mktemp("quiet"), behaviour_http,
                      env={"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "50"}).start()
    try:
        traceparent, _, _ = new_traceparent()
        forwarded = upstream_headers(modern_call(gw, "behav__whoami", {}, headers={"traceparent": traceparent})
                                     ["result"])
        # Not tracing: the agent's context passes through unchanged (no gateway span in between) ...
        assert forwarded["traceparent"] == traceparent
        # ... and without one, the upstream gets none.
        assert "traceparent" not in upstream_headers(modern_call(gw, "behav__whoami", {})["result"])
        error_data(modern_call(gw, "other__echo", {"text": "x"}), ACCESS_DENIED)
        samples = metric_samples(gw)
        assert sample(samples, "narrowgate_requests_total", mcp_method_name="tools/call",
                      narrowgate_decision="allow") == 2
        if sentinel is not None:
            time.sleep(0.5)  # ten schedule delays: an exporter would have tried by now
            readable, _, _ = select.select([sentinel], [], [], 0)
            assert not readable, "the gateway connected to the default OTLP endpoint"
    finally:
        gw.stop()
        if sentinel is not None:
            sentinel.close()
    assert gw.process is not None and gw.process.returncode != -signal.SIGKILL
    assert "Traceback" not in gw.log_text()


async def test_a_dead_collector_does_not_hold_up_calls(
    tmp_path_factory: pytest.TempPathFactory, behaviour_http: int,
) -> None:
    gw = make_gateway(tmp_path_factory.mktemp("dead"), behaviour_http, env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }).start()
    try:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(WAIT_S)) as http:

            async def call(n: int) -> dict[str, Any]:
                sent, body = modern_request("behav__echo", {"text": f"dead {n}"}, request_id=n)
                response = await http.post(gw.url, json=body, headers=sent)
                assert response.status_code == 200, response.text
                reply: dict[str, Any] = response.json()
                return reply

            # Several rounds across the exporters' failing export attempts, each bounded by the client timeout.
            for round_no in range(4):
                replies = await asyncio.gather(*(call(round_no * 10 + n) for n in range(10)))
                assert all("result" in r and not r["result"].get("isError") for r in replies), replies
                await asyncio.sleep(0.3)
        # Tracing is on (just not delivered): the upstream still gets the gateway's trace context.
        assert "traceparent" in upstream_headers(modern_call(gw, "behav__whoami", {})["result"])
    finally:
        gw.stop()
    assert gw.process is not None and gw.process.returncode != -signal.SIGKILL, "did not stop on SIGTERM"


# --- crash ---------------------------------------------------------------------------------------


async def test_sigkill_under_load_loses_no_acknowledged_decision(
    tmp_path_factory: pytest.TempPathFactory, behaviour_http: int,
) -> None:
    gw = make_gateway(tmp_path_factory.mktemp("crashing"), behaviour_http).start()
    assert gw.process is not None
    config = gw.workdir / "gateway.yaml"
    acknowledged: list[str] = []
    failed: list[str] = []
    killed = asyncio.Event()
    kill_after = 60
    try:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(WAIT_S)) as http:

            async def worker(w: int) -> None:
                n = 0
                while not killed.is_set():
                    n += 1
                    sent, body = modern_request("other__echo", {"text": f"load {w}.{n}"}, request_id=n)
                    try:
                        response = await http.post(gw.url, json=body, headers=sent)
                    except httpx2.HTTPError as exc:
                        failed.append(type(exc).__name__)
                        return
                    data = error_data(response.json(), ACCESS_DENIED)
                    acknowledged.append(data["decisionId"])
                    if len(acknowledged) >= kill_after and not killed.is_set():
                        killed.set()
                        assert gw.process is not None
                        os.kill(gw.process.pid, signal.SIGKILL)

            await asyncio.wait_for(asyncio.gather(*(worker(w) for w in range(8))), timeout=60)
        print(f"acknowledged before the kill: {len(acknowledged)}; in flight at the kill: {len(failed)}")
        gw.process.wait(timeout=10)
        assert gw.process.returncode == -signal.SIGKILL
        received = set(acknowledged)
        assert len(received) == len(acknowledged) >= kill_after

        gw.start()  # same workdir, port and state file
        verified = run_cli("audit", "verify", "--config", str(config))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        _, records = export_records(config)
        logged = {r["decision_id"] for r in records if r["kind"] == "decision"}
        missing = received - logged
        assert not missing, f"{len(missing)} acknowledged decision(s) lost: {sorted(missing)[:5]}"
        # The restarted gateway carries on the same chain.
        after = error_data(modern_call(gw, "other__echo", {"text": "after restart"}), ACCESS_DENIED)
        _, records = export_records(config)
        assert after["decisionId"] in {r["decision_id"] for r in records}
        assert run_cli("audit", "verify", "--config", str(config)).returncode == 0
    finally:
        gw.stop()
