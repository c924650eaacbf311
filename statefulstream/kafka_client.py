"""Kafka client helpers shared by the Kafka source and the Kafka sink (confluent-kafka).

* :func:`mask_config`: a client config fit for logs and reprs.
* :func:`admin_config` / :func:`list_offsets`: admin-side settings and the
  earliest or latest offsets of partitions.
* :class:`ColumnReader` / :class:`RangeReader`: read planned offset ranges
  ``[start, end)`` with one long-lived consumer that stays assigned and reads
  ahead on a thread of its own (librdkafka releases the GIL while it fetches),
  handing out columns (the source) or ``Message`` lists (small reads).

Only the Kafka connectors import this module (it needs the ``kafka`` extra).
Every timeout here is a :class:`datetime.timedelta`: never a bare number,
whose unit a caller could get wrong.
"""

from __future__ import annotations

import atexit
import bisect
import dataclasses
import datetime as dt
import itertools
import threading
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from statefulstream.kafka_runs import COLUMNS, Fetched, PartitionBuffer, Run, offsets_of, partition_runs

_SECRET_HINTS = ("password", "secret", "token", "key")
# Consumer settings the admin client would warn about; everything else (security) is shared.
_CONSUMER_ONLY = ("group.", "enable.auto", "enable.partition.eof", "auto.", "isolation.", "fetch.", "max.poll",
                  "session.", "heartbeat.", "partition.assignment", "queued.", "check.crcs")
_POLL = dt.timedelta(milliseconds=100)  # one consume() wait: how fast the reader thread sees a close or a request


def partition_name(topic: str, partition: int) -> str:
    """Return the position key of a Kafka partition: ``"topic:partition"``.

    >>> partition_name("events", 3)
    'events:3'
    """
    return f"{topic}:{partition}"


def parse_partition_name(name: str) -> tuple[str, int]:
    """Split ``"topic:partition"`` (Kafka topic names never contain ``:``).

    >>> parse_partition_name("events:3")
    ('events', 3)
    """
    topic, _, partition = name.rpartition(":")
    return topic, int(partition)


