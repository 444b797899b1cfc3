"""Histograms recorded without the OpenTelemetry SDK's per-measurement work, exported through its readers.

The SDK's `Histogram.record` builds a `Measurement`, asks the exemplar filter, copies, cleans and hashes the
attribute set on every call (~70k instructions here); the gateway records two histograms per call, over a
handful of attribute sets. Here an attribute set is bound once (`LeanHistogram.bind`) and a record is a
bisect into the bucket boundaries plus a few additions. The readers of `gateway.telemetry.readers` add these
histograms to each batch the SDK collects, as the points the SDK's explicit-bucket aggregation would have
produced for the same measurements:

* one accumulator per series per reader, as the SDK keeps one aggregation per series per reader, so a delta
  and a cumulative reader each get what the SDK would give them (counts, min, max, and sums added in the same
  order, so the same floats);
* cumulative: every series since its first record, which is its start time; delta: the series recorded since
  the reader's last collection, which is their start time (the first record's time before any collection);
* at most `SERIES_LIMIT` attribute sets per histogram, then the SDK's overflow set
  (`otel.metric.overflow=true`), counted over the histogram's life as the gateway's request counter does
  (the SDK counts per collection for delta readers; the gateway's own bounds keep below the limit);
* values the SDK drops (negative, NaN, infinite) are dropped with the SDK's warning.

Reads SDK internals, each read guarded (`histograms_supported`): the SDK's `_Histogram` class, which keys a
reader's `_instrument_class_temporality`, `_instrument_class_aggregation` and `_instrument_class_cardinality_limit`,
and an explicit-bucket aggregation's `_boundaries` / `_record_min_max`. `tests/test_lean_histograms.py` compares
the exports with the installed SDK's; on another SDK version (`TESTED_SDK_VERSIONS`), or anything unexpected in
those internals, the SDK records.

Only where that is what the SDK would export: `histograms_supported` says no when exemplars may be sampled
(they need the current span at each measurement), a reader aggregates histograms otherwise (exponential
buckets, other boundaries, no min/max) or keeps another number of series; `Telemetry` then records through the
SDK (`SdkHistogram`). A collection takes only the records' lock to swap out each series' interval; its points
are built after.
"""

from __future__ import annotations

import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Protocol

from opentelemetry.metrics import Histogram as ApiHistogram
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, ExemplarFilter
from opentelemetry.sdk.metrics import Histogram as SdkHistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.view import DefaultAggregation, ExplicitBucketHistogramAggregation
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.util.types import AttributeValue

log = logging.getLogger("narrowgate.telemetry")

SERIES_LIMIT = 2000  # the SDK's default cardinality limit per instrument
OVERFLOW_ATTRIBUTES: Mapping[str, AttributeValue] = {"otel.metric.overflow": True}
_INF = math.inf


def _sdk_histogram_class() -> type | None:
    """The SDK's histogram instrument class, the key of its readers' per-instrument settings (internal)."""
    try:
        from opentelemetry.sdk.metrics._internal.instrument import _Histogram
    except ImportError:
        return None
    return _Histogram


_HISTOGRAM_CLASS = _sdk_histogram_class()

Attributes = Mapping[str, AttributeValue]


class BoundHistogram(Protocol):
    """One series of a histogram: record a value under an attribute set bound beforehand."""

    def record(self, value: float) -> None: ...


class SdkHistogram:
    """The SDK path (exemplars, or a reader aggregating otherwise): `bind` keeps the attribute set only."""

    __slots__ = ("_instrument",)

    def __init__(self, instrument: ApiHistogram) -> None:
        self._instrument = instrument

    def bind(self, attributes: Attributes) -> BoundHistogram:
        return _SdkSeries(self._instrument, dict(attributes))


class _SdkSeries:
    __slots__ = ("_attributes", "_instrument")

    def __init__(self, instrument: ApiHistogram, attributes: dict[str, AttributeValue]) -> None:
        self._instrument = instrument
        self._attributes = attributes

    def record(self, value: float) -> None:
        self._instrument.record(value, self._attributes)


