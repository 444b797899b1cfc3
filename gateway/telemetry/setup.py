"""Tracing and metrics for the gateway: one `Telemetry` per process, built from the `OTEL_*` environment.

Tracing: one SERVER span per MCP request (`request_span`), continuing the agent's W3C trace from the
`traceparent` HTTP header or, when the header is absent, from `params._meta.traceparent`; child spans for the
stages that do work (`stage`); the trace carried on to the upstream (`inject`). When tracing is off (no OTLP
endpoint and no `OTEL_TRACES_EXPORTER`) all of that is a few attribute lookups; the agent's `traceparent`
is still passed through to the upstream unchanged, as a W3C intermediary that does not trace may.

Metrics: always collected in-process for `GET /metrics` (Prometheus text), and exported over OTLP too when
an endpoint is configured. Exporters run on background threads with bounded queues: a dead or absent
collector costs log lines, never a blocked or failed request.

The providers here are private to this object (the global OpenTelemetry providers are left alone), so
several gateways or tests in one process do not share state.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, ExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics import Histogram as SdkHistogramInstrument
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from gateway import __version__
from gateway.telemetry import attributes as A
from gateway.telemetry.config import GRPC, OtlpTarget, TelemetryConfig, read_config
from gateway.telemetry.histograms import (
    OVERFLOW_ATTRIBUTES,
    SERIES_LIMIT,
    BoundHistogram,
    LeanHistogram,
    LeanHistograms,
    SdkHistogram,
    histograms_supported,
)

log = logging.getLogger("narrowgate.telemetry")

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)
POLICY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
MAX_STRING = 256
# Distinct attribute sets kept per metric; past it, the SDK's overflow set (as its own limit does).
MAX_SERIES = SERIES_LIMIT
OVERFLOW_KEY = ("otel.metric.overflow",)
CLIENT_STAGES = frozenset({"upstream_call"})

# The agent's own trace headers for the current request, kept only when tracing is off (pass-through).
_passthrough: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "narrowgate_traceparent_passthrough", default=None)
_warned_keys: set[str] = set()


class RequestSpan:
    """The request's span as the call path sees it: attributes, an error, the trace id."""

    __slots__ = ("_named", "_span", "trace_id")

    def __init__(self, span: trace.Span | None, trace_id: str | None, named: bool) -> None:
        self._span = span  # None when not recording: every method is then a no-op
        self._named = named
        self.trace_id = trace_id

    def set(self, **attributes: object) -> None:
        """Add attributes: dotted names from `gateway.telemetry.attributes` (pass them as `**{AGENT_ID: ...}`)
        or their keyword aliases (`agent_id=`, `decision=`, `tool_name=`...). None values are skipped; keys
        outside `SPAN_ATTRIBUTES` are dropped."""
        span = self._span
        if span is None:
            return
        clean = _clean(attributes)
        if not clean:
            return
        span.set_attributes(clean)
        if not self._named:
            target = clean.get(A.GEN_AI_TOOL_NAME) or clean.get(A.GEN_AI_PROMPT_NAME)
            if isinstance(target, str):
                method = getattr(span, "name", "")
                span.update_name(f"{method} {target}")
                self._named = True

    def error(self, error_type: str, message: str) -> None:
        """Mark the request failed: `error.type` (a JSON-RPC code as a string, `tool_error`, `timeout`...) and
        ERROR status described by `message`, which must not quote argument values."""
        span = self._span
        if span is None:
            return
        span.set_attribute(A.ERROR_TYPE, str(error_type)[:MAX_STRING])
        if error_type.lstrip("-").isdigit():
            span.set_attribute(A.RPC_RESPONSE_STATUS_CODE, error_type)
        span.set_status(Status(StatusCode.ERROR, str(message)[:MAX_STRING]))


NOOP_SPAN = RequestSpan(None, None, True)


class _NoopRequestScope:
    __slots__ = ()

    def __enter__(self) -> RequestSpan:
        return NOOP_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NOOP_REQUEST = _NoopRequestScope()
_NOOP_STAGE: AbstractContextManager[None] = contextlib.nullcontext()


