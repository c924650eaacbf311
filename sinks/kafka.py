"""``KafkaSink`` and ``KafkaDeadLetterSink``: batches written to Kafka in transactions, once.

Exactly-once design (details and the broker caveats in docs/kafka.md):

1. ``open`` creates a transactional producer with a stable
   ``transactional.id`` and calls ``init_transactions``: the broker fences any
   earlier incarnation and aborts its unfinished transaction.
2. It then reads the *marker topic* (``<topic>.batches`` by default) for the
   last batch id this ``transactional.id`` committed.
3. ``write(batch_id, rows)`` skips a batch at or below that id (a replay after
   a crash between the sink's commit and the checkpoint's commit). Otherwise it
   runs one transaction: produce the rows (each with headers naming the sink,
   batch and attempt), flush them, produce the marker ``{"batch_id": N}``, and
   commit. Records and marker become visible to ``read_committed`` consumers
   together or not at all.

The flush before the marker means a visible marker implies every record of
that attempt reached the broker, even on a broker that does not hide aborted
records from ``read_committed`` consumers (tansu 0.6): there, the
``statefulstream.attempt`` header tells a committed attempt's records from an
aborted one's (:func:`committed_attempts`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]
import orjson
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from statefulstream.durations import Duration, parse_duration_ms
from statefulstream.errors import ConfigError, SinkError, SinkUnavailableError
from statefulstream.json_rows import dumps
from statefulstream.kafka_client import (
    RangeIncompleteError,
    RangeReader,
    ReaderFailedError,
    admin_config,
    list_offsets,
    mask_config,
    one_off_reader_config,
)
from statefulstream.kafka_txn import (
    HEADER_ATTEMPT,
    HEADER_BATCH,
    HEADER_SINK,
    Headers,
    TransactionalProducer,
)
from statefulstream.records import DeadLetter
from statefulstream.sink import Sink, SinkContext

logger = logging.getLogger(__name__)

Serializer = Callable[[Any], bytes]
"""Turns an output row into a message value; ``TypeError``/``ValueError`` dead-letters the row."""
KeyFunc = Callable[[Any], Any]
"""Returns a row's message key (bytes, str, int or None)."""
HeaderFunc = Callable[[Any], Headers]
"""Returns extra headers for a row."""

__all__ = ["HEADER_ATTEMPT", "HEADER_BATCH", "HEADER_SINK", "KafkaDeadLetterSink", "KafkaSink", "committed_attempts",
           "dead_letter_headers"]

_PRODUCER_ONLY = ("transactional.", "enable.idempotence", "acks", "linger.", "batch.", "compression.",
                  "queue.buffering", "message.timeout", "delivery.", "retries", "retry.", "max.in.flight",
                  "partitioner", "sticky.", "transaction.")
_MARKER_TAIL = 1_000  # markers read back from the end first; the whole topic only if ours are not there


def _serializer(value_format: str | Serializer) -> Serializer:
    if callable(value_format):
        return value_format
    if value_format == "json":
        return dumps
    if value_format == "msgpack":
        return lambda row: msgpack.packb(row, use_bin_type=True)
    msg = f"Kafka sink value_format must be 'json', 'msgpack' or a callable row -> bytes; got {value_format!r}"
    raise ConfigError(msg)


def _key_bytes(key: Any) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode("utf-8")