class _Accumulator:
    """One series as one reader sees it: the state of the SDK's `_ExplicitBucketHistogramAggregation`
    (the current interval, and for a cumulative reader the totals of the intervals collected)."""

    __slots__ = ("count", "counts", "max", "min", "start_ns", "sum", "total_count", "total_counts", "total_max",
                 "total_min", "total_sum")

    def __init__(self, buckets: int, start_ns: int) -> None:
        self.start_ns = start_ns
        self.counts = [0] * buckets
        self.count = 0
        self.sum: float = 0  # an int 0, as the SDK's, so a lone -0.0 sums to -0.0 there and here
        self.min = _INF
        self.max = -_INF
        self.total_count = 0
        self.total_counts = [0] * buckets
        self.total_sum: float = 0
        self.total_min = _INF
        self.total_max = -_INF

    def take_interval(self) -> _Interval:
        """The interval recorded since the last take, and a fresh one in its place (the caller holds the lock)."""
        if self.count == 0:
            return _EMPTY
        taken = (self.counts, self.count, self.sum, self.min, self.max)
        self.counts = [0] * len(self.counts)
        self.count = 0
        self.sum = 0
        self.min = _INF
        self.max = -_INF
        return taken


# One interval as taken from an accumulator: bucket counts, count, sum, min, max.
_Interval = tuple[Sequence[int], int, float, float, float]
_EMPTY: _Interval = ((), 0, 0, _INF, -_INF)


class HistogramSeries:
    """One attribute set of a `LeanHistogram`, bound once; `record` is what runs per call."""

    __slots__ = ("_acquire", "_bounds", "_name", "_release", "accumulators", "attributes")

    def __init__(self, histogram: LeanHistogram, attributes: Attributes, accumulators: tuple[_Accumulator, ...]
                 ) -> None:
        self.attributes = attributes
        self._name = histogram.name
        self._bounds = histogram.bounds
        # The lock's own methods: half the instructions of a `with` block, the largest cost left per record.
        self._acquire = histogram.lock.acquire
        self._release = histogram.lock.release
        self.accumulators = accumulators

    def record(self, value: float) -> None:
        if not (value >= 0.0 and value < _INF):  # also False for NaN
            _dropped(self._name, value)
            return
        index = bisect_left(self._bounds, value)
        self._acquire()
        try:
            for acc in self.accumulators:  # one per reader
                acc.counts[index] += 1
                acc.count += 1
                acc.sum += value
                if value < acc.min:
                    acc.min = value
                if value > acc.max:
                    acc.max = value
        finally:
            self._release()


def _dropped(name: str, value: float) -> None:
    """The SDK's warnings for the values it drops."""
    if not math.isfinite(value):
        log.warning("Record amount %s is not finite on Histogram %s, ignoring measurement.", value, name)
    else:
        log.warning("Record amount must be non-negative on Histogram %s.", name)


class ReaderSlot:
    """One reader as the lean histograms see it: its place in every series' accumulators, its temporality,
    and the lock that keeps its collections one at a time (they carry its cumulative totals and start times)."""

    __slots__ = ("collecting", "delta", "index")

    def __init__(self, index: int, delta: bool) -> None:
        self.index = index
        self.delta = delta
        self.collecting = threading.Lock()


# One histogram's intervals as one collection took them: each series with its point's start time and interval.
_Taken = list[tuple[HistogramSeries, int, _Interval]]


