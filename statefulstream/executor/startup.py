"""Start-up: open the store, recover the resume point from the checkpoint, open source and sinks.

The recovery rule itself (which batch to replay, where to resume) is
``statefulstream.checkpoint.plan_log.recover``; this module applies it to an
executor and replays the pending batch, if any, before the trigger loop runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from statefulstream.checkpoint.plan_log import recover

if TYPE_CHECKING:
    from statefulstream.executor.batch import Executor

logger = logging.getLogger(__name__)


def start(executor: Executor) -> None:
    """Open everything, recover from the checkpoint, and replay a planned batch if one is pending."""
    last = executor.store.open(executor.op.signature())
    plan = executor.plan_log.latest()
    recovery = recover(last, plan, where=executor.where)
    executor.next_batch_id = recovery.next_batch_id
    executor.offsets = dict(recovery.offsets)
    executor.watermark_ms, executor.late_watermark_ms = recovery.watermark_ms, recovery.late_watermark_ms
    if last is not None:
        executor.last_batch_watermark_ms, executor.last_batch_ts = last.watermark_ms, last.batch_ts_ms
    executor.source.open()
    if plan is not None:  # the plan resumed from (or replayed) knows where its positions are
        executor.source.restore_position_index(plan.source_index)
    executor.sink_writer.open()
    executor.started = True
    if recovery.replay is not None:
        logger.info("app %r: replaying batch %d planned before a stop", executor.app_name, recovery.replay.batch_id)
        executor.run_batch(recovery.replay, replayed=True)
