"""The scale-out worker: one process of a consumer group, running a task per partition it owns.

``run_scaled_out`` is what ``App.run()`` does when the source is a
``KafkaSource(scale_out=...)``. Between batches it serves the group protocol
(``membership``): revoked partitions' tasks are closed, assigned ones opened
(fenced, restored when needed, recovered). Then each task runs its next
batch, every one with the process's watermark: the smallest of the owned
partitions' own watermarks (Spark's ``min`` rule across inputs; partitions
that have not seen an event time yet do not hold it back).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from statefulstream.checkpoint.partitions import PARTITIONS_DIR
from statefulstream.errors import ConfigError, StateError
from statefulstream.executor.trigger_loop import IDLE_WAIT_S
from statefulstream.kafka_client import admin_config
from statefulstream.kafka_txn import FencedError
from statefulstream.observe.health import Heartbeat
from statefulstream.operator import StatefulOperator
from statefulstream.pipeline import Step
from statefulstream.scaleout.changelog import Changelog, RestoreResult, ensure_topic
from statefulstream.scaleout.membership import GroupMembership
from statefulstream.scaleout.options import ScaleOut
from statefulstream.scaleout.repartition import (
    RepartitionSource,
    RepartitionWriter,
    UndecidedRecordsError,
    forward_operator,
    needs_repartition,
)
from statefulstream.scaleout.task import PartitionTask
from statefulstream.sink import Sink, SinkContext
from statefulstream.sources.kafka import KafkaSource
from statefulstream.state.rocksdb_dir import lock_dir
from statefulstream.triggers import Trigger, TriggerKind

if TYPE_CHECKING:
    from statefulstream.app import App

logger = logging.getLogger(__name__)

_PRODUCER_ONLY = ("transactional.", "enable.idempotence", "acks", "linger.", "batch.", "compression.",
                  "queue.buffering", "message.timeout", "delivery.", "retries", "retry.", "max.in.flight",
                  "partitioner", "sticky.", "transaction.")


def _in_transaction(sink: Sink) -> bool:
    """Whether a sink can write its rows inside a partition's Kafka transaction (``KafkaSink`` can)."""
    return callable(getattr(sink, "produce_batch", None)) and callable(getattr(sink, "prepare", None))


@dataclasses.dataclass
class GroupContext:
    """What every partition task of this process shares."""

    app: App
    operator: StatefulOperator
    steps: Sequence[Step]
    source: KafkaSource
    scale: ScaleOut
    checkpoint_dir: str
    changelog: Changelog
    membership: GroupMembership
    producer_config: dict[str, Any]
    timeout: dt.timedelta
    kafka_sinks: list[Any]
    kafka_dead_letters: Any | None
    available_now: bool
    heartbeat: Heartbeat

    def on_restore(self, partition: str, result: RestoreResult) -> None:
        """Export a restore's figures."""
        self.app.metrics.on_restore(partition, result.records, result.seconds)


def check_scale_out(app: App, source: KafkaSource, operator: StatefulOperator) -> None:
    """Refuse what scale-out cannot keep exactly once, saying what to change.

    Raises:
        ConfigError: no checkpoint, or a sink that cannot join the transaction.
    """
    where = f"app {app.name!r} with KafkaSource(scale_out=...)"
    if app.checkpoint_dir is None:
        raise ConfigError(f"{where} needs checkpoint_dir= (each partition's state is kept there)")
    bad = [s for s in [*operator.sinks, *operator.state_sinks] if not _in_transaction(s)]
    if bad:
        names = ", ".join(getattr(s, "name", type(s).__name__) for s in bad)
        raise ConfigError(f"{where}: sink(s) {names} cannot write inside the partition's Kafka transaction, so "
                          f"their rows would not be exactly once when partitions move. Write to a KafkaSink and "
                          f"copy from that topic onwards, or run one process without scale_out")
    if operator.state_sinks:
        raise ConfigError(f"{where}: state sinks are not supported with scale_out; the changelog topic "
                          f"holds every state change")