class LeanHistogram:
    """A histogram with explicit bucket boundaries, aggregated here and exported by the lean readers."""

    def __init__(self, instrument: SdkHistogramInstrument, bounds: Sequence[float], readers: Sequence[ReaderSlot],
                 lock: threading.Lock) -> None:
        """Name, unit, description and scope are the SDK instrument's (created, never recorded into), so the
        exported metric is named and described exactly as the SDK would name and describe it."""
        self.name = instrument.name
        self.unit = instrument.unit
        self.description = instrument.description
        self.scope: InstrumentationScope = instrument.instrumentation_scope
        self.bounds = tuple(bounds)
        self.lock = lock
        self._readers = tuple(readers)
        self._series: dict[tuple[tuple[str, AttributeValue], ...], HistogramSeries] = {}
        self._overflow: HistogramSeries | None = None
        self._last_collect_ns: list[int | None] = [None] * len(self._readers)

    def bind(self, attributes: Attributes) -> HistogramSeries:
        """The series of `attributes` (the same object for the same set); past `SERIES_LIMIT` sets, the
        overflow series. Call it once per attribute set and keep the series: it is not the per-call path."""
        key = tuple(sorted(attributes.items()))
        with self.lock:
            series = self._series.get(key)
            if series is not None:
                return series
            if len(self._series) >= SERIES_LIMIT:
                if self._overflow is None:
                    self._overflow = self._new_series(OVERFLOW_ATTRIBUTES)
                return self._overflow
            series = self._series[key] = self._new_series(attributes)
            return series

    def _new_series(self, attributes: Attributes) -> HistogramSeries:
        now = time_ns()
        buckets = len(self.bounds) + 1
        # A delta reader's next point starts at its last collection, as the SDK's next aggregation does.
        accumulators = tuple(_Accumulator(buckets, self._start_ns(slot, now)) for slot in self._readers)
        return HistogramSeries(self, dict(attributes), accumulators)

    def _start_ns(self, slot: ReaderSlot, now: int) -> int:
        last = self._last_collect_ns[slot.index]
        return last if slot.delta and last is not None else now

    def take(self, slot: ReaderSlot, now: int) -> _Taken:
        """Every series' interval for this reader, swapped for a fresh one; the caller holds `lock`, so this
        is all a record may wait for during a collection (the points are built after, in `collect`)."""
        every = [*self._series.values(), *([self._overflow] if self._overflow is not None else [])]
        taken: _Taken = []
        for series in every:
            acc = series.accumulators[slot.index]
            start_ns = acc.start_ns
            if slot.delta:
                acc.start_ns = now  # the next delta point starts at this collection, as the SDK's does
            taken.append((series, start_ns, acc.take_interval()))
        if slot.delta:
            self._last_collect_ns[slot.index] = now
        return taken

    def collect(self, slot: ReaderSlot, taken: _Taken, now: int) -> Metric | None:
        """This reader's points at `now` from what `take` took (None when there is none); the caller holds
        `slot.collecting`, not `lock`."""
        points = [point for series, start_ns, interval in taken
                  if (point := self._point(series, slot, start_ns, interval, now)) is not None]
        if not points:
            return None  # never recorded: the SDK has no aggregation for the series, hence no point
        temporality = AggregationTemporality.DELTA if slot.delta else AggregationTemporality.CUMULATIVE
        return Metric(name=self.name, description=self.description, unit=self.unit,
                      data=HistogramData(data_points=points, aggregation_temporality=temporality))

    def _point(self, series: HistogramSeries, slot: ReaderSlot, start_ns: int, interval: _Interval, now: int
               ) -> HistogramDataPoint | None:
        """What `_ExplicitBucketHistogramAggregation.collect` returns for the same measurements: nothing for a
        series with no measurement yet (delta: none in the interval)."""
        counts, count, sum_, min_, max_ = interval
        if slot.delta:
            if count == 0:
                return None
            return HistogramDataPoint(attributes=series.attributes, exemplars=[], start_time_unix_nano=start_ns,
                                      time_unix_nano=now, count=count, sum=sum_, bucket_counts=tuple(counts),
                                      explicit_bounds=self.bounds, min=min_, max=max_)
        acc = series.accumulators[slot.index]
        if count:
            acc.total_counts = [value + total for value, total in zip(counts, acc.total_counts, strict=True)]
            acc.total_count += count
        acc.total_min = min(min_, acc.total_min)
        acc.total_max = max(max_, acc.total_max)
        acc.total_sum = sum_ + acc.total_sum  # also when idle: 0 + -0.0 is 0.0 in the SDK's sum too
        if acc.total_count == 0:
            acc.start_ns = now  # bound, not recorded yet: its first point starts no earlier than this
            return None
        return HistogramDataPoint(attributes=series.attributes, exemplars=[], start_time_unix_nano=acc.start_ns,
                                  time_unix_nano=now, count=acc.total_count, sum=acc.total_sum,
                                  bucket_counts=tuple(acc.total_counts), explicit_bounds=self.bounds,
                                  min=acc.total_min, max=acc.total_max)


class LeanHistograms:
    """The lean histograms of one `MeterProvider` and the readers that export them. Readers join first
    (`add_reader`, from their constructors), then the histograms are made (`histogram`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # records (event loop, threads) against collections (exporter threads)
        self._readers: list[ReaderSlot] = []
        self._histograms: list[LeanHistogram] = []

    def add_reader(self, reader: MetricReader) -> ReaderSlot:
        if self._histograms:
            raise RuntimeError("every reader joins before the first lean histogram is made")
        delta = _histogram_setting(reader, "temporality") is AggregationTemporality.DELTA
        slot = ReaderSlot(len(self._readers), delta)
        self._readers.append(slot)
        return slot

    def histogram(self, instrument: SdkHistogramInstrument, bounds: Sequence[float]) -> LeanHistogram:
        histogram = LeanHistogram(instrument, bounds, self._readers, self.lock)
        self._histograms.append(histogram)
        return histogram

    def merged(self, slot: ReaderSlot, data: MetricsData) -> MetricsData:
        """`data` as the SDK collected it for the reader of `slot`, with the lean histograms' points added."""
        with slot.collecting:
            with self.lock:
                now = time_ns()  # under the lock: a later collection of this reader never ends before this one
                taken = [(histogram, histogram.take(slot, now)) for histogram in self._histograms]
            collected = [(histogram.scope, metric) for histogram, intervals in taken
                         if (metric := histogram.collect(slot, intervals, now)) is not None]
        return _with_metrics(data, collected) if collected else data


