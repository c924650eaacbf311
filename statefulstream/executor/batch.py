"""The micro-batch loop: plan, read, transform, drop late, group, call, emit, commit, report.

One ``Executor`` runs one app's stateful operator. ``run_batch`` is one
trigger, one method per step; the trigger loop (``trigger_loop``), sink I/O
with backpressure (``sink_writer``), the per-key calls (``keyed_calls``) and
start-up/recovery (``startup``) are their own modules. See DESIGN.md "The
micro-batch loop" and SEMANTICS.md B.2-B.4 for the contract.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from itertools import compress
from typing import Any

from statefulstream.checkpoint.plan_log import BatchPlan, PlanLog
from statefulstream.executor.keyed_calls import call_keys
from statefulstream.executor.sink_writer import DEFAULT_SINK_RETRY, SinkWriter
from statefulstream.executor.startup import start
from statefulstream.executor.trigger_loop import run_trigger
from statefulstream.lineage import Lineage
from statefulstream.observe.health import Heartbeat
from statefulstream.observe.progress import PHASES, BatchFailure, BatchProgress, FailureListener, ProgressListener
from statefulstream.operator import StatefulOperator
from statefulstream.pipeline import Step, apply_each, event_times_ms, group_by_key, run_steps
from statefulstream.processor.runner import run_processor
from statefulstream.records import StateChange
from statefulstream.retry import RetryPolicy
from statefulstream.sink import Sink
from statefulstream.sources.base import Source, cap_offsets
from statefulstream.state.store import CommitRecord, StateStore
from statefulstream.timeutil import Clock
from statefulstream.triggers import Trigger

logger = logging.getLogger(__name__)


class Executor:
    """Runs batches of one stateful operator over one source.

    Args:
        app_name: for logs and sink contexts.
        source: where records come from.
        operator: the validated stateful operator.
        steps: stateless steps applied before grouping.
        store: the state store (memory or RocksDB).
        plan_log: the offsets log.
        dead_letters: where dead letters go (a sink of ``DeadLetter.to_row`` dicts).
        clock: processing-time clock (epoch ms); read only when planning.
        where: the checkpoint location, for messages.
        max_records_per_trigger: bound of a batch, or ``None``.
        keep_batches: plans kept in the offsets log.
        sink_retry: backpressure policy for failing sinks.
        listeners: called with each batch's ``BatchProgress``.
        failure_listeners: called with a ``BatchFailure`` when a batch raises.
        sleep: how to wait (tests pass a no-op).

    Attributes:
        heartbeat: the loop's sign of life (moved by every plan and commit), for ``/health``.
        batch_lock: held while a batch runs (plan logged to commit done).
        next_batch_id / offsets / watermark_ms / late_watermark_ms: the resume
            point, set by ``start`` and moved by every committed batch.
    """

    def __init__(self, *, app_name: str, source: Source, operator: StatefulOperator, steps: Sequence[Step],
                 store: StateStore, plan_log: PlanLog, dead_letters: Sink, clock: Clock, where: str,
                 max_records_per_trigger: int | None = None, keep_batches: int = 100,
                 sink_retry: RetryPolicy = DEFAULT_SINK_RETRY, listeners: Sequence[ProgressListener] = (),
                 failure_listeners: Sequence[FailureListener] = (),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.app_name = app_name
        self.source = source
        self.op = operator
        self.steps = list(steps)
        self.store = store
        self.plan_log = plan_log
        self.clock = clock
        self.where = where
        self.max_records = max_records_per_trigger
        self.keep_batches = keep_batches
        self.listeners = list(listeners)
        self.failure_listeners = list(failure_listeners)
        self.sink_writer = SinkWriter(app_name=app_name, sinks=operator.sinks, state_sinks=operator.state_sinks,
                                      dead_letters=dead_letters, retry=sink_retry, sleep=sleep)
        self.heartbeat = Heartbeat()
        self.started = False
        self.next_batch_id = 0
        self.offsets: dict[str, int] = {}
        self.watermark_ms = 0
        self.late_watermark_ms = 0
        self.last_batch_watermark_ms: int | None = None
        self.last_batch_ts = 0
        self.last_progress: BatchProgress | None = None
        self._latest: dict[str, int] = {}
        self._data_loss_seen = 0
        # Held from a batch's plan to its commit: a snapshot waits for the batch whose outputs it saw.
        self.batch_lock = threading.RLock()

    # --- lifecycle

    def start(self) -> None:
        """Open everything, recover from the checkpoint, and replay a planned batch if one is pending."""
        start(self)

    def run(self, trigger: Trigger, stop: threading.Event) -> None:
        """Run batches as ``trigger`` says until it is done or ``stop`` is set."""
        run_trigger(self, trigger, stop)

    def close(self) -> None:
        """Close source, sinks and store; idempotent."""
        for closer in (self.source.close, *self.sink_writer.close(), self.store.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - keep closing the rest
                logger.exception("app %r: error while closing", self.app_name)
        self.started = False

    @property
    def sink_names(self) -> list[str]:
        """Names of the sinks in figures (``BatchProgress.sink_rows``), without repeats."""
        return self.sink_writer.names

    # --- one batch

    def plan(self, *, until: dict[str, int] | None = None, batch_ts_ms: int | None = None,
             watermark_ms: int | None = None) -> BatchPlan:
        """Step 1: the next batch's range, timestamp and watermarks (not yet logged)."""
        self.heartbeat.beat()
        start, latest = self.source.available(self.offsets)
        self._latest = latest
        if until is not None:
            latest = {p: min(pos, until.get(p, start.get(p, 0))) for p, pos in latest.items()}
        end = cap_offsets(start, latest, self.max_records)
        ts = self.clock() if batch_ts_ms is None else batch_ts_ms
        ts = max(ts, self.last_batch_ts)  # processing time never goes backwards
        wm = self.watermark_ms if watermark_ms is None else watermark_ms
        return BatchPlan(self.next_batch_id, start, end, ts, wm, self.late_watermark_ms,
                         self.source.position_index(start, end))

    def run_batch(self, plan: BatchPlan, *, replayed: bool = False) -> BatchProgress:
        """Run one planned batch, steps 1-8 of DESIGN.md, holding ``batch_lock``.

        Any failure before the commit aborts the store's staged changes; the
        plan stays logged, so a restart replays the batch exactly.
        """
        with self.batch_lock:
            return self._run_batch(plan, replayed)

    def _run_batch(self, plan: BatchPlan, replayed: bool) -> BatchProgress:
        progress = BatchProgress(app=self.app_name, batch_id=plan.batch_id, batch_ts_ms=plan.batch_ts_ms,
                                 replayed=replayed, watermark_ms=plan.watermark_ms,
                                 start_offsets=plan.start, end_offsets=plan.end)
        watch = _Stopwatch(progress.durations_s)
        self.sink_writer.new_batch()
        self.plan_log.write(plan)
        watch.lap("plan")
        try:
            with gc_paused():
                records, lineage = self._read(plan, progress)
                watch.lap("read")
                records = self._transform(records, lineage, progress)
                records, max_et = self._drop_late(records, plan, lineage, progress)
                groups = self._group(records, lineage, progress)
                watch.lap("decode")
                call = call_keys if self.op.processor is None else run_processor
                outputs, changes = call(self.op, self.store, plan, groups, progress)
                # Freed now, all together and in the order they were allocated (the lineage holds the
                # source's list): freed key by key they would scatter the allocator's free lists and the next
                # batch's records would land all over memory; freed after the collector is back on, they
                # would be traversed by it once more first.
                del records, lineage, groups
                watch.lap("handler")
                self._emit(plan, outputs, changes, progress)
                watch.lap("sink")
                next_wm = self._commit(plan, max_et)
        except BaseException as exc:
            self._abort(plan, progress, exc)
            raise
        self._advance(plan, next_wm)
        watch.lap("commit")
        self._report(plan, progress, next_wm, max_et)
        return progress

    def _read(self, plan: BatchPlan, progress: BatchProgress) -> tuple[list[Any], Lineage]:
        """Step 2: read and decode the planned range; undecodable records become dead letters.

        Returns the records and the batch's ``Lineage``, which positions a
        record that fails later at the place the source read it.
        """
        result = self.source.read(plan.start, plan.end)
        self.sink_writer.dead.extend(result.dead_letters)
        progress.records_read = len(result.records) + len(result.dead_letters)
        return result.records, Lineage(result.position, batch_id=plan.batch_id)

    def _transform(self, records: list[Any], lineage: Lineage, progress: BatchProgress) -> list[Any]:
        """The stateless steps (map, filter, flat_map), in order; a record a step raises on is dead-lettered."""
        if not self.steps:
            return records
        dead = self.sink_writer.dead
        before, dead_before = len(records), len(dead)
        records = run_steps(self.steps, records, lineage=lineage, dead=dead)
        progress.records_filtered = max(0, before - len(records) - (len(dead) - dead_before))
        return records

    def _drop_late(self, records: list[Any], plan: BatchPlan, lineage: Lineage,
                   progress: BatchProgress) -> tuple[list[Any], int | None]:
        """Step 3: event times; with an event-time timeout (or a processor with a watermark), drop records
        at or below the late watermark.

        A record without a usable event time (or, with ``max_event_time_ahead``,
        one too far ahead of the batch's processing time) is dead-lettered.

        Returns:
            ``(records kept, max event time of the batch or None)``.
        """
        op = self.op
        if op.event_time is None:
            return records, None
        records, times, earliest, latest = event_times_ms(
            op.event_time, records, lineage=lineage, dead=self.sink_writer.dead, batch_ts_ms=plan.batch_ts_ms,
            max_ahead_ms=op.max_event_time_ahead_ms)
        if earliest is None:
            return records, None
        late_wm = plan.late_watermark_ms
        if earliest <= late_wm:
            late = sum(1 for et in times if et <= late_wm)
            if op.drops_late_rows:
                on_time = [et > late_wm for et in times]
                lineage.mask(on_time)
                records = list(compress(records, on_time))
                progress.records_late = late
            else:
                progress.records_late_kept = late
        return records, latest

    def _group(self, records: list[Any], lineage: Lineage, progress: BatchProgress) -> dict[Hashable, list[Any]]:
        """Step 4: group by key, arrival order kept (a record without a key is dead-lettered)."""
        dead = self.sink_writer.dead
        records, keys = apply_each(self.op.key, records, error="key", what="group key missing", lineage=lineage,
                                   dead=dead)
        groups = group_by_key(keys, records, lineage=lineage, dead=dead)
        progress.records_processed = sum(map(len, groups.values()))
        return groups

    def _emit(self, plan: BatchPlan, outputs: list[Any], changes: list[StateChange],
              progress: BatchProgress) -> None:
        """Step 6: outputs, state changes and dead letters to the sinks, with backpressure."""
        self.sink_writer.emit(plan.batch_id, outputs, changes)
        progress.rows_output = len(outputs)

    def _commit(self, plan: BatchPlan, max_et: int | None) -> int:
        """Step 7: state, timers, offsets and the batch record in one atomic write; returns the next watermark."""
        next_wm = self._next_watermark(plan, max_et)
        self.store.commit(CommitRecord(plan.batch_id, plan.end, plan.batch_ts_ms, plan.watermark_ms, next_wm))
        return next_wm

    def _abort(self, plan: BatchPlan, progress: BatchProgress, exc: BaseException) -> None:
        """Drop the batch's staged changes and tell the failure listeners where it failed."""
        self.store.abort()
        if not isinstance(exc, Exception):
            return
        phase = next(p for p in PHASES if p not in progress.durations_s)
        writer = self.sink_writer
        failure = BatchFailure(self.app_name, plan.batch_id, phase, exc, writer.writing if phase == "sink" else None)
        writer.writing = None
        for listener in self.failure_listeners:
            try:
                listener(failure)
            except Exception:  # noqa: BLE001 - the batch's own error must propagate, not this one
                logger.exception("app %r: failure listener %r raised", self.app_name, listener)

    def _next_watermark(self, plan: BatchPlan, max_et: int | None) -> int:
        """Max(current, max event time - delay); never backwards (SEMANTICS.md B.4).

        "Current" is the executor's own watermark as well as the plan's: a
        scale-out partition runs with its process's (lower) watermark but keeps its own.
        """
        current = max(plan.watermark_ms, self.watermark_ms)
        delay = self.op.watermark_delay_ms
        if delay is None or max_et is None:
            return current
        return max(current, max_et - delay)

    def _advance(self, plan: BatchPlan, next_wm: int) -> None:
        """Step 8: move the resume point past the committed batch; the new watermark applies from the next."""
        self.source.committed(plan.end)
        self.plan_log.purge(self.keep_batches)
        self.next_batch_id = plan.batch_id + 1
        self.offsets = dict(plan.end)
        self.late_watermark_ms, self.watermark_ms = plan.watermark_ms, next_wm
        self.last_batch_watermark_ms, self.last_batch_ts = plan.watermark_ms, plan.batch_ts_ms

    def _report(self, plan: BatchPlan, progress: BatchProgress, next_wm: int, max_et: int | None) -> None:
        """Fill in the batch's figures and hand them to the listeners (metrics, progress log, bar)."""
        writer = self.sink_writer
        progress.next_watermark_ms, progress.max_event_time_ms = next_wm, max_et
        progress.records_dead_lettered = dict(Counter(dl.error for dl in writer.dead))
        progress.data_loss_events = self.source.data_loss_events - self._data_loss_seen
        self._data_loss_seen = self.source.data_loss_events
        progress.sink_retries = sum(writer.retries.values())
        progress.sink_retries_by_sink = dict(writer.retries)
        progress.sink_rows = dict(writer.rows)
        progress.state_keys, progress.state_bytes = self.store.num_rows(), self.store.disk_bytes()
        progress.timers_pending = self.store.num_timers()
        if self._latest:
            progress.latest_offsets = dict(self._latest)
            progress.pending_records = sum(max(0, pos - plan.end.get(p, 0)) for p, pos in self._latest.items())
        self.last_progress = progress
        self.heartbeat.beat(committed_batch_id=plan.batch_id)
        for listener in self.listeners:
            listener(progress)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch runs (read to commit).

    A batch keeps all its records alive until their handler calls, and its
    write-back and commit allocate per key, so the collector would traverse
    them again and again (every few hundred allocations) to find nothing:
    they are freed by reference counting. Cycles made meanwhile are collected
    after the batch. Left alone when the collector is already off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Stopwatch:
    """Adds the time since the last lap to a phase of ``BatchProgress.durations_s``."""

    def __init__(self, durations: dict[str, float]) -> None:
        self.durations = durations
        self.since = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.durations[phase] = self.durations.get(phase, 0.0) + (now - self.since)
        self.since = now
