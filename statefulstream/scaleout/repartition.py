"""The repartition step: re-key records through an internal topic when the group key is not the message key.

State is kept per source partition, so every record of a key must come from
one partition. When the operator groups by the message key
(``key=<KafkaSource key_field>``) that holds already. Otherwise, as Kafka
Streams does, the app runs in two stages in the same processes and group:

1. *forward* tasks, one per source partition: decode, run the stateless
   steps, and write each record keyed by its group key to the repartition
   topic (``ScaleOut.repartition_for``, the source's partition count), in a
   transaction per batch with the batch marker (its offsets) in a small
   changelog of their own (``<repartition topic>-offsets``). They are
   ``PartitionTask`` s over a stateless pass-through operator.
2. the stateful tasks read the repartition topic's partitions instead of the
   source's.

Records travel as the state codec encodes them (``codec.DEFAULT_CODEC``), so
whatever a step returns and the state can hold survives the trip.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

from statefulstream.errors import SinkError, SourceError
from statefulstream.kafka_runs import Fetched
from statefulstream.kafka_txn import HEADER_ATTEMPT, HEADER_BATCH, HEADER_SINK, TransactionalProducer
from statefulstream.operator import StatefulOperator
from statefulstream.options import GroupStateTimeout
from statefulstream.scaleout.changelog import Changelog
from statefulstream.sink import Sink, SinkContext
from statefulstream.sources.kafka import KafkaSource
from statefulstream.state.codec import DEFAULT_CODEC
from statefulstream.state.group_state import GroupState

logger = logging.getLogger(__name__)

_MARKER_WAIT_S = 0.05  # between two looks for a forward marker not visible yet
MARKER_WAIT = dt.timedelta(seconds=2)
"""How long a read looks for the marker of a forward transaction before giving the batch back."""


class UndecidedRecordsError(SourceError):
    """Records of a forward transaction whose outcome is not visible yet: run the batch again later."""


def needs_repartition(source: KafkaSource, operator: StatefulOperator) -> bool:
    """Whether the group key may differ from the message key (then records are re-keyed)."""
    key_field = source.decoder.key_field
    return key_field is None or operator.key_spec != key_field


def _pass_through(key: Hashable, values: Iterator[Any], state: GroupState) -> Iterator[tuple[Hashable, Any]]:
    """The forward stage's handler: every record, with its group key, in arrival order."""
    for value in values:
        yield key, value


class RepartitionWriter(Sink):
    """Writes the forward stage's ``(key, record)`` rows to the repartition topic inside a partition's transaction.

    Only ever written through :meth:`produce_batch` (the partition task's
    transaction); records carry the transaction's headers, keyed so that one
    group key always lands in one partition.
    """

    name = "repartition"

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def prepare(self, context: SinkContext) -> None:
        """Nothing to check: the worker created the topic."""

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Not used: the rows go in the partition's transaction."""
        msg = "RepartitionWriter writes only inside a partition's transaction (produce_batch)"
        raise SinkError(msg)

    def produce_batch(self, txn: TransactionalProducer, batch_id: int, rows: Sequence[tuple[Hashable, Any]]) -> None:
        """Produce every row, keyed by its encoded group key, into ``txn``'s open transaction."""
        headers, produce, encode, topic = txn.headers(batch_id), txn.produce, DEFAULT_CODEC.encode, self.topic
        encode_key = DEFAULT_CODEC.encode_key
        for key, record in rows:
            if not produce(topic, encode(record), key=encode_key(key), headers=headers):
                msg = (f"repartition topic {topic!r}: a record of key {key!r} is larger than the producer's "
                       f"message.max.bytes; raise it for the app's producers")
                raise SinkError(msg)


def forward_operator(operator: StatefulOperator, sink: Any) -> StatefulOperator:
    """The stateless operator of the forward stage: the app's key, no time, no state, rows to ``sink``."""
    return dataclasses.replace(operator, func=_pass_through, name=f"{operator.name}-repartition", flat=True,
                               event_time=None, watermark_delay_ms=None, timeout=GroupStateTimeout.NO_TIMEOUT,
                               sinks=[sink], state_sinks=[], initial_state=None, call_all_keys=False,
                               max_event_time_ahead_ms=None, processor=None, time_mode=None)