# The opentelemetry-sdk versions whose aggregation `tests/test_lean_histograms.py` compares the lean histograms
# with; another version may aggregate otherwise or keep its internals elsewhere, so the SDK records there.
TESTED_SDK_VERSIONS = ("1.45.",)
_explained: set[str] = set()


def histograms_supported(readers: Sequence[MetricReader], exemplar_filter: ExemplarFilter | None,
                         bounds: Sequence[float]) -> bool:
    """Whether the lean histograms export what the SDK would: an SDK version they were tested against, no
    exemplar ever sampled, and every reader aggregating histograms into explicit buckets at the instrument's
    boundaries (its advisory `bounds`), with min and max, under the SDK's default series limit. Otherwise the
    SDK records them (said once per reason, at info)."""
    reason = _unsupported(readers, exemplar_filter, bounds)
    if reason is not None and reason not in _explained:
        _explained.add(reason)
        log.info("telemetry: the OpenTelemetry SDK records the duration histograms (%s)", reason)
    return reason is None


def _unsupported(readers: Sequence[MetricReader], exemplar_filter: ExemplarFilter | None,
                 bounds: Sequence[float]) -> str | None:
    """Why the lean histograms would not export what the SDK would, or None."""
    if not sdk_version.startswith(TESTED_SDK_VERSIONS):
        return f"opentelemetry-sdk {sdk_version[:32]} is not a version they were tested against"
    if _HISTOGRAM_CLASS is None:
        return "this opentelemetry-sdk has no _Histogram instrument class"
    if not isinstance(exemplar_filter, AlwaysOffExemplarFilter):
        return "exemplars may be sampled"
    for reader in readers:
        if not isinstance(_histogram_setting(reader, "temporality"), AggregationTemporality):
            return f"{type(reader).__name__} has no histogram temporality the gateway can read"
        if not _explicit_buckets(_histogram_setting(reader, "aggregation"), bounds):
            return f"{type(reader).__name__} aggregates histograms otherwise"
        if _histogram_setting(reader, "cardinality_limit") not in (None, SERIES_LIMIT):
            return f"{type(reader).__name__} keeps another number of series than {SERIES_LIMIT}"
    return None


def _histogram_setting(reader: MetricReader, setting: str) -> object:
    """A reader's `_instrument_class_<setting>` for histograms (SDK internals), or None where it has none."""
    settings = getattr(reader, f"_instrument_class_{setting}", None)
    return settings.get(_HISTOGRAM_CLASS) if isinstance(settings, dict) and _HISTOGRAM_CLASS else None


def _explicit_buckets(aggregation: object, bounds: Sequence[float]) -> bool:
    if type(aggregation) is DefaultAggregation:
        return True
    if type(aggregation) is not ExplicitBucketHistogramAggregation:
        return False
    boundaries = getattr(aggregation, "_boundaries", ())
    record_min_max = getattr(aggregation, "_record_min_max", False)
    return record_min_max is True and (boundaries is None or tuple(boundaries) == tuple(bounds))


def _with_metrics(data: MetricsData, collected: Sequence[tuple[InstrumentationScope, Metric]]) -> MetricsData:
    """`data` with `collected` appended to their scopes' metrics (a new scope if the SDK had none of it).
    One `MeterProvider` has one resource, so its batch has one `ResourceMetrics`."""
    if not data.resource_metrics:
        return data
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for scope, metric in collected:
        at = next((i for i, scoped in enumerate(scopes) if scoped.scope == scope), None)
        if at is None:
            scopes.append(ScopeMetrics(scope=scope, metrics=[metric], schema_url=scope.schema_url or ""))
        else:
            scoped = scopes[at]
            scopes[at] = ScopeMetrics(scope=scoped.scope, metrics=[*scoped.metrics, metric],
                                      schema_url=scoped.schema_url)
    resource = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
    return MetricsData(resource_metrics=[resource, *rest])
