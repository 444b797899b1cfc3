"""Reading the standard `OTEL_*` environment variables into one plain settings object.

Parsed here (not left to the SDK's own `os.environ` reads) so `Telemetry.from_env` can be handed any mapping
and tests need not touch the process environment. Supported:

* `OTEL_SDK_DISABLED` - `true` turns tracing and OTLP export off (Prometheus `/metrics` stays).
* `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, percent-decoded).
* `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`; comma list), `OTEL_METRICS_EXPORTER` (`otlp`,
  `prometheus`, `console`, `none`).
* `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL; `/v1/traces` and `/v1/metrics` appended for HTTP),
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as is).
* `OTEL_EXPORTER_OTLP_PROTOCOL` and the per-signal `..._TRACES_PROTOCOL` / `..._METRICS_PROTOCOL`:
  `http/protobuf` (default) or `grpc`.
* `OTEL_EXPORTER_OTLP_HEADERS` (+ per signal), `OTEL_EXPORTER_OTLP_TIMEOUT` (+ per signal, milliseconds),
  `OTEL_EXPORTER_OTLP_INSECURE` (gRPC).
* `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`.
* `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`,
  `OTEL_BSP_EXPORT_TIMEOUT`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_METRIC_EXPORT_TIMEOUT`.

Tracing is on only when an OTLP endpoint is configured or `OTEL_TRACES_EXPORTER` names an exporter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

log = logging.getLogger("narrowgate.telemetry")

HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
TRACE_EXPORTERS = frozenset({"otlp", "console"})
METRIC_EXPORTERS = frozenset({"otlp", "console", "prometheus"})


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    protocol: str
    endpoint: str
    headers: dict[str, str] = field(repr=False)  # may hold an API key: never logged
    timeout_s: float
    insecure: bool | None


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    service_name: str
    resource_attributes: dict[str, str]
    trace_exporters: frozenset[str]
    metric_exporters: frozenset[str]
    traces: OtlpTarget | None
    metrics: OtlpTarget | None
    sampler: str
    sampler_arg: str | None
    bsp_schedule_delay_ms: float
    bsp_max_queue_size: int
    bsp_max_export_batch_size: int
    bsp_export_timeout_ms: float
    metric_export_interval_ms: float
    metric_export_timeout_ms: float

    @property
    def tracing_enabled(self) -> bool:
        return bool(self.trace_exporters)


def read_config(env: Mapping[str, str], default_service_name: str) -> TelemetryConfig:
    disabled = _get(env, "OTEL_SDK_DISABLED").lower() == "true"
    resource = parse_pairs(_get(env, "OTEL_RESOURCE_ATTRIBUTES"))
    service_name = _get(env, "OTEL_SERVICE_NAME") or resource.get("service.name") or default_service_name

    base = _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    traces_endpoint = _get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    metrics_endpoint = _get(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")

    trace_exporters = _exporters(env, "OTEL_TRACES_EXPORTER", TRACE_EXPORTERS,
                                 default={"otlp"} if (base or traces_endpoint) else set())
    metric_exporters = _exporters(env, "OTEL_METRICS_EXPORTER", METRIC_EXPORTERS,
                                  default={"otlp"} if (base or metrics_endpoint) else set())
    if disabled:
        trace_exporters = frozenset()
        metric_exporters = frozenset()

    traces = _target(env, "TRACES", "v1/traces", base, traces_endpoint) if "otlp" in trace_exporters else None
    metrics = _target(env, "METRICS", "v1/metrics", base, metrics_endpoint) if "otlp" in metric_exporters else None
    return TelemetryConfig(
        service_name=service_name,
        resource_attributes=resource,
        trace_exporters=trace_exporters,
        metric_exporters=metric_exporters,
        traces=traces,
        metrics=metrics,
        sampler=_get(env, "OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on",
        sampler_arg=_get(env, "OTEL_TRACES_SAMPLER_ARG") or None,
        bsp_schedule_delay_ms=_number(env, "OTEL_BSP_SCHEDULE_DELAY", 5000),
        bsp_max_queue_size=int(_number(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)),
        bsp_max_export_batch_size=int(_number(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)),
        bsp_export_timeout_ms=_number(env, "OTEL_BSP_EXPORT_TIMEOUT", 30000),
        metric_export_interval_ms=_number(env, "OTEL_METRIC_EXPORT_INTERVAL", 60000),
        metric_export_timeout_ms=_number(env, "OTEL_METRIC_EXPORT_TIMEOUT", 30000),
    )


def parse_pairs(raw: str) -> dict[str, str]:
    """`k=v,k2=v2` (W3C Baggage-like, as OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS use)."""
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def _target(env: Mapping[str, str], signal: str, path: str, base: str, specific: str) -> OtlpTarget:
    protocol = (_get(env, f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or _get(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
                or HTTP_PROTOBUF).lower()
    if protocol not in (HTTP_PROTOBUF, GRPC):
        log.warning("OTLP protocol %r is not supported here; using %s", protocol, HTTP_PROTOBUF)
        protocol = HTTP_PROTOBUF
    if specific:
        endpoint = specific
    elif protocol == GRPC:
        endpoint = base or DEFAULT_GRPC_ENDPOINT
    else:
        endpoint = f"{(base or DEFAULT_HTTP_ENDPOINT).rstrip('/')}/{path}"
    headers = parse_pairs(_get(env, "OTEL_EXPORTER_OTLP_HEADERS"))
    headers.update(parse_pairs(_get(env, f"OTEL_EXPORTER_OTLP_{signal}_HEADERS")))
    timeout_ms = _number(env, f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT", _number(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10000))
    insecure_raw = _get(env, f"OTEL_EXPORTER_OTLP_{signal}_INSECURE") or _get(env, "OTEL_EXPORTER_OTLP_INSECURE")
    insecure = insecure_raw.lower() == "true" if insecure_raw else None
    if insecure is None and protocol == GRPC:
        insecure = endpoint.startswith("http://") or "://" not in endpoint
    return OtlpTarget(protocol, endpoint, headers, timeout_ms / 1000.0, insecure)


def _exporters(env: Mapping[str, str], name: str, known: frozenset[str], default: set[str]) -> frozenset[str]:
    raw = _get(env, name)
    if not raw:
        return frozenset(default)
    chosen = {part.strip().lower() for part in raw.split(",") if part.strip()}
    if "none" in chosen:
        return frozenset()
    unknown = chosen - known
    if unknown:
        log.warning("%s names unsupported exporters %s; ignoring them", name, sorted(unknown))
    return frozenset(chosen & known)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, raw, default)
        return default
    return value if value >= 0 else default


def _get(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()
