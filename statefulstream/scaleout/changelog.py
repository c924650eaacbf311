"""The changelog topic: every partition's state changes and batch markers, and restoring a partition from it.

Partition ``p`` of the changelog belongs to source partition ``p``. A batch
of that partition writes, in its Kafka transaction, one record per changed
row (key: the row's encoded key; value: the encoded row, or a tombstone for
a removal), one per changed entry of the store's ``kv`` namespace (key
``KV_PREFIX`` + the entry's key) and then its *marker*: a record keyed ``MARKER_PREFIX + attempt``
whose value holds the batch's plan and next watermark (what the local
store's commit record holds). Compaction keeps the last value of each row
and the last marker of each attempt.

Restoring reads the partition from its start and applies a transaction's
rows when its marker is read: on brokers that hide aborted transactions
from ``read_committed`` readers (Apache Kafka) every record read is
committed anyway; on tansu 0.6, which does not hide them, only rows whose
``(attempt, batch)`` has a marker are applied (``kafka_txn`` explains the
headers). A marker of another attempt means that the earlier writer was
fenced, so rows of other attempts still waiting are dropped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from statefulstream.checkpoint.plan_log import BatchPlan
from statefulstream.errors import ConfigError, SourceError
from statefulstream.kafka_client import (
    ColumnReader,
    RangeIncompleteError,
    ReaderFailedError,
    list_offsets,
    one_off_reader_config,
)
from statefulstream.kafka_txn import HEADER_ATTEMPT, HEADER_BATCH, TransactionalProducer
from statefulstream.state.store import CommitRecord

logger = logging.getLogger(__name__)

MARKER_PREFIX = b"\x00statefulstream.marker:"
"""Keys of marker records start with this. No encoded group key does: msgpack's only encoding that starts
with a NUL byte is the integer 0, one byte long."""
KV_PREFIX = b"\x00statefulstream.kv:"
"""Changelog keys of the ``kv`` namespace's entries (stateful processors' variables and timers) start with this."""
_TAIL = 1_000  # offsets read back from the end of a partition to find its last marker
_CHUNK = 50_000  # offsets read per step of a scan (and read ahead meanwhile)


@dataclasses.dataclass(frozen=True)
class Marker:
    """What a committed batch of a partition left in the changelog: its plan and the next watermark."""

    plan: BatchPlan
    next_watermark_ms: int
    attempt: str

    @property
    def commit_record(self) -> CommitRecord:
        """The local store's commit record for this batch."""
        plan = self.plan
        return CommitRecord(plan.batch_id, plan.end, plan.batch_ts_ms, plan.watermark_ms, self.next_watermark_ms)

    def to_bytes(self) -> bytes:
        """The marker record's value."""
        return orjson.dumps({"batch_id": self.plan.batch_id, "attempt": self.attempt, "plan": self.plan.to_dict(),
                             "next_watermark_ms": self.next_watermark_ms})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Marker:
        """Parse a marker record's value."""
        doc = orjson.loads(raw)
        return cls(BatchPlan.from_dict(doc["plan"]), int(doc["next_watermark_ms"]), str(doc["attempt"]))


