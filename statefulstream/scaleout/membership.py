"""Group membership: which source partitions this process owns, as the consumer group decides.

A consumer subscribes to the source topic with the app's ``group_id`` and the
cooperative-sticky assignor. It never reads records itself: every partition
it is given is paused at once, and the partition tasks read their planned
ranges through the shared ``RangeReader``. ``poll`` serves the group protocol
(heartbeats, rebalance callbacks) and reports what was assigned and revoked
since the last call; the worker calls it between batches, so a revoke never
meets a batch in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from statefulstream.errors import SourceError
from statefulstream.kafka_client import partition_name

logger = logging.getLogger(__name__)


class GroupMembership:
    """A subscribed consumer that only tracks the partitions the group gives this process.

    Args:
        topics: the topics to subscribe to.
        config: consumer settings (``bootstrap.servers``, ``group.id``, security, ...).
    """

    def __init__(self, topics: Sequence[str], config: Mapping[str, Any]) -> None:
        self.topics = list(topics)
        conf = {"partition.assignment.strategy": "cooperative-sticky", **config,
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "isolation.level": "read_committed"}
        self.group_id = str(conf["group.id"])
        self._assigned: list[str] = []
        self._revoked: list[str] = []
        self.owned: set[str] = set()
        self.rebalances = 0
        try:
            self._consumer = Consumer(conf)
            self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_revoke)
        except KafkaException as exc:
            msg = f"cannot join consumer group {self.group_id!r} for {self.topics}: {exc}; check the config"
            raise SourceError(msg) from exc

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            consumer.pause(partitions)  # the tasks read through the RangeReader, never this consumer
        names = [partition_name(tp.topic, tp.partition) for tp in partitions]
        self._assigned.extend(names)
        self.owned.update(names)
        self.rebalances += 1
        logger.info("group %r: assigned %s", self.group_id, names or "nothing new")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        names = [partition_name(tp.topic, tp.partition) for tp in partitions]
        self._revoked.extend(names)
        self.owned.difference_update(names)
        self.rebalances += 1
        logger.info("group %r: revoked %s", self.group_id, names or "nothing")

    def poll(self, timeout_s: float = 0.0) -> tuple[list[str], list[str]]:
        """Serve the group protocol; return ``(assigned, revoked)`` since the last call, revokes first to apply.

        A partition both revoked and assigned again in between appears in both.
        """
        self._serve(timeout_s)
        assigned, revoked = self._assigned, self._revoked
        self._assigned, self._revoked = [], []
        return assigned, revoked

    def revoked_unreported(self) -> set[str]:
        """Partitions revoked since the last ``poll`` (during ``keep_alive``), which ``poll`` reports next.

        A partition revoked and assigned again meanwhile is among them: the
        group may have given it to another process in between.
        """
        return set(self._revoked)

    def keep_alive(self) -> None:
        """Serve the group protocol during long work (a restore) without taking the changes ``poll`` reports.

        librdkafka counts the time between two polls against ``max.poll.interval.ms``;
        a member that exceeds it is removed from the group.
        """
        self._serve(0.0)

    def _serve(self, timeout_s: float) -> None:
        msg = self._consumer.poll(timeout_s)  # the partitions are paused: only events and callbacks come
        if msg is not None and msg.error() is not None:
            logger.warning("group %r: %s", self.group_id, msg.error())

    def group_metadata(self) -> Any:
        """The consumer's group metadata, for offsets committed inside a transaction."""
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group (its partitions move to the other members at once)."""
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            logger.warning("group %r: leaving the group failed: %s", self.group_id, exc)
