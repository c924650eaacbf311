"""Kafka transactions: one transactional producer, its fencing, and the headers that tie records to a batch.

``KafkaSink`` (``statefulstream.sinks.kafka``) writes each batch in one
transaction through a :class:`TransactionalProducer`; a scale-out partition
task (``statefulstream.scaleout``) writes its outputs, its state changelog and
its batch marker through one as well, so all of them commit together.

Every record written in a transaction carries three headers: the
transactional id, the batch id and the *attempt* (a random id per
:meth:`TransactionalProducer.open`). On brokers whose ``read_committed`` does
not hide aborted records (tansu 0.6), a reader keeps a record only if a
marker of the same ``(transactional id, batch, attempt)`` was committed
(markers are produced after the batch's records are flushed).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from statefulstream.errors import SinkError, SinkUnavailableError

logger = logging.getLogger(__name__)

HEADER_SINK = "statefulstream.sink"
HEADER_BATCH = "statefulstream.batch_id"
HEADER_ATTEMPT = "statefulstream.attempt"

Headers = list[tuple[str, str | bytes | None]]


class FencedError(SinkError):
    """Another process opened the same transactional id: this one must stop writing (it is a zombie)."""


class TransactionalProducer:
    """A producer with a stable ``transactional.id``: open (fence), then begin / produce / commit per batch.

    ``open`` calls ``init_transactions``, which fences every older incarnation
    of the same id and aborts its unfinished transaction. Errors are turned
    into ``SinkUnavailableError`` (retriable: the caller retries the batch),
    :class:`FencedError` (a newer incarnation took over) or ``SinkError``.

    Args:
        transactional_id: stable across restarts, unique per writer.
        config: producer settings (``bootstrap.servers``, security, ...).
        timeout: how long one transaction step may take.
        what: names the writer in error messages (``"Kafka sink 'out'"``).
    """

    def __init__(self, transactional_id: str, config: Mapping[str, Any], *, timeout: dt.timedelta,
                 what: str) -> None:
        self.transactional_id = transactional_id
        self.config = {**config, "transactional.id": transactional_id}
        self.timeout = timeout
        self.what = what
        self.attempt = ""
        self._producer: Producer | None = None

    @property
    def is_open(self) -> bool:
        """Whether ``open`` succeeded and no fatal error closed the producer since."""
        return self._producer is not None

    @property
    def producer(self) -> Producer:
        """The open producer (``open`` first)."""
        if self._producer is None:
            self.open()
        assert self._producer is not None
        return self._producer

    def open(self) -> None:
        """Create the producer and fence older incarnations (``init_transactions``); a new attempt id."""
        self.attempt = uuid.uuid4().hex
        try:
            self._producer = Producer(self.config)
            self._producer.init_transactions(self.timeout.total_seconds())
        except KafkaException as exc:
            raise self.translate(exc, "init_transactions") from exc

    def headers(self, batch_id: int) -> Headers:
        """The headers every record of batch ``batch_id`` carries: writer, batch, attempt."""
        return [(HEADER_SINK, self.transactional_id.encode()), (HEADER_BATCH, str(batch_id).encode()),
                (HEADER_ATTEMPT, self.attempt.encode())]

    def begin(self) -> None:
        """Begin a transaction."""
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise self.translate(exc, "begin_transaction") from exc

    def produce(self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: Headers | None = None,
                partition: int | None = None) -> bool:
        """Queue one record in the open transaction; False if it is larger than the producer allows.

        Raises:
            KafkaException: any other client error (the caller aborts).
        """
        producer = self.producer
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value, key=key, headers=headers)
                else:
                    producer.produce(topic, value, key=key, headers=headers, partition=partition)
                return True
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                return False

    def flush(self) -> None:
        """Wait until every queued record reached the broker (records before their marker)."""
        self.producer.flush(self.timeout.total_seconds())

    def send_offsets(self, offsets: Sequence[TopicPartition], group_metadata: Any) -> None:
        """Commit consumer-group offsets inside the open transaction (fenced by the group generation on Kafka)."""
        self.producer.send_offsets_to_transaction(list(offsets), group_metadata, self.timeout.total_seconds())

    def commit(self) -> None:
        """Commit the open transaction."""
        self.producer.commit_transaction(self.timeout.total_seconds())

    def abort(self) -> None:
        """Abort the open transaction; if even that fails, drop the producer (the next ``open`` aborts it)."""
        if self._producer is None:
            return
        try:
            self._producer.abort_transaction(self.timeout.total_seconds())
        except KafkaException as exc:
            logger.warning("%s: abort_transaction failed (%s); the next open() aborts it", self.what, exc)
            self._producer = None

    def close(self) -> None:
        """Release the producer (nothing is pending between transactions). Idempotent."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(self.timeout.total_seconds())

    def translate(self, exc: KafkaException, step: str) -> SinkError:
        """Return the error to raise for a client error during ``step``; a fatal one closes the producer."""
        err: KafkaError = exc.args[0]
        where = f"{self.what} ({step}, transactional id {self.transactional_id!r})"
        if err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
            self._producer = None
            return FencedError(f"{where}: fenced ({err.str()}): another process now writes with this "
                               f"transactional id; this one stops writing. The batch is replayed by the new owner.")
        if err.fatal():
            self._producer = None
            return SinkError(f"{where}: fatal producer error {err.str()}; another instance with the same "
                             f"transactional id may be running. The batch is replayed on restart.")
        return SinkUnavailableError(f"{where}: {err.str()}; retrying the batch")
