"""Batch (non-streaming) queries: the stateful operator over a bounded set of records.

Spark runs ``flatMapGroupsWithState`` / ``mapGroupsWithState`` on a batch
Dataset too (SEMANTICS.md B.7): one call per key with all its values,
``has_timed_out`` false, the timeout setters allowed (with the operator's type
checks) and ignored, the watermark ignored (``get_current_watermark_ms()`` is
-1 when a watermark is declared), the initial state honoured, and no state
kept afterwards. This runs the streaming path's per-key step
(``executor.keyed_calls``) over one batch whose state store is thrown away;
a stateful processor runs its per-batch step (``processor.runner``) the same
way, without a timer phase (as Spark's batch ``transformWithState``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from statefulstream.checkpoint.plan_log import BatchPlan
from statefulstream.errors import ConfigError, RecordError
from statefulstream.executor.keyed_calls import call_keys
from statefulstream.lineage import Lineage
from statefulstream.observe.progress import BatchProgress
from statefulstream.operator import StatefulOperator
from statefulstream.pipeline import Step, apply_each, group_by_key, run_steps
from statefulstream.processor.runner import run_processor
from statefulstream.records import DeadLetter
from statefulstream.state.memory import MemoryStateStore
from statefulstream.timeutil import Clock


def run_batch_query(op: StatefulOperator, steps: Iterable[Step], records: Iterable[Any], *, clock: Clock,
                    app_name: str, dead_letters: list[DeadLetter] | None = None) -> list[Any]:
    """Run the stateless steps and the operator over ``records`` as one bounded batch.

    Args:
        op: the app's stateful operator.
        steps: the app's stateless steps, applied first.
        records: every record of the query.
        clock: gives ``get_current_processing_time_ms()`` (wall clock in Spark).
        app_name: for messages.
        dead_letters: a list that collects records a step, or the key, could
            not handle; without it such records fail the query.

    Returns:
        The handler's output rows, keys in the streaming path's order.

    Raises:
        ConfigError: the operator is a windowed aggregation (``app.aggregate``).
        RecordError: a record could not be handled and ``dead_letters`` was not given.
        UserFunctionError: the handler raised or returned something that is not rows.
    """
    from statefulstream.windows.operator import AggregationOperator

    if isinstance(op, AggregationOperator):
        raise ConfigError(f"app {app_name!r}: run_batch runs a *_groups_with_state handler; a windowed "
                          f"aggregation emits windows as the watermark passes them, which a batch query ignores")
    dead: list[DeadLetter] = []
    lineage = Lineage(lambda i: {"index": i}, batch_id=0)  # a dead letter's index in ``records``
    kept = run_steps(steps, list(records), lineage=lineage, dead=dead)
    kept, keys = apply_each(op.key, kept, error="key", what="group key missing", lineage=lineage, dead=dead)
    groups = group_by_key(keys, kept, lineage=lineage, dead=dead)
    if dead:
        if dead_letters is None:
            raise RecordError(f"app {app_name!r}: {len(dead)} record(s) could not be handled; the first: "
                              f"{dead[0].reason} (record {dead[0].raw!r}); pass dead_letters=[] to run_batch "
                              f"to collect them instead", dead_letters=dead)
        dead_letters.extend(dead)
    plan = BatchPlan(0, {}, {}, max(0, clock()), 0, 0)
    progress = BatchProgress(app=app_name, batch_id=0, batch_ts_ms=plan.batch_ts_ms)
    store = MemoryStateStore()
    try:
        call = call_keys if op.processor is None else run_processor
        outputs, _ = call(op, store, plan, groups, progress, batch_query=True)
    finally:
        store.abort()  # updates and timeouts of a batch query have no effect (Spark aborts its store)
    return outputs
