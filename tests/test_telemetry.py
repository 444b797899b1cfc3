"""Tracing and metrics: spans through a real OTLP/HTTP receiver, details through the in-memory exporter."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.telemetry import Telemetry
from gateway.telemetry import attributes as A
from gateway.telemetry.config import read_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import SilentPeer, closed_port

AGENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
AGENT_SPAN = "00f067aa0ba902b7"
AGENT_TRACEPARENT = f"00-{AGENT_TRACE}-{AGENT_SPAN}-01"
META_TRACE = "0af7651916cd43dd8448eb211c80319c"
META_SPAN = "b7ad6b7169203331"
META_TRACEPARENT = f"00-{META_TRACE}-{META_SPAN}-01"
SECRET = "sk-live-do-not-leak-0123456789"
STAGES = ("authenticate", "policy", "upstream_call")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def otlp_env(receiver: OtlpReceiver) -> dict[str, str]:
    receiver.clear()
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "100",
        "OTEL_SERVICE_NAME": "narrowgate-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=platform%20security",
    }


@pytest.fixture
def traced(otlp_env: dict[str, str]) -> Iterator[tuple[Telemetry, InMemorySpanExporter]]:
    telemetry = Telemetry.from_env(otlp_env)
    memory = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(memory))
    yield telemetry, memory
    telemetry.shutdown()


def one_request(telemetry: Telemetry, traceparent: str | None = None, meta: dict[str, str] | None = None) -> str | None:
    with telemetry.request_span("tools/call", traceparent=traceparent, meta=meta,
                                attributes={A.GEN_AI_TOOL_NAME: "echo", A.JSONRPC_REQUEST_ID: "7",
                                            A.MCP_PROTOCOL_VERSION: "2026-07-28"}) as span:
        span.set(agent_id="agent-a", owner="alice@example.com", task_id="task-1")
        with telemetry.stage("authenticate", credential_kind="jwt"):
            pass
        with telemetry.stage("policy"):
            span.set(**{A.DECISION: "allow", A.POLICY_IDS: ["p-read", "p-hours"], A.DECISION_ID: "dec-1"})
        with telemetry.stage("upstream_call", upstream="files"):
            pass
        return span.trace_id


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


# Spans ------------------------------------------------------------------------------------------------


def test_request_span_and_stages_reach_a_real_collector(
    traced: tuple[Telemetry, InMemorySpanExporter], receiver: OtlpReceiver
) -> None:
    telemetry, _ = traced
    assert telemetry.tracing_enabled
    trace_id = one_request(telemetry)
    assert trace_id is not None and len(trace_id) == 32

    spans = receiver.wait_for_spans(lambda got: len(got) >= 4)
    named = {span.name: span for span in spans}
    server = named["tools/call echo"]
    assert server.kind == 2  # SERVER
    assert server.parent_span_id is None
    assert server.trace_id == trace_id
    assert server.attributes[A.MCP_METHOD_NAME] == "tools/call"
    assert server.attributes[A.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert server.attributes[A.GEN_AI_TOOL_NAME] == "echo"
    assert server.attributes[A.JSONRPC_REQUEST_ID] == "7"
    assert server.attributes[A.AGENT_ID] == "agent-a"
    assert server.attributes[A.AGENT_OWNER] == "alice@example.com"
    assert server.attributes[A.TASK_ID] == "task-1"
    assert server.attributes[A.DECISION] == "allow"
    assert server.attributes[A.POLICY_IDS] == ["p-read", "p-hours"]
    assert server.attributes[A.DECISION_ID] == "dec-1"
    for stage in STAGES:
        child = named[stage]
        assert child.trace_id == trace_id
        assert child.parent_span_id == server.span_id, stage
    assert named["upstream_call"].kind == 3  # CLIENT
    assert named["upstream_call"].attributes[A.UPSTREAM] == "files"
    assert named["authenticate"].attributes[A.CREDENTIAL_KIND] == "jwt"
    assert server.resource["service.name"] == "narrowgate-test"
    assert server.resource["deployment.environment.name"] == "test"
    assert server.resource["team"] == "platform security"
    assert receiver.requests[0][1]["Content-Type"] == "application/x-protobuf"


def test_trace_continues_from_the_traceparent_header(traced: tuple[Telemetry, InMemorySpanExporter]) -> None:
    telemetry, memory = traced
    assert one_request(telemetry, traceparent=AGENT_TRACEPARENT) == AGENT_TRACE
    server = by_name(memory.get_finished_spans())["tools/call echo"]
    assert server.parent is not None and server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == AGENT_SPAN
    assert f"{server.context.trace_id:032x}" == AGENT_TRACE


def test_trace_continues_from_meta_when_the_header_is_absent(
    traced: tuple[Telemetry, InMemorySpanExporter], receiver: OtlpReceiver
) -> None:
    telemetry, memory = traced
    meta = {"traceparent": META_TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "progressToken": "p1"}
    assert one_request(telemetry, meta=meta) == META_TRACE
    server = by_name(memory.get_finished_spans())["tools/call echo"]
    assert server.parent is not None and f"{server.parent.span_id:016x}" == META_SPAN
    assert server.context.trace_state.get("congo") == "t61rcWkgMzE"
    received = receiver.wait_for_spans(lambda got: any(s.name == "tools/call echo" for s in got))
    remote = next(s for s in received if s.name == "tools/call echo")
    assert (remote.trace_id, remote.parent_span_id) == (META_TRACE, META_SPAN)


def test_header_wins_over_meta_and_meta_becomes_a_link(traced: tuple[Telemetry, InMemorySpanExporter]) -> None:
    telemetry, memory = traced
    one_request(telemetry, traceparent=AGENT_TRACEPARENT, meta={"traceparent": META_TRACEPARENT})
    server = by_name(memory.get_finished_spans())["tools/call echo"]
    assert f"{server.context.trace_id:032x}" == AGENT_TRACE
    assert [(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in server.links] == [
        (META_TRACE, META_SPAN)]


def test_malformed_traceparent_starts_a_new_trace(traced: tuple[Telemetry, InMemorySpanExporter]) -> None:
    telemetry, memory = traced
    trace_id = one_request(telemetry, traceparent="00-not-a-trace-01", meta={"traceparent": 17})  # type: ignore[dict-item]
    assert trace_id is not None and trace_id != AGENT_TRACE
    assert by_name(memory.get_finished_spans())["tools/call echo"].parent is None


def test_inject_continues_the_trace_to_the_upstream(traced: tuple[Telemetry, InMemorySpanExporter]) -> None:
    telemetry, memory = traced
    headers: dict[str, str] = {"Accept": "application/json"}
    outside: dict[str, str] = {}
    telemetry.inject(outside)
    assert outside == {}
    with telemetry.request_span("tools/call", traceparent=AGENT_TRACEPARENT + "", meta=None,
                                attributes={A.GEN_AI_TOOL_NAME: "echo"}, tracestate="vendor=abc"):
        with telemetry.stage("upstream_call"):
            telemetry.inject(headers)
            assert telemetry.current_trace_id() == AGENT_TRACE
        meta: dict[str, str] = {}
        telemetry.inject(meta)  # an upstream's params._meta works the same way
    upstream_call = by_name(memory.get_finished_spans())["upstream_call"]
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", AGENT_TRACE, "01")
    assert parent_id == f"{upstream_call.context.span_id:016x}"
    assert headers["tracestate"] == "vendor=abc"
    assert meta["traceparent"].split("-")[1] == AGENT_TRACE
    assert telemetry.current_trace_id() is None


def test_span_named_when_tool_is_known_later_and_errors_are_recorded(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, memory = traced
    with telemetry.request_span("tools/call", traceparent=None, meta=None, attributes={}) as span:
        span.set(tool_name="search")
        span.error("-32602", "Invalid params")
    with (pytest.raises(RuntimeError),
          telemetry.request_span("prompts/get", traceparent=None, meta=None,
                                 attributes={A.GEN_AI_PROMPT_NAME: "review"}),
          telemetry.stage("mint")):
        raise RuntimeError(f"upstream said {SECRET}")
    spans = by_name(memory.get_finished_spans())
    called = spans["tools/call search"]
    assert called.status.status_code is StatusCode.ERROR and called.status.description == "Invalid params"
    assert called.attributes[A.ERROR_TYPE] == "-32602"
    assert called.attributes[A.RPC_RESPONSE_STATUS_CODE] == "-32602"
    prompt = spans["prompts/get review"]
    assert A.GEN_AI_OPERATION_NAME not in prompt.attributes
    for failed in (prompt, spans["mint"]):
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.attributes[A.ERROR_TYPE] == "RuntimeError"
        assert SECRET not in str(failed.status.description)
        assert not failed.events  # no exception event: its message may quote arguments


def test_unknown_attributes_and_argument_values_never_reach_a_span(
    traced: tuple[Telemetry, InMemorySpanExporter], receiver: OtlpReceiver
) -> None:
    telemetry, memory = traced
    with telemetry.request_span("tools/call", traceparent=None, meta=None,
                                attributes={A.GEN_AI_TOOL_NAME: "echo", "gen_ai.tool.call.arguments": SECRET}) as span:
        span.set(**{"authorization": f"Bearer {SECRET}", "token": SECRET, "mcp.resource.uri": SECRET})
        with telemetry.stage("mint", token=SECRET):
            pass
    for finished in memory.get_finished_spans():
        assert SECRET not in repr(dict(finished.attributes or {}))
    received = receiver.wait_for_spans(lambda got: {"mint", "tools/call echo"} <= {s.name for s in got})
    assert all(SECRET not in repr(s.attributes) for s in received)


async def test_concurrent_requests_keep_their_own_stages(traced: tuple[Telemetry, InMemorySpanExporter]) -> None:
    telemetry, memory = traced

    async def request(tool: str) -> None:
        with telemetry.request_span("tools/call", traceparent=None, meta=None, attributes={A.GEN_AI_TOOL_NAME: tool}):
            with telemetry.stage("approval_wait", approval_id=f"appr-{tool}"):
                await asyncio.sleep(0.01)
            with telemetry.stage("upstream_call"):
                await asyncio.sleep(0.005)

    await asyncio.gather(request("one"), request("two"))
    spans = memory.get_finished_spans()
    servers = {s.name: s for s in spans if s.kind is SpanKind.SERVER}
    for tool in ("one", "two"):
        server = servers[f"tools/call {tool}"]
        children = [s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
        assert sorted(s.name for s in children) == ["approval_wait", "upstream_call"]
        wait = next(s for s in children if s.name == "approval_wait")
        assert wait.attributes[A.APPROVAL_ID] == f"appr-{tool}"


def test_sampled_out_requests_record_nothing(otlp_env: dict[str, str]) -> None:
    telemetry = Telemetry.from_env({**otlp_env, "OTEL_TRACES_SAMPLER": "always_off"})
    memory = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(memory))
    try:
        one_request(telemetry)
        assert memory.get_finished_spans() == ()
    finally:
        telemetry.shutdown()


# No-op mode -------------------------------------------------------------------------------------------


def test_no_endpoint_means_no_tracing() -> None:
    telemetry = Telemetry.from_env({})
    try:
        assert not telemetry.tracing_enabled and telemetry.tracer_provider is None
        assert one_request(telemetry) is None
        with telemetry.request_span("tools/call", traceparent=None, meta=None, attributes={}) as span:
            assert span.trace_id is None and telemetry.current_trace_id() is None
            headers: dict[str, str] = {}
            telemetry.inject(headers)
            assert headers == {}
        # Not tracing, the gateway still forwards the agent's context unchanged (a W3C intermediary may).
        with telemetry.request_span("tools/call", traceparent=None, meta={"traceparent": AGENT_TRACEPARENT},
                                    attributes={}), telemetry.stage("upstream_call"):
            telemetry.inject(headers)
        assert headers == {"traceparent": AGENT_TRACEPARENT}
        with pytest.raises(RuntimeError):
            telemetry.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize("environ", [
    {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"},
    {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/v1/metrics"},
])
def test_tracing_stays_off_without_a_trace_exporter(environ: dict[str, str]) -> None:
    assert not read_config(environ, "narrowgate").tracing_enabled


def test_config_reads_the_standard_variables() -> None:
    config = read_config({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:9090/otlp/v1/metrics",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%3D%3D,x-tenant=t1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }, "narrowgate")
    assert config.traces is not None and config.metrics is not None
    assert config.traces.endpoint == "http://collector:4318/v1/traces"
    assert config.metrics.endpoint == "http://metrics:9090/otlp/v1/metrics"
    assert config.traces.headers == {"api-key": "abc==", "x-tenant": "t1"}
    assert "abc==" not in repr(config)
    assert config.traces.timeout_s == 2.5
    assert config.service_name == "narrowgate"
    grpc = read_config({"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "ng")
    assert grpc.trace_exporters == {"otlp", "console"}
    assert grpc.traces is not None and (grpc.traces.protocol, grpc.traces.endpoint) == ("grpc", "http://localhost:4317")
    assert grpc.traces.insecure is True


# Metrics ----------------------------------------------------------------------------------------------


def record_some(telemetry: Telemetry) -> None:
    telemetry.record_request("tools/call", "allow", "files", 0.012, None)
    telemetry.record_request("tools/call", "deny", None, 0.001, "-32003")
    telemetry.record_request("made/up-method", None, None, 0.0002, "-32601")
    telemetry.record_policy_evaluation(0.0004, "allow")
    telemetry.record_upstream_error("files", "timeout")
    telemetry.set_approvals_pending(3)
    telemetry.set_quarantined_tools(2)


def test_metrics_response_is_prometheus_text_with_labels() -> None:
    telemetry = Telemetry.from_env({})
    try:
        record_some(telemetry)
        body, content_type = telemetry.metrics_response()
        text = body.decode()
        assert content_type.startswith("text/plain")
        for line in (
            'narrowgate_requests_total{error_type="",mcp_method_name="tools/call",narrowgate_decision="allow",'
            'narrowgate_upstream="files"} 1.0',
            'narrowgate_requests_total{error_type="-32003",mcp_method_name="tools/call",narrowgate_decision="deny",'
            'narrowgate_upstream=""} 1.0',
            'narrowgate_request_duration_seconds_count{error_type="",mcp_method_name="tools/call",'
            'narrowgate_decision="allow",narrowgate_upstream="files"} 1.0',
            'narrowgate_policy_evaluation_duration_seconds_count{narrowgate_decision="allow"} 1.0',
            'narrowgate_upstream_errors_total{error_type="timeout",narrowgate_upstream="files"} 1.0',
            "narrowgate_approvals_pending 3.0",
            "narrowgate_tools_quarantined 2.0",
        ):
            assert line in text, line
        assert 'mcp_method_name="_OTHER"' in text and "made/up-method" not in text
        telemetry.set_approvals_pending(0)
        assert "narrowgate_approvals_pending 0.0" in telemetry.metrics_response()[0].decode()
    finally:
        telemetry.shutdown()


def test_metrics_are_exported_over_otlp(otlp_env: dict[str, str], receiver: OtlpReceiver) -> None:
    telemetry = Telemetry.from_env(otlp_env)
    try:
        record_some(telemetry)
        names = {A.METRIC_REQUESTS, A.METRIC_REQUEST_DURATION, A.METRIC_POLICY_EVALUATION_DURATION,
                 A.METRIC_UPSTREAM_ERRORS, A.METRIC_APPROVALS_PENDING, A.METRIC_TOOLS_QUARANTINED}
        metrics = receiver.wait_for_metrics(lambda got: names <= {m.name for m in got})
    finally:
        telemetry.shutdown()
    duration = next(m for m in metrics if m.name == A.METRIC_REQUEST_DURATION)
    assert duration.unit == "s" and duration.kind == "histogram"
    point = next(p for p in duration.points if p["attributes"].get(A.DECISION) == "allow")
    assert point["attributes"] == {A.MCP_METHOD_NAME: "tools/call", A.DECISION: "allow", A.UPSTREAM: "files"}
    assert point["count"] >= 1
    assert duration.resource["service.name"] == "narrowgate-test"


def test_the_exported_resource_names_the_replica(otlp_env: dict[str, str], receiver: OtlpReceiver) -> None:
    """service.instance.id is the replica id passed in, so workers and replicas are distinct series, also
    over one in OTEL_RESOURCE_ATTRIBUTES (which every worker of a replica shares)."""
    for env in (otlp_env, {**otlp_env, "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-a,team=x"}):
        receiver.clear()
        telemetry = Telemetry.from_env(env, instance_id="replica-7-w2")
        try:
            record_some(telemetry)
            metrics = receiver.wait_for_metrics(lambda got: A.METRIC_REQUESTS in {m.name for m in got})
        finally:
            telemetry.shutdown()
        requests = next(m for m in metrics if m.name == A.METRIC_REQUESTS)
        assert requests.resource["service.instance.id"] == "replica-7-w2"
        assert requests.resource["service.name"] == "narrowgate-test"


# No collector -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_dead_collector_neither_raises_nor_blocks(protocol: str) -> None:
    port = closed_port()
    telemetry = Telemetry.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "10",
        "OTEL_METRIC_EXPORT_INTERVAL": "50",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
    })
    for _ in range(200):
        assert one_request(telemetry) is not None
        telemetry.record_request("tools/call", "allow", "files", 0.01, None)
    time.sleep(0.2)  # let the exporters fail in the background meanwhile
    for _ in range(200):
        assert one_request(telemetry) is not None
    assert shuts_down(telemetry, timeout_s=1.0)
    telemetry.shutdown()  # idempotent


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_requests_go_on_while_an_export_hangs(protocol: str) -> None:
    """No wall clock: requests finish while an export provably waits on a collector that never answers (an
    export on the request path would wait for its 10-minute timeout, past the test's)."""
    collector = SilentPeer()
    try:
        telemetry = Telemetry.from_env({
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_BSP_SCHEDULE_DELAY": "10",
            "OTEL_METRIC_EXPORT_INTERVAL": "50",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "600000",
        })
        one_request(telemetry)
        deadline = time.monotonic() + 60
        while collector.requests_seen == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.requests_seen >= 1, "no export reached the collector"
        for _ in range(200):
            assert one_request(telemetry) is not None
            telemetry.record_request("tools/call", "allow", "files", 0.01, None)
        assert collector.still_open >= 1, "the hanging export gave up: nothing was shown"
    finally:
        collector.close()  # the hanging export now fails, so shutdown need not wait for its timeout
    assert shuts_down(telemetry, timeout_s=1.0)


def shuts_down(telemetry: Telemetry, timeout_s: float) -> bool:
    """Whether shutdown returns (a hang guard far above its own timeout, not a speed limit)."""
    done = threading.Event()
    threading.Thread(target=lambda: (telemetry.shutdown(timeout_s=timeout_s), done.set()), daemon=True).start()
    return done.wait(60)
