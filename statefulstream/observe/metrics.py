"""``Metrics``: every Prometheus metric of an app, fed from its batch reports.

One ``Metrics`` per app owns its own ``CollectorRegistry`` (no module
globals, so two apps in one process, or two tests, never share a counter).
The executor calls :meth:`Metrics.on_batch` after each committed batch and
:meth:`Metrics.on_failure` when a batch raises; ``/metrics`` (see
``statefulstream.observe.server``) serves :meth:`Metrics.exposition`.

Every metric has the label ``app``; the other labels take bounded values
only (phase names, dead-letter kinds, sink names, source partitions), never a
group key. Times are in seconds, as Prometheus expects.

>>> from statefulstream.observe.progress import BatchProgress
>>> m = Metrics("demo")
>>> m.on_batch(BatchProgress(app="demo", batch_id=0, batch_ts_ms=0, records_read=3, records_processed=2,
...                          records_dead_lettered={"key": 1}))
>>> m.value("statefulstream_records_processed_total")
2.0
>>> m.value("statefulstream_records_dead_lettered_total", reason="key")
1.0
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Literal, NamedTuple

from statefulstream.errors import UserFunctionError
from statefulstream.observe.progress import PHASES, BatchFailure, BatchProgress
from statefulstream.timeutil import Clock, system_clock

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, math.inf)
"""Buckets of ``statefulstream_batch_duration_seconds``: 1 ms up to a sink held back for minutes."""


class Family(NamedTuple):
    """One metric family: its name (without ``_total``), type, help text and labels besides ``app``."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    doc: str
    labels: tuple[str, ...] = ()


def _counter(name: str, doc: str, *labels: str) -> Family:
    return Family(name, "counter", doc, labels)


def _gauge(name: str, doc: str, *labels: str) -> Family:
    return Family(name, "gauge", doc, labels)


PROCESSOR_COUNTS = {"deleted_state_vars": "State variables deleted with delete_if_exists.",
                    "timers_registered": "Timers registered.",
                    "timers_deleted": "Timers deleted before they fired.",
                    "timers_expired": "Timers that fired.",
                    "values_removed_by_ttl": "State values removed because their TTL expired."}
"""Stateful processors' per-batch counts (Spark's numDeletedStateVars ... numValuesRemovedDueToTTLExpiry)."""

FAMILIES: tuple[Family, ...] = (
    _counter("statefulstream_records_read", "Records read from the source, dead letters included."),
    _counter("statefulstream_records_processed", "Records handed to the handler."),
    _counter("statefulstream_records_late", "Records dropped as late (event time <= watermark)."),
    _counter("statefulstream_records_late_kept",
             "Records behind the watermark kept because the timeout is not event time."),
    _counter("statefulstream_records_filtered", "Records removed by stateless steps."),
    _counter("statefulstream_records_dead_lettered", "Records sent to the dead-letter sink.", "reason"),
    _counter("statefulstream_groups_called", "Handler calls for keys with data."),
    _counter("statefulstream_timeouts_fired", "Handler calls for timed-out keys."),
    _counter("statefulstream_state_rows_updated", "State rows written back by the handler (Spark's numRowsUpdated)."),
    _counter("statefulstream_state_rows_removed", "State rows removed by the handler (Spark's numRowsRemoved)."),
    _gauge("statefulstream_state_keys", "Rows (keys) in the state store after the last batch, exact (Spark's "
           "numRowsTotal)."),
    _gauge("statefulstream_state_bytes", "Bytes of the state store on disk."),
    _counter("statefulstream_rows_output", "Rows the handler output (written to the sinks)."),
    _counter("statefulstream_batches_committed", "Batches committed."),
    _counter("statefulstream_batches_replayed", "Committed batches that replayed a batch planned before a stop."),
    _counter("statefulstream_batch_failures", "Batches that raised, by phase.", "phase"),
    _counter("statefulstream_handler_errors", "Handler calls that raised."),
    _gauge("statefulstream_last_batch_id", "Id of the last committed batch."),
    _gauge("statefulstream_last_batch_timestamp_seconds", "Processing timestamp of the last committed batch."),
    Family("statefulstream_batch_duration_seconds", "histogram", "Seconds per batch phase.", ("phase",)),
    _gauge("statefulstream_watermark_seconds", "Event-time watermark in force for the next batch."),
    _gauge("statefulstream_watermark_lag_seconds", "How far the watermark is behind the wall clock, at scrape time."),
    _gauge("statefulstream_max_event_time_seconds", "Largest event time seen in the last batch that had event times."),
    _gauge("statefulstream_source_lag_records", "Records available in a source partition but not yet processed.",
           "partition"),
    _counter("statefulstream_sink_writes", "Batch writes that succeeded, per sink.", "sink"),
    _counter("statefulstream_sink_rows", "Rows written, per sink.", "sink"),
    _counter("statefulstream_sink_retries", "Retried sink writes, per sink.", "sink"),
    _counter("statefulstream_source_data_loss", "Source data found lost and gone past (fail_on_data_loss=False)."),
    _counter("statefulstream_sink_failures", "Sink writes that failed the batch (gave up or not retriable).", "sink"),
    _gauge("statefulstream_processor_state_variables",
           "State variables the processor declared, by kind (value, list, map).", "kind"),
    _gauge("statefulstream_processor_state_variables_with_ttl", "State variables declared with a TTL."),
    *(_counter(f"statefulstream_processor_{name}", doc) for name, doc in PROCESSOR_COUNTS.items()),
    # Scale-out (statefulstream.scaleout): partitions owned, and restores of a partition's state.
    _gauge("statefulstream_partitions_owned", "Source partitions this process owns (scale-out)."),
    _counter("statefulstream_restores", "Partition state restores from the changelog.", "partition"),
    _counter("statefulstream_restore_records", "Changelog records read while restoring, per partition.",
             "partition"),
    _gauge("statefulstream_restore_seconds", "Duration of the last restore of a partition's state.", "partition"),
    _gauge("statefulstream_restore_records_per_second",
           "Changelog records per second in the last restore of a partition.", "partition"),
)
"""Every metric family, in exposition order (``docs/metrics.md`` has the table)."""