class RepartitionSource(KafkaSource):
    """The stateful stage's reader: the repartition topic, records decoded by the state codec.

    It keeps only records of committed forward transactions, by the
    batch-marker rule: a record tagged ``(forward task, batch N, attempt A)``
    is kept when that task's markers (``forward_markers``) hold a marker of
    attempt ``A`` for batch ``N`` or later. ``read_committed`` returns a
    transaction's records only once it has ended, so the marker of a
    committed one is there to be found. On Apache Kafka ``read_committed``
    already hides aborted records and the rule keeps everything; tansu 0.6
    returns them too.

    Args:
        source: the app's source (connection settings).
        topic: the repartition topic.
        forward_markers: the forward tasks' changelog (markers only), one partition per source partition.
    """

    def __init__(self, source: KafkaSource, topic: str, forward_markers: Changelog) -> None:
        super().__init__(topic, bootstrap_servers=source.bootstrap_servers, config=source.config,
                         value_format=DEFAULT_CODEC.decode, read_timeout=source.read_timeout,
                         watermark_probe=source.watermark_probe, poll_records=source.poll_records,
                         fail_on_data_loss=source.fail_on_data_loss, read_ahead=source.read_ahead)
        self.forward_markers = forward_markers
        self._committed: dict[tuple[bytes, bytes], int] = {}  # (forward task, attempt) -> last committed batch
        self._read_to: dict[int, int] = {}  # marker partition -> offset read up to

    keeps_headers = True

    def _accept(self, fetched: Fetched) -> Fetched:
        headers = fetched.headers or [None] * len(fetched)
        kept = [i for i, h in enumerate(headers) if self._is_committed(h)]
        if len(kept) == len(fetched):
            return fetched
        logger.info("repartition topic %r: left out %d records of aborted forward transactions",
                    self.topics[0], len(fetched) - len(kept))
        return fetched.select(kept)

    def _is_committed(self, headers: list[tuple[str, bytes]] | None) -> bool:
        """Whether the forward transaction that wrote ``msg`` committed.

        Undecided until its marker, or a later batch's of another attempt, is
        visible: a transaction's end reaches its partitions one by one, so the
        marker may show a moment after the record, and an aborted batch is
        decided only once its forward task wrote it again. The markers are read
        again for a moment (``MARKER_WAIT``).

        Raises:
            UndecidedRecordsError: still undecided (the worker runs the batch again later).
        """
        tags = dict(headers or ())
        writer, batch, attempt = (tags.get(h) for h in (HEADER_SINK, HEADER_BATCH, HEADER_ATTEMPT))
        if writer is None or batch is None or attempt is None:
            return True  # not written by a forward task
        number, partition = int(batch), int(writer.rsplit(b".", 1)[1])
        deadline = time.monotonic() + MARKER_WAIT.total_seconds()
        while True:
            if self._committed.get((writer, attempt), -1) >= number:
                return True
            if any(b >= number for (w, _), b in self._committed.items() if w == writer):
                return False  # batch N (or later) committed by another attempt: this one was aborted
            if time.monotonic() > deadline:
                msg_ = (f"repartition topic {self.topics[0]!r}: whether forward transaction {writer.decode()!r} "
                        f"batch {number} committed is not known yet (its forward task has not written it again)")
                raise UndecidedRecordsError(msg_)
            self._read_markers(partition, writer)
            if self._committed.get((writer, attempt), -1) < number:
                time.sleep(_MARKER_WAIT_S)

    def _read_markers(self, partition: int, writer: bytes) -> None:
        """Read the forward task's markers written since the last look."""
        for marker in self.forward_markers.markers(partition, since=self._read_to, into=self._read_to):
            key = (writer, marker.attempt.encode())
            self._committed[key] = max(self._committed.get(key, -1), marker.plan.batch_id)
