"""One source partition owned by this process: its state, its executor, its Kafka transaction.

A ``PartitionTask`` is opened when the group assigns the partition:

1. its transactional producer (id ``<app>.<topic>.<partition>``) is opened,
   which fences the partition's previous owner and aborts its open
   transaction (a zombie can no longer commit);
2. the local copy under ``<checkpoint_dir>/partitions/<topic>-<partition>``
   is used when its last commit is the changelog's last marker; otherwise it
   is rebuilt from the changelog (``restore``);
3. an ``Executor`` is built over that copy, and its ``start`` replays a batch
   planned here before a stop, exactly as a single-process app does.

Each batch's commit runs the partition's transaction (outputs of the Kafka
sinks, changelog rows, the marker, the group offset) before the local commit
(``partition_store``). Closing a task (revoke, stop) happens between batches.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException, TopicPartition

from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.checkpoint.layout import OFFSETS_DIR, STATE_DIR, default_dead_letters, progress_dir
from statefulstream.checkpoint.partitions import PARTITIONS_DIR, RESTORING_SUFFIX
from statefulstream.checkpoint.plan_log import BatchPlan, PlanLog
from statefulstream.errors import SinkUnavailableError, StateCorruptedError
from statefulstream.executor.batch import Executor
from statefulstream.executor.trigger_loop import needs_no_data_batch
from statefulstream.kafka_client import parse_partition_name
from statefulstream.kafka_txn import TransactionalProducer
from statefulstream.observe.progress_log import ProgressLog
from statefulstream.scaleout.changelog import KV_PREFIX, Marker, RestoreResult
from statefulstream.scaleout.partition_source import PartitionSource
from statefulstream.scaleout.partition_store import TransactionalStore
from statefulstream.scaleout.repartition import UndecidedRecordsError
from statefulstream.sink import Sink
from statefulstream.state.rocksdb import RocksDBStateStore, inspect_store
from statefulstream.state.store import CommitRecord

if TYPE_CHECKING:
    from statefulstream.scaleout.worker import GroupContext

logger = logging.getLogger(__name__)


def partition_dir(checkpoint_dir: str, name: str) -> str:
    """Where partition ``"topic:p"``'s checkpoint lives: ``<checkpoint_dir>/partitions/<topic>-<p>``."""
    topic, partition = parse_partition_name(name)
    return os.path.join(checkpoint_dir, PARTITIONS_DIR, f"{topic}-{partition}")


class _Pending(Sink):
    """Holds a batch's rows for a Kafka sink until the partition's transaction writes them."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.name = getattr(sink, "name", type(sink).__name__)
        self.batch: tuple[int, Sequence[Any]] | None = None

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Keep the rows for the commit."""
        self.batch = (batch_id, list(rows))


class _RecordingPlanLog(PlanLog):
    """A plan log that remembers the plan written last (the one being committed)."""

    def __init__(self, inner: PlanLog) -> None:
        self.inner = inner
        self.last: BatchPlan | None = None

    def write(self, plan: BatchPlan) -> None:
        """Write and remember."""
        self.inner.write(plan)
        self.last = plan

    def latest(self) -> BatchPlan | None:
        """The newest plan."""
        return self.inner.latest()

    def purge(self, keep: int) -> None:
        """Drop old plans."""
        self.inner.purge(keep)