@dataclasses.dataclass
class RestoreResult:
    """What a restore read: the last committed marker, and figures for logs and metrics."""

    marker: Marker | None
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        """Changelog records per second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _tag(headers: list[tuple[str, bytes]] | None) -> tuple[bytes, bytes]:
    """``(attempt, batch)`` of a changelog record, from the headers ``TransactionalProducer.headers`` wrote."""
    if headers and len(headers) == 3 and headers[2][0] == HEADER_ATTEMPT and headers[1][0] == HEADER_BATCH:
        return headers[2][1], headers[1][1]  # the order they are written in: no dict per record
    tags = dict(headers or ())
    return tags.get(HEADER_ATTEMPT) or b"", tags.get(HEADER_BATCH) or b""


class Changelog:
    """One app's changelog topic: write a partition's changes in a transaction, find and restore them.

    Args:
        topic: the changelog topic.
        config: client settings (``bootstrap.servers``, security, ...), no group or producer settings.
        timeout: how long one read or admin request may take.
        writer_prefix: the transactional ids of the tasks writing partition ``p`` are
            ``"<writer_prefix>.<p>"`` (``"<app>.<topic>"``).
    """

    def __init__(self, topic: str, config: Mapping[str, Any], *, timeout: dt.timedelta,
                 writer_prefix: str = "") -> None:
        self.topic = topic
        self.config = dict(config)
        self.timeout = timeout
        self.writer_prefix = writer_prefix

    def ensure(self, partitions: int) -> None:
        """Create the topic (compacted, ``partitions`` partitions) if missing; check its partition count.

        Raises:
            ConfigError: the topic exists with another partition count.
            SourceError: the broker did not answer, or refused to create it.
        """
        ensure_topic(self.config, self.topic, partitions, timeout=self.timeout, compact=True)

    def write(self, txn: TransactionalProducer, partition: int, changes: Mapping[bytes, bytes | None],
              marker: Marker) -> None:
        """Produce a batch's row changes and then its marker into ``txn``'s open transaction.

        Raises:
            KafkaException: a client error (the caller aborts the transaction).
        """
        headers = txn.headers(marker.plan.batch_id)
        for key, row in changes.items():
            txn.produce(self.topic, row, key=key, headers=headers, partition=partition)
        txn.flush()  # every row reaches the broker before the marker that vouches for it
        txn.produce(self.topic, marker.to_bytes(), key=MARKER_PREFIX + marker.attempt.encode(), headers=headers,
                    partition=partition)

    def last_marker(self, partition: int) -> Marker | None:
        """The last committed marker of ``partition`` (read from its tail; the whole partition if need be)."""
        lo, hi = self._bounds(partition)
        found = None
        for marker, _ in self._scan(partition, max(lo, hi - _TAIL), hi, markers_only=True):
            found = marker
        if found is None and hi - _TAIL > lo:
            for marker, _ in self._scan(partition, lo, hi - _TAIL, markers_only=True):
                found = marker
        return found

    def markers(self, partition: int, *, since: Mapping[int, int], into: dict[int, int]) -> Iterator[Marker]:
        """The committed markers of ``partition`` from offset ``since[partition]`` on; ``into`` gets where it ended."""
        lo, hi = self._bounds(partition)
        start = max(lo, since.get(partition, lo))
        for marker, _ in self._scan(partition, start, hi, markers_only=True):
            yield marker
        into[partition] = max(start, hi)

    def restore(self, partition: int, apply: Callable[[Mapping[bytes, bytes | None]], None], *,
                chunk: int) -> RestoreResult:
        """Read ``partition`` from its start and ``apply`` committed row changes, in order, ``chunk`` at a time.

        Returns the last committed marker (``None``: nothing committed yet) and the figures.
        """
        began = time.perf_counter()
        lo, hi = self._bounds(partition)
        last: Marker | None = None
        records = 0
        ready: dict[bytes, bytes | None] = {}
        for marker, rows in self._scan(partition, lo, hi, markers_only=False):
            last = marker
            records += len(rows) + 1
            ready.update(rows)
            if len(ready) >= chunk:
                apply(ready)
                ready = {}
        if ready:
            apply(ready)
        return RestoreResult(last, records, time.perf_counter() - began)

    # --- reading

    def _bounds(self, partition: int) -> tuple[int, int]:
        tp = [TopicPartition(self.topic, partition)]
        admin = AdminClient(self.config)
        try:
            lo = next(iter(list_offsets(admin, tp, OffsetSpec.earliest(), timeout=self.timeout).values()))
            hi = next(iter(list_offsets(admin, tp, OffsetSpec.latest(), timeout=self.timeout).values()))
        except KafkaException as exc:
            msg = f"changelog topic {self.topic!r} partition {partition}: cannot list offsets: {exc}"
            raise SourceError(msg) from exc
        return lo, hi

    def _scan(self, partition: int, lo: int, hi: int, *,
              markers_only: bool) -> Iterator[tuple[Marker, dict[bytes, bytes | None]]]:
        """Yield ``(marker, its transaction's rows)`` for each committed marker in ``[lo, hi)``, in order.

        Read as columns (no ``Message`` objects), the next chunk read ahead while this one is applied.
        """
        if hi <= lo:
            return
        reader = ColumnReader(one_off_reader_config(self.config, "restore"), timeout=self.timeout, read_ahead=_CHUNK,
                              keys=True, headers=True)
        name = f"{self.topic}:{partition}"
        pending: dict[tuple[bytes, bytes], dict[bytes, bytes | None]] = {}  # (attempt, batch) -> rows
        try:
            for start in range(lo, hi, _CHUNK):
                fetched = reader.read({name: (start, min(start + _CHUNK, hi))})[name]
                for key, value, headers in zip(fetched.keys or (), fetched.values, fetched.headers or (),
                                               strict=True):
                    if key is not None and key.startswith(MARKER_PREFIX):
                        marker = Marker.from_bytes(value or b"{}")
                        yield marker, self._take(pending, marker)
                    elif not markers_only:
                        pending.setdefault(_tag(headers), {})[key or b""] = value
        except (RangeIncompleteError, ReaderFailedError) as exc:
            msg_ = (f"changelog topic {self.topic!r} partition {partition}: could not read [{lo}, {hi}) within "
                    f"{self.timeout.total_seconds():g}s: {exc}")
            raise SourceError(msg_) from exc
        finally:
            reader.close()

    @staticmethod
    def _take(pending: dict[tuple[bytes, bytes], dict[bytes, bytes | None]],
              marker: Marker) -> dict[bytes, bytes | None]:
        """The rows the marker vouches for (its attempt, batches up to its own); drop other attempts' rows."""
        attempt, batch = marker.attempt.encode(), marker.plan.batch_id
        rows: dict[bytes, bytes | None] = {}
        for tag in sorted((t for t in pending if t[0] == attempt and int(t[1] or -1) <= batch),
                          key=lambda t: int(t[1])):
            rows.update(pending[tag])
        pending.clear()  # the rest: a fenced writer's or an aborted retry's
        return rows


def ensure_topic(config: Mapping[str, Any], topic: str, partitions: int, *, timeout: dt.timedelta,
                 compact: bool) -> None:
    """Create an internal topic with ``partitions`` partitions if missing; check the count if it exists.

    Raises:
        ConfigError: the topic exists with another partition count.
        SourceError: the broker did not answer, or refused to create it.
    """
    admin = AdminClient(dict(config))
    try:
        meta = admin.list_topics(timeout=timeout.total_seconds())
    except KafkaException as exc:
        msg = f"internal topic {topic!r}: cannot list topics: {exc}; is the broker up?"
        raise SourceError(msg) from exc
    if topic in meta.topics and meta.topics[topic].error is None:
        have = len(meta.topics[topic].partitions)
        if have != partitions:
            msg = (f"internal topic {topic!r} has {have} partitions but the source has {partitions}: each source "
                   f"partition needs its own. Recreate it with {partitions} partitions (and a new checkpoint), or "
                   f"name another one in ScaleOut")
            raise ConfigError(msg)
        return
    policy = {"cleanup.policy": "compact"} if compact else {}
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                                      config=policy)])[topic].result(timeout.total_seconds())
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            msg = (f"cannot create internal topic {topic!r}: {exc}; create it yourself ({partitions} partitions"
                   f"{', cleanup.policy=compact' if compact else ''})")
            raise SourceError(msg) from exc
    logger.info("created internal topic %r (%d partitions%s)", topic, partitions, ", compacted" if compact else "")
