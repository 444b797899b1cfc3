"""The duration histograms aggregated by `gateway.telemetry.histograms` export what the OpenTelemetry SDK
exported for the same measurements: the same metric, attribute sets, bucket counts, counts, sums (the same
floats), min and max, for cumulative and delta readers, across collections, past the series limit, and on
/metrics and OTLP through `Telemetry`. Each test records the same values both ways and compares."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.util.types import AttributeValue

from gateway.telemetry import Telemetry, histograms
from gateway.telemetry import attributes as A
from gateway.telemetry.histograms import (
    SERIES_LIMIT,
    LeanHistogram,
    LeanHistograms,
    SdkHistogram,
    histograms_supported,
)
from gateway.telemetry.readers import PeriodicReader
from gateway.telemetry.setup import MAX_SERIES, REQUEST_BUCKETS
from tests.support.otlp_receiver import OtlpReceiver, ReceivedMetric

CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA
NAME = A.METRIC_REQUEST_DURATION
Attrs = dict[str, AttributeValue]


def durations(seed: int, n: int) -> list[float]:
    """Durations over the whole bucket range, with every boundary itself, zero and past the last bucket."""
    rng = random.Random(seed)
    values = [10 ** rng.uniform(-6, 2.7) for _ in range(n)]
    return [*values, *REQUEST_BUCKETS, 0.0, 301.5]


class ListExporter(MetricExporter):
    """Keeps every batch a periodic reader exports (the reader is the gateway's own `PeriodicReader`)."""

    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={Histogram: temporality})
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class Pipeline:
    """One MeterProvider with the gateway's periodic reader; the histogram recorded the lean way or the SDK's."""

    def __init__(self, temporality: AggregationTemporality, lean: bool) -> None:
        self.exporter = ListExporter(temporality)
        histograms = LeanHistograms()
        self.reader = PeriodicReader(histograms, self.exporter, export_interval_millis=math.inf)
        self.provider = MeterProvider(metric_readers=[self.reader], exemplar_filter=AlwaysOffExemplarFilter(),
                                      shutdown_on_exit=False)
        meter = self.provider.get_meter("narrowgate", "1.0")
        # As the gateway's gauges do, something reports on every collection (see gateway/telemetry/readers.py).
        meter.create_observable_gauge("narrowgate.approvals.pending", callbacks=[self._gauge])
        self.instrument = meter.create_histogram(NAME, unit="s", description="Time to answer an MCP request",
                                                 explicit_bucket_boundaries_advisory=REQUEST_BUCKETS)
        self.lean: LeanHistogram | None = None
        if lean:
            assert isinstance(self.instrument, Histogram)
            self.lean = histograms.histogram(self.instrument, REQUEST_BUCKETS)

    @staticmethod
    def _gauge(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(0)]

    def record(self, value: float, attributes: Attrs) -> None:
        if self.lean is None:
            self.instrument.record(value, attributes)
        else:
            self.lean.bind(attributes).record(value)

    def collect(self) -> Metric | None:
        """The histogram as the reader exported it in one collection (None if it was not in the batch)."""
        self.reader.collect()
        batch = self.exporter.batches[-1]
        found = [metric for resource in batch.resource_metrics for scope in resource.scope_metrics
                 for metric in scope.metrics if metric.name == NAME]
        assert len(found) <= 1
        return found[0] if found else None

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def pipelines() -> Iterator[Callable[[AggregationTemporality], tuple[Pipeline, Pipeline]]]:
    made: list[Pipeline] = []

    def make(temporality: AggregationTemporality) -> tuple[Pipeline, Pipeline]:
        pair = (Pipeline(temporality, lean=False), Pipeline(temporality, lean=True))
        made.extend(pair)
        return pair

    yield make
    for pipeline in made:
        pipeline.close()


def untimed(point: HistogramDataPoint) -> HistogramDataPoint:
    return dataclasses.replace(point, start_time_unix_nano=0, time_unix_nano=0)


