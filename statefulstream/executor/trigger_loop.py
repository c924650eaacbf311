"""The trigger loop: when to run the next batch (SEMANTICS.md B.3, Spark's triggers).

``run_trigger`` repeats ``Executor.plan`` / ``Executor.run_batch`` as the
trigger says: once, everything available now, every interval, or as fast as
data comes (waiting ``IDLE_WAIT_S`` after an empty plan).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from statefulstream.options import GroupStateTimeout
from statefulstream.triggers import Trigger, TriggerKind

if TYPE_CHECKING:
    from statefulstream.executor.batch import Executor

IDLE_WAIT_S = 0.25
"""How long the default trigger waits after a batch that found no data."""


def run_trigger(executor: Executor, trigger: Trigger, stop: threading.Event) -> None:
    """Run batches as ``trigger`` says until it is done or ``stop`` is set."""
    if trigger.kind is TriggerKind.ONCE:
        plan = executor.plan()
        if plan.has_data:
            executor.run_batch(plan)
        return
    if trigger.kind is TriggerKind.AVAILABLE_NOW:
        _, target = executor.source.available(executor.offsets)
        while not stop.is_set():
            plan = executor.plan(until=target)
            if not plan.has_data:
                if needs_no_data_batch(executor):
                    executor.run_batch(plan)
                return
            executor.run_batch(plan)
        return
    while not stop.is_set():
        began = time.monotonic()
        plan = executor.plan()
        ran_data = plan.has_data
        if ran_data or needs_no_data_batch(executor):
            executor.run_batch(plan)
        if trigger.kind is TriggerKind.PROCESSING_TIME:
            stop.wait(max(0.0, trigger.interval_ms / 1000 - (time.monotonic() - began)))
        elif not ran_data:
            stop.wait(IDLE_WAIT_S)


def needs_no_data_batch(executor: Executor, *, watermark_ms: int | None = None) -> bool:
    """Whether a batch without data is due: timeouts may fire (SEMANTICS.md B.3).

    ``watermark_ms`` is the watermark the batch would run with (default: the executor's own).
    """
    timeout = executor.op.timeout
    if timeout is GroupStateTimeout.PROCESSING_TIME:
        return True
    if timeout is GroupStateTimeout.EVENT_TIME:
        last = executor.last_batch_watermark_ms
        return last is not None and (executor.watermark_ms if watermark_ms is None else watermark_ms) > last
    return False
