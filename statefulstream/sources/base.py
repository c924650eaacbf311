"""The ``Source`` interface and the records it hands to the executor.

Positions are ``Offsets``: a mapping from a partition name (a file path, or
``"topic:3"`` for Kafka) to the next position to read in it. Positions count
records, so ``end[p] - start[p]`` bounds the number of records of partition
``p`` in a batch. Offsets are plain data (str -> int) so they can be written
to the offsets log and the commit record as they are.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from statefulstream.records import DeadLetter, Offsets

logger = logging.getLogger(__name__)

PositionOf = Callable[[int], Mapping[str, Any]]
"""Index within one :meth:`ReadResult.add` call -> where that record was read."""


@dataclasses.dataclass
class ReadResult:
    """What ``Source.read`` returns: decoded records in order, and the dead letters.

    A source adds records with :meth:`add`, saying how to find each one's
    position; the executor asks (:meth:`position`) only for a record that
    fails after decoding (no key, a bad event time, a step raising), so the
    positions of the other records are never computed.

    >>> result = ReadResult([])
    >>> result.add([{"k": 1}, {"k": 2}], lambda i: {"partition": "p", "offset": 40 + i})
    >>> result.position(1), result.position(2)
    ({'partition': 'p', 'offset': 41}, None)
    """

    records: list[Any]
    dead_letters: list[DeadLetter] = dataclasses.field(default_factory=list)
    _starts: list[int] = dataclasses.field(default_factory=list, repr=False, compare=False)
    _ends: list[int] = dataclasses.field(default_factory=list, repr=False, compare=False)
    _positions: list[PositionOf] = dataclasses.field(default_factory=list, repr=False, compare=False)

    def add(self, records: list[Any], position_of: PositionOf) -> None:
        """Append ``records``; ``position_of(i)`` tells where ``records[i]`` was read (called only on failure)."""
        if not records:
            return
        start = len(self.records)
        self.records += records
        self._starts.append(start)
        self._ends.append(start + len(records))
        self._positions.append(position_of)

    def position(self, index: int) -> Mapping[str, Any] | None:
        """Return where ``records[index]`` was read, or ``None`` if the source did not say."""
        k = bisect.bisect_right(self._starts, index) - 1
        if k < 0 or index >= self._ends[k]:
            return None
        return self._positions[k](index - self._starts[k])


class Source(ABC):
    """Where records come from, read in planned, replayable offset ranges.

    The executor calls, per micro-batch::

        available(start)       -> (start, latest)   what could be read now
        read(start, end)       -> ReadResult         the planned range, decoded
        committed(end)                               after the batch is committed

    Contract:

    * ``available`` must not block for long; it completes ``start`` with the
      starting position of partitions it has not seen before (so the plan the
      executor logs is explicit) and returns the end of what is available.
    * ``read(start, end)`` must return the same records for the same range
      every time it is called, including after a restart: that is what makes a
      replayed batch produce identical output. It decodes records; a record
      that cannot be decoded or breaks the schema becomes a ``DeadLetter`` and
      the rest go on. Records are added with ``ReadResult.add`` and a position
      function, so a record that fails later is dead-lettered with its position.
    * ``committed`` is informational (e.g. committing Kafka consumer-group
      offsets for lag tools); the checkpoint, not the source, is the source of
      truth. It may be lost in a crash.
    * Implementations must not read the clock to decide what to return.
    * ``close`` is idempotent and may not be called after a crash.
    * Data that was read or planned and is gone (a file truncated or deleted,
      records the broker no longer has) raises ``DataLossError`` unless the
      source's ``fail_on_data_loss`` is False; then the source goes on past
      it and calls :func:`data_lost` (a WARNING, counted in
      ``data_loss_events``, the ``statefulstream_source_data_loss`` metric).
    * ``position_index``/``restore_position_index`` are optional: what a
      source needs to find its positions again after a restart without
      re-reading what it read before (``FileSource``: byte offsets of lines).
    """

    name: str = "source"
    data_loss_events: int = 0
    """Data losses this source went on past (``fail_on_data_loss=False``) since it was created."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or prepare; called once before the first ``available``."""

    @abstractmethod
    def available(self, start: Offsets) -> tuple[dict[str, int], dict[str, int]]:
        """Return ``(start, latest)``: ``start`` completed for new partitions, and what is available."""

    @abstractmethod
    def read(self, start: Offsets, end: Offsets) -> ReadResult:
        """Read and decode the records between ``start`` and ``end``."""

    def committed(self, end: Offsets) -> None:  # noqa: B027 - optional hook
        """Called after the batch ending at ``end`` is committed to the checkpoint."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Idempotent."""

    def position_index(self, start: Offsets, end: Offsets) -> dict[str, Any]:
        """Return what finds ``start`` and ``end`` again after a restart (JSON-able; logged with the plan)."""
        return {}

    def restore_position_index(self, index: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Take the ``position_index`` of the plan a restarted app resumes from, before ``available``."""


def data_lost(source: Source, message: str) -> None:
    """Log a data loss ``source`` goes on past (``fail_on_data_loss=False``) and count it."""
    source.data_loss_events += 1
    logger.warning("%s source: %s", source.name, message)


def cap_offsets(start: Offsets, latest: Offsets, max_records: int | None) -> dict[str, int]:
    """Return the end of a batch from ``start`` towards ``latest`` holding at most ``max_records``.

    The budget is shared by partitions in proportion to what each has
    available, the remainder going to partitions in name order, so the cut is
    deterministic and no partition starves.

    >>> cap_offsets({"a": 0, "b": 0}, {"a": 10, "b": 30}, 8)
    {'a': 2, 'b': 6}
    """
    pending = {p: max(0, end - start.get(p, 0)) for p, end in latest.items()}
    total = sum(pending.values())
    end = {p: max(start.get(p, 0), pos) for p, pos in latest.items()}
    for p, pos in start.items():
        end.setdefault(p, pos)
    if max_records is None or total <= max_records:
        return end
    shares = {p: (n * max_records) // total for p, n in pending.items()}
    left = max_records - sum(shares.values())
    for p in sorted(pending):
        if left <= 0:
            break
        extra = min(left, pending[p] - shares[p])
        shares[p] += extra
        left -= extra
    return {p: start.get(p, 0) + shares.get(p, 0) if p in pending else pos for p, pos in end.items()}