class PartitionTask:
    """The state and batches of one source partition while this process owns it.

    Args:
        ctx: what every task of the worker shares (app, shared source, changelog, group).
        name: the partition, ``"topic:partition"``.
    """

    def __init__(self, ctx: GroupContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.topic, self.partition = parse_partition_name(name)
        self.dir = partition_dir(ctx.checkpoint_dir, name)
        self.txn = TransactionalProducer(f"{ctx.app.name}.{self.topic}.{self.partition}", ctx.producer_config,
                                         timeout=ctx.timeout, what=f"partition {name}")
        self.executor: Executor | None = None
        self.restored: RestoreResult | None = None
        self.until: dict[str, int] | None = None
        self._pending = [_Pending(sink) for sink in ctx.kafka_sinks]
        self._dead_letters = _Pending(ctx.kafka_dead_letters) if ctx.kafka_dead_letters is not None else None
        self._plans: _RecordingPlanLog | None = None
        self._committed: int | None = None
        self._dead_written = 0
        self._again: BatchPlan | None = None  # a batch to run again (its records were undecided)

    # --- lifecycle

    def open(self) -> None:
        """Fence the previous owner, bring the local copy up to the changelog, and recover the executor."""
        self.txn.open()
        self._committed = self._sync_local_copy()
        self.executor = self._build_executor()
        self.executor.start()
        if self.ctx.available_now:
            _, latest = self.executor.source.available(self.executor.offsets)
            self.until = dict(latest)

    def refresh_until(self) -> bool:
        """``available_now``: move the end to what the partition holds now; whether it moved."""
        assert self.executor is not None and self.until is not None
        _, latest = self.executor.source.available(self.executor.offsets)
        moved = any(latest.get(p, 0) > end for p, end in self.until.items()) or bool(set(latest) - set(self.until))
        self.until = dict(latest)
        return moved

    def close(self) -> None:
        """Close the executor and the producer (between batches: nothing is in flight)."""
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.close()
        self.txn.close()
        self.ctx.source.release([self.name])

    @property
    def watermark_ms(self) -> int:
        """This partition's own watermark (its max event time minus the delay, monotonic)."""
        return self.executor.watermark_ms if self.executor is not None else 0

    # --- local copy and restore

    def _sync_local_copy(self) -> int | None:
        """Use the local copy when it is current, else rebuild it from the changelog; return the last batch."""
        local = self._local_commit()
        if local is not None:
            marker = self.ctx.changelog.last_marker(self.partition)
            if marker is not None and marker.plan.batch_id == local.batch_id:
                logger.info("partition %s: local state is current (batch %d); no restore", self.name, local.batch_id)
                return local.batch_id
            logger.info("partition %s: local state is at batch %d, the changelog at %s: restoring", self.name,
                        local.batch_id, None if marker is None else marker.plan.batch_id)
        return self._restore()

    def _local_commit(self) -> CommitRecord | None:
        path = os.path.join(self.dir, STATE_DIR)
        if not os.path.isdir(path):
            return None
        try:
            store, commit = inspect_store(path)
        except StateCorruptedError as exc:
            logger.warning("partition %s: local state unreadable (%s); restoring from the changelog", self.name, exc)
            return None
        store.close()
        return commit

    def _restore(self) -> int | None:
        """Rebuild ``self.dir`` from the changelog in a side folder, then swap it in (a crash leaves no half copy)."""
        building = self.dir + RESTORING_SUFFIX
        shutil.rmtree(building, ignore_errors=True)
        store = RocksDBStateStore(os.path.join(building, STATE_DIR), cache_keys=0)
        store.open(self.ctx.operator.signature())
        provisional = CommitRecord(-1, {}, 0, 0, 0)

        kv, cut = store.kv(), len(KV_PREFIX)

        def apply(rows: Mapping[bytes, bytes | None]) -> None:
            for key, row in rows.items():
                if not key.startswith(KV_PREFIX):
                    store.stage_encoded(key, row)
                elif row is None:
                    kv.delete(key[cut:])
                else:
                    kv.put(key[cut:], row)
            store.commit(provisional)
            self.ctx.membership.keep_alive()  # a long restore must not cost the process its group membership
            self.ctx.heartbeat.beat()  # ... nor its liveness (/health)

        try:
            result = self.ctx.changelog.restore(self.partition, apply, chunk=self.ctx.scale.restore_chunk)
            if result.marker is not None:
                FilePlanLog(os.path.join(building, OFFSETS_DIR)).write(result.marker.plan)
                store.commit(result.marker.commit_record)
        finally:
            store.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if result.marker is None:
            shutil.rmtree(building, ignore_errors=True)
        else:
            os.makedirs(os.path.dirname(self.dir), exist_ok=True)
            os.replace(building, self.dir)
        self.restored = result
        self.ctx.on_restore(self.name, result)
        logger.info("partition %s: restored %d changelog records in %.3f s (%.0f records/s), batch %s", self.name,
                    result.records, result.seconds, result.rate,
                    None if result.marker is None else result.marker.plan.batch_id)
        return None if result.marker is None else result.marker.plan.batch_id

    def _build_executor(self) -> Executor:
        ctx, app = self.ctx, self.ctx.app
        inner = RocksDBStateStore(os.path.join(self.dir, STATE_DIR), cache_keys=app.state_cache_keys)
        self._plans = _RecordingPlanLog(FilePlanLog(os.path.join(self.dir, OFFSETS_DIR)))
        operator = dataclasses.replace(ctx.operator, sinks=list(self._pending), state_sinks=[])
        dead = self._dead_letters if self._dead_letters is not None else default_dead_letters(self.dir)
        progress = ProgressLog(progress_dir(self.dir), keep=app.keep_batches, recent=app.status.reports)
        return Executor(
            app_name=app.name, source=PartitionSource(ctx.source, self.name), operator=operator,
            steps=ctx.steps, store=TransactionalStore(inner, self._commit_transaction), plan_log=self._plans,
            dead_letters=dead, clock=app.clock, where=self.dir, max_records_per_trigger=app.max_records_per_trigger,
            keep_batches=app.keep_batches, sink_retry=app.sink_retry,
            listeners=[app.metrics.on_batch, progress.on_batch, *app.listeners],
            failure_listeners=[app.metrics.on_failure, app.health.on_failure])

    # --- batches

    def batch_watermark(self, process_ms: int) -> int:
        """The watermark this partition's next batch runs with: the process's, never above its own.

        A partition that has not seen an event time yet (a new one, just
        assigned) does not hold the process's watermark back, so it must not
        run with it either: its records would all be behind it.
        """
        return min(process_ms, self.watermark_ms)

    def run_once(self, process_ms: int) -> bool:
        """Plan and run this partition's next batch with the process's watermark; whether one ran with data.

        A batch without data runs when a timeout may fire (as the trigger loop decides for one app).
        """
        executor = self.executor
        assert executor is not None
        watermark_ms = self.batch_watermark(process_ms)
        plan, self._again = self._again or executor.plan(watermark_ms=watermark_ms, until=self.until), None
        if plan.has_data or needs_no_data_batch(executor, watermark_ms=plan.watermark_ms):
            for pending in self._pending:
                pending.batch = None
            try:
                executor.run_batch(plan)
            except UndecidedRecordsError:
                self._again = plan  # logged already: the same plan runs next time, as after a restart
                raise
        return plan.has_data

    def done(self, process_ms: int) -> bool:
        """With ``available_now``: whether everything there was at assignment time is processed."""
        executor = self.executor
        assert executor is not None and self.until is not None
        caught_up = all(executor.offsets.get(p, 0) >= end for p, end in self.until.items())
        return caught_up and not needs_no_data_batch(executor, watermark_ms=self.batch_watermark(process_ms))

    def _commit_transaction(self, record: CommitRecord, changes: Mapping[bytes, bytes | None]) -> None:
        """Write the batch's sink rows, changelog rows, marker and group offset in one Kafka transaction.

        A batch already committed to Kafka (a replay after a crash between the
        two commits, on this process) is not written again. Retriable broker
        errors retry the whole transaction per the app's ``sink_retry``.
        """
        assert self._plans is not None and self._plans.last is not None and self.executor is not None
        plan = self._plans.last
        self._dead_written = len(self.executor.sink_writer.dead)
        try:
            if self._committed is not None and record.batch_id <= self._committed:
                logger.info("partition %s: batch %d is already in Kafka; committing it locally", self.name,
                            record.batch_id)
                return
            marker = Marker(plan, record.next_watermark_ms, self.txn.attempt)

            def on_retry(exc: BaseException, attempt: int, wait_s: float) -> None:
                # Said aloud: on tansu the aborted try's records stay visible, so a retry is worth a line.
                logger.warning("partition %s: the transaction of batch %d failed (%s); retry %d in %.3f s",
                               self.name, record.batch_id, exc, attempt, wait_s)

            self.ctx.app.sink_retry.call(lambda: self._transaction(marker, changes), retry_on=SinkUnavailableError,
                                         on_retry=on_retry)
            self._committed = record.batch_id
        finally:
            for pending in self._pending:
                pending.batch = None
            if self._dead_letters is not None:
                self._dead_letters.batch = None

    def _transaction(self, marker: Marker, changes: Mapping[bytes, bytes | None]) -> None:
        txn, batch_id = self.txn, marker.plan.batch_id
        if not txn.is_open:
            txn.open()
        txn.begin()
        try:
            for pending in self._pending:
                if pending.batch is not None and pending.batch[0] == batch_id:
                    pending.sink.produce_batch(txn, batch_id, pending.batch[1])
            self._write_dead_letters(batch_id)
            self.ctx.changelog.write(txn, self.partition, changes, dataclasses.replace(marker, attempt=txn.attempt))
            end = marker.plan.end.get(self.name)
            if end is not None:
                txn.send_offsets([TopicPartition(self.topic, self.partition, end)],
                                 self.ctx.membership.group_metadata())
            txn.commit()
        except KafkaException as exc:
            error = txn.translate(exc, f"batch {batch_id}")
            txn.abort()
            raise error from exc

    def _write_dead_letters(self, batch_id: int) -> None:
        """Dead letters, with those the Kafka sinks added while producing: in the transaction, or to the file."""
        assert self.executor is not None
        writer = self.executor.sink_writer
        rows = [dl.to_row(batch_id) for dl in writer.dead]
        if self._dead_letters is not None:
            if rows:
                self._dead_letters.sink.produce_batch(self.txn, batch_id, rows)
        elif len(rows) > self._dead_written:  # rewritten whole: the file sink is idempotent per batch id
            writer.dead_letter_sink.write(batch_id, rows)