def run_scaled_out(app: App, trigger: Trigger, stop: threading.Event, heartbeat: Heartbeat,
                   on_ready: Callable[[], None]) -> None:
    """Run ``app`` as one member of its consumer group until ``stop`` is set (or, for ``available_now``,
    until every partition it owns is processed up to what was there when it was assigned).

    ``on_ready`` is called once the first assignment's partitions are open (restored).
    """
    source = app.source
    assert isinstance(source, KafkaSource) and source.scale_out is not None
    operator = app._defined_operator()
    check_scale_out(app, source, operator)
    if trigger.kind is TriggerKind.ONCE:
        raise ConfigError(f"app {app.name!r}: trigger 'once' is not supported with scale_out; use "
                          f"'available_now' or a processing-time trigger")
    assert app.checkpoint_dir is not None
    lock = lock_partitions(app.checkpoint_dir)
    ctx, forward = _contexts(app, source, operator, trigger, heartbeat)
    tasks: dict[str, PartitionTask] = {}
    try:
        ready = False
        while not stop.is_set():
            began = time.monotonic()
            heartbeat.beat()
            _rebalance(ctx, forward, tasks)
            if tasks and not ready:
                on_ready()
                ready = True
            watermark = combined_watermark(tasks.values())
            ran = False
            # Forward tasks first: the stateful stage reads what they wrote (and needs their markers).
            for name in sorted(tasks, key=lambda n: (tasks[n].ctx is ctx, n)):
                ran |= _run_task(ctx, tasks, name, watermark)
            _report(app, tasks)
            if ctx.available_now and tasks and _all_done(tasks, forward):
                return
            if trigger.kind is TriggerKind.PROCESSING_TIME:
                stop.wait(max(0.0, trigger.interval_ms / 1000 - (time.monotonic() - began)))
            elif not ran:
                stop.wait(IDLE_WAIT_S)
    finally:
        for task in tasks.values():
            task.close()
        ctx.membership.close()
        ctx.source.close()
        if forward is not None:
            forward.source.close()
        os.close(lock)


def lock_partitions(checkpoint_dir: str) -> int:
    """Hold ``<checkpoint_dir>/partitions`` for this process; return the descriptor (close to release).

    Partition folders are deleted and swapped while restoring, so two
    processes must never share a checkpoint folder (each replica has its own).

    Raises:
        ConfigError: another process of this or another app runs on the same checkpoint folder.
    """
    path = os.path.join(checkpoint_dir, PARTITIONS_DIR)
    os.makedirs(path, exist_ok=True)
    try:
        return lock_dir(path)
    except StateError as exc:
        msg = (f"checkpoint {checkpoint_dir} is in use by another process: each scale-out process needs a "
               f"checkpoint_dir of its own (a local folder, not a volume shared by the replicas)")
        raise ConfigError(msg) from exc


def _report(app: App, tasks: dict[str, PartitionTask]) -> None:
    """The process's figures over the partitions it owns now (the per-batch ones come from each executor)."""
    stores = [t.executor.store for t in tasks.values() if t.executor is not None]
    app.metrics.set_partitions(list(tasks), state_keys=sum(s.num_rows() for s in stores),
                               state_bytes=sum(max(0, s.disk_bytes()) for s in stores))


def _all_done(tasks: dict[str, PartitionTask], forward: GroupContext | None) -> bool:
    """``available_now``: every task processed what was there; the stateful stage after the forward one.

    Once every forward task is done, the stateful tasks look again for the end
    of their repartition partitions, which the forward tasks were still filling.
    """
    now = combined_watermark(tasks.values())  # the round moved it: timeouts may still be due
    if not all(t.done(now) for t in tasks.values()):
        return False
    if forward is None:
        return True
    moved = [t.refresh_until() for t in tasks.values() if t.ctx is not forward]
    return not any(moved)


def combined_watermark(tasks: Any) -> int:
    """The smallest own watermark of the partitions that have one (0 when none has)."""
    marks = [t.watermark_ms for t in tasks if t.watermark_ms > 0]
    return min(marks) if marks else 0


def _run_task(ctx: GroupContext, tasks: dict[str, PartitionTask], name: str, watermark: int) -> bool:
    """Run one batch of a task; a fenced task (its partition moved while we were away) is dropped."""
    task = tasks[name]
    try:
        return task.run_once(watermark)
    except FencedError as exc:
        logger.warning("%s Dropping partition %s: the group has given it to another process", exc, name)
        tasks.pop(name).close()
        return False
    except UndecidedRecordsError as exc:
        logger.info("partition %s: %s; running the batch again in the next round", name, exc)
        return False