def assert_same_export(sdk: Metric | None, lean: Metric | None) -> None:
    """Everything but the timestamps is equal (same floats, same tuple of counts); same point order."""
    if sdk is None or lean is None:
        assert sdk is lean is None, (sdk, lean)
        return
    assert (lean.name, lean.unit, lean.description) == (sdk.name, sdk.unit, sdk.description)
    assert type(lean.data) is type(sdk.data)
    assert lean.data.aggregation_temporality == sdk.data.aggregation_temporality  # type: ignore[union-attr]
    sdk_points = [untimed(p) for p in sdk.data.data_points]  # type: ignore[arg-type]
    lean_points = [untimed(p) for p in lean.data.data_points]  # type: ignore[arg-type]
    assert by_attributes(lean_points) == by_attributes(sdk_points)
    assert lean_points == sdk_points  # the same order too


def by_attributes(points: Sequence[HistogramDataPoint]) -> dict[frozenset[tuple[str, Any]], HistogramDataPoint]:
    keyed = {frozenset((p.attributes or {}).items()): p for p in points}
    assert len(keyed) == len(points), "one point per attribute set"
    return keyed


ALLOW: Attrs = {A.MCP_METHOD_NAME: "tools/call", A.DECISION: "allow", A.UPSTREAM: "files"}
DENY: Attrs = {A.MCP_METHOD_NAME: "tools/call", A.DECISION: "deny", A.ERROR_TYPE: "-32003"}
LIST: Attrs = {A.MCP_METHOD_NAME: "tools/list"}


@pytest.mark.parametrize("temporality", [CUMULATIVE, DELTA], ids=["cumulative", "delta"])
def test_collections_export_what_the_sdk_exported(
        temporality: AggregationTemporality, pipelines: Callable[..., tuple[Pipeline, Pipeline]]) -> None:
    sdk, lean = pipelines(temporality)
    rounds: list[list[tuple[float, Attrs]]] = [
        [(v, ALLOW) for v in durations(1, 300)] + [(v, DENY) for v in durations(2, 40)],
        [(v, ALLOW) for v in durations(3, 200)] + [(v, LIST) for v in durations(4, 25)],  # DENY idle, LIST new
        [],  # nothing recorded: cumulative repeats, delta has no point
        [(v, DENY) for v in durations(5, 10)] + [(-1.0, ALLOW), (math.nan, ALLOW), (math.inf, DENY)],  # dropped
    ]
    exported: list[tuple[Metric | None, Metric | None]] = []
    for measurements in rounds:
        for value, attributes in measurements:
            sdk.record(value, attributes)
            lean.record(value, attributes)
        exported.append((sdk.collect(), lean.collect()))
        assert_same_export(*exported[-1])
    # Timestamps follow the SDK's rules: a cumulative series starts at its first record and keeps that start;
    # a delta point starts where the reader's last collection ended.
    for side in (0, 1):
        first, second = (by_time(exported[k][side]) for k in (0, 1))
        allow1, allow2 = first[frozenset(ALLOW.items())], second[frozenset(ALLOW.items())]
        assert allow1.start_time_unix_nano <= allow1.time_unix_nano < allow2.time_unix_nano
        if temporality is CUMULATIVE:
            assert allow2.start_time_unix_nano == allow1.start_time_unix_nano
        else:
            assert allow2.start_time_unix_nano == allow1.time_unix_nano
            list2 = second[frozenset(LIST.items())]  # new in round 2: starts at round 1's collection too
            assert list2.start_time_unix_nano == allow1.time_unix_nano
    if temporality is DELTA:
        assert exported[2] == (None, None)


def by_time(metric: Metric | None) -> dict[frozenset[tuple[str, Any]], HistogramDataPoint]:
    assert metric is not None
    return by_attributes(metric.data.data_points)  # type: ignore[arg-type]


@pytest.mark.parametrize("temporality", [CUMULATIVE, DELTA], ids=["cumulative", "delta"])
def test_nothing_is_exported_before_the_first_record(
        temporality: AggregationTemporality, pipelines: Callable[..., tuple[Pipeline, Pipeline]]) -> None:
    """A series bound (as the gateway binds one just before recording into it) but with nothing recorded yet,
    or only values the SDK drops, has no point: the SDK has no aggregation for it before a measurement."""
    sdk, lean = pipelines(temporality)
    assert lean.lean is not None
    lean.lean.bind(ALLOW)
    assert (sdk.collect(), lean.collect()) == (None, None)
    for pipeline in (sdk, lean):
        pipeline.record(math.nan, ALLOW)
    assert (sdk.collect(), lean.collect()) == (None, None)
    for pipeline in (sdk, lean):
        pipeline.record(0.02, ALLOW)
    sdk_metric, lean_metric = sdk.collect(), lean.collect()
    assert_same_export(sdk_metric, lean_metric)
    point = by_time(lean_metric)[frozenset(ALLOW.items())]
    assert point.count == 1
    assert lean_metric is not None and len(lean_metric.data.data_points) == 1  # type: ignore[union-attr]


