"""``MemorySource``: records held in a list, for tests and notebooks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from statefulstream.records import Offsets
from statefulstream.sources.base import ReadResult, Source

CRASH = object()
"""Put in a ``MemorySource``'s records to make the read that reaches it raise ``SimulatedCrashError`` once."""


class SimulatedCrashError(RuntimeError):
    """Raised by ``MemorySource`` at a ``CRASH`` sentinel (tests of recovery)."""


class MemorySource(Source):
    """An append-only list of records with one partition, ``"memory"``.

    Records appended with :meth:`add` become available to the next batch.
    Positions are list indexes, so a replayed range returns the same records.

    >>> src = MemorySource([{"k": 1}, {"k": 2}])
    >>> start, latest = src.available({})
    >>> src.read(start, latest).records
    [{'k': 1}, {'k': 2}]
    """

    __test__ = False
    name = "memory"
    PARTITION = "memory"

    def __init__(self, records: Iterable[Any] = ()) -> None:
        self._records: list[Any] = list(records)
        self._crashed: set[int] = set()

    def add(self, records: Iterable[Any]) -> None:
        """Append records; they are read by the next batch."""
        self._records.extend(records)

    def available(self, start: Offsets) -> tuple[dict[str, int], dict[str, int]]:
        """Return the start and the current length."""
        return {self.PARTITION: start.get(self.PARTITION, 0)}, {self.PARTITION: len(self._records)}

    def read(self, start: Offsets, end: Offsets) -> ReadResult:
        """Return the records in the range; raise once at a ``CRASH`` sentinel."""
        lo, hi = start.get(self.PARTITION, 0), end.get(self.PARTITION, 0)
        chunk = self._records[lo:hi]
        for i, rec in enumerate(chunk):
            if rec is CRASH and lo + i not in self._crashed:
                self._crashed.add(lo + i)
                raise SimulatedCrashError(f"simulated crash at position {lo + i}")
        kept = [i for i, r in enumerate(chunk) if r is not CRASH]
        result = ReadResult([])
        result.add([chunk[i] for i in kept], lambda i: {"partition": self.PARTITION, "offset": lo + kept[i]})
        return result