def _rebalance(ctx: GroupContext, forward: GroupContext | None, tasks: dict[str, PartitionTask]) -> None:
    """Close the tasks of revoked partitions, then open those of newly assigned ones (closing again any
    revoked while the others opened).

    With a repartition step, partitions of the source topic get forward tasks
    and those of the repartition topic the stateful ones.
    """
    membership = ctx.membership
    assigned, revoked = membership.poll(0)
    _release(tasks, revoked)
    for name in assigned:
        if name in membership.owned and name not in tasks:
            of_source = forward is not None and name.rpartition(":")[0] == forward.source.topics[0]
            task = PartitionTask(forward if of_source and forward is not None else ctx, name)
            task.open()
            tasks[name] = task
            # Opening serves the group protocol (a restore calls keep_alive), so partitions opened before
            # may have been revoked meanwhile, and the group may have given them to another process already.
            # Close them before the round: a batch run on them would race the new owner (on Kafka the loser
            # is fenced; on tansu, whatever a writer flushed before it was fenced stays visible, markers too).
            _release(tasks, sorted(membership.revoked_unreported()))


def _release(tasks: dict[str, PartitionTask], names: Sequence[str]) -> None:
    """Close the tasks of revoked partitions (between batches: nothing is in flight)."""
    for name in names:
        task = tasks.pop(name, None)
        if task is not None:
            task.close()
            logger.info("partition %s: released", name)


def _contexts(app: App, source: KafkaSource, operator: StatefulOperator, trigger: Trigger,
              heartbeat: Heartbeat) -> tuple[GroupContext, GroupContext | None]:
    """The stateful stage's context and, when records must be re-keyed, the forward stage's."""
    scale = source.scale_out
    assert scale is not None and app.checkpoint_dir is not None
    topic = source.topics[0]
    client = {"bootstrap.servers": source.bootstrap_servers, **source.config}
    admin = admin_config(client, drop=_PRODUCER_ONLY)
    reader = copy.copy(source)
    reader.group_id = None  # offsets are committed in each partition's transaction, not by the reader
    reader.open()
    partitions = len(reader._partitions())
    changelog = Changelog(scale.changelog_for(app.name, topic), admin, timeout=source.read_timeout)
    changelog.ensure(partitions)
    context = SinkContext(app_name=app.name)
    for sink in operator.sinks:
        cast(Any, sink).prepare(context)
    dead: Any = app.dead_letter_sink
    kafka_dead = dead if _in_transaction(dead) else None
    if kafka_dead is not None:
        kafka_dead.prepare(context)
    rekey = needs_repartition(source, operator)
    topics = [topic]
    if rekey:
        topics.append(scale.repartition_for(app.name, topic))
        ensure_topic(admin, topics[1], partitions, timeout=source.read_timeout, compact=False)
        logger.info("app %r groups by %r, not by the message key: records are re-keyed through topic %r",
                    app.name, operator.key_spec, topics[1])
    membership = GroupMembership(topics, {**client, "group.id": source.group_id})
    ctx = GroupContext(app=app, operator=operator, steps=app.steps, source=reader, scale=scale,
                       checkpoint_dir=app.checkpoint_dir, changelog=changelog, membership=membership,
                       producer_config=admin_config(client), timeout=source.read_timeout,
                       kafka_sinks=list(operator.sinks), kafka_dead_letters=kafka_dead,
                       available_now=trigger.kind is TriggerKind.AVAILABLE_NOW, heartbeat=heartbeat)
    if not rekey:
        return ctx, None
    forward_sink = RepartitionWriter(topics[1])
    markers = Changelog(f"{topics[1]}-offsets", admin, timeout=source.read_timeout, writer_prefix=f"{app.name}.{topic}")
    markers.ensure(partitions)
    stateful_reader = RepartitionSource(source, topics[1], markers)
    stateful_reader.open()
    forward = dataclasses.replace(ctx, operator=forward_operator(operator, forward_sink), kafka_sinks=[forward_sink],
                                  changelog=markers)
    return dataclasses.replace(ctx, source=stateful_reader, steps=[]), forward