class KafkaSink(Sink):
    """Writes each batch's rows to a Kafka topic in one transaction, skipping replays already committed.

    Args:
        topic: the output topic (must exist).
        bootstrap_servers: ``host:port[,host:port]``.
        key: the message key: a row field name, a callable ``row -> key``, or
            ``None`` (no key). Keys are sent as bytes (text as UTF-8).
        value_format: ``"json"`` (orjson), ``"msgpack"`` or a callable ``row -> bytes``.
        transactional_id: stable across restarts of the same app and unique
            per sink; default ``"<app name>.<topic>"``.
        marker_topic: where batch markers go; default ``"<topic>.batches"``,
            created (one partition) if missing.
        config: extra librdkafka producer settings (security, compression),
            passed through and never logged unmasked.
        headers: a callable ``row -> [(name, bytes)]`` adding headers per record.
        timeout: how long a transaction step may take before the write is
            retried (``SinkUnavailableError``).

    Raises:
        ConfigError: invalid arguments.

    >>> KafkaSink("out", bootstrap_servers="127.0.0.1:9092", key="user", config={"sasl.password": "pw"})
    KafkaSink(topic='out', bootstrap_servers='127.0.0.1:9092', config={'sasl.password': '***'})
    """

    name = "kafka"

    def __init__(self, topic: str, *, bootstrap_servers: str, key: str | KeyFunc | None = None,
                 value_format: str | Serializer = "json", transactional_id: str | None = None,
                 marker_topic: str | None = None, config: Mapping[str, Any] | None = None,
                 headers: HeaderFunc | None = None, timeout: Duration = "30 seconds") -> None:
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self._key: KeyFunc | None = (lambda row: row.get(key)) if isinstance(key, str) else key
        self._serialize = _serializer(value_format)
        self.transactional_id = transactional_id
        self.marker_topic = marker_topic or f"{topic}.batches"
        self.config = dict(config or {})
        if "transactional.id" in self.config:
            msg = "KafkaSink: pass transactional_id= instead of config['transactional.id']"
            raise ConfigError(msg)
        self._headers = headers
        self.timeout = dt.timedelta(milliseconds=parse_duration_ms(timeout, name="timeout"))
        self.last_committed: int | None = None
        self._txn: TransactionalProducer | None = None
        self._context = SinkContext()

    def __repr__(self) -> str:
        extra = f", config={mask_config(self.config)!r}" if self.config else ""
        return f"{type(self).__name__}(topic={self.topic!r}, bootstrap_servers={self.bootstrap_servers!r}{extra})"

    # --- lifecycle

    def prepare(self, context: SinkContext) -> None:
        """Check the topic and create the marker topic, without a producer of its own.

        ``open`` calls it; a scale-out partition task calls it alone and then
        writes through :meth:`produce_batch` in its own transaction.

        Raises:
            SinkUnavailableError: the broker did not answer in time.
            SinkError: the topic is missing or the marker topic cannot be created.
        """
        self._context = context
        if self.transactional_id is None:
            self.transactional_id = f"{context.app_name}.{self.topic}"
        self._ensure_marker_topic()

    def open(self, context: SinkContext) -> None:
        """Start the transactional producer, fence older incarnations, and find the last committed batch.

        Raises:
            SinkUnavailableError: the broker did not answer in time.
            SinkError: the producer cannot be created or the marker topic cannot be created.
        """
        self.prepare(context)
        assert self.transactional_id is not None
        self._txn = TransactionalProducer(self.transactional_id, {"bootstrap.servers": self.bootstrap_servers,
                                                                 **self.config},
                                          timeout=self.timeout, what=f"Kafka sink {self.topic!r}")
        self._txn.open()
        self.last_committed = self._read_last_marker()
        logger.info("Kafka sink %r (transactional id %r): last committed batch %s", self.topic,
                    self.transactional_id, self.last_committed)

    def close(self) -> None:
        """Release the producer (nothing is pending between batches). Idempotent."""
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.close()

    # --- writing

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Write the batch in one transaction with its marker; skip it if its marker is already committed.

        Raises:
            SinkUnavailableError: the broker is down or the transaction was
                aborted for a retriable reason; the runtime retries the batch.
            SinkError: a fatal producer error (fenced by a newer incarnation).
        """
        if self._txn is None or not self._txn.is_open:
            self.open(self._context)
        txn = self._txn
        assert txn is not None
        if self.last_committed is not None and batch_id <= self.last_committed:
            logger.info("Kafka sink %r: batch %d is already committed (marker found); skipping its replay",
                        self.topic, batch_id)
            return
        txn.begin()
        try:
            self.produce_batch(txn, batch_id, rows)
            txn.commit()
        except KafkaException as exc:
            error = txn.translate(exc, f"batch {batch_id}")  # first: a fatal error closes the producer, no abort
            txn.abort()
            raise error from exc
        self.last_committed = batch_id

    def produce_batch(self, txn: TransactionalProducer, batch_id: int, rows: Sequence[Any]) -> None:
        """Produce the batch's rows and then its marker in ``txn``'s open transaction (not committed here).

        The rows are flushed before the marker is produced, so a visible marker
        implies that every record of its attempt reached the broker.

        Raises:
            KafkaException: a client error (the caller aborts the transaction).
        """
        base = txn.headers(batch_id)
        count = self._produce_rows(txn, batch_id, rows, base)
        txn.flush()
        marker = orjson.dumps({"batch_id": batch_id, "attempt": txn.attempt, "topic": self.topic, "records": count})
        txn.produce(self.marker_topic, marker, key=txn.transactional_id.encode(), headers=base)

    def _produce_rows(self, txn: TransactionalProducer, batch_id: int, rows: Sequence[Any], base: Headers) -> int:
        serialize, key_of, extra = self._serialize, self._key, self._headers
        count = 0
        for index, row in enumerate(rows):
            try:
                value = serialize(row)
                key = _key_bytes(key_of(row)) if key_of is not None else None
                headers = base + extra(row) if extra is not None else base
            except (TypeError, ValueError, AttributeError) as exc:
                self._dead_letter(batch_id, index, row, f"row cannot be serialized: {exc}")
                continue
            if txn.produce(self.topic, value, key=key, headers=headers):
                count += 1
            else:
                self._dead_letter(batch_id, index, row, "record is larger than the producer's message.max.bytes")
        return count

    def _dead_letter(self, batch_id: int, index: int, row: Any, reason: str) -> None:
        self._context.dead_letter(DeadLetter(reason=reason, source=f"kafka sink {self.topic}", raw=repr(row),
                                             error="sink", position={"sink": self.topic, "batch_id": batch_id,
                                                                     "row": index}))

    def _unavailable(self, exc: KafkaException, what: str) -> SinkError:
        where = f"Kafka sink {self.topic!r} ({what})"
        return SinkUnavailableError(f"{where}: {exc.args[0].str()}; retrying the batch")

    # --- markers

    def _client_config(self) -> dict[str, Any]:
        return admin_config({"bootstrap.servers": self.bootstrap_servers, **self.config}, drop=_PRODUCER_ONLY)

    def _ensure_marker_topic(self) -> None:
        admin = AdminClient(self._client_config())
        try:
            meta = admin.list_topics(timeout=self.timeout.total_seconds())
        except KafkaException as exc:
            raise self._unavailable(exc, "list topics") from exc
        if self.topic not in meta.topics or meta.topics[self.topic].error is not None:
            msg = f"Kafka sink: topic {self.topic!r} does not exist on {self.bootstrap_servers}; create it first"
            raise SinkError(msg)
        if self.marker_topic in meta.topics:
            return
        topic = NewTopic(self.marker_topic, num_partitions=1, replication_factor=-1,
                         config={"cleanup.policy": "compact"})
        try:
            admin.create_topics([topic])[self.marker_topic].result(self.timeout.total_seconds())
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                msg = (f"Kafka sink {self.topic!r}: cannot create marker topic {self.marker_topic!r}: {exc}; "
                       f"create it (1 partition, compacted) or pass marker_topic=")
                raise SinkError(msg) from exc

    def _read_last_marker(self) -> int | None:
        """Return the highest batch id in this transactional id's markers, reading the tail first.

        Raises:
            SinkUnavailableError: the marker topic could not be read within ``timeout``.
        """
        admin = AdminClient(self._client_config())
        try:
            meta = admin.list_topics(self.marker_topic, timeout=self.timeout.total_seconds())
            tps = [TopicPartition(self.marker_topic, p) for p in sorted(meta.topics[self.marker_topic].partitions)]
            start = list_offsets(admin, tps, OffsetSpec.earliest(), timeout=self.timeout)
            latest = list_offsets(admin, tps, OffsetSpec.latest(), timeout=self.timeout)
        except KafkaException as exc:
            raise self._unavailable(exc, f"list offsets of marker topic {self.marker_topic!r}") from exc
        reader = RangeReader(one_off_reader_config(self._client_config(), "markers"), timeout=self.timeout)
        try:
            tail = {p: max(start[p], end - _MARKER_TAIL) for p, end in latest.items()}
            found = self._last_marker(reader.read({p: (tail[p], latest[p]) for p in latest}))
            if found is None and tail != start:
                found = self._last_marker(reader.read({p: (start[p], tail[p]) for p in latest}))
            return found
        except (RangeIncompleteError, ReaderFailedError) as exc:
            msg = (f"Kafka sink {self.topic!r}: could not read marker topic {self.marker_topic!r} within "
                   f"{self.timeout.total_seconds():g}s: {exc}; is the broker {self.bootstrap_servers} up?")
            raise SinkUnavailableError(msg) from exc
        finally:
            reader.close()

    def _last_marker(self, messages: Mapping[str, Sequence[Message]]) -> int | None:
        mine = str(self.transactional_id).encode()
        ids = [orjson.loads(m.value() or b"{}")["batch_id"] for ms in messages.values() for m in ms
               if m.key() == mine and m.value()]
        return max(ids) if ids else None

def dead_letter_headers(row: Mapping[str, Any]) -> Headers:
    """Return the headers of a dead-letter record: error kind, reason, source, and where it came from.

    >>> dead_letter_headers({"error": "decode", "reason": "bad", "source": "kafka",
    ...                      "position": {"topic": "t", "partition": 0, "offset": 7}})[-1]
    ('dlq.offset', b'7')
    """
    headers: Headers = [("dlq.error", str(row.get("error")).encode()), ("dlq.reason", str(row.get("reason")).encode()),
               ("dlq.source", str(row.get("source")).encode())]
    position = row.get("position") or {}
    headers.extend((f"dlq.{k}", str(v).encode()) for k, v in position.items())
    return headers


def _dead_letter_key(row: Mapping[str, Any]) -> str | None:
    position = row.get("position") or {}
    if "topic" in position:
        return f"{position['topic']}:{position.get('partition')}"
    return None


class KafkaDeadLetterSink(KafkaSink):
    """A ``KafkaSink`` for dead letters: the rows of ``DeadLetter.to_row``, with headers saying why and where.

    Each record's value is the dead-letter row as JSON (reason, raw record as
    text, position); its headers are ``dlq.error``, ``dlq.reason``,
    ``dlq.source`` and one ``dlq.<field>`` per position field (``dlq.topic``,
    ``dlq.partition``, ``dlq.offset`` for Kafka records); its key is the
    source ``topic:partition``. Written exactly once like ``KafkaSink``.

    Args:
        topic: the dead-letter topic (must exist).
        bootstrap_servers: ``host:port``.
        **kwargs: ``transactional_id``, ``marker_topic``, ``config``, ``timeout`` as for ``KafkaSink``.
    """

    name = "kafka_dead_letters"

    def __init__(self, topic: str, *, bootstrap_servers: str, **kwargs: Any) -> None:
        super().__init__(topic, bootstrap_servers=bootstrap_servers, key=_dead_letter_key,
                         headers=dead_letter_headers, **kwargs)


def committed_attempts(markers: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """Return ``(sink, batch_id, attempt)`` of committed markers, from rows of the marker topic.

    For brokers whose ``read_committed`` does not hide aborted records
    (tansu 0.6): a data record belongs to a committed transaction when its
    ``(statefulstream.sink, statefulstream.batch_id, statefulstream.attempt)``
    headers are in this set, since markers are produced after their records
    are flushed, and a replay of a batch with a marker is skipped.

    Args:
        markers: raw rows (``{"key": bytes, "value": bytes}``) of the marker topic.
    """
    out = set()
    for row in markers:
        value = orjson.loads(row["value"])
        out.add((row["key"].decode(), str(value["batch_id"]), value["attempt"]))
    return out
