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

import logging
import math
from collections.abc import Collection, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from statefulstream.errors import UserFunctionError
from statefulstream.observe.progress import PHASES, BatchFailure, BatchProgress
from statefulstream.timeutil import Clock, system_clock

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, math.inf)
"""Buckets of ``statefulstream_batch_duration_seconds``: 1 ms up to a sink held back for minutes."""


class Metrics:
    """The Prometheus metrics of one app (see ``docs/metrics.md`` for the table).

    Args:
        app: the app's name, the value of every metric's ``app`` label.
        clock: wall clock in epoch ms, for the watermark lag (the app's clock).

    Attributes:
        registry: the registry holding every metric of this app.
    """

    def __init__(self, app: str, *, clock: Clock = system_clock) -> None:
        self.app = app
        self._clock = clock
        self.registry = CollectorRegistry()
        reg = self.registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ("app", *labels), registry=reg)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, ("app", *labels), registry=reg)

        # Unlabelled (app only) children are bound once, so they show 0 before the first batch.
        self._read = counter("statefulstream_records_read", "Records read from the source, dead letters included.")
        self._processed = counter("statefulstream_records_processed", "Records handed to the handler.")
        self._late = counter("statefulstream_records_late", "Records dropped as late (event time <= watermark).")
        self._late_kept = counter("statefulstream_records_late_kept",
                                  "Records behind the watermark kept because the timeout is not event time.")
        self._filtered = counter("statefulstream_records_filtered", "Records removed by stateless steps.")
        self._dead = counter("statefulstream_records_dead_lettered", "Records sent to the dead-letter sink.",
                             "reason")
        self._groups = counter("statefulstream_groups_called", "Handler calls for keys with data.")
        self._timeouts = counter("statefulstream_timeouts_fired", "Handler calls for timed-out keys.")
        self._updated = counter("statefulstream_state_rows_updated",
                                "State rows written back by the handler (Spark's numRowsUpdated).")
        self._removed = counter("statefulstream_state_rows_removed",
                                "State rows removed by the handler (Spark's numRowsRemoved).")
        self._state_keys = gauge("statefulstream_state_keys",
                                 "Rows (keys) in the state store after the last batch, exact (Spark's numRowsTotal).")
        self._state_bytes = gauge("statefulstream_state_bytes", "Bytes of the state store on disk.")
        self._output = counter("statefulstream_rows_output", "Rows the handler output (written to the sinks).")
        self._batches = counter("statefulstream_batches_committed", "Batches committed.")
        self._replayed = counter("statefulstream_batches_replayed",
                                 "Committed batches that replayed a batch planned before a stop.")
        self._failures = counter("statefulstream_batch_failures", "Batches that raised, by phase.", "phase")
        self._handler_errors = counter("statefulstream_handler_errors", "Handler calls that raised.")
        self._last_id = gauge("statefulstream_last_batch_id", "Id of the last committed batch.")
        self._last_ts = gauge("statefulstream_last_batch_timestamp_seconds",
                              "Processing timestamp of the last committed batch.")
        self._duration = Histogram("statefulstream_batch_duration_seconds", "Seconds per batch phase.",
                                   ("app", "phase"), buckets=DURATION_BUCKETS, registry=reg)
        self._watermark = gauge("statefulstream_watermark_seconds",
                                "Event-time watermark in force for the next batch.")
        self._watermark_lag = gauge("statefulstream_watermark_lag_seconds",
                                    "How far the watermark is behind the wall clock, at scrape time.")
        self._max_event_time = gauge("statefulstream_max_event_time_seconds",
                                     "Largest event time seen in the last batch that had event times.")
        self._lag = gauge("statefulstream_source_lag_records",
                          "Records available in a source partition but not yet processed.", "partition")
        self._sink_writes = counter("statefulstream_sink_writes", "Batch writes that succeeded, per sink.", "sink")
        self._sink_rows = counter("statefulstream_sink_rows", "Rows written, per sink.", "sink")
        self._sink_retries = counter("statefulstream_sink_retries", "Retried sink writes, per sink.", "sink")
        self._data_loss = counter("statefulstream_source_data_loss",
                                  "Source data found lost and gone past (fail_on_data_loss=False).")
        self._sink_failures = counter("statefulstream_sink_failures",
                                      "Sink writes that failed the batch (gave up or not retriable).", "sink")
        # Stateful processors (transform_with_state); Spark's numValueStateVars ... numValuesRemovedDueToTTLExpiry.
        self._variables = gauge("statefulstream_processor_state_variables",
                                "State variables the processor declared, by kind (value, list, map).", "kind")
        self._variables_ttl = gauge("statefulstream_processor_state_variables_with_ttl",
                                    "State variables declared with a TTL.")
        self._processor_counts = {
            name: counter(f"statefulstream_processor_{name}", doc) for name, doc in (
                ("deleted_state_vars", "State variables deleted with delete_if_exists."),
                ("timers_registered", "Timers registered."),
                ("timers_deleted", "Timers deleted before they fired."),
                ("timers_expired", "Timers that fired."),
                ("values_removed_by_ttl", "State values removed because their TTL expired."))}
        # Scale-out (statefulstream.scaleout): partitions owned, and restores of a partition's state.
        self._owned = gauge("statefulstream_partitions_owned", "Source partitions this process owns (scale-out).")
        self._restores = counter("statefulstream_restores", "Partition state restores from the changelog.",
                                 "partition")
        self._restore_records = counter("statefulstream_restore_records",
                                        "Changelog records read while restoring, per partition.", "partition")
        self._restore_seconds = gauge("statefulstream_restore_seconds",
                                      "Duration of the last restore of a partition's state.", "partition")
        self._restore_rate = gauge("statefulstream_restore_records_per_second",
                                   "Changelog records per second in the last restore of a partition.", "partition")
        for metric in (self._read, self._processed, self._late, self._late_kept, self._filtered, self._groups,
                       self._timeouts, self._updated, self._removed, self._output, self._batches, self._replayed,
                       self._handler_errors, self._data_loss):
            metric.labels(app)
        for phase in PHASES:
            self._duration.labels(app, phase)
        self._watermark_ms: int | None = None
        self._partitions: set[str] = set()
        self._partitioned = False  # scale-out: state gauges summed over partitions by set_partitions

    def set_partitions(self, owned: Collection[str], *, state_keys: int, state_bytes: int) -> None:
        """Scale-out: the partitions this process owns now, and the rows and bytes of their stores together.

        From the first call on, a batch no longer sets the state gauges (each
        batch knows only its own partition's store) and no longer drops the
        lag of partitions it did not read: partitions leave the lag gauge here,
        when this process stops owning them.
        """
        self._partitioned = True
        app = self.app
        self._owned.labels(app).set(len(owned))
        for gone in self._partitions - set(owned):
            self._lag.remove(app, gone)
            self._partitions.discard(gone)
        self._state_keys.labels(app).set(state_keys)
        self._state_bytes.labels(app).set(state_bytes)

    def on_restore(self, partition: str, records: int, seconds: float) -> None:
        """Add one restore of ``partition``'s state: changelog records read and how long it took."""
        app = self.app
        self._restores.labels(app, partition).inc()
        self._restore_records.labels(app, partition).inc(records)
        self._restore_seconds.labels(app, partition).set(seconds)
        self._restore_rate.labels(app, partition).set(records / seconds if seconds > 0 else 0.0)

    def declare_sinks(self, names: Iterable[str]) -> None:
        """Show the sink series of ``names`` at 0 before their first write (``increase()`` needs a start)."""
        for name in names:
            for metric in (self._sink_writes, self._sink_rows, self._sink_retries, self._sink_failures):
                metric.labels(self.app, name)

    def on_batch(self, progress: BatchProgress) -> None:
        """Add one committed batch's figures (a ``ProgressListener``)."""
        app = self.app
        for metric, amount in ((self._read, progress.records_read), (self._processed, progress.records_processed),
                               (self._late, progress.records_late), (self._late_kept, progress.records_late_kept),
                               (self._filtered, progress.records_filtered), (self._groups, progress.groups_called),
                               (self._timeouts, progress.timeouts_fired),
                               (self._updated, progress.state_rows_updated),
                               (self._removed, progress.state_rows_removed), (self._output, progress.rows_output),
                               (self._data_loss, progress.data_loss_events)):
            if amount:
                metric.labels(app).inc(amount)
        for reason, count in progress.records_dead_lettered.items():
            self._dead.labels(app, reason).inc(count)
        if progress.state_keys >= 0 and not self._partitioned:
            self._state_keys.labels(app).set(progress.state_keys)
        if progress.state_bytes >= 0 and not self._partitioned:
            self._state_bytes.labels(app).set(progress.state_bytes)
        self._batches.labels(app).inc()
        if progress.replayed:
            self._replayed.labels(app).inc()
        self._last_id.labels(app).set(progress.batch_id)
        self._last_ts.labels(app).set(progress.batch_ts_ms / 1000)
        for phase, seconds in progress.durations_s.items():
            self._duration.labels(app, phase).observe(seconds)
        self._observe_event_time(progress)
        self._observe_lag(progress)
        if progress.processor is not None:
            self._observe_processor(progress.processor)
        for sink, rows in progress.sink_rows.items():
            self._sink_writes.labels(app, sink).inc()
            self._sink_rows.labels(app, sink).inc(rows)
        for sink, retries in progress.sink_retries_by_sink.items():
            self._sink_retries.labels(app, sink).inc(retries)

    def _observe_processor(self, figures: dict[str, int]) -> None:
        app = self.app
        for kind in ("value", "list", "map"):
            self._variables.labels(app, kind).set(figures[f"{kind}_state_vars"])
        self._variables_ttl.labels(app).set(figures["vars_with_ttl"])
        for name, metric in self._processor_counts.items():
            metric.labels(app).inc(figures[name])

    def _observe_event_time(self, progress: BatchProgress) -> None:
        if progress.max_event_time_ms is not None:
            self._max_event_time.labels(self.app).set(progress.max_event_time_ms / 1000)
        # A watermark of 0 means the operator has none (or no event time yet): no series rather than 1970.
        if progress.next_watermark_ms > 0:
            if self._watermark_ms is None:
                self._watermark_lag.labels(self.app).set_function(self._watermark_lag_s)
            self._watermark_ms = progress.next_watermark_ms
            self._watermark.labels(self.app).set(progress.next_watermark_ms / 1000)

    def _watermark_lag_s(self) -> float:
        return (self._clock() - (self._watermark_ms or 0)) / 1000

    def _observe_lag(self, progress: BatchProgress) -> None:
        latest = progress.latest_offsets
        if not latest:
            return
        end = progress.end_offsets
        for partition, position in latest.items():
            self._lag.labels(self.app, partition).set(max(0, position - end.get(partition, 0)))
        if self._partitioned:  # one partition per batch: set_partitions drops those no longer owned
            self._partitions.update(latest)
            return
        # Partitions this worker no longer reads (a rebalance) must not keep their last lag forever.
        for gone in self._partitions - latest.keys():
            self._lag.remove(self.app, gone)
        self._partitions = set(latest)

    def on_failure(self, failure: BatchFailure) -> None:
        """Count a failed batch (a ``FailureListener``)."""
        self._failures.labels(self.app, failure.phase).inc()
        if isinstance(failure.error, UserFunctionError):
            self._handler_errors.labels(self.app).inc()
        if failure.sink is not None:
            self._sink_failures.labels(self.app, failure.sink).inc()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """Return the metrics as ``(body, content type)`` in the format ``accept`` asks for.

        Prometheus' text format by default; OpenMetrics when the ``Accept``
        header asks for it.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def value(self, name: str, **labels: str) -> float | None:
        """Return the current value of one sample (``app`` label implied), or ``None``; for tests and tools."""
        return self.registry.get_sample_value(name, {"app": self.app, **labels})