def one_off_reader_config(config: Mapping[str, Any], purpose: str) -> dict[str, Any]:
    """Settings of a reader that reads a range once: its own group, committed records only, no commits.

    >>> one_off_reader_config({"bootstrap.servers": "b:9092"}, "markers")["isolation.level"]
    'read_committed'
    """
    return {**config, "group.id": f"statefulstream-{purpose}-{uuid.uuid4().hex}", "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "error"}


def mask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a client config with secret-looking values masked, for logs and reprs.

    >>> mask_config({"bootstrap.servers": "b:9092", "sasl.password": "hunter2"})
    {'bootstrap.servers': 'b:9092', 'sasl.password': '***'}
    """
    return {k: "***" if any(h in k.lower() for h in _SECRET_HINTS) and "servers" not in k else v
            for k, v in config.items()}


def admin_config(config: Mapping[str, Any], *, drop: Sequence[str] = ()) -> dict[str, Any]:
    """Return the settings of ``config`` an admin client takes (no consumer-only keys, none starting with ``drop``).

    >>> admin_config({"bootstrap.servers": "b:9092", "group.id": "g", "acks": "all"}, drop=("acks",))
    {'bootstrap.servers': 'b:9092'}
    """
    skip = (*_CONSUMER_ONLY, *drop)
    return {k: v for k, v in config.items() if not k.startswith(skip)}


def list_offsets(admin: AdminClient, partitions: Sequence[TopicPartition], spec: OffsetSpec, *,
                 timeout: dt.timedelta) -> dict[str, int]:
    """Return the ``read_committed`` offset ``spec`` (earliest or latest) of each partition, by partition name.

    Raises:
        KafkaException: the broker did not answer within ``timeout`` or refused.
    """
    if not partitions:
        return {}
    futures = admin.list_offsets({tp: spec for tp in partitions}, isolation_level=IsolationLevel.READ_COMMITTED,
                                 request_timeout=timeout.total_seconds())
    return {partition_name(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}


class RangeIncompleteError(Exception):
    """A planned range could not be read completely in time.

    Attributes:
        missing: partition -> ``(next offset wanted, range start, range end)`` of each unfinished range.
        last_error: the last client error seen while reading, if any.
    """

    def __init__(self, missing: dict[str, tuple[int, int, int]], last_error: KafkaError | None) -> None:
        self.missing = missing
        self.last_error = last_error
        where = ", ".join(f"{p} at {n} of [{lo}, {hi})" for p, (n, lo, hi) in sorted(missing.items()))
        super().__init__(f"{where}; last error: {last_error}")


class ReaderFailedError(Exception):
    """The reader thread of a :class:`RangeReader` stopped on an unexpected error (its ``__cause__``)."""


def _offset(msg: Message) -> int:
    return msg.offset() or 0


@dataclasses.dataclass
class _Commit:
    """A consumer-group commit the reader thread runs for a caller that waits for it."""

    offsets: list[TopicPartition]
    finished: bool = False
    error: KafkaException | None = None

    def run(self, consumer: Consumer) -> None:
        try:
            consumer.commit(offsets=self.offsets, asynchronous=False)
        except KafkaException as exc:
            self.error = exc
        self.finished = True


_OPEN_READERS: weakref.WeakSet[_ReaderThread] = weakref.WeakSet()


@atexit.register
def _close_open_readers() -> None:
    """Stop reader threads left running: one inside librdkafka while the interpreter finalizes can crash it."""
    for reader in list(_OPEN_READERS):
        reader.close()


class _ReaderThread(ABC):
    """Reads planned offset ranges with one consumer that stays assigned and reads ahead.

    A thread owns the consumer. It keeps every partition it was asked for
    assigned and goes on fetching past the last range asked for, holding up
    to ``read_ahead`` messages, so that the next range (which starts where
    the last one ended) is mostly in memory when it is asked for. A range
    that starts elsewhere (a replay) re-positions that partition. Offsets may
    have gaps (transaction markers, aborted or compacted records): a range is
    complete when the consumer's position reaches its end. What is held of
    the fetched messages is up to the subclass (:meth:`_hold`).

    Args:
        config: consumer settings (``bootstrap.servers``, ``group.id``, security, ...).
        timeout: how long one ``read`` may wait for its range.
        poll_records: messages asked for per ``consume`` call.
        read_ahead: messages held beyond what was asked for; 0 reads no further than asked.
    """

    def __init__(self, config: Mapping[str, Any], *, timeout: dt.timedelta, poll_records: int = 10_000,
                 read_ahead: int = 0) -> None:
        self.timeout = timeout
        self.poll_records = poll_records
        self.read_ahead = read_ahead
        self._consumer = Consumer({**config, "enable.partition.eof": False})
        self._cond = threading.Condition()
        self._buffers: dict[str, PartitionBuffer] = {}
        self._tps: dict[str, TopicPartition] = {}
        self._want: dict[str, tuple[int, int]] = {}  # the range being asked for, by partition
        self._moves: dict[str, int] = {}  # partitions the thread must re-position, and where to
        self._paused: set[str] = set()
        self._releases: set[str] = set()  # partitions the thread must unassign
        self._commits: list[_Commit] = []
        self._last_error: KafkaError | None = None
        self._failure: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="statefulstream-kafka-reader", daemon=True)
        self._thread.start()
        _OPEN_READERS.add(self)

    @abstractmethod
    def _hold(self, messages: list[Message]) -> Run:
        """Return what is kept of one partition's fetched ``messages`` (in offset order, none held yet)."""

    def _take(self, ranges: Mapping[str, tuple[int, int]]) -> dict[str, list[Run]]:
        """Return the runs of messages at offsets ``[start, end)`` of each partition, in offset order.

        Raises:
            RangeIncompleteError: a range was not complete within ``timeout``.
            ReaderFailedError: the reader thread died (its error is the cause).
        """
        todo = {p: r for p, r in ranges.items() if r[1] > r[0]}
        out: dict[str, list[Run]] = {p: [] for p in todo}
        deadline = time.monotonic() + self.timeout.total_seconds()
        with self._cond:
            for p, (lo, _) in todo.items():
                buf = self._buffers.get(p)
                if buf is not None and buf.first <= lo <= buf.complete:
                    buf.drop_before(lo)  # the next range: what was read ahead is kept
                else:
                    self._moves[p] = lo
                    self._buffers[p] = PartitionBuffer(lo, lo)
            self._want = dict(todo)
            self._cond.notify_all()
            while True:
                self._raise_failure()
                if all(self._buffers[p].complete >= hi and p not in self._moves for p, (_, hi) in todo.items()):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    self._want = {}
                    missing = {p: (self._buffers[p].complete, lo, hi) for p, (lo, hi) in todo.items()
                               if self._buffers[p].complete < hi or p in self._moves}
                    raise RangeIncompleteError(missing, self._last_error)
                self._cond.wait(left)
            for p, (_, hi) in todo.items():
                out[p] = self._buffers[p].take(hi)
            self._want = {}
            self._cond.notify_all()
        return out

    def commit(self, offsets: Mapping[str, int]) -> None:
        """Commit ``offsets`` to the consumer group and wait for the answer.

        The reader thread commits between two fetches: a synchronous commit
        waits on the queue that thread's ``consume`` serves.

        Raises:
            KafkaException: the commit failed.
            ReaderFailedError: the reader thread died (its error is the cause).
        """
        done = _Commit([TopicPartition(*parse_partition_name(p), off) for p, off in offsets.items()])
        with self._cond:
            self._commits.append(done)
            self._cond.notify_all()
            while not done.finished:
                self._raise_failure()
                self._cond.wait(_POLL.total_seconds())
        if done.error is not None:
            raise done.error

    def release(self, partitions: Sequence[str]) -> None:
        """Stop reading ``partitions`` and drop what is held of them (their group moved them elsewhere)."""
        with self._cond:
            for p in partitions:
                self._buffers.pop(p, None)
                self._moves.pop(p, None)
                self._want.pop(p, None)
                self._releases.add(p)
            self._cond.notify_all()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            msg = f"the Kafka reader thread stopped: {self._failure!r}"
            raise ReaderFailedError(msg) from self._failure

    def close(self) -> None:
        """Stop the thread and close the consumer (no commit). Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        _OPEN_READERS.discard(self)

    # --- the reader thread (the only one that touches the consumer's assignment)

    def _run(self) -> None:
        consumer = self._consumer
        try:
            while self._step(consumer):
                pass
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
        finally:
            consumer.close()

    def _step(self, consumer: Consumer) -> bool:
        """Apply re-positions and fetch once, or wait while nothing should fetch; False when closing."""
        with self._cond:
            if self._closing:
                return False
            releases, self._releases = self._releases, set()
            gone = [self._tps.pop(p) for p in releases if p in self._tps]
            self._paused -= releases
            if gone:
                consumer.incremental_unassign(gone)
            if not self._pause_or_resume(consumer) and not self._moves and not self._commits:
                self._cond.wait(_POLL.total_seconds())
                return True
            moves, self._moves = self._moves, {}
            commits, self._commits = self._commits, []
        self._apply_moves(consumer, moves)
        for commit in commits:
            commit.run(consumer)
        with self._cond:
            want = sum(max(0, hi - self._buffers[p].complete) for p, (_, hi) in self._want.items())
        # Never ask for more than the asked ranges still need, so consume() returns as soon as they are read.
        batch = consumer.consume(num_messages=max(1, min(self.poll_records, want or self.poll_records)),
                                 timeout=_POLL.total_seconds())
        positions = consumer.position(list(self._tps.values())) if self._tps else []
        with self._cond:
            self._store(batch, positions)
            self._cond.notify_all()
        return True

    def _pause_or_resume(self, consumer: Consumer) -> bool:
        """Return whether to consume now: while an asked range is incomplete or fewer than ``read_ahead`` are held.

        Holding enough, it stops consuming rather than pausing: a pause makes
        librdkafka drop its (bounded) prefetch queue and stalls the next fetch
        by about a second. Only while an asked range is incomplete are the
        other partitions paused, so a partition far ahead cannot fill memory.
        """
        held = sum(b.held for b in self._buffers.values())
        room = self.read_ahead > 0 and held < self.read_ahead + sum(hi - lo for lo, hi in self._want.values())
        needed = {p for p, (_, hi) in self._want.items() if self._buffers[p].complete < hi}
        pause = set() if room or not needed else set(self._tps) - needed
        if pause - self._paused:
            consumer.pause([self._tps[p] for p in pause - self._paused])
        if self._paused - pause:
            consumer.resume([self._tps[p] for p in self._paused - pause])
        self._paused = pause
        return room or bool(needed)

    def _apply_moves(self, consumer: Consumer, moves: Mapping[str, int]) -> None:
        if not moves:
            return
        known = [self._tps[p] for p in moves if p in self._tps]
        if known:
            consumer.incremental_unassign(known)
        tps = [TopicPartition(*parse_partition_name(p), off) for p, off in moves.items()]
        consumer.incremental_assign(tps)
        consumer.resume(tps)  # a pause from before an unassign outlives the new assignment
        with self._cond:
            for tp in tps:
                name = partition_name(tp.topic, tp.partition)
                self._tps[name] = TopicPartition(tp.topic, tp.partition)
                self._paused.discard(name)

    def _store(self, batch: list[Message], positions: list[TopicPartition]) -> None:
        """Append fetched messages to their buffers.

        This runs once per message, so it stays in C-level calls (map, sort,
        bisect) and touches each partition's run of messages as a whole; the
        subclass's ``_hold`` says what is kept of a run.
        """
        if any(map(Message.error, batch)):  # rare: a client error (end-of-partition events are off)
            for err in filter(None, map(Message.error, batch)):
                self._last_error = err  # librdkafka reconnects and refetches by itself
            batch = [m for m in batch if m.error() is None]
        if not batch:
            return
        for msgs in partition_runs(batch):
            name = partition_name(msgs[0].topic() or "", msgs[0].partition() or 0)
            buf = self._buffers.get(name)
            if buf is None or name in self._moves:
                continue
            if _offset(msgs[0]) < buf.complete:  # already held (fetched again after a reconnect)
                msgs = msgs[bisect.bisect_left(msgs, buf.complete, key=_offset):]
            if msgs:
                buf.add(self._hold(msgs))
        # Past gaps (control records, compaction) the position moves without a message.
        for tp in positions:
            name = partition_name(tp.topic, tp.partition)
            buf = self._buffers.get(name)
            if buf is not None and name not in self._moves and tp.offset > buf.complete:
                buf.complete = tp.offset


class RangeReader(_ReaderThread):
    """Reads planned offset ranges as lists of confluent-kafka ``Message`` objects.

    Holds the ``Message`` objects themselves, which the cyclic garbage
    collector tracks: for small reads. Reading many records, use :class:`ColumnReader`.
    """

    def read(self, ranges: Mapping[str, tuple[int, int]]) -> dict[str, list[Message]]:
        """Return the messages at offsets ``[start, end)`` of each partition, in offset order.

        Raises:
            RangeIncompleteError: a range was not complete within ``timeout``.
            ReaderFailedError: the reader thread died (its error is the cause).
        """
        return {p: list(itertools.chain.from_iterable(r.columns[0] for r in runs))
                for p, runs in self._take(ranges).items()}

    def _hold(self, messages: list[Message]) -> Run:
        return Run(offsets_of(messages), (messages,))


class ColumnReader(_ReaderThread):
    """Reads planned offset ranges as columns (:class:`~statefulstream.kafka_runs.Fetched`), holding no ``Message``.

    The reader thread turns each fetched batch into lists (offsets as a
    ``range`` when gap-free) and drops the ``Message`` objects at once: the
    cyclic garbage collector would traverse every one held while reading ahead.

    Args:
        config, timeout, poll_records, read_ahead: as :class:`RangeReader`.
        keys: also keep each message's key.
        timestamps: also keep each message's timestamp (ms).
        headers: also keep each message's headers.
    """

    def __init__(self, config: Mapping[str, Any], *, timeout: dt.timedelta, poll_records: int = 10_000,
                 read_ahead: int = 0, keys: bool = False, timestamps: bool = False, headers: bool = False) -> None:
        self.columns = ("values", *(["keys"] if keys else []), *(["timestamps"] if timestamps else []),
                        *(["headers"] if headers else []))
        self._take_columns = tuple(COLUMNS[c] for c in self.columns)
        super().__init__(config, timeout=timeout, poll_records=poll_records, read_ahead=read_ahead)

    def read(self, ranges: Mapping[str, tuple[int, int]]) -> dict[str, Fetched]:
        """Return the messages at offsets ``[start, end)`` of each partition, in offset order, as columns.

        Raises:
            RangeIncompleteError: a range was not complete within ``timeout``.
            ReaderFailedError: the reader thread died (its error is the cause).
        """
        out = {}
        for p, runs in self._take(ranges).items():
            start = ranges[p][0]
            run = Run.join(runs) if runs else Run(range(start, start), tuple([] for _ in self.columns))
            out[p] = Fetched.of(*parse_partition_name(p), run, self.columns)
        return out

    def _hold(self, messages: list[Message]) -> Run:
        return Run(offsets_of(messages), tuple(take(messages) for take in self._take_columns))
