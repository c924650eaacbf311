"""One partition of the shared Kafka source, as the ``Source`` a partition task's executor reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from statefulstream.records import Offsets
from statefulstream.sources.base import ReadResult, Source
from statefulstream.sources.kafka import KafkaSource


class PartitionSource(Source):
    """The positions of one partition (``"topic:p"``) of a ``KafkaSource`` shared by every task of the process.

    The shared source's reader keeps reading ahead for every partition the
    process owns; opening and closing happen once, in the worker, not here.

    Args:
        shared: the worker's source (without group commits: offsets go in the transactions).
        name: the partition.
    """

    def __init__(self, shared: KafkaSource, name: str) -> None:
        self.shared = shared
        self.partition = name
        self.name = shared.name

    def available(self, start: Offsets) -> tuple[dict[str, int], dict[str, int]]:
        """This partition's start (resolved) and latest offset."""
        own = self.partition
        before = self.shared.data_loss_events
        begin, latest = self.shared.available({own: start[own]} if own in start else {}, only=[own])
        self.data_loss_events += self.shared.data_loss_events - before  # the losses found for this partition
        return {own: begin[own]} if own in begin else {}, {own: latest[own]} if own in latest else {}

    def read(self, start: Offsets, end: Offsets) -> ReadResult:
        """The records of this partition in ``[start, end)``."""
        own = self.partition
        return self.shared.read({own: start.get(own, 0)}, {own: end[own]} if own in end else {})

    def position_index(self, start: Offsets, end: Offsets) -> dict[str, Any]:
        """As the shared source."""
        return self.shared.position_index(start, end)

    def restore_position_index(self, index: Mapping[str, Any]) -> None:
        """As the shared source."""
        self.shared.restore_position_index(index)
