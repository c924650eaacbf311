"""Step 5 of a batch: call the handler once per key with data, then once per expired timeout.

This is the operator's per-key step (SEMANTICS.md A.3, B.2): build a
``GroupState`` from the stored row, call the user's function, collect its
outputs, and write the state back to the store (staged until the commit).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from statefulstream.checkpoint.plan_log import BatchPlan
from statefulstream.errors import StateError, UserFunctionError
from statefulstream.observe.progress import BatchProgress
from statefulstream.operator import StatefulOperator
from statefulstream.options import GroupStateTimeout
from statefulstream.pipeline import sorted_keys
from statefulstream.records import NO_TIMEOUT_MS, NO_WATERMARK_MS, GroupValues, StateChange
from statefulstream.state.group_state import Action, GroupState, call_states
from statefulstream.state.store import StateRow, StateStore

KeyCall = Callable[[Hashable, list[Any], "StateRow | None", bool], None]
"""``call(key, values, stored_row, timed_out)``: one handler call and its write-back."""


def call_keys(op: StatefulOperator, store: StateStore, plan: BatchPlan, groups: dict[Hashable, list[Any]],
              progress: BatchProgress, *, batch_query: bool = False) -> tuple[list[Any], list[StateChange]]:
    """Call the handler per key with data (and initial-state keys in batch 0), then per timeout.

    ``batch_query`` runs the step for a bounded (non-streaming) query, as
    Spark's batch ``GroupState``: no timeout calls, and the watermark reads -1
    (the caller discards the store afterwards). ``groups`` is emptied as keys are called.

    Returns:
        ``(outputs, state_changes)`` of the batch, in call order.
    """
    outputs: list[Any] = []
    tracked: list[tuple[Hashable, Any, bool, int]] = []
    initial = op.initial_state if plan.batch_id == 0 and op.initial_state else None
    if initial:
        for key, value in initial.items():
            store.put(key, StateRow(value, NO_TIMEOUT_MS))
            tracked.append((key, value, False, NO_TIMEOUT_MS))
    if initial and not op.skip_emitting_initial_state_keys:
        keys = sorted_keys(set(groups) | set(initial))
    else:  # Spark's skipEmittingInitialStateKeys: initial keys without data are stored, not called
        keys = sorted_keys(groups)
    loaded = len(tracked)
    # Validate the batch-wide GroupState arguments once (the same checks as GroupState()).
    GroupState(None, False, timeout=op.timeout, batch_processing_time_ms=plan.batch_ts_ms,
               watermark_ms=plan.watermark_ms, watermark_present=op.has_watermark)
    call = key_caller(op, store, plan, outputs, tracked, batch_query=batch_query)
    empty: list[Any] = GroupValues()
    with_data = set(groups)
    # Popped: each key's list lets go of its records right after its call, while they are in the CPU cache.
    pop = groups.pop
    for key, row in zip(keys, store.get_many(keys), strict=True):
        call(key, pop(key, empty), row, False)
    progress.groups_called = len(keys)
    if op.call_all_keys:  # complete-mode aggregation: every stored key each batch, O(state)
        called = set(keys)
        for key, row in list(store.items()):
            if key not in called:
                call(key, empty, row, False)
    if op.timeout is not GroupStateTimeout.NO_TIMEOUT and not batch_query:
        threshold = plan.batch_ts_ms if op.timeout is GroupStateTimeout.PROCESSING_TIME else plan.watermark_ms
        fired = 0
        for key, row in list(store.expired_except(threshold, with_data)):
            if key in with_data or (initial and key in initial):
                continue
            call(key, empty, row, True)
            fired += 1
        progress.timeouts_fired = fired
    # As Spark: loading the initial state is not an update, and a row kept for its timeout after
    # remove() is updated, not removed (only a deleted row, without a timeout, is removed).
    written = tracked[loaded:]  # (key, value, removed, timeout_ms)
    progress.state_rows_removed = sum(1 for c in written if c[2] and c[3] == NO_TIMEOUT_MS)
    progress.state_rows_updated = len(written) - progress.state_rows_removed
    # StateChange rows only for the sinks that take them.
    return outputs, [StateChange(*c) for c in tracked] if op.state_sinks else []


def key_caller(op: StatefulOperator, store: StateStore, plan: BatchPlan, outputs: list[Any],
               changes: list[tuple[Hashable, Any, bool, int]], *, batch_query: bool = False) -> KeyCall:
    """Return the per-key call: a GroupState, the handler, the write-back (A.3).

    Everything constant for the batch is bound once, since this runs once per key.
    Each write-back is tracked in ``changes`` as ``(key, value, removed, timeout_ms)``,
    the fields of a ``StateChange`` (built only when a state sink takes them).
    """
    func, flat, batch_id = op.func, op.flat, plan.batch_id
    present = op.has_watermark
    watermark = plan.watermark_ms if present and not batch_query else NO_WATERMARK_MS  # batch queries (B.7)
    state_for = call_states(op.timeout, plan.batch_ts_ms, watermark, present)  # validated once by call_keys
    put_value, delete, extend, append = store.put_value, store.delete, outputs.extend, outputs.append
    track, put, remove = changes.append, Action.PUT, Action.DELETE

    def call(key: Hashable, values: list[Any], row: StateRow | None, timed_out: bool) -> None:
        if row is None:
            stored_ts = NO_TIMEOUT_MS
            state = state_for(None, timed_out)
        else:
            stored_ts = row.timeout_ms
            state = state_for(row.value, timed_out)
        try:
            result = func(key, values, state)
            if flat:
                if type(result) is not list and (result is None or isinstance(result, (dict, str, bytes))):
                    got = "None" if result is None else f"a {type(result).__name__}"
                    raise TypeError(f"flat_map_groups_with_state handler must return an iterable of rows "
                                    f"(or yield them; return [] for no rows), not {got}")
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
        action, new_value, new_ts = state.write_back(stored_ts)
        try:
            if action is put:
                put_value(key, new_value, new_ts)
                track((key, new_value, new_value is None, new_ts))
            elif action is remove:
                delete(key)
                track((key, None, True, NO_TIMEOUT_MS))
        except StateError as exc:  # e.g. a value the codec cannot store
            msg = f"cannot store the state of key {key!r} in batch {batch_id}: {exc}"
            raise UserFunctionError(msg, key=key, batch_id=batch_id) from exc

    return call