def test_an_outcome_with_only_dropped_values_is_not_scraped() -> None:
    telemetry = lean_path({})
    try:
        telemetry.record_policy_evaluation(math.nan, "weird")
        telemetry.record_policy_evaluation(0.0004, "allow")
        text = telemetry.metrics_response()[0].decode()
        assert 'narrowgate_decision="weird"' not in text
        assert 'narrowgate_policy_evaluation_duration_seconds_count{narrowgate_decision="allow"} 1.0' in text
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize("temporality", [CUMULATIVE, DELTA], ids=["cumulative", "delta"])
def test_past_the_series_limit_both_overflow_alike(
        temporality: AggregationTemporality, pipelines: Callable[..., tuple[Pipeline, Pipeline]]) -> None:
    sdk, lean = pipelines(temporality)
    for round_ in range(2):
        for code in range(SERIES_LIMIT + 40):  # an upstream answering with ever new error codes
            attributes: Attrs = {A.MCP_METHOD_NAME: "tools/call", A.ERROR_TYPE: str(code)}
            value = 0.001 * (1 + code % 7) * (round_ + 1)
            sdk.record(value, attributes)
            lean.record(value, attributes)
        sdk_metric, lean_metric = sdk.collect(), lean.collect()
        assert_same_export(sdk_metric, lean_metric)
        assert lean_metric is not None
        overflow = by_time(lean_metric)[frozenset({("otel.metric.overflow", True)})]
        assert overflow.count == 40 * (round_ + 1 if temporality is CUMULATIVE else 1)
        assert len(lean_metric.data.data_points) == SERIES_LIMIT + 1  # type: ignore[union-attr]


def test_a_series_is_bound_once() -> None:
    pipeline = Pipeline(CUMULATIVE, lean=True)
    try:
        assert pipeline.lean is not None
        assert pipeline.lean.bind(dict(ALLOW)) is pipeline.lean.bind(dict(reversed(ALLOW.items())))
        assert pipeline.lean.bind(ALLOW) is not pipeline.lean.bind(DENY)
    finally:
        pipeline.close()


def test_records_from_threads_while_a_reader_collects_are_each_counted_once() -> None:
    """Records on several threads against delta collections on another: every record lands in exactly one
    collected point (the lock keeps a collection from splitting a record)."""
    pipeline = Pipeline(DELTA, lean=True)
    threads, per_thread = 4, 5000
    collected: list[Metric | None] = []
    done = threading.Event()

    def record() -> None:
        for i in range(per_thread):
            pipeline.record(0.001 * (1 + i % 5), ALLOW)

    def collect() -> None:
        while not done.is_set():
            collected.append(pipeline.collect())

    try:
        collector = threading.Thread(target=collect)
        collector.start()
        workers = [threading.Thread(target=record) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        done.set()
        collector.join()
        collected.append(pipeline.collect())
    finally:
        pipeline.close()
    points = [p for metric in collected if metric is not None for p in metric.data.data_points]  # type: ignore[attr-defined]
    assert sum(p.count for p in points) == threads * per_thread
    assert all(sum(p.bucket_counts) == p.count for p in points)
    assert math.isclose(sum(p.sum for p in points), threads * sum(0.001 * (1 + i % 5) for i in range(per_thread)))


# Through Telemetry: /metrics and OTLP -----------------------------------------------------------------


def feed(telemetry: Telemetry, round_: int, codes: int = MAX_SERIES) -> None:
    """What a gateway records over some calls; with `codes` new error codes (past MAX_SERIES series by default:
    one more every round, so the overflow series grows)."""
    for i, value in enumerate(durations(10 + round_, 200)):
        decision = ("allow", "deny", "step_up")[i % 3]
        telemetry.record_request("tools/call", decision, "files" if i % 4 else None, value,
                                 None if decision == "allow" else "-32003")
        telemetry.record_policy_evaluation(value / 100, decision)
    telemetry.record_request("tools/list", None, None, 0.0004, None)
    telemetry.record_request("made/up", None, None, 0.0002, "-32601")
    for code in range(codes + 20 * round_):
        telemetry.record_request("tools/call", "allow", "files", 0.001 * (1 + code % 3), f"e{code}")


@pytest.fixture
def sdk_path(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], Telemetry]:
    """A Telemetry that records its histograms through the SDK: an exemplar filter set in the environment
    (always_off, so the SDK exports no exemplars either) leaves the choice to the SDK."""

    def make(env: dict[str, str]) -> Telemetry:
        with monkeypatch.context() as patched:
            patched.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
            telemetry = Telemetry.from_env(env)
        assert isinstance(telemetry._request_duration, SdkHistogram)
        return telemetry

    return make


