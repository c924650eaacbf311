"""Runs of fetched Kafka messages as a range reader holds them: offsets plus parallel columns.

A :class:`Run` is the messages of one partition at increasing offsets, cut
and joined by offset without a Python loop per message. Its offsets are a
``range`` when they have no gap (the common case: no transaction markers or
compaction), so no offset is read per message. :class:`Fetched` is what a
``ColumnReader`` hands out: values and keys as plain lists, no
confluent-kafka ``Message`` objects (the cyclic garbage collector tracks those
and would traverse every one held while the next batch is read ahead).

Only :mod:`statefulstream.kafka_client` and the Kafka source import this
module (it needs the ``kafka`` extra).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any, cast

from confluent_kafka import Message


@dataclasses.dataclass
class Run:
    """Messages of one partition: their offsets (increasing) and parallel columns, one item per message."""

    offsets: Sequence[int]
    columns: tuple[list[Any], ...]

    def split(self, offset: int) -> tuple[Run, Run]:
        """Return the messages before ``offset`` and those from it on."""
        i = bisect.bisect_left(self.offsets, offset)
        return (Run(self.offsets[:i], tuple(c[:i] for c in self.columns)),
                Run(self.offsets[i:], tuple(c[i:] for c in self.columns)))

    @staticmethod
    def join(runs: Sequence[Run]) -> Run:
        """Return one run of ``runs`` (each after the last, in offset order); one run is returned as it is."""
        if len(runs) == 1:
            return runs[0]
        offsets: Sequence[int]
        ranges = [r.offsets for r in runs if isinstance(r.offsets, range)]
        if len(ranges) == len(runs) and all(a.stop == b.start for a, b in itertools.pairwise(ranges)):
            offsets = range(ranges[0].start, ranges[-1].stop)
        else:
            offsets = list(itertools.chain.from_iterable(r.offsets for r in runs))
        width = len(runs[0].columns) if runs else 0
        return Run(offsets, tuple(list(itertools.chain.from_iterable(r.columns[k] for r in runs))
                                  for k in range(width)))


@dataclasses.dataclass
class PartitionBuffer:
    """What a reader holds of one partition: runs of messages at offsets ``[first, complete)``, in order.

    ``complete`` may be past the last message held: offsets have gaps.
    """

    first: int
    complete: int
    runs: collections.deque[Run] = dataclasses.field(default_factory=collections.deque)
    held: int = 0  # messages in ``runs``

    def add(self, run: Run) -> None:
        """Append ``run`` (offsets after every message held)."""
        self.runs.append(run)
        self.held += len(run.offsets)
        self.complete = run.offsets[-1] + 1

    def drop_before(self, offset: int) -> None:
        """Forget the messages before ``offset``."""
        self._cut(offset)
        self.first = offset

    def take(self, end: int) -> list[Run]:
        """Remove and return the messages before ``end``, as runs in offset order."""
        taken = self._cut(end)
        self.first = end
        return taken

    def _cut(self, offset: int) -> list[Run]:
        """Remove and return the runs (a run split if need be) of the messages before ``offset``."""
        runs, cut = self.runs, []
        while runs and runs[0].offsets[-1] < offset:
            cut.append(runs.popleft())
        if runs and runs[0].offsets[0] < offset:
            head, runs[0] = runs[0].split(offset)
            cut.append(head)
        self.held -= sum(len(r.offsets) for r in cut)
        return cut


# The C method itself as a sort key: a Python function here would cost a call per message.
_partition = cast(Callable[[Message], int], Message.partition)


def partition_runs(batch: list[Message]) -> list[list[Message]]:
    """Split a fetched ``batch`` (no errors) into runs of one partition each, every run in offset order.

    One C-level pass per message (map, a stable sort, bisect); ``batch`` is emptied.
    """
    topics = list(map(Message.topic, batch))
    if topics.count(topics[0]) != len(topics):
        where = zip(topics, map(Message.partition, batch), strict=True)
        return [[m for m, _ in group] for _, group in itertools.groupby(zip(batch, where, strict=True),
                                                                         key=operator.itemgetter(1))]
    # One topic: a stable sort by partition keeps each partition's offset order.
    batch.sort(key=_partition)
    runs = []
    while batch:
        cut = bisect.bisect_right(batch, _partition(batch[0]), key=_partition)
        runs.append(batch[:cut])
        del batch[:cut]
    return runs


def offsets_of(messages: list[Message]) -> Sequence[int]:
    """Return the offsets of one partition's ``messages`` (in offset order): a ``range`` when gap-free.

    Offsets only increase, so first and last a ``len`` apart means no gap.
    """
    first, last = messages[0].offset() or 0, messages[-1].offset() or 0
    if last - first + 1 == len(messages):
        return range(first, last + 1)
    return list(map(_offset, messages))


_offset = cast(Callable[[Message], int], Message.offset)


def _timestamps_ms(messages: list[Message]) -> list[int]:
    return list(map(operator.itemgetter(1), map(Message.timestamp, messages)))  # timestamp() is (type, ms)


COLUMNS: dict[str, Callable[[list[Message]], list[Any]]] = {
    "values": lambda messages: list(map(Message.value, messages)),
    "keys": lambda messages: list(map(Message.key, messages)),
    "timestamps": _timestamps_ms,
    "headers": lambda messages: list(map(Message.headers, messages)),
}
"""How each column a ``ColumnReader`` may keep is taken from fetched messages: one C-level pass each."""


@dataclasses.dataclass
class Fetched:
    """The messages of one partition read for a range, in offset order, as parallel columns.

    Attributes:
        topic: the topic.
        partition: the partition number.
        offsets: each message's offset (a ``range`` when there is no gap).
        values: each message's value (``None`` for a tombstone).
        keys: each message's key (or ``None``), when the reader keeps keys; else ``None``.
        timestamps: each message's timestamp in ms, when the reader keeps them; else ``None``.
        headers: each message's headers (``[(name, bytes)]`` or ``None``), when the reader keeps them.
    """

    topic: str
    partition: int
    offsets: Sequence[int]
    values: list[bytes | None]
    keys: list[bytes | None] | None = None
    timestamps: list[int] | None = None
    headers: list[list[tuple[str, bytes]] | None] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def select(self, indices: Sequence[int]) -> Fetched:
        """Return only the messages at ``indices`` (increasing), every column kept."""
        def pick(column: Sequence[Any] | None) -> Any:
            return None if column is None else [column[i] for i in indices]

        return Fetched(self.topic, self.partition, pick(self.offsets), pick(self.values), pick(self.keys),
                       pick(self.timestamps), pick(self.headers))

    @classmethod
    def of(cls, topic: str, partition: int, run: Run, columns: Sequence[str]) -> Fetched:
        """Return ``run``, whose columns are those named by ``columns`` (keys of ``COLUMNS``), as a ``Fetched``."""
        return cls(topic, partition, run.offsets, **dict(zip(columns, run.columns, strict=True)))