_PROCESSOR_FAMILIES = {f"statefulstream_processor_{name}" for name in PROCESSOR_COUNTS}

_SHOWN_AT_ZERO = [f.name for f in FAMILIES
                  if f.kind == "counter" and not f.labels and f.name not in _PROCESSOR_FAMILIES]
"""Unlabelled counters shown at 0 before the first batch (``increase()`` needs a start); a processor's appear
with its first batch."""

_SINK_COUNTERS = [f.name for f in FAMILIES if f.labels == ("sink",)]
"""The per-sink counters, shown at 0 for every sink the app declares."""

_WATERMARK_LAG = "statefulstream_watermark_lag_seconds"
_DURATION = "statefulstream_batch_duration_seconds"

Labels = tuple[str, ...]
"""A series' label values after ``app``, in its family's label order."""


class Metrics:
    """The Prometheus metrics of one app (see ``docs/metrics.md`` for the table).

    The values are plain numbers updated once per batch; prometheus-client
    (and the HTTP stack it imports) is loaded only when they are read, by
    :attr:`registry`, :meth:`exposition` or :meth:`value`: an app nobody
    scrapes does not carry it. The registry reads them through a custom
    collector, prometheus-client's documented way to expose values kept
    elsewhere.

    Args:
        app: the app's name, the value of every metric's ``app`` label.
        clock: wall clock in epoch ms, for the watermark lag (the app's clock).
    """

    def __init__(self, app: str, *, clock: Clock = system_clock) -> None:
        self.app = app
        self._clock = clock
        self._registry: CollectorRegistry | None = None
        # Batches update from the loop's thread while a scrape reads from the server's (re-entrant: the
        # registry is made under it and its registration reads the families).
        self._lock = threading.RLock()
        self._series: dict[str, dict[Labels, float]] = {f.name: {} for f in FAMILIES}
        self._created: dict[tuple[str, Labels], float] = {}
        # Per phase: the count of each bucket (not cumulative), then the sum.
        self._durations: dict[Labels, list[float]] = {}
        for name in _SHOWN_AT_ZERO:
            self._inc(name, 0)
        for phase in PHASES:
            self._observe(phase, None)
        self._watermark_ms: int | None = None
        self._partitions: set[str] = set()
        self._partitioned = False  # scale-out: state gauges summed over partitions by set_partitions

    @property
    def registry(self) -> CollectorRegistry:
        """This app's own registry (created, and prometheus-client imported, on first use)."""
        with self._lock:  # one registry, even when the server and a caller ask first at once
            if self._registry is None:
                from prometheus_client import CollectorRegistry

                registry = CollectorRegistry()
                registry.register(self)
                self._registry = registry
            return self._registry

    def _inc(self, name: str, amount: float, labels: Labels = ()) -> None:
        series = self._series[name]
        if labels not in series:
            series[labels] = 0.0
            self._created[name, labels] = time.time()
        series[labels] += amount

    def _set(self, name: str, value: float, labels: Labels = ()) -> None:
        self._series[name][labels] = value

    def _observe(self, phase: str, seconds: float | None) -> None:
        buckets = self._durations.get((phase,))
        if buckets is None:
            buckets = self._durations[(phase,)] = [0.0] * (len(DURATION_BUCKETS) + 1)
            self._created[_DURATION, (phase,)] = time.time()
        if seconds is not None:
            buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1  # the first bucket whose bound holds it
            buckets[-1] += seconds

    def set_partitions(self, owned: Collection[str], *, state_keys: int, state_bytes: int) -> None:
        """Scale-out: the partitions this process owns now, and the rows and bytes of their stores together.

        From the first call on, a batch no longer sets the state gauges (each
        batch knows only its own partition's store) and no longer drops the
        lag of partitions it did not read: partitions leave the lag gauge here,
        when this process stops owning them.
        """
        with self._lock:
            self._partitioned = True
            self._set("statefulstream_partitions_owned", len(owned))
            for gone in self._partitions - set(owned):
                self._series["statefulstream_source_lag_records"].pop((gone,), None)
                self._partitions.discard(gone)
            self._set("statefulstream_state_keys", state_keys)
            self._set("statefulstream_state_bytes", state_bytes)

    def on_restore(self, partition: str, records: int, seconds: float) -> None:
        """Add one restore of ``partition``'s state: changelog records read and how long it took."""
        labels = (partition,)
        with self._lock:
            self._inc("statefulstream_restores", 1, labels)
            self._inc("statefulstream_restore_records", records, labels)
            self._set("statefulstream_restore_seconds", seconds, labels)
            self._set("statefulstream_restore_records_per_second", records / seconds if seconds > 0 else 0.0, labels)

    def declare_sinks(self, names: Iterable[str]) -> None:
        """Show the sink series of ``names`` at 0 before their first write (``increase()`` needs a start)."""
        with self._lock:
            for name in names:
                for family in _SINK_COUNTERS:
                    self._inc(family, 0, (name,))

    def on_batch(self, progress: BatchProgress) -> None:
        """Add one committed batch's figures (a ``ProgressListener``)."""
        with self._lock:
            self._on_batch(progress)

    def _on_batch(self, progress: BatchProgress) -> None:
        inc, set_ = self._inc, self._set
        for name, amount in (("statefulstream_records_read", progress.records_read),
                             ("statefulstream_records_processed", progress.records_processed),
                             ("statefulstream_records_late", progress.records_late),
                             ("statefulstream_records_late_kept", progress.records_late_kept),
                             ("statefulstream_records_filtered", progress.records_filtered),
                             ("statefulstream_groups_called", progress.groups_called),
                             ("statefulstream_timeouts_fired", progress.timeouts_fired),
                             ("statefulstream_state_rows_updated", progress.state_rows_updated),
                             ("statefulstream_state_rows_removed", progress.state_rows_removed),
                             ("statefulstream_rows_output", progress.rows_output),
                             ("statefulstream_source_data_loss", progress.data_loss_events)):
            if amount:
                inc(name, amount)
        for reason, count in progress.records_dead_lettered.items():
            inc("statefulstream_records_dead_lettered", count, (reason,))
        if progress.state_keys >= 0 and not self._partitioned:
            set_("statefulstream_state_keys", progress.state_keys)
        if progress.state_bytes >= 0 and not self._partitioned:
            set_("statefulstream_state_bytes", progress.state_bytes)
        inc("statefulstream_batches_committed", 1)
        if progress.replayed:
            inc("statefulstream_batches_replayed", 1)
        set_("statefulstream_last_batch_id", progress.batch_id)
        set_("statefulstream_last_batch_timestamp_seconds", progress.batch_ts_ms / 1000)
        for phase, seconds in progress.durations_s.items():
            self._observe(phase, seconds)
        self._observe_event_time(progress)
        self._observe_lag(progress)
        if progress.processor is not None:
            self._observe_processor(progress.processor)
        for sink, rows in progress.sink_rows.items():
            inc("statefulstream_sink_writes", 1, (sink,))
            inc("statefulstream_sink_rows", rows, (sink,))
        for sink, retries in progress.sink_retries_by_sink.items():
            inc("statefulstream_sink_retries", retries, (sink,))

    def _observe_processor(self, figures: dict[str, int]) -> None:
        for kind in ("value", "list", "map"):
            self._set("statefulstream_processor_state_variables", figures[f"{kind}_state_vars"], (kind,))
        self._set("statefulstream_processor_state_variables_with_ttl", figures["vars_with_ttl"])
        for name in PROCESSOR_COUNTS:
            self._inc(f"statefulstream_processor_{name}", figures[name])

    def _observe_event_time(self, progress: BatchProgress) -> None:
        if progress.max_event_time_ms is not None:
            self._set("statefulstream_max_event_time_seconds", progress.max_event_time_ms / 1000)
        # A watermark of 0 means the operator has none (or no event time yet): no series rather than 1970.
        if progress.next_watermark_ms > 0:
            self._watermark_ms = progress.next_watermark_ms
            self._set("statefulstream_watermark_seconds", progress.next_watermark_ms / 1000)

    def _observe_lag(self, progress: BatchProgress) -> None:
        latest = progress.latest_offsets
        if not latest:
            return
        end, lag = progress.end_offsets, self._series["statefulstream_source_lag_records"]
        for partition, position in latest.items():
            lag[(partition,)] = max(0, position - end.get(partition, 0))
        if self._partitioned:  # one partition per batch: set_partitions drops those no longer owned
            self._partitions.update(latest)
            return
        # Partitions this worker no longer reads (a rebalance) must not keep their last lag forever.
        for gone in self._partitions - latest.keys():
            lag.pop((gone,), None)
        self._partitions = set(latest)

    def on_failure(self, failure: BatchFailure) -> None:
        """Count a failed batch (a ``FailureListener``)."""
        with self._lock:
            self._inc("statefulstream_batch_failures", 1, (failure.phase,))
            if isinstance(failure.error, UserFunctionError):
                self._inc("statefulstream_handler_errors", 1)
            if failure.sink is not None:
                self._inc("statefulstream_sink_failures", 1, (failure.sink,))

    def describe(self) -> Iterator[Metric]:
        """The families without samples (prometheus-client's collector protocol: names are known up front)."""
        return self._families(with_samples=False)

    def collect(self) -> Iterator[Metric]:
        """The families with their current samples (prometheus-client's collector protocol)."""
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        with self._lock:  # a consistent snapshot; the families are built outside the lock
            series = {name: dict(values) for name, values in self._series.items()} if with_samples else {}
            durations = {labels: list(b) for labels, b in self._durations.items()} if with_samples else {}
            created = dict(self._created) if with_samples else {}
            if with_samples and self._watermark_ms is not None:
                series[_WATERMARK_LAG] = {(): (self._clock() - self._watermark_ms) / 1000}
        app = self.app
        bounds = [floatToGoString(b) for b in DURATION_BUCKETS]
        for family in FAMILIES:
            name, labels = family.name, ("app", *family.labels)
            metric: Metric
            if family.kind == "counter":
                metric = CounterMetricFamily(name, family.doc, labels=labels)
                for values, value in series.get(name, {}).items():
                    metric.add_metric((app, *values), value, created=created.get((name, values)))
            elif family.kind == "gauge":
                metric = GaugeMetricFamily(name, family.doc, labels=labels)
                for values, value in series.get(name, {}).items():
                    metric.add_metric((app, *values), value)
            else:
                metric = HistogramMetricFamily(name, family.doc, labels=labels)
                for values, counts in durations.items():
                    cumulative, total = [], 0.0
                    for bound, count in zip(bounds, counts[:-1], strict=True):
                        total += count
                        cumulative.append((bound, total))
                    metric.add_metric((app, *values), cumulative, counts[-1])
                    stamp = created.get((name, values))
                    if stamp is not None:
                        metric.add_sample(f"{name}_created", dict(zip(labels, (app, *values), strict=True)), stamp)
            yield metric

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """Return the metrics as ``(body, content type)`` in the format ``accept`` asks for.

        Prometheus' text format by default; OpenMetrics when the ``Accept``
        header asks for it.
        """
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def value(self, name: str, **labels: str) -> float | None:
        """Return the current value of one sample (``app`` label implied), or ``None``; for tests and tools."""
        return self.registry.get_sample_value(name, {"app": self.app, **labels})