def lean_path(env: dict[str, str]) -> Telemetry:
    telemetry = Telemetry.from_env(env)
    assert isinstance(telemetry._request_duration, LeanHistogram)
    assert isinstance(telemetry._policy_duration, LeanHistogram)
    return telemetry


def test_metrics_scrapes_are_the_sdk_paths_scrapes(sdk_path: Callable[[dict[str, str]], Telemetry]) -> None:
    """Every line of /metrics the same (families may come in another order: the SDK orders them by which
    instrument it saw first)."""
    sdk, lean = sdk_path({}), lean_path({})
    try:
        for round_ in range(2):
            for telemetry in (sdk, lean):
                feed(telemetry, round_)
            sdk_text, lean_text = (t.metrics_response()[0].decode() for t in (sdk, lean))
            assert sorted(lean_text.splitlines()) == sorted(sdk_text.splitlines())
            assert lean_text.count("narrowgate_request_duration_seconds_bucket{") == (MAX_SERIES + 1) * 19
            assert 'narrowgate_policy_evaluation_duration_seconds_count{narrowgate_decision="step_up"}' in lean_text
    finally:
        sdk.shutdown()
        lean.shutdown()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def exported_over_otlp(receiver: OtlpReceiver, make: Callable[[dict[str, str]], Telemetry]
                       ) -> list[list[ReceivedMetric]]:
    """Two exports (a flush after the first round, the shutdown's after the second) as the receiver got them
    (a few dozen series: the receiver takes up to 1 MB a request; the series limit is pinned above)."""
    receiver.clear()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_METRIC_EXPORT_INTERVAL": "3600000", "OTEL_TRACES_EXPORTER": "none"}
    telemetry = make(env)
    exports: list[list[ReceivedMetric]] = []
    for round_ in range(2):
        feed(telemetry, round_, codes=30)
        if round_ == 0:
            telemetry.meter_provider.force_flush()
        else:
            telemetry.shutdown()
        exports.append([m for m in receiver.metrics if m.kind == "histogram"])
        receiver.clear()
    return exports


@pytest.mark.parametrize("preference", ["cumulative", "delta"])
def test_otlp_exports_are_the_sdk_paths_exports(
        preference: str, receiver: OtlpReceiver, sdk_path: Callable[[dict[str, str]], Telemetry],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference)  # read by the exporter
    sdk = exported_over_otlp(receiver, sdk_path)
    lean = exported_over_otlp(receiver, lean_path)
    for sdk_export, lean_export in zip(sdk, lean, strict=True):
        assert {m.name for m in lean_export} == {A.METRIC_REQUEST_DURATION, A.METRIC_POLICY_EVALUATION_DURATION}
        assert received(lean_export) == received(sdk_export)
    first, second = (received(export)[A.METRIC_REQUEST_DURATION][1] for export in lean)
    assert len(second) == len(first) + 20  # 20 new error codes in round 2


def received(metrics: list[ReceivedMetric]) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    return {m.name: (m.unit, sorted(m.points, key=lambda p: sorted(p["attributes"].items()))) for m in metrics}