class _PassThroughScope:
    """Tracing off but the agent sent a traceparent: remember it so `inject` forwards it unchanged."""

    __slots__ = ("_carrier", "_token")

    def __init__(self, carrier: dict[str, str]) -> None:
        self._carrier = carrier
        self._token: contextvars.Token[dict[str, str] | None] | None = None

    def __enter__(self) -> RequestSpan:
        self._token = _passthrough.set(self._carrier)
        return NOOP_SPAN

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _passthrough.reset(self._token)


class _SpanScope:
    """Start a span, make it current, and end it with the error recorded (if any) on the way out."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: contextvars.Token[otel_context.Context] | None = None

    def enter(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def exit(self, exc: BaseException | None) -> None:
        span = self._span
        try:
            if exc is not None and span.is_recording():
                error_type = _error_type(exc)
                attrs = getattr(span, "attributes", None) or {}
                if A.ERROR_TYPE not in attrs:
                    span.set_attribute(A.ERROR_TYPE, error_type)
                    # The exception's message may quote arguments: only its class goes on the span.
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
            span.end()


class _RequestScope(_SpanScope):
    __slots__ = ("_request",)

    def __init__(self, span: trace.Span, named: bool) -> None:
        super().__init__(span)
        ctx = span.get_span_context()
        trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else None
        self._request = RequestSpan(span if span.is_recording() else None, trace_id, named)

    def __enter__(self) -> RequestSpan:
        self.enter()
        return self._request

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.exit(exc)


class _StageScope(_SpanScope):
    __slots__ = ()

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.exit(exc)


class _RequestSeries:
    """One request series: its attribute set, its request count (the request counter's) and its bound
    duration histogram."""

    __slots__ = ("attributes", "count", "duration")

    def __init__(self, attributes: Mapping[str, AttributeValue], duration: BoundHistogram) -> None:
        self.attributes = attributes
        self.count = 0
        self.duration = duration


class Telemetry:
    """Tracer, meters and exporters for one gateway process."""

    def __init__(self, config: TelemetryConfig, instance_id: str | None = None) -> None:
        """`instance_id`: this process's replica id, exported as `service.instance.id` (over any the
        environment sets: workers share the environment), so workers and replicas are told apart."""
        self.config = config
        self.tracing_enabled = config.tracing_enabled
        self.resource = _resource(config, instance_id)
        self._propagator = TraceContextTextMapPropagator()
        self._lock = threading.Lock()
        self._closed = False
        self._batch_processors: list[BatchSpanProcessor] = []
        self.tracer_provider: TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()
        if self.tracing_enabled:
            self._build_tracing()
        self._build_metrics()
        atexit.register(self.shutdown)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, service_name: str = "narrowgate",
                 instance_id: str | None = None) -> Telemetry:
        return cls(read_config(os.environ if environ is None else environ, service_name), instance_id)

    # Construction ------------------------------------------------------------------------------------

    def _build_tracing(self) -> None:
        config = self.config
        provider = TracerProvider(resource=self.resource, sampler=_sampler(config.sampler, config.sampler_arg),
                                  shutdown_on_exit=False)
        exporters: list[SpanExporter] = []
        if config.traces is not None:
            exporters.append(_otlp_span_exporter(config.traces))
        if "console" in config.trace_exporters:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter(out=sys.stderr))
        for exporter in exporters:
            processor = BatchSpanProcessor(
                exporter,
                max_queue_size=config.bsp_max_queue_size,
                schedule_delay_millis=config.bsp_schedule_delay_ms,
                max_export_batch_size=min(config.bsp_max_export_batch_size, config.bsp_max_queue_size),
                export_timeout_millis=config.bsp_export_timeout_ms,
            )
            self._batch_processors.append(processor)
            provider.add_span_processor(processor)
        self.tracer_provider = provider
        self._tracer = provider.get_tracer("narrowgate", __version__)

    def _build_metrics(self) -> None:
        from prometheus_client import CollectorRegistry

        from gateway.telemetry.readers import PeriodicReader, PrometheusReader

        config = self.config
        self.registry = CollectorRegistry(auto_describe=True)
        lean = LeanHistograms()
        readers: list[MetricReader] = [PrometheusReader(lean, self.registry)]
        if config.metrics is not None:
            readers.append(PeriodicReader(
                lean, _otlp_metric_exporter(config.metrics),
                export_interval_millis=config.metric_export_interval_ms,
                export_timeout_millis=config.metric_export_timeout_ms,
            ))
        if "console" in config.metric_exporters:
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            readers.append(PeriodicReader(
                lean, ConsoleMetricExporter(out=sys.stderr), export_interval_millis=config.metric_export_interval_ms))
        # Exemplars link a measurement to the current span: with tracing off there is none, so the
        # SDK's default filter would only spend time finding that out on every measurement.
        exemplars: ExemplarFilter | None = None
        if not self.tracing_enabled and not os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER"):
            exemplars = AlwaysOffExemplarFilter()
        self.meter_provider = MeterProvider(resource=self.resource, metric_readers=readers, shutdown_on_exit=False,
                                            exemplar_filter=exemplars)
        meter = self.meter_provider.get_meter("narrowgate", __version__)
        # The request counter is counted here and read by the SDK at collection (an observable counter
        # exports the same monotonic sum): one increment on the request's series per request instead of one
        # more SDK measurement, whose attribute cleaning and hashing cost more than the request's histogram.
        self._request_series: dict[tuple[str, ...], _RequestSeries] = {}
        self._decision_series: dict[str, BoundHistogram] = {}
        meter.create_observable_counter(
            A.METRIC_REQUESTS, callbacks=[self._observe_requests], unit="{request}",
            description="MCP requests served by the gateway")
        # The histograms are aggregated by `gateway.telemetry.histograms` (a series bound once, a bisect and a
        # few additions per record) and added to what the readers export, unless only the SDK exports them
        # right (exemplars while tracing, a reader aggregating otherwise): then the SDK records them.
        lean_ok = histograms_supported(readers, exemplars, REQUEST_BUCKETS) and histograms_supported(
            readers, exemplars, POLICY_BUCKETS)
        self._request_duration = self._histogram(
            meter, lean if lean_ok else None, A.METRIC_REQUEST_DURATION, "Time to answer an MCP request",
            REQUEST_BUCKETS)
        self._policy_duration = self._histogram(
            meter, lean if lean_ok else None, A.METRIC_POLICY_EVALUATION_DURATION,
            "Time to evaluate policy for one decision", POLICY_BUCKETS)
        self._upstream_errors = meter.create_counter(
            A.METRIC_UPSTREAM_ERRORS, unit="{error}", description="Failed calls to upstream MCP servers")
        self._detections = meter.create_counter(
            A.METRIC_DETECTIONS, unit="{detection}", description="Chain-monitoring detections")
        self._approvals_pending = 0
        self._tools_quarantined = 0
        meter.create_observable_gauge(
            A.METRIC_APPROVALS_PENDING, callbacks=[self._observe_approvals], unit="{approval}",
            description="Approval requests waiting for a decision")
        meter.create_observable_gauge(
            A.METRIC_TOOLS_QUARANTINED, callbacks=[self._observe_quarantined], unit="{tool}",
            description="Tools currently quarantined")
        self._unused_shares: Mapping[str, float] = {}
        meter.create_observable_gauge(
            A.METRIC_GRANTED_TOOLS_UNUSED, callbacks=[self._observe_unused_shares], unit="1",
            description="Share of granted tools not used in the right-sizing window, per agent and fleet-wide (*)")
        self._versions: Callable[[], Mapping[str, str]] | None = None
        meter.create_observable_gauge(
            A.METRIC_VERSIONS, callbacks=[self._observe_versions],
            description="1, labelled with this replica and the policy and catalog versions in force")

    @staticmethod
    def _histogram(meter: Meter, lean: LeanHistograms | None, name: str, description: str,
                   bounds: tuple[float, ...]) -> LeanHistogram | SdkHistogram:
        """A duration histogram in seconds; the SDK instrument is made either way (the lean one takes its
        name, unit, description and scope from it) but is recorded into only on the SDK path."""
        instrument = meter.create_histogram(name, unit="s", description=description,
                                            explicit_bucket_boundaries_advisory=bounds)
        if lean is not None and isinstance(instrument, SdkHistogramInstrument):
            return lean.histogram(instrument, bounds)
        return SdkHistogram(instrument)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Extra span processor (tests use the SDK's in-memory exporter through this)."""
        if self.tracer_provider is None:
            raise RuntimeError("tracing is off: no OTLP endpoint and no OTEL_TRACES_EXPORTER")
        self.tracer_provider.add_span_processor(processor)

    # Tracing -----------------------------------------------------------------------------------------

    def request_span(
        self, method: str, *, traceparent: str | None, meta: Mapping[str, Any] | None,
        attributes: Mapping[str, object], tracestate: str | None = None,
    ) -> AbstractContextManager[RequestSpan]:
        """One SERVER span for one MCP request, named `{method} {tool or prompt}` per the MCP conventions.

        The parent is the agent's W3C context from the `traceparent` (+ `tracestate`) HTTP header or, when the
        header is absent, from `meta` (the request's `params._meta`); when both are present and differ, the
        `_meta` context is added as a link. An exception leaving the block marks the span failed with its
        class only (`error.type`); use `RequestSpan.error` for JSON-RPC errors returned as replies.
        """
        carrier = _carrier(traceparent, tracestate, meta)
        if not self.tracing_enabled:
            return _PassThroughScope(carrier) if carrier is not None else _NOOP_REQUEST
        parent = self._propagator.extract(carrier) if carrier is not None else otel_context.Context()
        links: list[Link] | None = None
        if traceparent and meta is not None:
            meta_carrier = _carrier(None, None, meta)
            if meta_carrier is not None and meta_carrier.get("traceparent") != traceparent:
                linked = trace.get_current_span(self._propagator.extract(meta_carrier)).get_span_context()
                if linked.is_valid:
                    links = [Link(linked)]
        clean = _clean(attributes)
        method_name = clean[A.MCP_METHOD_NAME] = method[:MAX_STRING]
        if method == "tools/call":
            clean[A.GEN_AI_OPERATION_NAME] = A.EXECUTE_TOOL
        target = clean.get(A.GEN_AI_TOOL_NAME) or clean.get(A.GEN_AI_PROMPT_NAME)
        name = f"{method_name} {target}" if isinstance(target, str) else method_name
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=clean, links=links)
        return _RequestScope(span, named=target is not None or method not in _TARGETED)

    def stage(self, name: str, **attributes: object) -> AbstractContextManager[None]:
        """A child span of the current request for one stage (`authenticate`, `policy`, `approval_wait`, `mint`,
        `upstream_call`); CLIENT kind for `upstream_call`, INTERNAL otherwise. A no-op when the current span is
        not recording (tracing off, sampled out, or no request span)."""
        if not self.tracing_enabled:
            return _NOOP_STAGE
        if not trace.get_current_span().is_recording():
            return _NOOP_STAGE
        kind = SpanKind.CLIENT if name in CLIENT_STAGES else SpanKind.INTERNAL
        span = self._tracer.start_span(name, kind=kind, attributes=_clean(attributes) if attributes else None)
        return _StageScope(span)

    def annotate_stage(self, **attributes: object) -> None:
        """Add allow-listed attributes to the current stage span (e.g. an approval wait's outcome)."""
        if not self.tracing_enabled:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(_clean(attributes))

    def inject(self, headers: dict[str, str]) -> None:
        """Write W3C `traceparent`/`tracestate` for the current span into `headers` (any mutable str mapping,
        an upstream request's `params._meta` too). With tracing off, the agent's own values pass through."""
        if not self.tracing_enabled:
            carrier = _passthrough.get()
            if carrier is not None:
                headers.update(carrier)
            return
        self._propagator.inject(headers)

    def current_trace_id(self) -> str | None:
        """The current span's trace id as 32 hex digits, or None (always None with tracing off)."""
        if not self.tracing_enabled:
            return None
        ctx = trace.get_current_span().get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None

    # Metrics -----------------------------------------------------------------------------------------

    def record_request(self, method: str, decision: str | None, upstream: str | None, seconds: float,
                       error_type: str | None) -> None:
        key: tuple[str, ...] = (method if method in A.KNOWN_METHODS else A.OTHER, decision or "", upstream or "",
                                "" if error_type is None else error_type[:MAX_STRING])
        series = self._request_series.get(key)
        if series is None:
            key, series = self._new_request_series(key, decision, upstream, error_type)
        series.count += 1
        series.duration.record(seconds)

    def _new_request_series(self, key: tuple[str, ...], decision: str | None, upstream: str | None,
                            error_type: str | None) -> tuple[tuple[str, ...], _RequestSeries]:
        """The attribute set of a new request series, kept (with its duration histogram bound to it) for the
        next request of the same series; past MAX_SERIES series, the one overflow series (so upstream-chosen
        error codes stay bounded)."""
        if len(self._request_series) >= MAX_SERIES:
            overflow = self._request_series.get(OVERFLOW_KEY)
            if overflow is None:
                overflow = self._request_series[OVERFLOW_KEY] = _RequestSeries(
                    OVERFLOW_ATTRIBUTES, self._request_duration.bind(OVERFLOW_ATTRIBUTES))
            return OVERFLOW_KEY, overflow
        attrs: dict[str, AttributeValue] = {A.MCP_METHOD_NAME: key[0]}
        if decision is not None:
            attrs[A.DECISION] = decision
        if upstream is not None:
            attrs[A.UPSTREAM] = upstream
        if error_type is not None:
            attrs[A.ERROR_TYPE] = key[3]
        series = self._request_series[key] = _RequestSeries(attrs, self._request_duration.bind(attrs))
        return key, series

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        # list(): one atomic copy, so a request on the event loop may add a series meanwhile.
        return [Observation(series.count, series.attributes) for series in list(self._request_series.values())]

    def record_policy_evaluation(self, seconds: float, decision: str) -> None:
        series = self._decision_series.get(decision)
        if series is None:  # a handful of outcomes (allow, deny, step_up): one series each, bound once
            # Past the histogram's series limit, `bind` gives the overflow series (ours or the SDK's).
            series = self._policy_duration.bind({A.DECISION: decision})
            if len(self._decision_series) < MAX_SERIES:
                self._decision_series[decision] = series
        series.record(seconds)

    def record_upstream_error(self, upstream: str, error_type: str) -> None:
        self._upstream_errors.add(1, {A.UPSTREAM: upstream, A.ERROR_TYPE: error_type[:MAX_STRING]})

    def record_detection(self, detector: str, severity: str) -> None:
        self._detections.add(1, {A.DETECTOR: detector[:MAX_STRING], A.SEVERITY: severity[:MAX_STRING]})

    def set_approvals_pending(self, n: int) -> None:
        self._approvals_pending = n

    def set_quarantined_tools(self, n: int) -> None:
        self._tools_quarantined = n

    def set_unused_shares(self, shares: Mapping[str, float]) -> None:
        """Per agent id (and A.FLEET) the share of granted tools unused; replaces the last set whole."""
        self._unused_shares = dict(shares)

    def report_versions(self, versions: Callable[[], Mapping[str, str]]) -> None:
        """`versions()`: the attributes of `narrowgate.versions`, read at each collection."""
        self._versions = versions

    def _observe_versions(self, options: CallbackOptions) -> Iterable[Observation]:
        return [] if self._versions is None else [Observation(1, dict(self._versions()))]

    def _observe_unused_shares(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(share, {A.AGENT_ID: agent}) for agent, share in self._unused_shares.items()]

    def _observe_approvals(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._approvals_pending)]

    def _observe_quarantined(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._tools_quarantined)]

    def metrics_response(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type, for `GET /metrics`."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # Lifetime ----------------------------------------------------------------------------------------

    def shutdown(self, timeout_s: float = 3.0) -> None:
        """Flush what can be flushed within `timeout_s` (per signal) and stop the exporters. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.shutdown)
        for processor in self._batch_processors:
            # The final flush gets `timeout_s`; past that the exporter is shut down, which cuts its retries short.
            _bounded(processor.shutdown, timeout_s, processor.span_exporter.shutdown)
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        self.meter_provider.shutdown(timeout_millis=int(timeout_s * 1000))


_TARGETED = frozenset({"tools/call", "prompts/get"})


def _bounded(work: Callable[[], object], timeout_s: float, give_up: Callable[[], object]) -> None:
    """Run `work` on a helper thread for at most `timeout_s`, then `give_up` and wait as long again."""
    thread = threading.Thread(target=work, name="narrowgate-telemetry-shutdown", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning("telemetry: the collector did not take the last spans within %.1fs; dropping them", timeout_s)
        give_up()
        thread.join(timeout_s)


def _carrier(traceparent: str | None, tracestate: str | None, meta: Mapping[str, Any] | None) -> dict[str, str] | None:
    if traceparent:
        carrier = {"traceparent": traceparent}
        if tracestate:
            carrier["tracestate"] = tracestate
        return carrier
    if meta:
        value = meta.get("traceparent")
        if isinstance(value, str) and value:
            carrier = {"traceparent": value}
            state = meta.get("tracestate")
            if isinstance(state, str) and state:
                carrier["tracestate"] = state
            return carrier
    return None


def _clean(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    """Attributes as a span may carry them: None skipped, unknown names dropped, strings capped, anything
    else a number, a tuple of strings or its string."""
    clean: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        name = A.ALIASES.get(key, key)
        if name not in A.SPAN_ATTRIBUTES:
            if name not in _warned_keys:
                _warned_keys.add(name)
                log.warning("span attribute %r is not in gateway.telemetry.attributes; dropped", name)
            continue
        if isinstance(value, str):
            clean[name] = value[:MAX_STRING]
        elif isinstance(value, bool | int | float):
            clean[name] = value
        elif isinstance(value, Sequence | set | frozenset):
            clean[name] = tuple(str(item)[:MAX_STRING] for item in value)
        else:
            clean[name] = str(value)[:MAX_STRING]
    return clean


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "timeout"
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return str(code)
    return type(exc).__qualname__


def _resource(config: TelemetryConfig, instance_id: str | None) -> Resource:
    attrs: dict[str, AttributeValue] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "service.version": __version__,
    }
    attrs.update(config.resource_attributes)
    if instance_id:
        attrs["service.instance.id"] = instance_id
    attrs["service.name"] = config.service_name
    return Resource(attrs)


def _sampler(name: str, arg: str | None) -> Sampler:
    def ratio() -> float:
        try:
            return min(max(float(arg or "1.0"), 0.0), 1.0)
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number; using 1.0", arg)
            return 1.0

    match name:
        case "always_on":
            return ALWAYS_ON
        case "always_off":
            return ALWAYS_OFF
        case "traceidratio":
            return TraceIdRatioBased(ratio())
        case "parentbased_always_off":
            return ParentBased(ALWAYS_OFF)
        case "parentbased_traceidratio":
            return ParentBased(TraceIdRatioBased(ratio()))
        case "parentbased_always_on":
            return ParentBased(ALWAYS_ON)
    log.warning("OTEL_TRACES_SAMPLER=%r is not supported; using parentbased_always_on", name)
    return ParentBased(ALWAYS_ON)


def _otlp_span_exporter(target: OtlpTarget) -> SpanExporter:
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=target.endpoint, insecure=target.insecure, headers=target.headers or None,
                                timeout=target.timeout_s)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=target.endpoint, headers=target.headers or None, timeout=target.timeout_s)


def _otlp_metric_exporter(target: OtlpTarget) -> MetricExporter:
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter(endpoint=target.endpoint, insecure=target.insecure,
                                  headers=target.headers or None, timeout=target.timeout_s)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=target.endpoint, headers=target.headers or None, timeout=target.timeout_s)
