"""Step 5 of a batch for a stateful processor: init, initial state, input rows, timers, TTL cleanup, close.

The processor counterpart of ``executor.keyed_calls`` (SEMANTICS.md D, Spark's
``TransformWithStateExec.processDataWithPartition``):

1. ``init(handle)``;
2. batch 0 with an initial state: ``handle_initial_state`` per initial key;
3. ``handle_input_rows`` per key with rows, keys in ``sorted_keys`` order;
4. after all input: the timers due (``ts <= threshold``: the batch timestamp
   in processing time, the eviction watermark in event time), as they stand
   after step 3, by ``(ts, key)``; each fires once and is deleted after its
   output is consumed. A timer deleted by an earlier handler of this step
   does not fire; one registered in this step fires in a later batch;
5. values past their TTL are deleted (``remove_expired``);
6. ``close()``.

Every write is staged in the store's ``kv`` namespace, so the batch commits
(or aborts) as one with its offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from functools import partial
from typing import Any

from statefulstream.checkpoint.plan_log import BatchPlan
from statefulstream.errors import StateError, UserFunctionError
from statefulstream.observe.progress import BatchProgress
from statefulstream.operator import StatefulOperator
from statefulstream.pipeline import sorted_keys
from statefulstream.processor import layout
from statefulstream.processor.api import ExpiredTimerInfo, StatefulProcessor, TimeMode, TimerValues
from statefulstream.processor.handle import Phase, StatefulProcessorHandle
from statefulstream.processor.timers import Timers
from statefulstream.processor.variables import ProcessorStats, Scope
from statefulstream.records import StateChange
from statefulstream.state.codec import StateEncodeError
from statefulstream.state.kv import StagedKV
from statefulstream.state.store import StateStore


def run_processor(op: StatefulOperator, store: StateStore, plan: BatchPlan, groups: dict[Hashable, list[Any]],
                  progress: BatchProgress, *, batch_query: bool = False) -> tuple[list[Any], list[StateChange]]:
    """Run one batch of ``op.processor``; return ``(outputs, [])`` (processors have no state sink rows).

    ``batch_query`` runs it for a bounded (non-streaming) query: no timer
    phase and a watermark of -1; the caller discards the store afterwards
    (Spark aborts the store of a batch ``transformWithState``).

    Raises:
        UserFunctionError: a processor method raised (key and batch attached); nothing is committed.
        StateError: the store has no ``kv`` namespace.
    """
    kv = store.kv()
    if kv is None:
        raise StateError(f"state store {type(store).__name__} cannot hold stateful processor state (no kv namespace)")
    processor: StatefulProcessor = op.processor
    time_mode: TimeMode = op.time_mode
    stats = ProcessorStats()
    scope = Scope(kv, plan.batch_ts_ms, stats)
    timers = Timers(kv, stats)
    handle = StatefulProcessorHandle(scope, timers, time_mode, plan.batch_id)
    values = TimerValues(plan.batch_ts_ms, plan.watermark_ms if op.has_watermark and not batch_query else -1)
    outputs: list[Any] = []
    call = _caller(op, plan, scope, outputs)

    call(None, "init", partial(processor.init, handle))
    initial = op.initial_state if plan.batch_id == 0 and op.initial_state else None
    if initial:
        handle.phase = Phase.INITIAL_STATE
        for key in sorted_keys(initial):
            call(key, "handle_initial_state", partial(processor.handle_initial_state, key, initial[key], values))
    handle.phase = Phase.DATA
    keys = sorted_keys(groups)
    for key in keys:
        call(key, "handle_input_rows", partial(processor.handle_input_rows, key, groups[key], values))
    progress.groups_called = len(keys)
    if time_mode is not TimeMode.NONE and not batch_query:
        handle.phase = Phase.TIMER
        threshold = plan.batch_ts_ms if time_mode is TimeMode.PROCESSING_TIME else plan.watermark_ms
        decode_key = scope.codec.decode_key
        for ts, key_bytes in timers.due(threshold):
            if not timers.exists(key_bytes, ts):  # deleted by an earlier timer handler of this batch
                continue
            key, info = decode_key(key_bytes), ExpiredTimerInfo(ts)
            call(key, "handle_expired_timer", partial(processor.handle_expired_timer, key, values, info))
            timers.delete(key_bytes, ts)
            stats.timers_expired += 1
        progress.timeouts_fired = stats.timers_expired
    scope.set_key(None, None)
    stats.values_removed_by_ttl += remove_expired(kv, plan.batch_ts_ms)
    handle.phase = Phase.CLOSED
    call(None, "close", processor.close)
    progress.processor = stats.as_dict()
    return outputs, []


def _caller(op: StatefulOperator, plan: BatchPlan, scope: Scope,
            outputs: list[Any]) -> Callable[[Hashable, str, Callable[[], Iterable[Any] | None]], None]:
    """Return ``call(key, method, thunk)``: set the current key, run, collect output, wrap errors."""
    encode_key, extend = scope.codec.encode_key, outputs.extend
    batch_id = plan.batch_id

    def call(key: Hashable, method: str, thunk: Callable[[], Iterable[Any] | None]) -> None:
        in_key = method not in ("init", "close")
        try:
            scope.set_key(key, encode_key(key) if in_key else None)
        except StateEncodeError as exc:
            msg = f"processor {op.name!r}: cannot store state of key {key!r} in batch {batch_id}: {exc}"
            raise UserFunctionError(msg, key=key, batch_id=batch_id) from exc
        try:
            result = thunk()
            if result is not None:
                if isinstance(result, (dict, str, bytes)):
                    raise TypeError(f"{method} must return an iterable of rows (or yield them), "
                                    f"not a {type(result).__name__}")
                extend(result)  # consuming a generator runs the handler's state changes too
        except Exception as exc:
            if isinstance(exc, StateError) and not isinstance(exc, StateEncodeError):
                raise  # the store failed (I/O, corruption), not the processor: keep the store's error
            where = f"key {key!r}, " if in_key else ""
            msg = (f"processor {op.name!r}: {method} raised {type(exc).__name__}: {exc} ({where}batch {batch_id}); "
                   f"the batch is not committed and is replayed on the next start")
            raise UserFunctionError(msg, key=key if in_key else None, batch_id=batch_id) from exc

    return call


def remove_expired(kv: StagedKV, now_ms: int) -> int:
    """Delete every value whose TTL expired at or before ``now_ms``; return how many there were.

    Reads the TTL index from its start to ``now_ms`` (O(expired)); an index
    entry whose value was rewritten since (new expiry) or already removed is
    dropped without counting.
    """
    removed = 0
    start = len(layout.TTL_INDEX) + layout.TS_BYTES
    for index_key, _ in kv.range(layout.TTL_INDEX, layout.TTL_INDEX + layout.ts_bytes(now_ms + 1)):
        entry = index_key[start:]
        raw = kv.get(entry)
        if raw is not None and layout.value_expiry(raw) == layout.ts_from(index_key, len(layout.TTL_INDEX)):
            kv.delete(entry)
            removed += 1
        kv.delete(index_key)
    return removed
