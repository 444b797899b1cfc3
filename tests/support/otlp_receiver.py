"""A real OTLP/HTTP receiver for tests: aiohttp on a free 127.0.0.1 port, in its own thread.

Accepts `POST /v1/traces` and `POST /v1/metrics` (application/x-protobuf, optionally gzip/deflate), decodes
them with the opentelemetry-proto collector messages, and keeps what arrived. Usage:

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        ...
        spans = receiver.wait_for_spans(lambda spans: any(s.name == "tools/call echo" for s in spans))
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PROTOBUF = "application/x-protobuf"
T = TypeVar("T")


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_span_id: str | None  # 16 hex, None for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind value (2 = SERVER, 3 = CLIENT, 1 = INTERNAL)
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    links: list[tuple[str, str]]  # (trace id hex, span id hex)
    resource: dict[str, Any] = field(repr=False)
    scope: str = ""


@dataclass(frozen=True)
class ReceivedMetric:
    name: str
    unit: str
    kind: str  # "sum", "gauge", "histogram"...
    points: list[dict[str, Any]]  # each: {"attributes": {...}, "value": ...} or histogram count/sum
    resource: dict[str, Any] = field(repr=False)


class OtlpReceiver:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[ReceivedMetric] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every export received
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        """The base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporters append /v1/traces, /v1/metrics)."""
        return f"http://127.0.0.1:{self.port}"

    # Lifetime -----------------------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="otlp-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("OTLP receiver did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics_handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = int(server.sockets[0].getsockname()[1])

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # Handlers -----------------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        if request.content_type != PROTOBUF:
            raise web.HTTPUnsupportedMediaType(text=f"expected {PROTOBUF}, got {request.content_type}")
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        with self._lock:
            self.requests.append((request.path, dict(request.headers)))
        return body

    async def _traces(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await self._body(request))
        received: list[ReceivedSpan] = []
        for resource_spans in message.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        kind=int(span.kind),
                        attributes=_attributes(span.attributes),
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        resource=resource,
                        scope=scope_spans.scope.name,
                    ))
        with self._lock:
            self._spans.extend(received)
            self._lock.notify_all()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await self._body(request))
        received: list[ReceivedMetric] = []
        for resource_metrics in message.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data") or ""
                    received.append(ReceivedMetric(metric.name, metric.unit, kind, _points(metric, kind), resource))
        with self._lock:
            self._metrics.extend(received)
            self._lock.notify_all()
        return web.Response(body=ExportMetricsServiceResponse().SerializeToString(), content_type=PROTOBUF)

    # Reading ------------------------------------------------------------------------------------------

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    @property
    def metrics(self) -> list[ReceivedMetric]:
        with self._lock:
            return list(self._metrics)

    def wait_for_spans(self, until: Callable[[list[ReceivedSpan]], bool] | int = 1,
                       timeout_s: float = 10.0) -> list[ReceivedSpan]:
        """All spans received so far, once `until(spans)` holds (or at least `until` spans arrived)."""
        check = until if callable(until) else (lambda spans: len(spans) >= until)
        return self._wait(lambda: self._spans, check, timeout_s, "spans")

    def wait_for_metrics(self, until: Callable[[list[ReceivedMetric]], bool],
                         timeout_s: float = 10.0) -> list[ReceivedMetric]:
        return self._wait(lambda: self._metrics, until, timeout_s, "metrics")

    def _wait(self, items: Callable[[], list[T]], until: Callable[[list[T]], bool], timeout_s: float,
              what: str) -> list[T]:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                current = list(items())
                if until(current):
                    return current
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"OTLP receiver: condition on {what} not met within {timeout_s}s; "
                                       f"got {len(current)}: {[getattr(i, 'name', i) for i in current]}")
                self._lock.wait(remaining)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._metrics.clear()
            self.requests.clear()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        result[pair.key] = _value(pair.value)
    return result


def _points(metric: Any, kind: str) -> list[dict[str, Any]]:
    if not kind:
        return []
    data = getattr(metric, kind)
    points: list[dict[str, Any]] = []
    for point in data.data_points:
        entry: dict[str, Any] = {"attributes": _attributes(point.attributes)}
        if kind in ("sum", "gauge"):
            entry["value"] = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
        elif kind == "histogram":
            entry.update(count=point.count, sum=point.sum, bucket_counts=list(point.bucket_counts),
                         explicit_bounds=list(point.explicit_bounds))
        points.append(entry)
    return points
