"""The micro-batch loop: plan, read, drop late, group, call, emit, commit, advance.

One ``Executor`` runs one app's stateful operator. ``run_batch`` is one
trigger; ``run`` repeats it as the trigger says. See DESIGN.md "The
micro-batch loop" and SEMANTICS.md B.2-B.4 for the contract.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

import tenacity

from statefulstream.checkpoint.plan_log import BatchPlan, PlanLog, recover
from statefulstream.errors import SinkError, SinkUnavailableError, StateError, UserFunctionError
from statefulstream.observe.progress import PHASES, BatchFailure, BatchProgress, FailureListener, ProgressListener
from statefulstream.operator import StatefulOperator
from statefulstream.options import GroupStateTimeout
from statefulstream.pipeline import Step, apply_each, event_times_ms, group_by_key, run_steps, sorted_keys
from statefulstream.records import DeadLetter, StateChange
from statefulstream.sink import Sink, SinkContext
from statefulstream.sources.base import Source, cap_offsets
from statefulstream.state.group_state import GroupState
from statefulstream.state.store import NO_TIMEOUT_MS, CommitRecord, StateRow, StateStore
from statefulstream.timeutil import Clock
from statefulstream.triggers import Trigger, TriggerKind

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.25
"""How long the default trigger waits after a batch that found no data."""


@dataclasses.dataclass(frozen=True)
class SinkRetry:
    """How long a failing sink holds the stream before the app stops.

    Attributes:
        max_seconds: total time to keep retrying a batch's write.
        initial_backoff_s / max_backoff_s: exponential backoff with jitter;
            a sink's ``retry_after`` is honoured when longer.
    """

    max_seconds: float = 300.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0


DEFAULT_SINK_RETRY = SinkRetry()


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
        last_active_s: ``time.monotonic()`` of the last plan or commit (the
            loop's heartbeat, for ``/health``), ``None`` before the first.
    """

    def __init__(self, *, app_name: str, source: Source, operator: StatefulOperator, steps: Sequence[Step],
                 store: StateStore, plan_log: PlanLog, dead_letters: Sink, clock: Clock, where: str,
                 max_records_per_trigger: int | None = None, keep_batches: int = 100,
                 sink_retry: SinkRetry = DEFAULT_SINK_RETRY, listeners: Sequence[ProgressListener] = (),
                 failure_listeners: Sequence[FailureListener] = (),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.app_name = app_name
        self.source = source
        self.op = operator
        self.steps = list(steps)
        self.store = store
        self.plan_log = plan_log
        self.dead_letter_sink = dead_letters
        self.clock = clock
        self.where = where
        self.max_records = max_records_per_trigger
        self.keep_batches = keep_batches
        self.sink_retry = sink_retry
        self.listeners = list(listeners)
        self.failure_listeners = list(failure_listeners)
        self._sleep = sleep
        self._sinks = [*operator.sinks, *operator.state_sinks, dead_letters]
        # Sinks are named in figures by their name; the dead-letter sink by its role.
        self._sink_names = {id(s): getattr(s, "name", type(s).__name__) for s in self._sinks[:-1]}
        self._sink_names[id(dead_letters)] = "dead_letters"
        self._batch_dead: list[DeadLetter] = []
        self._sink_retries: Counter[str] = Counter()
        self._sink_rows: Counter[str] = Counter()
        self._writing: str | None = None
        self.last_active_s: float | None = None
        self.started = False
        # Resume point, set by start() and moved by every committed batch.
        self.next_batch_id = 0
        self.offsets: dict[str, int] = {}
        self.watermark_ms = 0
        self.late_watermark_ms = 0
        self._last_batch_watermark_ms: int | None = None
        self._last_batch_ts = 0
        self.last_progress: BatchProgress | None = None
        self._latest: dict[str, int] = {}

    # --- lifecycle

    def start(self) -> None:
        """Open everything, recover from the checkpoint, and replay a planned batch if one is pending."""
        last = self.store.open(self.op.signature())
        recovery = recover(last, self.plan_log.latest(), where=self.where)
        self.next_batch_id = recovery.next_batch_id
        self.offsets = dict(recovery.offsets)
        self.watermark_ms, self.late_watermark_ms = recovery.watermark_ms, recovery.late_watermark_ms
        if last is not None:
            self._last_batch_watermark_ms, self._last_batch_ts = last.watermark_ms, last.batch_ts_ms
        self.source.open()
        for sink in self._sinks:
            name = self._sink_names[id(sink)]
            context = SinkContext(app_name=self.app_name, dead_letter=self._batch_dead.append,
                                  on_retry=partial(self._count_retry, name))
            self._hold(name, "opening", partial(sink.open, context))
        self.started = True
        if recovery.replay is not None:
            logger.info("app %r: replaying batch %d planned before a stop", self.app_name, recovery.replay.batch_id)
            self.run_batch(recovery.replay, replayed=True)

    def close(self) -> None:
        """Close source, sinks and store; idempotent."""
        for closer in (self.source.close, *(s.close for s in self._sinks), self.store.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - keep closing the rest
                logger.exception("app %r: error while closing", self.app_name)
        self.started = False

    @property
    def sink_names(self) -> list[str]:
        """Names of the sinks in figures (``BatchProgress.sink_rows``), without repeats."""
        return list(dict.fromkeys(self._sink_names.values()))

    def _count_retry(self, sink: str) -> None:
        self._sink_retries[sink] += 1

    # --- the trigger loop

    def run(self, trigger: Trigger, stop: threading.Event) -> None:
        """Run batches as ``trigger`` says until it is done or ``stop`` is set."""
        if trigger.kind is TriggerKind.ONCE:
            plan = self.plan()
            if plan.has_data:
                self.run_batch(plan)
            return
        if trigger.kind is TriggerKind.AVAILABLE_NOW:
            _, target = self.source.available(self.offsets)
            while not stop.is_set():
                plan = self.plan(until=target)
                if not plan.has_data:
                    if self.needs_no_data_batch():
                        self.run_batch(plan)
                    return
                self.run_batch(plan)
            return
        while not stop.is_set():
            began = time.monotonic()
            plan = self.plan()
            ran_data = plan.has_data
            if ran_data or self.needs_no_data_batch():
                self.run_batch(plan)
            if trigger.kind is TriggerKind.PROCESSING_TIME:
                stop.wait(max(0.0, trigger.interval_ms / 1000 - (time.monotonic() - began)))
            elif not ran_data:
                stop.wait(IDLE_WAIT_S)

    def needs_no_data_batch(self) -> bool:
        """Whether a batch without data is due (SEMANTICS.md B.3)."""
        if self.op.timeout is GroupStateTimeout.PROCESSING_TIME:
            return True
        if self.op.timeout is GroupStateTimeout.EVENT_TIME:
            return self._last_batch_watermark_ms is not None and self.watermark_ms > self._last_batch_watermark_ms
        return False

    # --- one batch

    def plan(self, *, until: dict[str, int] | None = None, batch_ts_ms: int | None = None,
             watermark_ms: int | None = None) -> BatchPlan:
        """Step 1: the next batch's range, timestamp and watermarks (not yet logged)."""
        self.last_active_s = time.monotonic()
        start, latest = self.source.available(self.offsets)
        self._latest = latest
        if until is not None:
            latest = {p: min(pos, until.get(p, start.get(p, 0))) for p, pos in latest.items()}
        end = cap_offsets(start, latest, self.max_records)
        ts = self.clock() if batch_ts_ms is None else batch_ts_ms
        ts = max(ts, self._last_batch_ts)  # processing time never goes backwards
        wm = self.watermark_ms if watermark_ms is None else watermark_ms
        return BatchPlan(self.next_batch_id, start, end, ts, wm, self.late_watermark_ms)

    def run_batch(self, plan: BatchPlan, *, replayed: bool = False) -> BatchProgress:
        """Run one planned batch, steps 1-8 of DESIGN.md:

        1. log the plan (before anything is read);
        2. read and decode the range; stateless steps; key and event time;
        3. drop late records (event-time timeout; ``event time <= late watermark``);
        4. group by key, arrival order kept, keys sorted;
        5. call the handler per key with data, then per expired timeout;
        6. emit outputs, state changes and dead letters to the sinks;
        7. commit state, timers, offsets and the batch record atomically;
        8. advance the watermark (effective from the next batch).

        Any failure before 7 aborts the store's staged changes; the plan stays
        logged, so a restart replays the batch exactly.
        """
        progress = BatchProgress(app=self.app_name, batch_id=plan.batch_id, batch_ts_ms=plan.batch_ts_ms,
                                 replayed=replayed, watermark_ms=plan.watermark_ms,
                                 start_offsets=plan.start, end_offsets=plan.end)
        durations = progress.durations_s
        self._batch_dead.clear()
        self._sink_retries.clear()
        self._sink_rows.clear()
        t = time.perf_counter()
        self.plan_log.write(plan)
        t = _lap(durations, "plan", t)
        try:
            result = self.source.read(plan.start, plan.end)
            t = _lap(durations, "read", t)
            dead = self._batch_dead
            dead.extend(result.dead_letters)
            progress.records_read = len(result.records) + len(result.dead_letters)
            groups, max_et = self._decode(plan, result.records, progress)
            t = _lap(durations, "decode", t)
            outputs, changes = self._call(plan, groups, progress)
            t = _lap(durations, "handler", t)
            self._emit(plan.batch_id, outputs, changes)
            progress.rows_output = len(outputs)
            t = _lap(durations, "sink", t)
            next_wm = self._advance(plan, max_et)
            self.store.commit(CommitRecord(plan.batch_id, plan.end, plan.batch_ts_ms, plan.watermark_ms, next_wm))
        except BaseException as exc:
            self.store.abort()
            if isinstance(exc, Exception):
                self._report_failure(plan.batch_id, next(p for p in PHASES if p not in durations), exc)
            raise
        self.source.committed(plan.end)
        self.plan_log.purge(self.keep_batches)
        _lap(durations, "commit", t)
        self.next_batch_id = plan.batch_id + 1
        self.offsets = dict(plan.end)
        self.late_watermark_ms, self.watermark_ms = plan.watermark_ms, next_wm
        self._last_batch_watermark_ms, self._last_batch_ts = plan.watermark_ms, plan.batch_ts_ms
        progress.next_watermark_ms, progress.max_event_time_ms = next_wm, max_et
        progress.records_dead_lettered = dict(Counter(dl.error for dl in self._batch_dead))
        progress.sink_retries = sum(self._sink_retries.values())
        progress.sink_retries_by_sink = dict(self._sink_retries)
        progress.sink_rows = dict(self._sink_rows)
        progress.state_keys, progress.state_bytes = self.store.approx_size()
        if self._latest:
            progress.latest_offsets = dict(self._latest)
            progress.pending_records = sum(max(0, pos - plan.end.get(p, 0)) for p, pos in self._latest.items())
        self.last_progress = progress
        self.last_active_s = time.monotonic()
        for listener in self.listeners:
            listener(progress)
        return progress

    def _report_failure(self, batch_id: int, phase: str, exc: Exception) -> None:
        failure = BatchFailure(self.app_name, batch_id, phase, exc, self._writing if phase == "sink" else None)
        self._writing = None
        for listener in self.failure_listeners:
            try:
                listener(failure)
            except Exception:  # noqa: BLE001 - the batch's own error must propagate, not this one
                logger.exception("app %r: failure listener %r raised", self.app_name, listener)

    def _decode(self, plan: BatchPlan, records: list[Any],
                progress: BatchProgress) -> tuple[dict[Hashable, list[Any]], int | None]:
        """Steps 2-4 after reading: stateless steps, key/event time, late rows, grouping."""
        dead, batch_id, op = self._batch_dead, plan.batch_id, self.op
        if self.steps:
            before, dead_before = len(records), len(dead)
            records = run_steps(self.steps, records, batch_id=batch_id, dead=dead)
            progress.records_filtered = max(0, before - len(records) - (len(dead) - dead_before))
        max_et: int | None = None
        if op.event_time is not None:
            records, times = event_times_ms(op.event_time, records, batch_id=batch_id, dead=dead)
            if times:
                max_et = max(times)
                late_wm = plan.late_watermark_ms
                if min(times) <= late_wm:
                    late = sum(1 for et in times if et <= late_wm)
                    if op.timeout is GroupStateTimeout.EVENT_TIME:
                        records = [r for r, et in zip(records, times, strict=True) if et > late_wm]
                        progress.records_late = late
                    else:
                        progress.records_late_kept = late
        records, keys, _ = apply_each(op.key, records, error="key", what="group key missing",
                                      batch_id=batch_id, dead=dead)
        groups = group_by_key(keys, records, batch_id=batch_id, dead=dead)
        progress.records_processed = sum(map(len, groups.values()))
        return groups, max_et

    def _call(self, plan: BatchPlan, groups: dict[Hashable, list[Any]],
              progress: BatchProgress) -> tuple[list[Any], list[StateChange]]:
        """Step 5: the handler per key with data (and initial-state keys in batch 0), then per timeout."""
        op, store = self.op, self.store
        outputs: list[Any] = []
        changes: list[StateChange] = []
        initial = op.initial_state if plan.batch_id == 0 and op.initial_state else None
        if initial:
            for key, value in initial.items():
                store.put(key, StateRow(value, NO_TIMEOUT_MS))
                changes.append(StateChange(key, value, False, NO_TIMEOUT_MS))
            keys = sorted_keys(set(groups) | set(initial))
        else:
            keys = sorted_keys(groups)
        # Validate the batch-wide GroupState arguments once (the same checks as GroupState()).
        GroupState(None, False, timeout=op.timeout, batch_processing_time_ms=plan.batch_ts_ms,
                   watermark_ms=plan.watermark_ms, watermark_present=op.has_watermark)
        call = self._caller(plan, outputs, changes)
        empty: list[Any] = []
        get = groups.get
        for key, row in zip(keys, store.get_many(keys), strict=True):
            call(key, get(key, empty), row, False)
        progress.groups_called = len(keys)
        if op.call_all_keys:  # complete-mode aggregation: every stored key each batch, O(state)
            called = set(keys)
            for key, row in list(store.items()):
                if key not in called:
                    call(key, empty, row, False)
        if op.timeout is not GroupStateTimeout.NO_TIMEOUT:
            threshold = plan.batch_ts_ms if op.timeout is GroupStateTimeout.PROCESSING_TIME else plan.watermark_ms
            fired = 0
            for key, row in list(store.expired(threshold)):
                if key in groups or (initial and key in initial):
                    continue
                call(key, empty, row, True)
                fired += 1
            progress.timeouts_fired = fired
        progress.state_rows_updated = sum(1 for c in changes if not c.removed)
        progress.state_rows_removed = len(changes) - progress.state_rows_updated
        return outputs, changes

    def _caller(self, plan: BatchPlan, outputs: list[Any],
                changes: list[StateChange]) -> Callable[[Hashable, list[Any], StateRow | None, bool], None]:
        """Return the per-key call: build a GroupState, call the handler, write back (A.3).

        Everything constant for the batch is bound once, since this runs once per key.
        """
        op, store = self.op, self.store
        func, flat, kind = op.func, op.flat, op.timeout
        batch_ts, batch_id, present = plan.batch_ts_ms, plan.batch_id, op.has_watermark
        watermark = plan.watermark_ms if present else -1
        new_state = GroupState._for_call  # noqa: SLF001 - validated once per batch above
        put, delete, extend, append = store.put, store.delete, outputs.extend, outputs.append
        track = changes.append

        def call(key: Hashable, values: list[Any], row: StateRow | None, timed_out: bool) -> None:
            stored_ts = row.timeout_ms if row is not None else NO_TIMEOUT_MS
            state: GroupState[Any] = new_state(row.value if row is not None else None, kind, batch_ts, watermark,
                                               present, timed_out)
            try:
                result = func(key, values, state)
                if flat:
                    if result is not None:
                        if isinstance(result, (dict, str, bytes)):
                            raise TypeError(f"flat_map_groups_with_state handler must return an iterable of rows "
                                            f"(or yield them), not a {type(result).__name__}")
                        extend(result)  # consuming a generator may still change state (A.3)
                elif result is None:
                    raise TypeError("map_groups_with_state handler must return exactly one row; got None "
                                    "(use flat_map_groups_with_state to emit zero rows)")
                else:
                    append(result)
            except Exception as exc:
                msg = (f"handler {op.name!r} raised {type(exc).__name__}: {exc} (key {key!r}, batch "
                       f"{batch_id}{', timeout call' if timed_out else ''}); the batch is not committed and "
                       f"is replayed on the next start")
                raise UserFunctionError(msg, key=key, batch_id=batch_id) from exc
            action, new_value, new_ts = state.outcome(stored_ts)
            try:
                if action == "put":
                    put(key, StateRow(new_value, new_ts))
                    track(StateChange(key, new_value, new_value is None, new_ts))
                elif action == "delete":
                    delete(key)
                    track(StateChange(key, None, True, NO_TIMEOUT_MS))
            except StateError as exc:  # e.g. a value the codec cannot store
                msg = f"cannot store the state of key {key!r} in batch {batch_id}: {exc}"
                raise UserFunctionError(msg, key=key, batch_id=batch_id) from exc

        return call

    def _emit(self, batch_id: int, outputs: list[Any], changes: list[StateChange]) -> None:
        """Step 6: outputs, state changes, then dead letters (which sinks may have added to)."""
        for sink in self.op.sinks:
            if outputs:
                self._write(sink, batch_id, outputs)
        for sink in self.op.state_sinks:
            if changes:
                self._write(sink, batch_id, changes)
        if self._batch_dead:
            rows = [dl.to_row(batch_id) for dl in self._batch_dead]
            for dl in self._batch_dead[:5]:
                logger.warning("app %r batch %d: dead letter (%s) %s at %s", self.app_name, batch_id, dl.error,
                               dl.reason, dict(dl.position))
            if len(rows) > 5:
                logger.warning("app %r batch %d: %d more dead letters", self.app_name, batch_id, len(rows) - 5)
            self._write(self.dead_letter_sink, batch_id, rows)

    def _write(self, sink: Sink, batch_id: int, rows: list[Any]) -> None:
        """Write one batch to a sink with backpressure; never drop rows."""
        name = self._sink_names[id(sink)]
        self._writing = name
        self._hold(name, f"writing batch {batch_id}", partial(sink.write, batch_id, rows))
        self._writing = None
        self._sink_rows[name] += len(rows)

    def _hold(self, name: str, what: str, call: Callable[[], None]) -> None:
        """Run ``call``, retrying ``SinkUnavailableError`` per ``sink_retry`` (the stream waits meanwhile).

        Raises:
            SinkError: the sink stayed unavailable for ``sink_retry.max_seconds``.
        """
        policy = self.sink_retry
        backoff = tenacity.wait_exponential_jitter(
            multiplier=policy.initial_backoff_s, max=policy.max_backoff_s, jitter=policy.initial_backoff_s)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None) or 0.0
            return max(float(after), backoff(state))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self._sink_retries[name] += 1
            exc = state.outcome.exception() if state.outcome else None
            logger.warning("app %r: sink %r unavailable while %s (%s); holding the stream and retrying",
                           self.app_name, name, what, exc)

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(SinkUnavailableError), wait=wait,
                                     stop=tenacity.stop_after_delay(policy.max_seconds), sleep=self._sleep,
                                     before_sleep=before_sleep, reraise=True)
        try:
            retrying(call)
        except SinkUnavailableError as exc:
            msg = (f"sink {name!r} stayed unavailable for {policy.max_seconds:g} s while {what}: {exc}. Nothing "
                   f"was committed and nothing was dropped; fix the sink and restart, and the batch is written again")
            raise SinkError(msg) from exc

    def _advance(self, plan: BatchPlan, max_et: int | None) -> int:
        """Step 8: next watermark = max(current, max event time - delay); never backwards."""
        delay = self.op.watermark_delay_ms
        if delay is None or max_et is None:
            return plan.watermark_ms
        return max(plan.watermark_ms, max_et - delay)


def _lap(durations: dict[str, float], phase: str, since: float) -> float:
    now = time.perf_counter()
    durations[phase] = durations.get(phase, 0.0) + (now - since)
    return now