def test_the_sdk_records_when_exemplars_or_other_aggregations_need_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing on (exemplars link a measurement to its span) or an OTLP reader asking for exponential
    histograms: the lean histograms cannot export that, so the SDK records and the scrape still counts."""
    tracing = Telemetry.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "always_off"})
    with monkeypatch.context() as patched:
        patched.setenv("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "base2_exponential_bucket_histogram")
        exponential = Telemetry.from_env({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/v1/metrics",
                                          "OTEL_METRIC_EXPORT_INTERVAL": "3600000"})
    try:
        for telemetry in (tracing, exponential):
            assert isinstance(telemetry._request_duration, SdkHistogram)
            assert isinstance(telemetry._policy_duration, SdkHistogram)
            telemetry.record_request("tools/call", "allow", "files", 0.012, None)
            telemetry.record_policy_evaluation(0.0004, "allow")
            text = telemetry.metrics_response()[0].decode()
            assert ('narrowgate_request_duration_seconds_count{mcp_method_name="tools/call",'
                    'narrowgate_decision="allow",narrowgate_upstream="files"} 1.0') in text
            assert 'narrowgate_policy_evaluation_duration_seconds_count{narrowgate_decision="allow"} 1.0' in text
    finally:
        tracing.shutdown()
        exponential.shutdown(timeout_s=0.5)


# Failures, concurrency and the SDK's internals --------------------------------------------------------


class MergeFault(RuntimeError):
    """Stands for any defect in merging the lean points (a bug, an SDK batch shaped otherwise)."""


def fail_merging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: every lean collection raises, with a message that must not reach the log."""

    def broken(self: LeanHistogram, *args: Any) -> Any:
        raise MergeFault("agent-secret-value")

    monkeypatch.setattr(LeanHistogram, "collect", broken)


def test_a_failing_merge_leaves_the_scrape_whole_and_is_logged_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    telemetry = lean_path({})
    try:
        telemetry.record_request("tools/call", "allow", "files", 0.01, None)
        fail_merging(monkeypatch)
        with caplog.at_level(logging.ERROR, logger="narrowgate.telemetry"):
            texts = [telemetry.metrics_response()[0].decode() for _ in range(2)]
        for text in texts:
            assert 'narrowgate_requests_total{mcp_method_name="tools/call"' in text  # the SDK's batch, unchanged
            assert "narrowgate_request_duration_seconds" not in text
        failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(failures) == 1
        assert "MergeFault" in failures[0].getMessage()
        assert "agent-secret-value" not in caplog.text
    finally:
        telemetry.shutdown()


def test_a_failing_merge_does_not_stop_the_periodic_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's export thread only survives timeouts: a merge failure must not end it."""
    exported = threading.Semaphore(0)

    class Counting(ListExporter):
        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                   **kwargs: Any) -> MetricExportResult:
            exported.release()
            return super().export(metrics_data, timeout_millis, **kwargs)

    fail_merging(monkeypatch)
    exporter = Counting(DELTA)
    histograms = LeanHistograms()
    reader = PeriodicReader(histograms, exporter, export_interval_millis=5)
    provider = MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOffExemplarFilter(),
                             shutdown_on_exit=False)
    meter = provider.get_meter("narrowgate", "1.0")
    meter.create_observable_gauge("narrowgate.approvals.pending", callbacks=[Pipeline._gauge])
    instrument = meter.create_histogram(NAME, unit="s", explicit_bucket_boundaries_advisory=REQUEST_BUCKETS)
    assert isinstance(instrument, Histogram)
    histograms.histogram(instrument, REQUEST_BUCKETS).bind(ALLOW).record(0.01)
    try:
        # Three exports by the SDK's thread, each after a failed merge (a generous bound: liveness, not speed).
        assert all(exported.acquire(timeout=30) for _ in range(3))
    finally:
        provider.shutdown()
    assert all(metric.name != NAME for batch in exporter.batches for resource in batch.resource_metrics
               for scope in resource.scope_metrics for metric in scope.metrics)


