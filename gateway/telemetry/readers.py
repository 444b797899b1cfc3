"""The gateway's metric readers: the SDK's, plus the lean histograms' points in every batch they receive.

A reader receives each batch the SDK collected in `_receive_metrics` (the method every SDK reader
implements); these add the points of `gateway.telemetry.histograms` there, so Prometheus scrapes and OTLP
exports carry them as if the SDK had aggregated them. The SDK hands a reader a batch only when it has
something to report: the gateway's observable gauges (pending approvals, quarantined tools) report on
every collection, so every collection reaches `_receive_metrics`.
"""

from __future__ import annotations

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData, PeriodicExportingMetricReader
from prometheus_client import CollectorRegistry

from gateway.telemetry.histograms import LeanHistograms


class PrometheusReader(PrometheusMetricReader):
    """`GET /metrics`: the SDK's Prometheus reader (cumulative), registered in `registry`."""

    def __init__(self, histograms: LeanHistograms, registry: CollectorRegistry) -> None:
        super().__init__(scope_info_enabled=False, registry=registry)
        self._lean = histograms.add_reader(self)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> None:
        super()._receive_metrics(self._lean.merged(metrics_data), timeout_millis, **kwargs)


class PeriodicReader(PeriodicExportingMetricReader):
    """OTLP and console export: the SDK's periodic reader, with the exporter's temporality preference."""

    def __init__(self, histograms: LeanHistograms, exporter: MetricExporter, export_interval_millis: float,
                 export_timeout_millis: float | None = None) -> None:
        super().__init__(exporter, export_interval_millis=export_interval_millis,
                         export_timeout_millis=export_timeout_millis)
        self._lean = histograms.add_reader(self)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> None:
        super()._receive_metrics(self._lean.merged(metrics_data), timeout_millis, **kwargs)
