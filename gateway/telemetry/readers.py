"""The gateway's metric readers: the SDK's, plus the lean histograms' points in every batch they receive.

A reader receives each batch the SDK collected in `_receive_metrics` (the method every SDK reader
implements); these add the points of `gateway.telemetry.histograms` there, so Prometheus scrapes and OTLP
exports carry them as if the SDK had aggregated them. The SDK hands a reader a batch only when it has
something to report: the gateway's observable gauges (pending approvals, quarantined tools) report on
every collection, so every collection reaches `_receive_metrics`.
"""

from __future__ import annotations

import logging
import traceback

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from prometheus_client import CollectorRegistry

from gateway.telemetry.histograms import LeanHistograms

log = logging.getLogger("narrowgate.telemetry")


class LeanMerging(MetricReader):
    """What both readers add to the SDK's: the lean histograms' points merged into each batch. A failure
    there costs those points (said once per reader), never the batch, the export thread or a scrape."""

    _lean_histograms: LeanHistograms

    def _join(self, histograms: LeanHistograms) -> None:
        self._lean_histograms = histograms
        self._lean_slot = histograms.add_reader(self)
        self._merge_failed = False

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> None:
        # The SDK reader after this class in the MRO (Prometheus, periodic) implements it.
        super()._receive_metrics(self._merged(metrics_data), timeout_millis, **kwargs)  # type: ignore[safe-super]

    def _merged(self, metrics_data: MetricsData) -> MetricsData:
        try:
            return self._lean_histograms.merged(self._lean_slot, metrics_data)
        except Exception as exc:  # the SDK's periodic thread stops for good on anything but a timeout
            if not self._merge_failed:
                self._merge_failed = True
                # The class and place only: an exception's message may quote attribute values.
                last = traceback.extract_tb(exc.__traceback__)[-1:]
                place = f"{last[0].filename}:{last[0].lineno}" if last else "?"
                log.error("telemetry: the duration histograms were left out of a %s batch (%s at %s); "
                          "exporting the rest", type(self).__name__, type(exc).__name__, place)
            return metrics_data


class PrometheusReader(LeanMerging, PrometheusMetricReader):
    """`GET /metrics`: the SDK's Prometheus reader (cumulative), registered in `registry`."""

    def __init__(self, histograms: LeanHistograms, registry: CollectorRegistry) -> None:
        super().__init__(scope_info_enabled=False, registry=registry)
        self._join(histograms)


class PeriodicReader(LeanMerging, PeriodicExportingMetricReader):
    """OTLP and console export: the SDK's periodic reader, with the exporter's temporality preference."""

    def __init__(self, histograms: LeanHistograms, exporter: MetricExporter, export_interval_millis: float,
                 export_timeout_millis: float | None = None) -> None:
        super().__init__(exporter, export_interval_millis=export_interval_millis,
                         export_timeout_millis=export_timeout_millis)
        self._join(histograms)