def test_a_collection_builds_its_points_outside_the_records_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records wait for a collection only while it swaps out each series' interval: its clock is read under
    the lock (so overlapping collections of one reader never end before they start) and the points are built
    after the lock is released."""
    pipeline = Pipeline(CUMULATIVE, lean=True)
    assert pipeline.lean is not None
    lock = pipeline.lean.lock
    clock_locked: list[bool] = []
    build_locked: list[bool] = []
    clock, build = histograms.time_ns, LeanHistogram._point

    def watched_clock() -> int:
        clock_locked.append(lock.locked())
        return clock()

    def watched_build(self: LeanHistogram, *args: Any) -> HistogramDataPoint | None:
        build_locked.append(lock.locked())
        return build(self, *args)

    monkeypatch.setattr(histograms, "time_ns", watched_clock)
    monkeypatch.setattr(LeanHistogram, "_point", watched_build)
    try:
        for attributes in (ALLOW, DENY, LIST):
            pipeline.record(0.01, attributes)
        clock_locked.clear()
        assert pipeline.collect() is not None
    finally:
        pipeline.close()
    assert clock_locked == [True]
    assert build_locked == [False, False, False]


def test_overlapping_delta_collections_never_overlap_their_points() -> None:
    """Collections of one delta reader from several threads, with records in between: every record is in one
    point, every point starts no later than it ends and no earlier than the point before it ended."""
    pipeline = Pipeline(DELTA, lean=True)

    def record_and_collect() -> None:
        for i in range(150):
            pipeline.record(0.001 * (1 + i % 3), ALLOW)
            pipeline.reader.collect()

    try:
        workers = [threading.Thread(target=record_and_collect) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        pipeline.close()
    points = sorted((point for batch in pipeline.exporter.batches for resource in batch.resource_metrics
                     for scope in resource.scope_metrics for metric in scope.metrics if metric.name == NAME
                     for point in metric.data.data_points), key=lambda p: p.time_unix_nano)  # type: ignore[attr-defined]
    assert sum(p.count for p in points) == 600
    assert all(p.start_time_unix_nano <= p.time_unix_nano for p in points)
    assert all(later.start_time_unix_nano >= earlier.time_unix_nano for earlier, later in itertools.pairwise(points))


def sdk_reader(**kwargs: Any) -> PeriodicExportingMetricReader:
    return PeriodicExportingMetricReader(ListExporter(CUMULATIVE), export_interval_millis=math.inf, **kwargs)


def test_the_sdk_records_on_an_sdk_version_or_internals_not_tested(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The lean histograms read SDK internals: on another SDK version, a missing internal or a reader keeping
    another number of series, they are not used (said once, at info) and the SDK's histograms still count."""
    off = AlwaysOffExemplarFilter()
    reader = sdk_reader()
    try:
        assert histograms_supported([reader], off, REQUEST_BUCKETS)
        assert histograms_supported([sdk_reader(cardinality_limits={Histogram: SERIES_LIMIT})], off, REQUEST_BUCKETS)
        with caplog.at_level(logging.INFO, logger="narrowgate.telemetry"):
            assert not histograms_supported([sdk_reader(cardinality_limits={Histogram: 100})], off, REQUEST_BUCKETS)
            with monkeypatch.context() as patched:
                patched.setattr(histograms, "_HISTOGRAM_CLASS", None)
                assert not histograms_supported([reader], off, REQUEST_BUCKETS)
            with monkeypatch.context() as patched:
                patched.delattr(reader, "_instrument_class_aggregation")
                assert not histograms_supported([reader], off, REQUEST_BUCKETS)
            with monkeypatch.context() as patched:
                patched.setattr(reader, "_instrument_class_temporality", {})
                assert not histograms_supported([reader], off, REQUEST_BUCKETS)
            monkeypatch.setattr(histograms, "sdk_version", "1.99.0")
            for _ in range(2):
                telemetry = Telemetry.from_env({})
                try:
                    assert isinstance(telemetry._request_duration, SdkHistogram)
                    assert isinstance(telemetry._policy_duration, SdkHistogram)
                    telemetry.record_policy_evaluation(0.0004, "allow")
                    text = telemetry.metrics_response()[0].decode()
                    assert ('narrowgate_policy_evaluation_duration_seconds_count{narrowgate_decision="allow"} 1.0'
                            in text)
                finally:
                    telemetry.shutdown()
    finally:
        reader.shutdown()
    told = [r.getMessage() for r in caplog.records if "1.99.0" in r.getMessage()]
    assert len(told) == 1  # two gateways, two histograms each: said once
    assert any("another number of series" in r.getMessage() for r in caplog.records)
