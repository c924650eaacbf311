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
import logging
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

from statefulstream.errors import SinkError
from statefulstream.kafka_txn import TransactionalProducer
from statefulstream.operator import StatefulOperator
from statefulstream.options import GroupStateTimeout
from statefulstream.sink import Sink, SinkContext
from statefulstream.sources.kafka import KafkaSource
from statefulstream.state.codec import DEFAULT_CODEC
from statefulstream.state.group_state import GroupState

logger = logging.getLogger(__name__)


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


def repartitioned_source(source: KafkaSource, topic: str) -> KafkaSource:
    """The stateful stage's reader: the repartition topic, records decoded by the state codec."""
    return KafkaSource(topic, bootstrap_servers=source.bootstrap_servers, config=source.config,
                       value_format=DEFAULT_CODEC.decode, read_timeout=source.read_timeout,
                       watermark_probe=source.watermark_probe, poll_records=source.poll_records,
                       fail_on_data_loss=source.fail_on_data_loss, read_ahead=source.read_ahead)
