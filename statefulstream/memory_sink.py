"""``MemorySink``: keeps every batch's rows in memory, for tests and notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from statefulstream.sink import Sink


class MemorySink(Sink):
    """Rows per batch id, kept in memory; a repeated batch id replaces the earlier rows.

    >>> sink = MemorySink()
    >>> sink.write(0, [1, 2]); sink.write(0, [1, 2]); sink.write(1, [3])
    >>> sink.rows
    [1, 2, 3]
    """

    __test__ = False
    name = "memory"

    def __init__(self) -> None:
        self.batches: dict[int, list[Any]] = {}

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Store (or replace) the rows of ``batch_id``."""
        self.batches[batch_id] = list(rows)

    @property
    def rows(self) -> list[Any]:
        """All rows in batch order."""
        return [row for batch_id in sorted(self.batches) for row in self.batches[batch_id]]

    def clear(self) -> None:
        """Forget every batch."""
        self.batches.clear()
